//! Sending a call again when the gateway or network says "not now".
//!
//! A 429 was refused before it reached the product, so any call may be
//! repeated. A timeout or broken connection leaves a write's outcome unknown
//! (M3 `Add*` transactions are not idempotent), so only reads and endpoints
//! declared idempotent are repeated after one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ionflow_runtime::{
    Connection, ConnectorError, ErrorKind, GatewayRequest, GatewayResponse, Method,
};

use crate::config::RetryConfig;
use crate::metrics::{RetryReason, metrics};
use tracing::Instrument as _;

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

/// A call that the gateway, the product behind it or the network would
/// not complete, after the retries the policy allowed: a run that meets it
/// on a read stops with exit code 5, and a write's record goes to the dead
/// letter (outcome unknown) or stops the run (see `sinks::unanswered`).
#[derive(Debug, thiserror::Error)]
#[error("{} ({}); {}", self.reason(), times_sent(self.attempts), advice(self.status))]
pub struct Unavailable {
    /// `GET M3/m3api-rest/...` or `POST https://...`.
    pub what: String,
    /// The status that stood at the end, if an answer came.
    pub status: Option<u16>,
    /// What happened, e.g. `HTTP 503 Service Unavailable: {"error"...}`.
    pub cause: String,
    /// Times the request was sent.
    pub attempts: u32,
    /// Whether the server may have acted on the request (a 5xx or a lost
    /// answer); false for a 429 or a connection that was never made.
    pub reached: bool,
}

impl Unavailable {
    /// A 502 or 503 answer to `what`, sent `attempts` times.
    pub fn status(what: String, status: u16, body: &[u8], attempts: u32) -> Self {
        let name = match status {
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            429 => "Too Many Requests",
            _ => "",
        };
        let excerpt = crate::products::excerpt(body);
        let cause = match (name, excerpt.as_str()) {
            ("", "") => format!("HTTP {status}"),
            ("", text) => format!("HTTP {status}: {text}"),
            (name, "") => format!("HTTP {status} {name}"),
            (name, text) => format!("HTTP {status} {name}: {text}"),
        };
        Unavailable {
            what,
            status: Some(status),
            cause,
            attempts,
            reached: status != 429,
        }
    }

    /// What happened, without the advice: the dead letter's reason.
    pub fn reason(&self) -> String {
        format!("{} answered {}", self.what, self.cause)
    }
}

fn times_sent(n: u32) -> String {
    match n {
        1 => "sent once, not repeated".into(),
        n => format!("sent {n} times"),
    }
}

/// What to do about it, by status.
fn advice(status: Option<u16>) -> &'static str {
    match status {
        Some(502) => {
            "the gateway got no valid answer from the product behind it (restarting or failing): \
             run again later, and if it lasts check the product's health in Infor OS; \
             retry.max_retries and retry.max_elapsed_secs make a run wait longer"
        }
        Some(503) => {
            "the gateway or the product behind it is unavailable (maintenance or overload): run \
             again later; retry.max_retries and retry.max_elapsed_secs make a run wait longer"
        }
        Some(504) => {
            "the product did not answer within the timeout: ask for smaller pages or batches, or \
             for a longer timeout policy"
        }
        Some(429) => {
            "the quota or spike-arrest policy refused the calls: lower rate_limit, or ask the \
             administrator for a higher quota"
        }
        _ => {
            "the endpoint could not be reached: check the network and the address, and run again \
             later"
        }
    }
}

/// Why a gateway call gave no answer to read.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The connector's error: refused, unavailable, not delivered, ...
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// A 502 or 503 after the retries the policy allows (none for a write).
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

impl CallError {
    /// As an `anyhow::Error` whose chain holds the typed cause itself, so
    /// that the exit code is picked from it.
    pub fn into_anyhow(self) -> anyhow::Error {
        match self {
            CallError::Connector(e) => e.into(),
            CallError::Unavailable(e) => e.into(),
        }
    }
}

