//! Sending a call again when the gateway or network says "not now".
//!
//! A 429 was refused before it reached the product, so any call may be
//! repeated. A timeout or broken connection leaves a write's outcome unknown
//! (M3 `Add*` transactions are not idempotent), so only reads and endpoints
//! declared idempotent are repeated after one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::runtime::{Connection, ConnectorError, ErrorKind, GatewayRequest, GatewayResponse};

use super::config::RetryConfig;

/// Counters shared by the source, the sinks and the runner.
#[derive(Debug, Default)]
pub struct RunStats {
    /// Calls sent again after a 429, a 5xx or a network error.
    pub retries: AtomicU64,
    /// Plain HTTP(S) calls (gateway calls are counted by the connections).
    pub http_calls: AtomicU64,
}

impl RunStats {
    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
}

/// The longest we wait between two attempts, whatever Retry-After says.
const MAX_WAIT: Duration = Duration::from_secs(60);

pub fn backoff(policy: &RetryConfig, attempt: u32, retry_after_secs: Option<u32>) -> Duration {
    let wait = match retry_after_secs {
        Some(secs) => Duration::from_secs(secs.into()),
        None => Duration::from_millis(policy.backoff_ms.saturating_mul(1 << attempt.min(16))),
    };
    wait.min(MAX_WAIT)
}

/// Sends `request`, repeating it as the policy allows. Returns the response
/// and how many times it was sent again.
pub async fn gateway_call(
    connection: &Connection,
    request: GatewayRequest,
    policy: &RetryConfig,
    idempotent: bool,
    stats: &RunStats,
) -> Result<(GatewayResponse, u32), ConnectorError> {
    let mut attempt = 0;
    loop {
        match connection.call(request.clone()).await {
            Ok(response) => return Ok((response, attempt)),
            Err(e) => {
                let may_repeat =
                    e.kind() == ErrorKind::Unavailable && (idempotent || e.is_rate_limited());
                if !may_repeat || attempt >= policy.max_retries {
                    return Err(e);
                }
                let wait = backoff(policy, attempt, e.retry_after_secs());
                tracing::info!(
                    path = %request.path,
                    attempt = attempt + 1,
                    wait_ms = wait.as_millis() as u64,
                    "gateway unavailable ({e}); retrying"
                );
                tokio::time::sleep(wait).await;
                stats.retried();
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_honours_retry_after() {
        let p = RetryConfig {
            max_retries: 3,
            backoff_ms: 100,
        };
        assert_eq!(backoff(&p, 0, None), Duration::from_millis(100));
        assert_eq!(backoff(&p, 2, None), Duration::from_millis(400));
        assert_eq!(backoff(&p, 0, Some(2)), Duration::from_secs(2));
        assert_eq!(backoff(&p, 0, Some(3600)), MAX_WAIT);
    }
}
