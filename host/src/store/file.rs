//! The embedded default: tokens in 0600 files, state in JSON files, and a
//! status file per served pipeline. One machine: a claim always succeeds
//! (the run lock file keeps runs of one pipeline apart on this machine).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use super::holders::{FileHolders, GrantHolders};
use super::{Claim, LapsedRun, Result, RunState, ScheduleStatus, Storage, StorageError, TickLease};
use ionflow_runtime::capabilities::{FileTokenStore, TokenStore};
use ionflow_runtime::private_files;

pub struct FileStorage {
    dir: PathBuf,
    tokens: Arc<FileTokenStore>,
    holders: Arc<FileHolders>,
    /// Read-modify-write of status files by this process's schedulers.
    status_lock: Mutex<()>,
}

impl FileStorage {
    pub fn open(state_dir: &Path) -> Result<Self> {
        let tokens_dir = state_dir.join("tokens");
        let tokens = FileTokenStore::open(&tokens_dir).map_err(|e| {
            StorageError::Unavailable(format!(
                "could not open the token store in {}: {e}",
                tokens_dir.display()
            ))
        })?;
        Ok(FileStorage {
            dir: state_dir.to_owned(),
            holders: Arc::new(FileHolders::new(&tokens_dir)),
            tokens: Arc::new(tokens),
            status_lock: Mutex::new(()),
        })
    }

    fn digest(name: &str) -> String {
        let digest = Sha256::digest(name.as_bytes());
        digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
    }

    fn status_dir(&self) -> PathBuf {
        self.dir.join("serve").join("status")
    }

    fn status_path(&self, pipeline: &str) -> PathBuf {
        self.status_dir()
            .join(format!("{}.json", Self::digest(pipeline)))
    }

    fn update_status(
        &self,
        pipeline: &str,
        change: impl FnOnce(&mut ScheduleStatus),
    ) -> Result<()> {
        let _guard = self.status_lock.lock().unwrap();
        let path = self.status_path(pipeline);
        let mut status = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<ScheduleStatus>(&t).ok())
            .unwrap_or_else(|| empty_status(pipeline));
        change(&mut status);
        let dir = self.status_dir();
        private_files::create_dir(&dir).map_err(|e| unavailable(&dir, e))?;
        let json = serde_json::to_string_pretty(&status)
            .map_err(|e| StorageError::Unavailable(format!("could not encode a status: {e}")))?;
        replace_file(&path, &json)
    }
}

fn empty_status(pipeline: &str) -> ScheduleStatus {
    ScheduleStatus {
        pipeline: pipeline.to_owned(),
        file: String::new(),
        schedule: String::new(),
        next_run: None,
        last_tick: None,
        last_state: None,
        last_worker: None,
        last_end: None,
        last_error: None,
        lease_holder: None,
        lease_tick: None,
        lease_expires_at: None,
        runs: 0,
    }
}

fn unavailable(path: &Path, e: impl std::fmt::Display) -> StorageError {
    crate::metrics::metrics().store_error("files");
    StorageError::Unavailable(format!("{}: {e}", path.display()))
}

/// Writes `NAME.json.partial` (0600) and renames it over `path`, so that a
/// reader sees the old file or the new one, never half of one.
fn replace_file(path: &Path, text: &str) -> Result<()> {
    let partial = path.with_extension("json.partial");
    private_files::write(&partial, text.as_bytes()).map_err(|e| unavailable(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| unavailable(path, e))
}

impl Storage for FileStorage {
    fn describe(&self) -> String {
        format!("files in {}", self.dir.display())
    }

    fn shared(&self) -> bool {
        false
    }

    fn tokens(&self) -> Arc<dyn TokenStore> {
        self.tokens.clone()
    }

    /// OS locks need no lease: the kernel ends a dead process's hold.
    fn grant_holders(&self, _lease: std::time::Duration) -> Arc<dyn GrantHolders> {
        self.holders.clone()
    }

    fn ping(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            match std::fs::metadata(&self.dir) {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(unavailable(&self.dir, "not a folder")),
                Err(e) => Err(unavailable(&self.dir, e)),
            }
        })
    }

    fn load_state<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            let path = self
                .dir
                .join("state")
                .join(format!("{}.json", Self::digest(key)));
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(unavailable(&path, e)),
            }
        })
    }

    fn save_state<'a>(&'a self, key: &'a str, json: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let dir = self.dir.join("state");
            private_files::create_dir(&dir).map_err(|e| unavailable(&dir, e))?;
            replace_file(&dir.join(format!("{}.json", Self::digest(key))), json)
        })
    }

    fn record_schedule<'a>(
        &'a self,
        pipeline: &'a str,
        file: &'a str,
        schedule: &'a str,
        next_run: Option<DateTime<Utc>>,
        _worker: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.update_status(pipeline, |s| {
                s.file = file.to_owned();
                s.schedule = schedule.to_owned();
                s.next_run = next_run;
            })
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
            self.update_status(pipeline, |s| {
                s.lease_holder = Some(worker.to_owned());
                s.lease_tick = Some(tick);
                s.lease_expires_at =
                    Some(Utc::now() + chrono::Duration::milliseconds((lease_secs * 1e3) as i64));
            })?;
            Ok(Claim::Claimed(TickLease {
                pipeline: pipeline.to_owned(),
                tick,
                worker: worker.to_owned(),
                attempt: 1,
            }))
        })
    }

    fn renew<'a>(&'a self, _lease: &'a TickLease, _secs: f64) -> BoxFuture<'a, Result<bool>> {
        // Nobody else can take a lease over on one machine.
        Box::pin(async { Ok(true) })
    }

    fn finish<'a>(
        &'a self,
        lease: &'a TickLease,
        state: RunState,
        error: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.update_status(&lease.pipeline, |s| {
                s.lease_holder = None;
                s.lease_tick = None;
                s.lease_expires_at = None;
                s.last_tick = Some(lease.tick);
                s.last_state = Some(state.as_str().to_owned());
                s.last_worker = Some(lease.worker.clone());
                s.last_end = Some(Utc::now());
                s.last_error = error.map(str::to_owned);
                s.runs += 1;
            })
        })
    }

    fn lapsed<'a>(&'a self, _pipeline: &'a str) -> BoxFuture<'a, Result<Vec<LapsedRun>>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn take_over<'a>(
        &'a self,
        _pipeline: &'a str,
        _lapsed: &'a LapsedRun,
        _worker: &'a str,
        _lease_secs: f64,
    ) -> BoxFuture<'a, Result<Option<TickLease>>> {
        Box::pin(async { Ok(None) })
    }

    fn abandon<'a>(
        &'a self,
        _pipeline: &'a str,
        _lapsed: &'a LapsedRun,
        _reason: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Ok(false) })
    }

    fn status(&self) -> BoxFuture<'_, Result<Vec<ScheduleStatus>>> {
        Box::pin(async move {
            let dir = self.status_dir();
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(unavailable(&dir, e)),
            };
            let mut all: Vec<ScheduleStatus> = entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|t| serde_json::from_str::<ScheduleStatus>(&t).ok())
                .collect();
            all.sort_by(|a, b| a.pipeline.cmp(&b.pipeline));
            Ok(all)
        })
    }
}
