//! Tokens in files under the user's state folder: one file per key, mode 0600,
//! replaced atomically, with OS file locks for leases so that two ionflow
//! processes sharing a connection never both spend one refresh token.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Entry, StoreError, TokenStore};
use crate::private_files;

/// How often a waiter retries a held lease.
const LOCK_POLL: Duration = Duration::from_millis(20);

pub struct FileTokenStore {
    dir: PathBuf,
    /// Leases held by this process: the open lock file keeps the OS lock.
    leases: Mutex<HashMap<String, (u64, File)>>,
    next_lease: AtomicU64,
}

#[derive(Serialize, Deserialize)]
struct StoredEntry {
    /// The key in clear, so a folder listing can be mapped back to connections.
    key: String,
    version: u64,
    value: String,
}

impl FileTokenStore {
    /// Opens (creating, 0700) the folder and removes the temporary files
    /// that writers killed mid-write left there: their token sets were
    /// never renamed into place, so nobody reads them, but they hold tokens.
    pub fn open(dir: &Path) -> io::Result<Self> {
        private_files::create_dir(dir)?;
        private_files::remove_leftovers(dir, private_files::temp_file_writer);
        Ok(FileTokenStore {
            dir: dir.to_owned(),
            leases: Mutex::new(HashMap::new()),
            next_lease: AtomicU64::new(1),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file-name stem of `key`'s files. Keys contain tenant and client
    /// ids, so names carry a digest instead; public so that other files
    /// about a key (the host's grant holders) sit beside its entry.
    pub fn stem(key: &str) -> String {
        let digest = Sha256::digest(key.as_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{}.json", Self::stem(key)))
    }

    fn lock_path(&self, key: &str, kind: &str) -> PathBuf {
        self.dir.join(format!("{}.{kind}.lock", Self::stem(key)))
    }

    fn read(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let path = self.entry_path(key);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unavailable(&path, e)),
        };
        let stored: StoredEntry = serde_json::from_str(&text).map_err(|e| {
            StoreError::Unavailable(format!(
                "{} is not a token-store entry ({e}); delete it to start over",
                path.display()
            ))
        })?;
        Ok(Some(Entry {
            value: stored.value,
            version: stored.version,
        }))
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected_version: u64,
        value: Option<String>,
    ) -> Result<u64, StoreError> {
        // A short exclusive section across processes: read, compare, replace.
        let lock_path = self.lock_path(key, "write");
        let guard = open_private(&lock_path).map_err(|e| unavailable(&lock_path, e))?;
        guard.lock().map_err(|e| unavailable(&lock_path, e))?;
        let current = self.read(key)?;
        if current.as_ref().map_or(0, |e| e.version) != expected_version {
            return Err(StoreError::Conflict(current));
        }
        let path = self.entry_path(key);
        let Some(value) = value else {
            match fs::remove_file(&path) {
                Ok(()) => sync_dir(&self.dir).map_err(|e| unavailable(&self.dir, e))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(unavailable(&path, e)),
            }
            return Ok(0);
        };
        // Versions grow with the clock, so an entry that was deleted and
        // recreated never repeats a version a stale writer may still hold.
        let now_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let version = now_nanos.max(expected_version + 1);
        let stored = StoredEntry {
            key: key.to_owned(),
            version,
            value,
        };
        let json = serde_json::to_vec(&stored)
            .map_err(|e| StoreError::Unavailable(format!("could not encode an entry: {e}")))?;
        write_atomically(&self.dir, &path, &json).map_err(|e| unavailable(&path, e))?;
        Ok(version)
    }
}

fn unavailable(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{}: {e}", path.display()))
}

fn open_private(path: &Path) -> io::Result<File> {
    private_files::open(path)
}

/// Temp file, fsync, rename, fsync the folder: a crash at any point leaves
/// the old entry or the new one, never a torn file (and at worst a temp
/// file, which the next `open` removes).
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = private_files::temp_path(path);
    let result = (|| {
        let mut file = private_files::create_new(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    Ok(())
}

impl TokenStore for FileTokenStore {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>, StoreError>> {
        Box::pin(async move { self.read(key) })
    }

    fn save<'a>(
        &'a self,
        key: &'a str,
        expected_version: u64,
        value: Option<String>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            // A few small writes and fsyncs: brief enough to do in place.
            self.compare_and_swap(key, expected_version, value)
        })
    }

    /// The lease is an OS lock on a file: it is released when the holder
    /// unlocks or its process ends, whatever the `ttl_ms`.
    fn lock<'a>(
        &'a self,
        key: &'a str,
        _ttl_ms: u32,
        timeout_ms: u32,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let path = self.lock_path(key, "lease");
            let deadline = Instant::now() + Duration::from_millis(timeout_ms.into());
            let file = open_private(&path).map_err(|e| unavailable(&path, e))?;
            loop {
                match file.try_lock() {
                    Ok(()) => break,
                    Err(fs::TryLockError::WouldBlock) => {
                        if Instant::now() >= deadline {
                            return Err(StoreError::LockTimeout);
                        }
                        tokio::time::sleep(LOCK_POLL).await;
                    }
                    Err(fs::TryLockError::Error(e)) => return Err(unavailable(&path, e)),
                }
            }
            let id = self.next_lease.fetch_add(1, Ordering::Relaxed);
            self.leases
                .lock()
                .unwrap()
                .insert(key.to_owned(), (id, file));
            Ok(id)
        })
    }

    fn unlock<'a>(&'a self, key: &'a str, lease: u64) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut leases = self.leases.lock().unwrap();
            if leases.get(key).is_some_and(|(id, _)| *id == lease) {
                // Dropping the file releases the OS lock.
                leases.remove(key);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn entries_survive_and_are_compare_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileTokenStore::open(dir.path()).unwrap();
        let v1 = store
            .save("T/ci/backend-service", 0, Some("one".into()))
            .await
            .unwrap();
        assert!(matches!(
            store
                .save("T/ci/backend-service", 0, Some("two".into()))
                .await,
            Err(StoreError::Conflict(Some(_)))
        ));
        let v2 = store
            .save("T/ci/backend-service", v1, Some("two".into()))
            .await
            .unwrap();
        assert!(v2 > v1);

        let reopened = FileTokenStore::open(dir.path()).unwrap();
        let entry = reopened
            .load("T/ci/backend-service")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((entry.value.as_str(), entry.version), ("two", v2));

        reopened
            .save("T/ci/backend-service", v2, None)
            .await
            .unwrap();
        assert!(store.load("T/ci/backend-service").await.unwrap().is_none());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains("tmp")), "{names:?}");
    }

    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread")]
    async fn files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = FileTokenStore::open(&dir.path().join("tokens")).unwrap();
        store.save("k", 0, Some("secret".into())).await.unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.entry_path("k")), 0o600);
        assert_eq!(mode(store.dir()), 0o700);
    }

    #[test]
    fn temp_files_of_dead_writers_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("0123abcd.json.tmp2147483632-42");
        let live = dir
            .path()
            .join(format!("0123abcd.json.tmp{}-7", std::process::id()));
        let entry = dir.path().join("0123abcd.json");
        for path in [&dead, &live, &entry] {
            fs::write(path, "{}").unwrap();
        }
        FileTokenStore::open(dir.path()).unwrap();
        assert!(!dead.exists(), "a dead writer's temp file is removed");
        assert!(
            live.exists() && entry.exists(),
            "a live write and entries stay"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn leases_are_exclusive_across_store_instances() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileTokenStore::open(dir.path()).unwrap();
        let b = FileTokenStore::open(dir.path()).unwrap();
        let lease = a.lock("k", 1_000, 100).await.unwrap();
        assert!(matches!(
            b.lock("k", 1_000, 60).await,
            Err(StoreError::LockTimeout)
        ));
        a.unlock("k", lease).await;
        let lease_b = b.lock("k", 1_000, 100).await.unwrap();
        b.unlock("k", lease_b).await;
    }
}
