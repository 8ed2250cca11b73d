//! One run of a pipeline at a time, across processes: `ionflow run` under
//! system cron and `ionflow serve` take the same OS file lock.

use std::fs::{self, File};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use ionflow_runtime::private_files;
use sha2::{Digest, Sha256};

/// Held while a run is going; the OS drops the lock if the process dies.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Another process holds the pipeline's lock.
#[derive(Debug, thiserror::Error)]
#[error("another run of {pipeline} is in progress{holder}; this run was not started ({lock})")]
pub struct LockHeld {
    pub pipeline: String,
    holder: String,
    lock: String,
}

impl LockHeld {
    /// A run on another worker holds the pipeline's lease in a shared store.
    pub fn elsewhere(pipeline: &Path, worker: &str, store: &str) -> LockHeld {
        LockHeld {
            pipeline: pipeline.display().to_string(),
            holder: format!(" (worker {worker})"),
            lock: format!("its lease in {store}"),
        }
    }
}

impl RunLock {
    /// Takes the lock of `pipeline_file` without waiting.
    pub fn try_acquire(state_dir: &Path, pipeline_file: &Path) -> anyhow::Result<RunLock> {
        let dir = state_dir.join("locks");
        private_files::create_dir(&dir)?;
        let canonical =
            fs::canonicalize(pipeline_file).unwrap_or_else(|_| pipeline_file.to_owned());
        let digest = Sha256::digest(canonical.to_string_lossy().as_bytes());
        let name: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        let path: PathBuf = dir.join(format!("{name}.lock"));
        let mut file = private_files::open(&path)?;
        match file.try_lock() {
            Ok(()) => {
                // The holder's pid, for the message another run will print.
                file.set_len(0)?;
                file.rewind()?;
                write!(file, "{}", std::process::id())?;
                Ok(RunLock { _file: file })
            }
            Err(fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                Err(LockHeld {
                    pipeline: pipeline_file.display().to_string(),
                    holder: if pid.is_empty() {
                        String::new()
                    } else {
                        format!(" (process {pid})")
                    },
                    lock: format!("lock file {}", path.display()),
                }
                .into())
            }
            Err(fs::TryLockError::Error(e)) => Err(e.into()),
        }
    }
}
