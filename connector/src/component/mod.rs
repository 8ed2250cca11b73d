//! Binds the connector to the `ionflow:gateway/connector` world.

mod capabilities;
mod session;

wit_bindgen::generate!({
    world: "connector",
    path: "../wit",
});

use exports::ionflow::gateway::auth;
use exports::ionflow::gateway::gateway;
use ionflow::gateway::types;

use crate::error::ConnectorError;
use session::Session;

struct Component;

impl auth::Guest for Component {
    type Connection = Session;

    fn inspect(ionapi_json: String) -> auth::Inspection {
        session::inspect(&ionapi_json)
    }
}

impl gateway::Guest for Component {
    fn call(
        conn: auth::ConnectionBorrow<'_>,
        request: gateway::Request,
    ) -> Result<gateway::Response, types::Error> {
        conn.get::<Session>().call(request).map_err(Into::into)
    }
}

impl From<ConnectorError> for types::Error {
    fn from(e: ConnectorError) -> Self {
        use types::Error as W;
        let message = e.to_string();
        match e {
            ConnectorError::InvalidCredentialsFile(_) => W::InvalidCredentialsFile(message),
            ConnectorError::InvalidOptions(_) | ConnectorError::InvalidRequest(_) => {
                W::InvalidOptions(message)
            }
            ConnectorError::Unauthorized(_) => W::Unauthorized(message),
            ConnectorError::Forbidden(_) => W::Forbidden(message),
            ConnectorError::InvalidGrant(_) => W::InvalidGrant(message),
            ConnectorError::InvalidClient(_) => W::InvalidClient(message),
            ConnectorError::RateLimited {
                retry_after_secs, ..
            } => W::RateLimited(types::RateLimit {
                retry_after_secs,
                message,
            }),
            ConnectorError::GatewayTimeout(_) => W::GatewayTimeout(message),
            ConnectorError::PayloadTooLarge {
                size_bytes,
                limit_bytes,
            } => W::PayloadTooLarge(types::PayloadLimit {
                size_bytes,
                limit_bytes,
            }),
            ConnectorError::Transport(_) => W::Transport(message),
            ConnectorError::Protocol(_) => W::Protocol(message),
            ConnectorError::TokenStore(_) => W::TokenStore(message),
            ConnectorError::Unsupported(_) => W::Unsupported(message),
        }
    }
}

export!(Component);
