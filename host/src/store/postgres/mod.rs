//! The PostgreSQL backend, for several `ionflow serve` workers: tokens
//! (`tokens.rs`), the shared rate-limit budget (`budget.rs`), watermarks,
//! and schedule leases: a row per claimed tick
//! whose primary key makes the claim happen once and whose expiry hands a
//! dead worker's run to another.

mod budget;
mod db;
mod holders;
mod migrate;
mod tokens;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use super::holders::GrantHolders;
use super::{Claim, LapsedRun, MaskedUrl, Result, RunState, ScheduleStatus, Storage, TickLease};
use db::Db;
use holders::PostgresHolders;
use ionflow_runtime::SharedBudget;
use ionflow_runtime::capabilities::TokenStore;
pub use tokens::PostgresTokenStore;

pub struct PostgresStorage {
    db: Arc<Db>,
    tokens: Arc<PostgresTokenStore>,
    worker: String,
}

impl PostgresStorage {
    /// Connects and applies any pending migration.
    pub async fn connect(url: &MaskedUrl, worker: &str) -> Result<Self> {
        let db = Arc::new(Db::connect(url).await?);
        migrate::migrate(&db).await?;
        Ok(PostgresStorage {
            tokens: Arc::new(PostgresTokenStore::new(db.clone(), worker)),
            db,
            worker: worker.to_owned(),
        })
    }
}

impl Storage for PostgresStorage {
    fn describe(&self) -> String {
        format!("PostgreSQL {}", self.db.url())
    }

    fn shared(&self) -> bool {
        true
    }

    fn tokens(&self) -> Arc<dyn TokenStore> {
        self.tokens.clone()
    }