/// Sends `request`, repeating it as the policy allows. Returns the response
/// and how many times it was sent again. A 502 or 503 that stands at the
/// end is an error, never an answer for a product envelope to misread.
pub async fn gateway_call(
    connection: &Connection,
    request: GatewayRequest,
    policy: &RetryConfig,
    idempotent: bool,
    stats: &RunStats,
) -> Result<(GatewayResponse, u32), CallError> {
    let span = crate::traces::call_span(
        connection.name(),
        method_name(request.method),
        &request.path,
    );
    let mut sent = 0;
    let outcome = send(connection, request, policy, idempotent, stats, &mut sent)
        .instrument(span.clone())
        .await;
    let (status, error) = match &outcome {
        Ok((response, _)) => (Some(response.status), None),
        Err(CallError::Unavailable(e)) => (e.status, Some("unavailable")),
        Err(CallError::Connector(e)) => (e.status(), Some(kind_name(e.kind()))),
    };
    crate::traces::record_call(&span, status, sent, error);
    outcome
}

/// The error kind of a call, for its span.
fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Configuration => "configuration",
        ErrorKind::Authentication => "authentication",
        ErrorKind::Forbidden => "forbidden",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Failed => "failed",
        ErrorKind::Sandbox => "sandbox",
    }
}

/// `gateway_call`'s attempts; `sent` counts the times the request went out.
async fn send(
    connection: &Connection,
    request: GatewayRequest,
    policy: &RetryConfig,
    idempotent: bool,
    stats: &RunStats,
    sent: &mut u32,
) -> Result<(GatewayResponse, u32), CallError> {
    let started = std::time::Instant::now();
    let budget = Duration::from_secs(policy.max_elapsed_secs);
    let mut attempt = 0;
    // Shared between attempts rather than copied for each.
    let request = std::sync::Arc::new(request);
    let what = || format!("{} {}", method_name(request.method), request.path);
    loop {
        let sent_at = std::time::Instant::now();
        *sent += 1;
        let outcome = connection.call(request.clone()).await;
        // One line per call at debug level: method, path, status and time.
        // Never the query, headers or body, which may carry data or secrets.
        let method = format!("{:?}", request.method).to_uppercase();
        let ms = sent_at.elapsed().as_millis() as u64;
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
        let (reason, retry_after, why) = match &outcome {
            Ok(response) if transient(response.status) && idempotent => (
                format!("HTTP {}", response.status),
                None,
                RetryReason::ServerError,
            ),
            // A write that met a 502/503 may have been acted on: not repeated.
            Ok(response) if transient(response.status) => {
                return Err(Unavailable::status(what(), response.status, &response.body, 1).into());
            }
            Ok(_) => return Ok((outcome?, attempt)),
            // No token: nothing was sent, and asking again now would only
            // wait out the token endpoint's timeout once more.
            Err(e) if e.is_token_unavailable() => return Err(outcome.unwrap_err().into()),
            // A 429 or a connection never made did not reach the product,
            // so even a write may be sent again.
            Err(e)
                if e.kind() == ErrorKind::Unavailable
                    && (idempotent || !e.may_have_reached_product()) =>
            {
                let why = if e.is_rate_limited() {
                    RetryReason::RateLimited
                } else {
                    RetryReason::Network
                };
                (e.to_string(), e.retry_after_secs(), why)
            }
            Err(_) => return Err(outcome.unwrap_err().into()),
        };
        let wait = backoff(policy, attempt, retry_after);
        if attempt >= policy.max_retries || started.elapsed() + wait > budget {
            tracing::warn!(
                path = %request.path,
                attempts = attempt + 1,
                "giving up after {reason}"
            );
            // The last answer stands: a 5xx response, or the error.
            return match outcome {
                Ok(response) => {
                    Err(
                        Unavailable::status(what(), response.status, &response.body, attempt + 1)
                            .into(),
                    )
                }
                Err(e) => Err(e.into()),
            };
        }
        tracing::info!(
            path = %request.path,
            attempt = attempt + 1,
            wait_ms = wait.as_millis() as u64,
            "retrying after {reason}"
        );
        tokio::time::sleep(wait).await;
        stats.retried();
        metrics().retried(connection.name(), why);
        attempt += 1;
    }
}

fn method_name(method: Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
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
