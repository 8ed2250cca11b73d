//! The client side of the gateway's quota policy: a connection sends at most
//! N calls in any window (and, with smoothing, no faster than window / N),
//! so a pipeline stays under the quota instead of collecting 429s.
//!
//! The limit is per process unless a [`SharedBudget`] is set: then every
//! process using the same budget (the `ionflow` workers on one PostgreSQL
//! store) draws from one quota per connection, reserving calls a batch at a
//! time so that a call is not a round trip to the budget's keeper.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
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

/// What a shared budget granted: `granted` calls that must be sent within
/// `hold` of asking; when none, try again after `retry_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub granted: u32,
    pub retry_in: Duration,
}

/// A quota kept outside this process, shared by every process that names
/// the same `key`. An implementation counts a reservation of `wanted` calls
/// (made at time t) as sent at t + `hold`, for `limit.window`, so that calls
/// sent any time before the reservation lapses stay counted for a whole
/// window after they were sent.
pub trait SharedBudget: Send + Sync + 'static {
    fn reserve<'a>(
        &'a self,
        key: &'a str,
        limit: RateLimit,
        wanted: u32,
        hold: Duration,
    ) -> BoxFuture<'a, Result<Reservation, String>>;
}

/// Calls reserved from a shared budget and not yet sent.
struct Reserved {
    calls: u32,
    /// A reservation is not used after this: the budget counted its calls
    /// as sent by then.
    until: Instant,
}

struct Shared {
    budget: Arc<dyn SharedBudget>,
    key: String,
    /// Async: callers queue on it while one of them asks the budget.
    reserved: tokio::sync::Mutex<Reserved>,
    /// The budget could not be reached: logged once, then the local limit alone.
    warned: std::sync::atomic::AtomicBool,
}

pub(crate) struct Limiter {
    limit: RateLimit,
    /// A plain mutex: it is held for a few deque operations and never across
    /// an await, and an async one queued every caller behind the others
    /// (BENCHMARKS.md, P1).
    sent: Mutex<VecDeque<Instant>>,
    shared: Option<Shared>,
    /// Until when the latest caller waits, for progress displays; `None`
    /// while no one waits. A plain mutex: held for a read or a write only.
    waiting_until: Mutex<Option<Instant>>,
}

/// How many calls one round trip to a shared budget reserves: a tenth of
/// the quota, so several workers share it finely, at most 100.
fn batch(limit: &RateLimit) -> u32 {
    (limit.requests / 10).clamp(1, 100)
}

