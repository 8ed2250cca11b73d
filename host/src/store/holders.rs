//! Who holds a grant: the processes that use one token-store key, recorded
//! in the store itself so that the last one to leave, and only it, may end
//! the grant. A holder that dies stops holding without saying goodbye: on
//! files its OS lock is released by the kernel, on PostgreSQL its row
//! expires (`postgres/holders.rs`).

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ionflow_runtime::capabilities::FileTokenStore;

use super::StorageError;

/// How often a process waiting to hold a grant asks again while the last
/// holder is revoking it.
const JOIN_POLL: Duration = Duration::from_millis(20);

/// The holders of grants, shared by every process using the same store.
/// A process joins a key once (the caller counts its own users) and leaves
/// it once.
pub trait GrantHolders: Send + Sync + 'static {
    /// Registers this process as a holder of `key`. Waits up to `wait` while
    /// the key's last holder is ending the grant, so that a newcomer never
    /// picks up a token that is being revoked.
    fn join<'a>(&'a self, key: &'a str, wait: Duration) -> BoxFuture<'a, Result<(), StorageError>>;

    /// Ends this process's hold on `key`. With `if_last`, then looks for
    /// another live holder; when there is none, runs `if_last` while new
    /// holders are kept waiting, and returns true.
    fn leave<'a>(
        &'a self,
        key: &'a str,
        if_last: Option<BoxFuture<'a, ()>>,
    ) -> BoxFuture<'a, Result<bool, StorageError>>;
}

/// Holders for a store that lives and dies with this process (tokens in
/// memory): this process is the only holder there can be.
#[derive(Default)]
pub struct LocalHolders;

impl GrantHolders for LocalHolders {
    fn join<'a>(
        &'a self,
        _key: &'a str,
        _wait: Duration,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async { Ok(()) })
    }

    fn leave<'a>(
        &'a self,
        _key: &'a str,
        if_last: Option<BoxFuture<'a, ()>>,
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move {
            let Some(if_last) = if_last else {
                return Ok(false);
            };
            if_last.await;
            Ok(true)
        })
    }
}

/// Holders on the file store: one lock file per key beside its token entry
/// (`TOKENS/<digest>.holders.lock`). Every holder keeps a shared OS lock
/// (flock) on it for as long as it holds; the last holder is the one that
/// can take it exclusively after letting go of its own. The kernel drops
/// the lock of a process that ends in any way (even `kill -9`), so a dead
/// holder is never counted, and a waiting newcomer cannot get its shared
/// lock while the exclusive one is held.
pub struct FileHolders {
    dir: PathBuf,
    /// The open, shared-locked file of each key this process holds.
    held: Mutex<HashMap<String, File>>,
}

impl FileHolders {
    pub fn new(tokens_dir: &Path) -> Self {
        FileHolders {
            dir: tokens_dir.to_owned(),
            held: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir
            .join(format!("{}.holders.lock", FileTokenStore::stem(key)))
    }

    fn open(&self, key: &str) -> Result<File, StorageError> {
        let path = self.path(key);
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).read(true).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options.open(&path).map_err(|e| unavailable(&path, e))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, File>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn unavailable(path: &Path, e: impl std::fmt::Display) -> StorageError {
    StorageError::Unavailable(format!("{}: {e}", path.display()))
}

impl GrantHolders for FileHolders {
    fn join<'a>(&'a self, key: &'a str, wait: Duration) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let file = self.open(key)?;
            let deadline = Instant::now() + wait;
            loop {
                match file.try_lock_shared() {
                    Ok(()) => break,
                    Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                        tokio::time::sleep(JOIN_POLL).await;
                    }
                    Err(TryLockError::WouldBlock) => {
                        return Err(StorageError::Unavailable(format!(
                            "{}: another process has been ending this grant for {} s; \
                             run again once it is done",
                            self.path(key).display(),
                            wait.as_secs()
                        )));
                    }
                    Err(TryLockError::Error(e)) => return Err(unavailable(&self.path(key), e)),
                }
            }
            self.held().insert(key.to_owned(), file);
            Ok(())
        })
    }

    fn leave<'a>(
        &'a self,
        key: &'a str,
        if_last: Option<BoxFuture<'a, ()>>,
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move {
            // Closing the file releases this process's shared lock.
            drop(self.held().remove(key));
            let Some(if_last) = if_last else {
                return Ok(false);
            };
            let file = self.open(key)?;
            match file.try_lock() {
                Ok(()) => {
                    // Newcomers wait on their shared lock until `file` closes.
                    if_last.await;
                    drop(file);
                    Ok(true)
                }
                // Another holder, or another last holder already ending it.
                Err(TryLockError::WouldBlock) => Ok(false),
                Err(TryLockError::Error(e)) => Err(unavailable(&self.path(key), e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn marker() -> (Arc<AtomicBool>, impl Fn() -> Option<BoxFuture<'static, ()>>) {
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        (ran, move || {
            let flag = flag.clone();
            Some(Box::pin(async move { flag.store(true, Ordering::SeqCst) })
                as BoxFuture<'static, ()>)
        })
    }

    // Two `FileHolders` on one folder stand for two processes: OS locks
    // belong to open files, so they conflict within a process as across.
    #[tokio::test]
    async fn only_the_last_holder_ends_the_grant() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (FileHolders::new(dir.path()), FileHolders::new(dir.path()));
        let wait = Duration::from_millis(100);
        a.join("k", wait).await.unwrap();
        b.join("k", wait).await.unwrap();
        let (ran, end) = marker();
        assert!(!a.leave("k", end()).await.unwrap(), "b still holds");
        assert!(!ran.load(Ordering::SeqCst));
        assert!(b.leave("k", end()).await.unwrap(), "b was the last");
        assert!(ran.load(Ordering::SeqCst));
        // Leaving without asking whether one is last never ends the grant.
        a.join("k", wait).await.unwrap();
        assert!(!a.leave("k", None).await.unwrap());
    }

    #[tokio::test]
    async fn keys_are_independent() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (FileHolders::new(dir.path()), FileHolders::new(dir.path()));
        a.join("one", Duration::ZERO).await.unwrap();
        b.join("two", Duration::ZERO).await.unwrap();
        let (_, end) = marker();
        assert!(b.leave("two", end()).await.unwrap());
        assert!(a.leave("one", end()).await.unwrap());
    }

    #[tokio::test]
    async fn a_newcomer_waits_while_the_last_holder_ends_the_grant() {
        let dir = tempfile::tempdir().unwrap();
        let a = Arc::new(FileHolders::new(dir.path()));
        let b = Arc::new(FileHolders::new(dir.path()));
        a.join("k", Duration::ZERO).await.unwrap();
        let (release, ending) = tokio::sync::oneshot::channel::<()>();
        let leaving = {
            let a = a.clone();
            tokio::spawn(async move {
                a.leave(
                    "k",
                    Some(Box::pin(async move {
                        let _ = ending.await;
                    })),
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // While `a` ends the grant, `b` cannot join...
        assert!(matches!(
            b.join("k", Duration::from_millis(60)).await,
            Err(StorageError::Unavailable(m)) if m.contains("ending this grant")
        ));
        // ...and joins as soon as it is done.
        let joining = {
            let b = b.clone();
            tokio::spawn(async move { b.join("k", Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!joining.is_finished());
        release.send(()).unwrap();
        assert!(leaving.await.unwrap().unwrap());
        joining.await.unwrap().unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_lock_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let holders = FileHolders::new(dir.path());
        holders.join("k", Duration::ZERO).await.unwrap();
        let mode = std::fs::metadata(holders.path("k"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
