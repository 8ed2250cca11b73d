//! The sandbox's limits and counters: the bounds each connector instance
//! runs under, the epoch tick its deadlines are counted in, and what a
//! connection's instances did on the network.
//!
//! This module sits at the bottom of the crate: it imports no other module
//! of it, so the capabilities, errors, connections and the engine can all
//! share these types without importing each other.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often the engine's epoch advances; guest deadlines are counted in
/// these ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Epoch ticks for a deadline. The ticker's next tick may come at once, so
/// one tick more than the deadline holds: a call is never stopped before
/// its deadline (nor before its first instruction), and at most one tick
/// after it.
pub(crate) fn epoch_ticks(deadline: Duration) -> u64 {
    (deadline.as_millis().div_ceil(EPOCH_TICK.as_millis()) + 1) as u64
}

/// The largest response body the transport reads by default (512 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 512 * 1024 * 1024;

/// Bounds for each connector instance: what one call may use before it is
/// stopped, so that a runaway or crashing connector fails that call alone.
#[derive(Debug, Clone, Copy)]
pub struct SandboxLimits {
    /// Linear memory of one instance.
    pub memory_bytes: usize,
    /// Wall-clock time one export call may run. `None` derives it from the
    /// connection's request timeout (room for a wait on another caller's
    /// token request, two token requests and two business calls).
    pub call_deadline: Option<Duration>,
    /// The largest response body the transport reads for the connector;
    /// a larger one is refused as it streams in (Content-Length or not).
    pub response_bytes: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        // The connector holds one request and one response at a time; bodies
        // up to the gateway's payload limit fit with room to spare.
        SandboxLimits {
            memory_bytes: 256 * 1024 * 1024,
            call_deadline: None,
            response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

impl SandboxLimits {
    /// The deadline of one export call on a connection with the given
    /// request timeout (the connector's default of 60 s when `None`).
    pub(crate) fn deadline(&self, request_timeout_ms: Option<u32>) -> Duration {
        self.call_deadline.unwrap_or_else(|| {
            let timeout_ms = u64::from(request_timeout_ms.unwrap_or(60_000));
            Duration::from_millis(6 * timeout_ms + 30_000)
        })
    }
}

/// What the connector did on the network, for run summaries.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    pub requests: AtomicU64,
    pub token_requests: AtomicU64,
    refusals: AtomicU64,
    /// Answers the transport stopped reading at the response cap.
    oversized: AtomicU64,
    pub(crate) token_url: OnceLock<String>,
}

impl ConnectionStats {
    pub(crate) fn record(&self, url: &str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if self.token_url.get().is_some_and(|t| t == url) {
            self.token_requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn record_refusal(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_oversized(&self) {
        self.oversized.fetch_add(1, Ordering::Relaxed);
    }

    /// Answers refused because their body exceeded the response cap.
    pub fn oversized(&self) -> u64 {
        self.oversized.load(Ordering::Relaxed)
    }

    /// Requests the transport refused: their host is not in the `.ionapi`
    /// file, or their path would leave the tenant.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::Relaxed)
    }
}

/// What one export call did on the network, so that its error can say
/// whether the request reached the product and, when it did not, why.
/// Kept per connector instance and reset before each call.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CallTrace {
    /// Exchanges with the token endpoint during the call.
    pub(crate) token_exchanges: u32,
    /// A business request went out and the product may have seen it: it
    /// was answered with a status other than 401 (the gateway's own
    /// refusal), or its answer was lost after it was sent.
    pub(crate) reached_product: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_derives_from_the_request_timeout_unless_set() {
        let limits = SandboxLimits::default();
        assert_eq!(limits.deadline(None), Duration::from_millis(390_000));
        assert_eq!(limits.deadline(Some(1_000)), Duration::from_millis(36_000));
        let fixed = SandboxLimits {
            call_deadline: Some(Duration::from_millis(5)),
            ..limits
        };
        assert_eq!(fixed.deadline(Some(1_000)), Duration::from_millis(5));
    }

    #[test]
    fn a_deadline_is_never_cut_short_by_the_first_tick() {
        // The first tick may come at once: one tick more than the deadline.
        assert_eq!(epoch_ticks(Duration::ZERO), 1);
        assert_eq!(epoch_ticks(EPOCH_TICK * 7), 8);
        assert_eq!(epoch_ticks(EPOCH_TICK * 7 + Duration::from_millis(1)), 9);
    }

    #[test]
    fn token_requests_are_counted_once_the_token_url_is_known() {
        let stats = ConnectionStats::default();
        stats.record("https://sso.example/as/token.oauth2");
        let _ = stats
            .token_url
            .set("https://sso.example/as/token.oauth2".into());
        stats.record("https://sso.example/as/token.oauth2");
        stats.record("https://ion.example/T/M3/m3api-rest");
        stats.record_refusal();
        assert_eq!(stats.requests(), 3);
        assert_eq!(stats.token_requests(), 1);
        assert_eq!(stats.refusals(), 1);
    }
}
