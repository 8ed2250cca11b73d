//! The connector's errors, one per variant of the WIT `error`.

/// Every message names what to check or change and contains no secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    #[error("invalid .ionapi file: {0}")]
    InvalidCredentialsFile(String),
    #[error("invalid connection options: {0}")]
    InvalidOptions(String),
    /// A business call the connector will not send as asked (a path that
    /// leaves `{iu}/{ti}/`, an Authorization header of its own). The WIT
    /// contract reports it as `invalid-options`: a configuration error.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("unauthorized (401): {0}")]
    Unauthorized(String),
    #[error("forbidden (403): {0}")]
    Forbidden(String),
    #[error("invalid grant: {0}")]
    InvalidGrant(String),
    #[error("client rejected: {0}")]
    InvalidClient(String),
    #[error("rate limited (429): {message}")]
    RateLimited {
        retry_after_secs: Option<u32>,
        message: String,
    },
    #[error("gateway timeout (504): {0}")]
    GatewayTimeout(String),
    #[error(
        "request body of {size_bytes} bytes exceeds the payload limit of {limit_bytes} bytes; send smaller batches"
    )]
    PayloadTooLarge { size_bytes: u64, limit_bytes: u64 },
    #[error("transport: {0}")]
    Transport(String),
    #[error("unexpected response: {0}")]
    Protocol(String),
    #[error("token store: {0}")]
    TokenStore(String),
    #[error("not supported: {0}")]
    Unsupported(String),
}
