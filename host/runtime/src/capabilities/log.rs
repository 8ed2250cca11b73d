//! The `log` capability: the connector's messages as tracing events.

use super::super::bindings::ionflow::gateway::log::Level;

/// Events carry target `ionflow::connector` so that `RUST_LOG` can single
/// them out. The connector never passes secrets here.
pub fn emit(connection: &str, level: Level, message: &str) {
    match level {
        Level::Trace => tracing::trace!(target: "ionflow::connector", connection, "{message}"),
        Level::Debug => tracing::debug!(target: "ionflow::connector", connection, "{message}"),
        Level::Info => tracing::info!(target: "ionflow::connector", connection, "{message}"),
        Level::Warn => tracing::warn!(target: "ionflow::connector", connection, "{message}"),
        Level::Error => tracing::error!(target: "ionflow::connector", connection, "{message}"),
    }
}