    fn grant_holders(&self, lease: std::time::Duration) -> Arc<dyn GrantHolders> {
        Arc::new(PostgresHolders::new(self.db.clone(), &self.worker, lease))
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| self.db.failed("answering a probe", e))?;
            Ok(())
        })
    }

    fn rate_budget(&self) -> Option<Arc<dyn SharedBudget>> {
        Some(Arc::new(budget::PostgresBudget::new(self.db.clone())))
    }

    fn load_state<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            let row = client
                .query_opt(
                    "SELECT value FROM ionflow_pipeline_state WHERE key = $1",
                    &[&key],
                )
                .await
                .map_err(|e| self.db.failed("reading pipeline state", e))?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn save_state<'a>(&'a self, key: &'a str, json: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            client
                .execute(
                    "INSERT INTO ionflow_pipeline_state (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()",
                    &[&key, &json],
                )
                .await
                .map_err(|e| self.db.failed("saving pipeline state", e))?;
            Ok(())
        })
    }

    fn record_schedule<'a>(
        &'a self,
        pipeline: &'a str,
        file: &'a str,
        schedule: &'a str,
        next_run: Option<DateTime<Utc>>,
        worker: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            client
                .execute(
                    "INSERT INTO ionflow_schedules (pipeline, file, schedule, next_run, updated_by)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (pipeline) DO UPDATE SET file = excluded.file,
                         schedule = excluded.schedule, next_run = excluded.next_run,
                         updated_by = excluded.updated_by, updated_at = now()",
                    &[&pipeline, &file, &schedule, &next_run, &worker],
                )
                .await
                .map_err(|e| self.db.failed("recording a schedule", e))?;
            Ok(())
        })
    }

    fn claim<'a>(
        &'a self,
        pipeline: &'a str,
        tick: DateTime<Utc>,
        worker: &'a str,
        lease_secs: f64,
    ) -> BoxFuture<'a, Result<Claim>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            // The primary key admits one claim per tick; the NOT EXISTS keeps
            // a tick from starting while another run holds a live lease.
            let claimed = client
                .query_opt(
                    "INSERT INTO ionflow_runs
                         (pipeline, tick, state, worker, attempts, lease_expires_at, started_at)
                     SELECT $1, $2, 'running', $3, 1, now() + make_interval(secs => $4), now()
                     WHERE NOT EXISTS (SELECT 1 FROM ionflow_runs
                         WHERE pipeline = $1 AND state = 'running' AND lease_expires_at > now())
                     ON CONFLICT (pipeline, tick) DO NOTHING
                     RETURNING attempts",
                    &[&pipeline, &tick, &worker, &lease_secs],
                )
                .await
                .map_err(|e| self.db.failed("claiming a tick", e))?;
            if claimed.is_some() {
                return Ok(Claim::Claimed(TickLease {
                    pipeline: pipeline.to_owned(),
                    tick,
                    worker: worker.to_owned(),
                    attempt: 1,
                }));
            }
            let same_tick = client
                .query_opt(
                    "SELECT worker FROM ionflow_runs WHERE pipeline = $1 AND tick = $2",
                    &[&pipeline, &tick],
                )
                .await
                .map_err(|e| self.db.failed("reading a claim", e))?;
            if let Some(row) = same_tick {
                return Ok(Claim::TakenBy(row.get(0)));
            }
            let holder = client
                .query_opt(
                    "SELECT worker FROM ionflow_runs WHERE pipeline = $1 AND state = 'running'
                     AND lease_expires_at > now() ORDER BY tick DESC LIMIT 1",
                    &[&pipeline],
                )
                .await
                .map_err(|e| self.db.failed("reading a claim", e))?;
            Ok(Claim::Busy(
                holder.map_or_else(|| "another worker".to_owned(), |r| r.get(0)),
            ))
        })
    }

    fn renew<'a>(&'a self, lease: &'a TickLease, lease_secs: f64) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            let n = client
                .execute(
                    "UPDATE ionflow_runs SET lease_expires_at = now() + make_interval(secs => $5)
                     WHERE pipeline = $1 AND tick = $2 AND worker = $3 AND attempts = $4
                       AND state = 'running'",
                    &[
                        &lease.pipeline,
                        &lease.tick,
                        &lease.worker,
                        &lease.attempt,
                        &lease_secs,
                    ],
                )
                .await
                .map_err(|e| self.db.failed("renewing a lease", e))?;
            Ok(n == 1)
        })
    }

    fn finish<'a>(
        &'a self,
        lease: &'a TickLease,
        state: RunState,
        error: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            client
                .execute(
                    "UPDATE ionflow_runs SET state = $5, error = $6, finished_at = now(),
                         lease_expires_at = now()
                     WHERE pipeline = $1 AND tick = $2 AND worker = $3 AND attempts = $4
                       AND state = 'running'",
                    &[
                        &lease.pipeline,
                        &lease.tick,
                        &lease.worker,
                        &lease.attempt,
                        &state.as_str(),
                        &error,
                    ],
                )
                .await
                .map_err(|e| self.db.failed("recording the end of a run", e))?;
            Ok(())
        })
    }

    fn lapsed<'a>(&'a self, pipeline: &'a str) -> BoxFuture<'a, Result<Vec<LapsedRun>>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            let rows = client
                .query(
                    "SELECT tick, worker, attempts FROM ionflow_runs
                     WHERE pipeline = $1 AND state = 'running' AND lease_expires_at <= now()
                     ORDER BY tick",
                    &[&pipeline],
                )
                .await
                .map_err(|e| self.db.failed("looking for lapsed leases", e))?;
            Ok(rows
                .iter()
                .map(|r| LapsedRun {
                    tick: r.get(0),
                    worker: r.get(1),
                    attempts: r.get(2),
                })
                .collect())
        })
    }

    fn take_over<'a>(
        &'a self,
        pipeline: &'a str,
        lapsed: &'a LapsedRun,
        worker: &'a str,
        lease_secs: f64,
    ) -> BoxFuture<'a, Result<Option<TickLease>>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            let row = client
                .query_opt(
                    "UPDATE ionflow_runs SET worker = $5, attempts = attempts + 1,
                         lease_expires_at = now() + make_interval(secs => $6), started_at = now()
                     WHERE pipeline = $1 AND tick = $2 AND worker = $3 AND attempts = $4
                       AND state = 'running' AND lease_expires_at <= now()
                       AND NOT EXISTS (SELECT 1 FROM ionflow_runs o WHERE o.pipeline = $1
                           AND o.state = 'running' AND o.lease_expires_at > now())
                     RETURNING attempts",
                    &[
                        &pipeline,
                        &lapsed.tick,
                        &lapsed.worker,
                        &lapsed.attempts,
                        &worker,
                        &lease_secs,
                    ],
                )
                .await
                .map_err(|e| self.db.failed("taking over a lapsed lease", e))?;
            Ok(row.map(|r| TickLease {
                pipeline: pipeline.to_owned(),
                tick: lapsed.tick,
                worker: worker.to_owned(),
                attempt: r.get(0),
            }))
        })
    }

    fn abandon<'a>(
        &'a self,
        pipeline: &'a str,
        lapsed: &'a LapsedRun,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            let n = client
                .execute(
                    "UPDATE ionflow_runs SET state = 'abandoned', error = $5, finished_at = now()
                     WHERE pipeline = $1 AND tick = $2 AND worker = $3 AND attempts = $4
                       AND state = 'running' AND lease_expires_at <= now()",
                    &[
                        &pipeline,
                        &lapsed.tick,
                        &lapsed.worker,
                        &lapsed.attempts,
                        &reason,
                    ],
                )
                .await
                .map_err(|e| self.db.failed("abandoning a lapsed run", e))?;
            Ok(n == 1)
        })
    }

    fn status(&self) -> BoxFuture<'_, Result<Vec<ScheduleStatus>>> {
        Box::pin(async move {
            let client = self.db.client().await?;
            let rows = client
                .query(
                    "SELECT s.pipeline, s.file, s.schedule, s.next_run,
                            last.tick, last.state, last.worker, last.finished_at, last.error,
                            live.worker, live.tick, live.lease_expires_at,
                            (SELECT count(*) FROM ionflow_runs r WHERE r.pipeline = s.pipeline
                                 AND r.state <> 'running')
                     FROM ionflow_schedules s
                     LEFT JOIN LATERAL (SELECT tick, state, worker, finished_at, error
                         FROM ionflow_runs r WHERE r.pipeline = s.pipeline AND r.state <> 'running'
                         ORDER BY tick DESC LIMIT 1) last ON true
                     LEFT JOIN LATERAL (SELECT worker, tick, lease_expires_at
                         FROM ionflow_runs r WHERE r.pipeline = s.pipeline AND r.state = 'running'
                           AND r.lease_expires_at > now()
                         ORDER BY tick DESC LIMIT 1) live ON true
                     ORDER BY s.pipeline",
                    &[],
                )
                .await
                .map_err(|e| self.db.failed("reading the status", e))?;
            Ok(rows
                .iter()
                .map(|r| ScheduleStatus {
                    pipeline: r.get(0),
                    file: r.get(1),
                    schedule: r.get(2),
                    next_run: r.get(3),
                    last_tick: r.get(4),
                    last_state: r.get(5),
                    last_worker: r.get(6),
                    last_end: r.get(7),
                    last_error: r.get(8),
                    lease_holder: r.get(9),
                    lease_tick: r.get(10),
                    lease_expires_at: r.get(11),
                    runs: r.get(12),
                })
                .collect())
        })
    }
}
