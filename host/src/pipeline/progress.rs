//! What a running pipeline shows on a terminal.

use super::*;

/// A progress line on a terminal once a run has taken a second, so that
/// short runs print nothing but their summary; never when output is piped.
/// It is redrawn four times a second from counters, so a run blocked in a
/// call (the rate limiter, a slow gateway) still says what it waits for.
pub(super) struct Progress {
    show: bool,
    bar: ProgressBar,
    counters: Arc<ProgressCounters>,
    connections: Vec<(String, Arc<Connection>)>,
    ticker: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct ProgressCounters {
    records_in: AtomicU64,
    records_out: AtomicU64,
    records_failed: AtomicU64,
    pages: AtomicU64,
}

const PROGRESS_AFTER: Duration = Duration::from_secs(1);

impl Progress {
    pub(super) fn new(
        show: bool,
        name: &str,
        connections: &BTreeMap<String, Arc<Connection>>,
    ) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(name.to_owned());
        let progress = Progress {
            show,
            bar,
            counters: Arc::new(ProgressCounters::default()),
            connections: connections
                .iter()
                .map(|(n, c)| (n.clone(), c.clone()))
                .collect(),
            ticker: std::sync::Mutex::new(None),
        };
        if show && tokio::runtime::Handle::try_current().is_ok() {
            let ticker = tokio::spawn(progress.tick());
            *progress
                .ticker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ticker);
        }
        progress
    }

    /// Redraws the line from the counters until the run ends.
    pub(super) fn tick(&self) -> impl std::future::Future<Output = ()> + use<> {
        let bar = self.bar.clone();
        let counters = self.counters.clone();
        let connections = self.connections.clone();
        async move {
            let started = Instant::now();
            let mut last = (Instant::now(), 0u64);
            let mut rate = 0.0;
            let mut visible = false;
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if !visible && started.elapsed() >= PROGRESS_AFTER {
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    visible = true;
                }
                let calls: u64 = connections.iter().map(|(_, c)| c.stats().requests()).sum();
                let elapsed = last.0.elapsed().as_secs_f64();
                if elapsed >= 1.0 {
                    rate = calls.saturating_sub(last.1) as f64 / elapsed;
                    last = (Instant::now(), calls);
                }
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                let mut message = format!(
                    "{} records in, {} out, {} failed · {} pages · {} calls ({:.1}/s)",
                    load(&counters.records_in),
                    load(&counters.records_out),
                    load(&counters.records_failed),
                    load(&counters.pages),
                    calls,
                    rate
                );
                if let Some(wait) = rate_limit_wait(&connections) {
                    message.push_str(" · ");
                    message.push_str(&wait);
                }
                bar.set_message(message);
            }
        }
    }

    pub(super) fn page(&self) {
        self.counters.pages.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn update(&self, summary: &Summary) {
        let c = &self.counters;
        c.records_in.store(summary.records_in, Ordering::Relaxed);
        c.records_out.store(summary.records_out, Ordering::Relaxed);
        c.records_failed
            .store(summary.records_failed, Ordering::Relaxed);
    }

    /// What the run is waiting for now, for a person who pressed Ctrl-C.
    pub(super) fn waiting_for(&self) -> String {
        rate_limit_wait(&self.connections)
            .unwrap_or_else(|| "waiting for the current page and the calls in flight".into())
    }

    /// A line for the person at the terminal, above the progress line; a
    /// warning in the log otherwise.
    pub(super) fn say(&self, message: &str) {
        if self.show {
            self.bar.suspend(|| eprintln!("ionflow: {message}"));
        } else {
            tracing::warn!("{message}");
        }
    }

    pub(super) fn finish(&self) {
        let ticker = self
            .ticker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(ticker) = ticker {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `waiting 41 s for the rate limit: 1,000 calls per 60 s (connection m3)`.
fn rate_limit_wait(connections: &[(String, Arc<Connection>)]) -> Option<String> {
    connections.iter().find_map(|(name, c)| {
        c.rate_limit_wait().map(|(left, limit)| {
            format!(
                "waiting {} s for the rate limit: {limit} (connection {name})",
                left.as_secs_f64().ceil()
            )
        })
    })
}
