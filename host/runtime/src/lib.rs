//! The ionflow sandbox: runs the ionflow connector, a WebAssembly component
//! of the `ionflow:gateway/connector` world, in wasmtime and lends it the
//! three capabilities that world imports: an HTTP transport limited to the
//! hosts of the `.ionapi` file, a token store shared by every instance, and
//! a log that turns the connector's messages into `tracing` events.
//!
//! This is the crate to depend on to embed the connector in a Rust program.
//! A [`Runtime`] compiles the connector (the one embedded at build time by
//! `build.rs` from `connector/`, see [`EMBEDDED_CONNECTOR`], or any other
//! component of the same world) and opens [`Connection`]s from `.ionapi`
//! JSON; a connection gets tokens and makes gateway calls, each call in the
//! sandbox under the [`SandboxLimits`] (memory and a deadline per call).
//!
//! ```no_run
//! # async fn example(ionapi_json: &str) -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use ionflow_runtime::capabilities::MemoryTokenStore;
//! use ionflow_runtime::{Runtime, default_options};
//!
//! let runtime = Runtime::new(Arc::new(MemoryTokenStore::new()), None)?;
//! let connection = runtime.open("tenant", ionapi_json, default_options()).await?;
//! let token = connection.token().await?;
//! println!("{token:?}"); // `Debug` masks the token itself
//! # Ok(())
//! # }
//! ```
//!
//! Not in this crate, and not among its dependencies: pipelines and their
//! jq transforms and templates, the `ionflow serve` daemon with its
//! schedules and status endpoint, the PostgreSQL store (tokens, watermarks,
//! schedule leases), the CLI, and the gateway simulator. They live in the
//! `ionflow` crate (`host/`) and in `ionflow-sim` (`host/sim`), which build
//! on this one; `cargo tree -p ionflow-runtime -e normal` shows what an
//! embedder pulls in. The token stores here are in memory and in files.
//!
//! # Modules
//!
//! Each module imports only modules of a lower layer (named in brackets),
//! never one of its own layer or above, so there are no import circles:
//!
//! | layer | module | what it holds |
//! |---|---|---|
//! | 0 | `bindings` | the Rust bindings of the WIT world, generated from `wit/` |
//! | 0 | `limits` | [`SandboxLimits`] (memory, deadline, response cap), [`ConnectionStats`] and the epoch tick deadlines are counted in |
//! | 0 | [`contract`] | the WIT files, embedded for `ionflow connector export --wit` |
//! | 0 | [`observe`] | the [`Observer`](observe::Observer) hook: exchanges and rate-limit waits, for a host's metrics (nothing) |
//! | 0 | [`private_files`] | folders 0700 and files 0600 whatever the umask; leftovers of dead writers (nothing) |
//! | 0 | `secret` | [`Secret`], a string whose `Debug` and `Display` print a mask |
//! | 0 | [`tls`] | the TLS crypto provider, installed before any HTTP client is built |
//! | 1 | [`capabilities`] | transport, token store and log, and the per-instance `HostState` (bindings, limits, observe) |
//! | 1 | `error` | [`ConnectorError`] and [`ErrorKind`] (bindings, limits) |
//! | 1 | `token` | [`AccessToken`] (bindings, secret) |
//! | 1 | `rate_limit` | [`RateLimit`], the client side of the gateway's quota, and the [`SharedBudget`] hook for a quota kept across processes (nothing) |
//! | 2 | `components` | compiling and checking connector components: [`ConnectorComponent`] (bindings, capabilities; its test checks [`WORLD`] against contract) |
//! | 3 | `connection` | [`Connection`]: the instances opened on one `.ionapi` file, each called one operation at a time (bindings, capabilities, error, limits, observe, rate_limit, token) |
//! | 4 | `engine` | [`Runtime`]: the engine, linker, epoch ticker and loaded components (bindings, capabilities, components, connection, error, limits) |
//!
//! Everything an embedder uses is re-exported here; only `capabilities`
//! (to implement a [`TokenStore`](capabilities::TokenStore) or reuse the
//! transport), `contract`, `observe`, `private_files` and `tls` (to build
//! other HTTP clients) are public modules.

mod bindings;
pub mod capabilities;
mod components;
mod connection;
pub mod contract;
mod engine;
mod error;
mod limits;
pub mod observe;
pub mod private_files;
mod rate_limit;
mod secret;
pub mod tls;
mod token;

pub use bindings::exports::ionflow::gateway::auth::{
    AuthorizationStart, ClientAuth, ConnectionInfo, Finding, Grant, Inspection,
    Options as ConnectionOptions, Severity,
};
pub use bindings::exports::ionflow::gateway::gateway::{
    Request as GatewayRequest, Response as GatewayResponse,
};
pub use bindings::ionflow::gateway::types::Method;
pub use components::{ComponentDigest, ComponentError, ConnectorComponent, WORLD};
pub use connection::Connection;
pub use engine::{EMBEDDED_CONNECTOR, Runtime, precompile_embedded};
pub use error::{ConnectorError, ErrorKind};
pub use limits::{ConnectionStats, DEFAULT_MAX_RESPONSE_BYTES, SandboxLimits};
pub use rate_limit::{RateLimit, Reservation, SharedBudget};
pub use secret::Secret;
pub use token::AccessToken;

/// Options with every setting at the connector's default.
pub fn default_options() -> ConnectionOptions {
    ConnectionOptions {
        grant: None,
        client_auth: None,
        renew_before_secs: None,
        request_timeout_ms: None,
        max_payload_bytes: None,
        saml_assertion: None,
    }
}
