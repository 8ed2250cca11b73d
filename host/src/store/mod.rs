//! Where ionflow keeps what outlives a process: the token store and the
//! holders of each grant, pipeline state (watermarks) and schedule leases,
//! behind one small trait with two implementations: files under the state
//! folder (the default, one machine) and PostgreSQL
//! (`store = "postgres://..."`, many workers).

mod file;
pub mod holders;
mod postgres;
pub mod setting;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use file::FileStorage;
pub use holders::{GrantHolders, LocalHolders};
use ionflow_runtime::capabilities::TokenStore;
pub use postgres::PostgresStorage;
pub use setting::{MaskedUrl, StoreSetting};

/// Storage that could not be opened or used. Messages name the backend
/// (a PostgreSQL URL with its password masked), never a stored value.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The `store` setting itself is wrong: fix the setting.
    #[error("{0}")]
    Setting(String),
    /// The database or folder could not be reached or used: check the server.
    #[error("{0}")]
    Unavailable(String),
}

/// One claimed tick of one pipeline: held while the run goes on, renewed by
/// heartbeats, and lost if the worker stops renewing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickLease {
    pub pipeline: String,
    pub tick: DateTime<Utc>,
    pub worker: String,
    /// 1 for the first run of the tick, 2 for a retry after a lapsed lease.
    pub attempt: i32,
}

/// What happened when a worker asked for a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This worker runs the tick.
    Claimed(TickLease),
    /// Another worker claimed this same tick first.
    TakenBy(String),
    /// Another run of the pipeline holds a live lease (the overlap policy decides).
    Busy(String),
}

/// A run whose worker stopped renewing its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LapsedRun {
    pub tick: DateTime<Utc>,
    pub worker: String,
    pub attempts: i32,
}

/// How a run ended, as recorded with its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Succeeded,
    Failed,
    /// Lapsed and not retried (policy `missed_runs = "skip"`, or retried already).
    Abandoned,
}

impl RunState {
    fn as_str(self) -> &'static str {
        match self {
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Abandoned => "abandoned",
        }
    }
}

/// One line of `ionflow status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScheduleStatus {
    pub pipeline: String,
    pub file: String,
    pub schedule: String,
    pub next_run: Option<DateTime<Utc>>,
    pub last_tick: Option<DateTime<Utc>>,
    pub last_state: Option<String>,
    pub last_worker: Option<String>,
    pub last_end: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The worker holding a live lease on a running tick, if any.
    pub lease_holder: Option<String>,
    pub lease_tick: Option<DateTime<Utc>>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub runs: i64,
}

type Result<T> = std::result::Result<T, StorageError>;

/// The storage behind tokens, watermarks and schedules. The file backend
/// has no schedule leases across machines (its claims always succeed: the
/// run lock file keeps runs apart on one machine).
pub trait Storage: Send + Sync + 'static {
    /// For logs and errors: the folder or the URL with its password masked.
    fn describe(&self) -> String;
    /// Whether claims are shared by several workers (PostgreSQL).
    fn shared(&self) -> bool;
    fn tokens(&self) -> Arc<dyn TokenStore>;
    /// Who holds which grant, across every process sharing this store. A
    /// holder that stops renewing its hold is gone after `lease` (where
    /// the store cannot tell a dead process at once). Call once per process.
    fn grant_holders(&self, lease: std::time::Duration) -> Arc<dyn GrantHolders>;
    /// Answers when the store can be used now (a readiness probe).
    fn ping(&self) -> BoxFuture<'_, Result<()>>;
    /// The quota shared by every worker on this store, when it is shared.
    fn rate_budget(&self) -> Option<Arc<dyn ionflow_runtime::SharedBudget>> {
        None
    }

    /// The saved state JSON of a pipeline (`key` is the pipeline's state key).
    fn load_state<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>>>;
    fn save_state<'a>(&'a self, key: &'a str, json: &'a str) -> BoxFuture<'a, Result<()>>;

    /// Tells `ionflow status` what this worker serves and when it fires next.
    fn record_schedule<'a>(
        &'a self,
        pipeline: &'a str,
        file: &'a str,
        schedule: &'a str,
        next_run: Option<DateTime<Utc>>,
        worker: &'a str,
    ) -> BoxFuture<'a, Result<()>>;
    /// Claims `tick` of `pipeline` for `lease_secs`, once across all workers.
    fn claim<'a>(
        &'a self,
        pipeline: &'a str,
        tick: DateTime<Utc>,
        worker: &'a str,
        lease_secs: f64,
    ) -> BoxFuture<'a, Result<Claim>>;
    /// Extends a held lease; false when it was lost (lapsed and taken over).
    fn renew<'a>(&'a self, lease: &'a TickLease, lease_secs: f64) -> BoxFuture<'a, Result<bool>>;
    fn finish<'a>(
        &'a self,
        lease: &'a TickLease,
        state: RunState,
        error: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>>;
    /// Runs of `pipeline` whose lease expired while they were running.
    fn lapsed<'a>(&'a self, pipeline: &'a str) -> BoxFuture<'a, Result<Vec<LapsedRun>>>;
    /// Takes over a lapsed run (compare-and-swap on its worker and attempts).
    fn take_over<'a>(
        &'a self,
        pipeline: &'a str,
        lapsed: &'a LapsedRun,
        worker: &'a str,
        lease_secs: f64,
    ) -> BoxFuture<'a, Result<Option<TickLease>>>;
    /// Marks a lapsed run abandoned (compare-and-swap, as `take_over`).
    fn abandon<'a>(
        &'a self,
        pipeline: &'a str,
        lapsed: &'a LapsedRun,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;
    fn status(&self) -> BoxFuture<'_, Result<Vec<ScheduleStatus>>>;
}

/// Opens the configured storage; PostgreSQL is migrated before it is used.
pub async fn open(
    setting: &StoreSetting,
    state_dir: &std::path::Path,
    worker: &str,
) -> anyhow::Result<Arc<dyn Storage>> {
    Ok(match setting {
        StoreSetting::Files => Arc::new(FileStorage::open(state_dir)?),
        StoreSetting::Postgres(url) => Arc::new(PostgresStorage::connect(url, worker).await?),
    })
}

/// This process's name in leases: `IONFLOW_WORKER_ID`, else host name and pid
/// (in Kubernetes the host name is the pod's name).
pub fn worker_id() -> String {
    if let Ok(id) = std::env::var("IONFLOW_WORKER_ID")
        && !id.trim().is_empty()
    {
        return id.trim().to_owned();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}
