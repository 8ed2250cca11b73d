//! Up to N requests of one sink in flight at once. Results are taken in the
//! order the records came, so the dead letter, the summary and a stop at a
//! page boundary read exactly as if the requests had gone one by one. An
//! optional order key keeps records of the same key from overlapping, for
//! products where a later change of an item must not overtake an earlier one.

use std::collections::VecDeque;

use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use serde_json::Value;
use tracing::Instrument as _;

use super::{Outcome, RecordError, Rejected};

/// How one request ended.
pub enum Delivered {
    Accepted {
        retried: bool,
    },
    /// The product or the network refused this record; the run goes on.
    Rejected {
        record: Value,
        error: RecordError,
        retried: bool,
    },
    /// The run cannot go on (authentication, configuration).
    Fatal(anyhow::Error),
}

pub struct InFlight {
    limit: usize,
    running: FuturesOrdered<BoxFuture<'static, Delivered>>,
    /// The order key of each running request, front first.
    keys: VecDeque<Option<String>>,
}

impl InFlight {
    pub fn new(limit: u32) -> Self {
        InFlight {
            limit: limit.max(1) as usize,
            running: FuturesOrdered::new(),
            keys: VecDeque::new(),
        }
    }

    /// Starts `request` once a slot is free and no running request has the
    /// same key. Results taken meanwhile land in `out`.
    pub async fn start(
        &mut self,
        key: Option<String>,
        request: BoxFuture<'static, Delivered>,
        out: &mut Outcome,
    ) -> anyhow::Result<()> {
        while self.running.len() >= self.limit
            || key
                .as_ref()
                .is_some_and(|k| self.keys.iter().flatten().any(|running| running == k))
        {
            self.take_next(out).await?;
        }
        // Polled later, maybe while another page is written: its call
        // belongs to the page (span) of the record it writes.
        self.running.push_back(Box::pin(request.in_current_span()));
        self.keys.push_back(key);
        Ok(())
    }

    /// Waits for every running request.
    pub async fn settle(&mut self, out: &mut Outcome) -> anyhow::Result<()> {
        while !self.running.is_empty() {
            self.take_next(out).await?;
        }
        Ok(())
    }

    async fn take_next(&mut self, out: &mut Outcome) -> anyhow::Result<()> {
        let Some(delivered) = self.running.next().await else {
            return Ok(());
        };
        self.keys.pop_front();
        match delivered {
            Delivered::Accepted { retried } => out.records_retried += u64::from(retried),
            Delivered::Rejected {
                record,
                error,
                retried,
            } => {
                out.records_retried += u64::from(retried);
                out.rejected.push(Rejected { record, error });
            }
            Delivered::Fatal(error) => {
                // Requests already sent still finish and are accounted for,
                // so that no record's outcome is lost with the run.
                while let Some(other) = self.running.next().await {
                    self.keys.pop_front();
                    if let Delivered::Rejected { record, error, .. } = other {
                        out.rejected.push(Rejected { record, error });
                    }
                }
                return Err(error);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// A request that takes `ms`, tracking how many run at once.
    fn request(
        ms: u64,
        running: &Arc<AtomicUsize>,
        peak: &Arc<AtomicUsize>,
        fail: Option<&str>,
    ) -> BoxFuture<'static, Delivered> {
        let (running, peak) = (running.clone(), peak.clone());
        let fail = fail.map(str::to_owned);
        Box::pin(async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            running.fetch_sub(1, Ordering::SeqCst);
            match fail {
                Some(name) => Delivered::Rejected {
                    record: Value::String(name),
                    error: "refused".into(),
                    retried: false,
                },
                None => Delivered::Accepted { retried: false },
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_the_limit_run_and_rejections_keep_input_order() {
        let (running, peak) = (Arc::default(), Arc::default());
        let mut window = InFlight::new(3);
        let mut out = Outcome::default();
        // The slowest requests fail first; their rejections still come out in input order.
        for (i, ms) in [50u64, 40, 30, 20, 10, 5].into_iter().enumerate() {
            let name = format!("r{i}");
            let fail = (i % 2 == 0).then_some(name.as_str());
            window
                .start(None, request(ms, &running, &peak, fail), &mut out)
                .await
                .unwrap();
        }
        window.settle(&mut out).await.unwrap();
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        let order: Vec<_> = out.rejected.iter().map(|r| r.record.clone()).collect();
        assert_eq!(order, ["r0", "r2", "r4"]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_key_never_runs_twice_at_once() {
        let (running, peak) = (Arc::default(), Arc::default());
        let mut window = InFlight::new(8);
        let mut out = Outcome::default();
        for _ in 0..4 {
            window
                .start(
                    Some("A-1".into()),
                    request(10, &running, &peak, None),
                    &mut out,
                )
                .await
                .unwrap();
        }
        window.settle(&mut out).await.unwrap();
        assert_eq!(peak.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fatal_result_waits_for_the_others_and_keeps_their_rejections() {
        let (running, peak) = (Arc::default(), Arc::default());
        let mut window = InFlight::new(4);
        let mut out = Outcome::default();
        window
            .start(
                None,
                Box::pin(async { Delivered::Fatal(anyhow::anyhow!("401 twice")) }),
                &mut out,
            )
            .await
            .unwrap();
        window
            .start(None, request(30, &running, &peak, Some("late")), &mut out)
            .await
            .unwrap();
        let error = window.settle(&mut out).await.unwrap_err();
        assert_eq!(error.to_string(), "401 twice");
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(running.load(Ordering::SeqCst), 0, "nothing left running");
    }
}