/// How long reserved calls may wait to be sent: a tenth of the window,
/// between 100 ms and 5 s. Longer holds mean fewer round trips but calls
/// counted earlier than sent.
fn hold(limit: &RateLimit) -> Duration {
    (limit.window / 10).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Limiter {
            limit: RateLimit {
                requests: limit.requests.max(1),
                ..limit
            },
            sent: Mutex::new(VecDeque::new()),
            shared: None,
            waiting_until: Mutex::new(None),
        }
    }

    /// Also draws every call from `budget` under `key`.
    pub(crate) fn shared(limit: RateLimit, budget: Arc<dyn SharedBudget>, key: String) -> Self {
        Limiter {
            shared: Some(Shared {
                budget,
                key,
                reserved: tokio::sync::Mutex::new(Reserved {
                    calls: 0,
                    until: Instant::now(),
                }),
                warned: std::sync::atomic::AtomicBool::new(false),
            }),
            ..Limiter::new(limit)
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

    /// Waits until one more call fits the policy (and the shared budget,
    /// when there is one), and counts it.
    pub(crate) async fn acquire(&self) {
        self.acquire_local().await;
        if let Some(shared) = &self.shared {
            self.acquire_shared(shared).await;
        }
    }

    /// One call from the shared budget: from this process's reservation,
    /// else from a new one. Callers queue on the reservation, so one round
    /// trip serves them all.
    async fn acquire_shared(&self, shared: &Shared) {
        use std::sync::atomic::Ordering;
        let mut reserved = shared.reserved.lock().await;
        loop {
            let now = Instant::now();
            if reserved.calls > 0 && now < reserved.until {
                reserved.calls -= 1;
                return;
            }
            let hold = hold(&self.limit);
            // Measured before asking: the budget's clock counts from later.
            let until = now + hold;
            match shared
                .budget
                .reserve(
                    &shared.key,
                    RateLimit {
                        window: self.limit.window + SAFETY_MARGIN,
                        ..self.limit
                    },
                    batch(&self.limit),
                    hold,
                )
                .await
            {
                Ok(r) if r.granted > 0 => {
                    *reserved = Reserved {
                        calls: r.granted,
                        until,
                    };
                    shared.warned.store(false, Ordering::Relaxed);
                }
                Ok(r) => {
                    let wait = r
                        .retry_in
                        .clamp(Duration::from_millis(10), self.limit.window + SAFETY_MARGIN);
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    // The budget's keeper is down: this process's own limit
                    // still holds, and a 429 is retried.
                    if !shared.warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            key = %shared.key,
                            "the shared rate-limit budget is unreachable; using this process's limit alone: {e}"
                        );
                    }
                    return;
                }
            }
        }
    }

    async fn acquire_local(&self) {
        while let Some(ready_at) = self.try_acquire(Instant::now()) {
            let wait = ready_at.saturating_duration_since(Instant::now());
            // A wait a person would notice is said, with the policy behind it.
            if wait >= Duration::from_secs(1) {
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
            drop(sent);
            // Another caller may still wait for a later time.
            let mut waiting = self
                .waiting_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if waiting.is_some_and(|until| until <= now) {
                *waiting = None;
            }
            return None;
        }
        Some(ready_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory budget counting as the trait asks, for the limiter's logic.
    struct Counted {
        grants: std::sync::Mutex<Vec<(Instant, u32)>>,
        asked: std::sync::atomic::AtomicU32,
    }

    impl SharedBudget for Counted {
        fn reserve<'a>(
            &'a self,
            _key: &'a str,
            limit: RateLimit,
            wanted: u32,
            hold: Duration,
        ) -> BoxFuture<'a, Result<Reservation, String>> {
            Box::pin(async move {
                self.asked
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let now = Instant::now();
                let mut grants = self.grants.lock().unwrap();
                grants.retain(|(until, _)| *until > now);
                let used: u32 = grants.iter().map(|g| g.1).sum();
                let n = wanted.min(limit.requests.saturating_sub(used));
                if n == 0 {
                    let oldest = grants.iter().map(|g| g.0).min().unwrap_or(now);
                    return Ok(Reservation {
                        granted: 0,
                        retry_in: oldest - now,
                    });
                }
                grants.push((now + hold + limit.window, n));
                Ok(Reservation {
                    granted: n,
                    retry_in: Duration::ZERO,
                })
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn limiters_sharing_a_budget_stay_under_one_quota_together() {
        let budget = Arc::new(Counted {
            grants: Default::default(),
            asked: Default::default(),
        });
        let limit = RateLimit {
            requests: 20,
            window: Duration::from_secs(2),
            smoothing: false,
        };
        let limiters: Vec<Arc<Limiter>> = (0..3)
            .map(|_| Arc::new(Limiter::shared(limit, budget.clone(), "k".into())))
            .collect();
        let start = Instant::now();
        let times = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks: Vec<_> = limiters
            .iter()
            .map(|l| {
                let (l, times) = (l.clone(), times.clone());
                tokio::spawn(async move {
                    for _ in 0..30 {
                        l.acquire().await;
                        times.lock().unwrap().push(start.elapsed());
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut times = times.lock().unwrap().clone();
        times.sort();
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(2))
                .count();
            assert!(
                in_window <= 20,
                "{in_window} calls within 2 s from call {i}"
            );
        }
        // Batches of two: far fewer round trips than calls.
        let asked = budget.asked.load(std::sync::atomic::Ordering::Relaxed);
        assert!(asked < 90, "{asked} round trips for 90 calls");
    }

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
