//! Sending a call again when the gateway or network says "not now".
//!
//! A 429 was refused before it reached the product, so any call may be
//! repeated. A timeout or broken connection leaves a write's outcome unknown
//! (M3 `Add*` transactions are not idempotent), so only reads and endpoints
//! declared idempotent are repeated after one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ionflow_runtime::{Connection, ConnectorError, ErrorKind, GatewayRequest, GatewayResponse};

use crate::config::RetryConfig;

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

/// The ceiling of the wait before retry `attempt` (0-based).
fn ceiling(policy: &RetryConfig, attempt: u32) -> Duration {
    Duration::from_millis(policy.backoff_ms.saturating_mul(1 << attempt.min(16))).min(MAX_WAIT)
}

/// `Retry-After` when the gateway sent one; else exponential backoff with
/// full jitter (a random wait below the ceiling), so that many clients
/// refused at once do not come back at once.
pub fn backoff(policy: &RetryConfig, attempt: u32, retry_after_secs: Option<u32>) -> Duration {
    match retry_after_secs {
        Some(secs) => Duration::from_secs(secs.into()).min(MAX_WAIT),
        None => {
            let ceiling = ceiling(policy, attempt).as_millis() as u64;
            Duration::from_millis(fastrand::u64(0..=ceiling))
        }
    }
}

/// Statuses the gateway answers when the product behind it is briefly
/// unavailable; like a timeout, they leave a write's outcome unknown.
fn transient(status: u16) -> bool {
    matches!(status, 502 | 503)
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
    let started = std::time::Instant::now();
    let budget = Duration::from_secs(policy.max_elapsed_secs);
    let mut attempt = 0;
    loop {
        let sent = std::time::Instant::now();
        let outcome = connection.call(request.clone()).await;
        // One line per call at debug level: method, path, status and time.
        // Never the query, headers or body, which may carry data or secrets.
        let method = format!("{:?}", request.method).to_uppercase();
        let ms = sent.elapsed().as_millis() as u64;
        match &outcome {
            Ok(response) => tracing::debug!(
                connection = connection.name(),
                "{method} {} -> {} in {ms} ms",
                request.path,
                response.status
            ),
            Err(e) => tracing::debug!(
                connection = connection.name(),
                "{method} {} -> failed in {ms} ms: {}",
                request.path,
                format!("{:?}", e.kind())
            ),
        }
        let (reason, retry_after) = match &outcome {
            Ok(response) if transient(response.status) && idempotent => {
                (format!("HTTP {}", response.status), None)
            }
            Ok(_) => return outcome.map(|response| (response, attempt)),
            Err(e) if e.kind() == ErrorKind::Unavailable && (idempotent || e.is_rate_limited()) => {
                (e.to_string(), e.retry_after_secs())
            }
            Err(_) => return outcome.map(|response| (response, attempt)),
        };
        let wait = backoff(policy, attempt, retry_after);
        if attempt >= policy.max_retries || started.elapsed() + wait > budget {
            tracing::warn!(
                path = %request.path,
                attempts = attempt + 1,
                "giving up after {reason}"
            );
            // The last answer stands: a 5xx response, or the error.
            return outcome.map(|response| (response, attempt));
        }
        tracing::info!(
            path = %request.path,
            attempt = attempt + 1,
            wait_ms = wait.as_millis() as u64,
            "retrying after {reason}"
        );
        tokio::time::sleep(wait).await;
        stats.retried();
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_full_jitter_and_honours_retry_after() {
        let p = RetryConfig {
            max_retries: 3,
            backoff_ms: 100,
            max_elapsed_secs: 300,
        };
        let waits: Vec<Duration> = (0..200).map(|_| backoff(&p, 2, None)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(400)));
        assert!(
            waits.iter().any(|w| *w < Duration::from_millis(200)),
            "waits are spread below the ceiling"
        );
        assert_eq!(ceiling(&p, 0), Duration::from_millis(100));
        assert_eq!(ceiling(&p, 30), MAX_WAIT);
        assert_eq!(backoff(&p, 0, Some(2)), Duration::from_secs(2));
        assert_eq!(backoff(&p, 0, Some(3600)), MAX_WAIT);
    }
}
