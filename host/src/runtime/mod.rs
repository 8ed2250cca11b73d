//! Runs the connector component in a wasmtime sandbox and lends it the three
//! capabilities of the WIT world: transport, token store and log.

mod bindings;
pub mod capabilities;
mod components;
mod connection;
pub mod contract;
mod engine;
mod error;
mod rate_limit;
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
pub use connection::{Connection, ConnectionStats, SandboxLimits};
pub use engine::{EMBEDDED_CONNECTOR, Runtime};
pub use error::{ConnectorError, ErrorKind};
pub use rate_limit::RateLimit;
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
