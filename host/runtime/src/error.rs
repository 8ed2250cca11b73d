//! Errors of calls into the connector.

use std::time::Duration;

use wasmtime::Trap;

use super::bindings::ionflow::gateway::types::Error as WitError;
use super::limits::SandboxLimits;

/// What went wrong, coarsely, so that the CLI can pick an exit code and the
/// pipeline can decide whether to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The `.ionapi` file or the connection options are wrong.
    Configuration,
    /// The identity provider or the gateway refused the credentials or token.
    Authentication,
    /// 403: a scope or role is missing.
    Forbidden,
    /// 429, 504, transport failures: the call may succeed later.
    Unavailable,
    /// Garbled answers, refused payloads, store failures, unsupported operations.
    Failed,
    /// The connector itself trapped or ran out of its limits.
    Sandbox,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// An error the connector reported through the WIT `error` variant.
    #[error("{}", message(.0))]
    Gateway(WitError),
    /// The host refused a request: to a host not named in the `.ionapi`
    /// file, or to a path outside the tenant. The message says which.
    #[error("{0}")]
    Refused(String),
    /// The connector trapped (a bug, a memory limit or its deadline).
    #[error("the connector failed and was stopped: {0}")]
    Sandbox(String),
    /// The call's request never reached the product: no access token could
    /// be obtained from `token_endpoint`, or (when it is `None`) no
    /// connection to the gateway could be made. Nothing was sent, so the
    /// call may be made again without risk.
    #[error("{}", not_delivered(.token_endpoint.as_deref(), .cause))]
    NotDelivered {
        token_endpoint: Option<String>,
        cause: WitError,
    },
}

fn not_delivered(token_endpoint: Option<&str>, cause: &WitError) -> String {
    match token_endpoint {
        Some(endpoint) => format!(
            "no access token could be obtained from the token endpoint {endpoint}, so nothing \
             was sent to the gateway ({}). Check that this machine reaches the identity \
             service (`pu` and `ot` in the .ionapi file) and run again when it answers",
            message(cause)
        ),
        None => format!(
            "{}; the request did not reach the gateway, so nothing was sent",
            message(cause)
        ),
    }
}

impl ConnectorError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConnectorError::Sandbox(_) => ErrorKind::Sandbox,
            ConnectorError::Refused(_) => ErrorKind::Configuration,
            ConnectorError::NotDelivered { .. } => ErrorKind::Unavailable,
            ConnectorError::Gateway(e) => match e {
                WitError::InvalidCredentialsFile(_) | WitError::InvalidOptions(_) => {
                    ErrorKind::Configuration
                }
                WitError::Unauthorized(_)
                | WitError::InvalidGrant(_)
                | WitError::InvalidClient(_) => ErrorKind::Authentication,
                WitError::Forbidden(_) => ErrorKind::Forbidden,
                WitError::RateLimited(_) | WitError::GatewayTimeout(_) | WitError::Transport(_) => {
                    ErrorKind::Unavailable
                }
                WitError::PayloadTooLarge(_)
                | WitError::Protocol(_)
                | WitError::TokenStore(_)
                | WitError::Unsupported(_) => ErrorKind::Failed,
            },
        }
    }

    /// Whether the product may have seen the request: it was sent and its
    /// answer was lost (a timeout, a broken connection, a 504), or the
    /// connector stopped midway. False for refusals the gateway gives itself
    /// (401, 403, 413, 429) and for requests that were never sent, so a
    /// write that failed that way did not happen.
    pub fn may_have_reached_product(&self) -> bool {
        match self {
            ConnectorError::Sandbox(_) => true,
            ConnectorError::Refused(_) | ConnectorError::NotDelivered { .. } => false,
            ConnectorError::Gateway(e) => {
                matches!(e, WitError::GatewayTimeout(_) | WitError::Transport(_))
            }
        }
    }

    /// No access token could be obtained: the token endpoint failed or did
    /// not answer, so nothing was sent. A run stops at once on this.
    pub fn is_token_unavailable(&self) -> bool {
        matches!(
            self,
            ConnectorError::NotDelivered {
                token_endpoint: Some(_),
                ..
            }
        )
    }

    /// A 429: the gateway refused the call before it reached the product,
    /// so even a write may be sent again.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, ConnectorError::Gateway(WitError::RateLimited(_)))
    }

    /// The HTTP status the gateway answered, when the error stands for one
    /// (401 after a renewed token, 403, 429, 504). A payload over the limit
    /// is refused before it is sent, so it has none.
    pub fn status(&self) -> Option<u16> {
        match self {
            ConnectorError::Gateway(e) => match e {
                WitError::Unauthorized(_) => Some(401),
                WitError::Forbidden(_) => Some(403),
                WitError::RateLimited(_) => Some(429),
                WitError::GatewayTimeout(_) => Some(504),
                _ => None,
            },
            _ => None,
        }
    }

    /// Seconds the gateway asked us to wait, for a 429.
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            ConnectorError::Gateway(WitError::RateLimited(r)) => r.retry_after_secs,
            _ => None,
        }
    }

    /// Names the limit a trapped call ran into, so that the message says
    /// what happened rather than quoting a bare wasm trap.
    pub(super) fn trap(
        e: wasmtime::Error,
        connection: &str,
        limits: &SandboxLimits,
        deadline: Duration,
    ) -> Self {
        let detail = format!("{e:#}");
        let cause = if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            format!(
                "it ran past its deadline of {} ms for one call and was interrupted",
                deadline.as_millis()
            )
        } else if detail.contains("growing memory") {
            format!(
                "it tried to grow its memory beyond the limit of {} MiB",
                limits.memory_bytes / (1024 * 1024)
            )
        } else {
            format!("it trapped ({detail})")
        };
        ConnectorError::Sandbox(format!("connection `{connection}`: {cause}"))
    }
}

fn message(e: &WitError) -> String {
    match e {
        WitError::InvalidCredentialsFile(m)
        | WitError::InvalidOptions(m)
        | WitError::Unauthorized(m)
        | WitError::Forbidden(m)
        | WitError::InvalidGrant(m)
        | WitError::InvalidClient(m)
        | WitError::GatewayTimeout(m)
        | WitError::Transport(m)
        | WitError::Protocol(m)
        | WitError::TokenStore(m)
        | WitError::Unsupported(m) => m.clone(),
        WitError::RateLimited(r) => match r.retry_after_secs {
            Some(s) => format!("{} (retry after {s} s)", r.message),
            None => r.message.clone(),
        },
        // The connector refuses a body over its own limit before sending;
        // a body within it that still comes back 413 was refused by the gateway.
        WitError::PayloadTooLarge(p) if p.size_bytes > p.limit_bytes => format!(
            "request body of {} bytes exceeds the payload limit of {} bytes (the connection's \
             max_payload_bytes), so it was not sent; send smaller records or batches",
            p.size_bytes, p.limit_bytes
        ),
        WitError::PayloadTooLarge(p) => format!(
            "the gateway refused the request body of {} bytes with HTTP 413 Payload Too Large: \
             this endpoint's limit is lower than that (the gateway's policy, not ionflow's \
             max_payload_bytes); send smaller records or batches, or ask the administrator \
             about the endpoint's payload limit",
            p.size_bytes
        ),
    }
}
