//! The client side of the gateway's quota policy: a connection sends at most
//! N calls in any window (and, with smoothing, no faster than window / N),
//! so a pipeline stays under the quota instead of collecting 429s.

use std::collections::VecDeque;
use std::time::Duration;

use std::sync::Mutex;

use tokio::time::Instant;

/// Calls per window, matching an endpoint policy of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub window: Duration,
    /// Spread calls evenly (spike arrest) instead of allowing bursts.
    pub smoothing: bool,
}

impl Default for RateLimit {
    /// The gateway's default policy: 1,000 calls per 60 seconds.
    fn default() -> Self {
        RateLimit {
            requests: 1000,
            window: Duration::from_secs(60),
            smoothing: false,
        }
    }
}

/// Calls are counted when sent but arrive a little later and in a varying
/// order; a small margin keeps two ends of a window apart at the gateway too.
const SAFETY_MARGIN: Duration = Duration::from_millis(50);

pub(crate) struct Limiter {
    limit: RateLimit,
    /// A plain mutex: it is held for a few deque operations and never across
    /// an await, and an async one queued every caller behind the others
    /// (BENCHMARKS.md, P1).
    sent: Mutex<VecDeque<Instant>>,
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Limiter {
            limit: RateLimit {
                requests: limit.requests.max(1),
                ..limit
            },
            sent: Mutex::new(VecDeque::new()),
        }
    }

    /// Waits until one more call fits the policy, and counts it.
    pub(crate) async fn acquire(&self) {
        while let Some(ready_at) = self.try_acquire(Instant::now()) {
            tokio::time::sleep_until(ready_at).await;
        }
    }

    /// Counts a call sent at `now` if the policy allows it; otherwise says
    /// when to try again. Synchronous, so the lock is never held across an await.
    fn try_acquire(&self, now: Instant) -> Option<Instant> {
        let window = self.limit.window + SAFETY_MARGIN;
        let spacing = window / self.limit.requests;
        let mut sent = self
            .sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            sent.pop_front();
        }
        let mut ready_at = now;
        if sent.len() >= self.limit.requests as usize
            && let Some(oldest) = sent.front()
        {
            ready_at = ready_at.max(*oldest + window);
        }
        if self.limit.smoothing
            && let Some(last) = sent.back()
        {
            ready_at = ready_at.max(*last + spacing);
        }
        if ready_at <= now {
            sent.push_back(now);
            return None;
        }
        Some(ready_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_quota_in_any_window() {
        let limiter = Limiter::new(RateLimit {
            requests: 10,
            window: Duration::from_secs(2),
            smoothing: false,
        });
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..35 {
            limiter.acquire().await;
            times.push(start.elapsed());
        }
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(2))
                .count();
            assert!(
                in_window <= 10,
                "{in_window} calls within 2 s from call {i}"
            );
        }
        // 35 calls at 10 per (2 s + margin): the last waits three windows.
        assert!(times[34] >= Duration::from_secs(6), "{:?}", times[34]);
    }

    #[tokio::test(start_paused = true)]
    async fn smoothing_spaces_calls_evenly() {
        let limiter = Limiter::new(RateLimit {
            requests: 4,
            window: Duration::from_secs(1),
            smoothing: true,
        });
        let start = Instant::now();
        for _ in 0..3 {
            limiter.acquire().await;
        }
        assert!(start.elapsed() >= Duration::from_millis(500));
    }
}
