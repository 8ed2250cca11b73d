//! The client side of the gateway's quota policy: a connection sends at most
//! N calls in any window (and, with smoothing, no faster than window / N),
//! so a pipeline stays under the quota instead of collecting 429s.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::Mutex;
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

impl std::fmt::Display for RateLimit {
    /// `1,000 calls per 60 s`, as a progress line or a log names the policy.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = self.requests.to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(c);
        }
        let window = self.window.as_secs_f64();
        if window.fract() == 0.0 {
            write!(f, "{grouped} calls per {window} s")
        } else {
            write!(f, "{grouped} calls per {window:.1} s")
        }
    }
}

/// Calls are counted when sent but arrive a little later and in a varying
/// order; a small margin keeps two ends of a window apart at the gateway too.
const SAFETY_MARGIN: Duration = Duration::from_millis(50);

pub(crate) struct Limiter {
    limit: RateLimit,
    sent: Mutex<VecDeque<Instant>>,
    /// Until when the latest caller waits, for progress displays; `None`
    /// while no one waits. A plain mutex: held for a read or a write only.
    waiting_until: std::sync::Mutex<Option<Instant>>,
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Limiter {
            limit: RateLimit {
                requests: limit.requests.max(1),
                ..limit
            },
            sent: Mutex::new(VecDeque::new()),
            waiting_until: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }

    /// How much longer the current wait lasts, if a call is waiting.
    pub(crate) fn waiting(&self) -> Option<std::time::Duration> {
        let until = (*self
            .waiting_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))?;
        Some(until.saturating_duration_since(Instant::now()))
    }

    fn wait_until(&self, until: Instant) {
        let mut waiting = self
            .waiting_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *waiting = Some(waiting.map_or(until, |other| other.max(until)));
    }

    /// Waits until one more call fits the policy, and counts it.
    pub(crate) async fn acquire(&self) {
        let window = self.limit.window + SAFETY_MARGIN;
        let spacing = window / self.limit.requests;
        loop {
            let mut sent = self.sent.lock().await;
            let now = Instant::now();
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
                // Another caller may still wait for a later time.
                let mut waiting = self
                    .waiting_until
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if waiting.is_some_and(|until| until <= now) {
                    *waiting = None;
                }
                return;
            }
            drop(sent);
            let wait = ready_at - now;
            // A wait a person would notice is said, with the policy behind it.
            if wait >= std::time::Duration::from_secs(1) {
                tracing::info!(
                    wait_secs = wait.as_secs(),
                    "waiting {} s for the rate limit: {}",
                    wait.as_secs_f64().ceil(),
                    self.limit
                );
            }
            self.wait_until(ready_at);
            tokio::time::sleep_until(ready_at).await;
        }
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

    #[test]
    fn the_policy_reads_as_a_person_writes_it() {
        assert_eq!(RateLimit::default().to_string(), "1,000 calls per 60 s");
        let odd = RateLimit {
            requests: 1234567,
            window: Duration::from_millis(1500),
            smoothing: false,
        };
        assert_eq!(odd.to_string(), "1,234,567 calls per 1.5 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_is_visible_while_it_lasts() {
        let limiter = std::sync::Arc::new(Limiter::new(RateLimit {
            requests: 1,
            window: Duration::from_secs(10),
            smoothing: false,
        }));
        limiter.acquire().await;
        assert_eq!(limiter.waiting(), None);
        let waiter = tokio::spawn({
            let limiter = limiter.clone();
            async move { limiter.acquire().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let left = limiter.waiting().expect("a call is waiting");
        assert!(
            left > Duration::from_secs(8) && left <= Duration::from_secs(10),
            "{left:?}"
        );
        waiter.await.unwrap();
        assert_eq!(limiter.waiting(), None);
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
