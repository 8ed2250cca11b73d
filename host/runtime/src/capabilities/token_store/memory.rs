//! Tokens in memory, for the life of the process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::Notify;

use super::{Entry, StoreError, TokenStore};

/// Tokens kept for the life of the process.
#[derive(Default)]
pub struct MemoryTokenStore {
    state: Mutex<MemoryState>,
    released: Notify,
}

#[derive(Default)]
struct MemoryState {
    entries: HashMap<String, Entry>,
    leases: HashMap<String, Lease>,
    next_lease: u64,
    next_version: u64,
}

struct Lease {
    id: u64,
    expires: Instant,
}

impl MemoryTokenStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn try_lock(&self, key: &str, ttl: Duration) -> Result<u64, Instant> {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        if let Some(lease) = state.leases.get(key)
            && lease.expires > now
        {
            return Err(lease.expires);
        }
        state.next_lease += 1;
        let id = state.next_lease;
        state.leases.insert(
            key.to_owned(),
            Lease {
                id,
                expires: now + ttl,
            },
        );
        Ok(id)
    }
}

impl TokenStore for MemoryTokenStore {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>, StoreError>> {
        Box::pin(async move { Ok(self.state.lock().unwrap().entries.get(key).cloned()) })
    }

    fn save<'a>(
        &'a self,
        key: &'a str,
        expected_version: u64,
        value: Option<String>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut state = self.state.lock().unwrap();
            let current = state.entries.get(key).map_or(0, |e| e.version);
            if current != expected_version {
                return Err(StoreError::Conflict(state.entries.get(key).cloned()));
            }
            match value {
                None => {
                    state.entries.remove(key);
                    Ok(0)
                }
                Some(value) => {
                    // Versions only grow, even across deletes, so a stale
                    // writer can never match a recreated entry.
                    state.next_version += 1;
                    let version = state.next_version;
                    state
                        .entries
                        .insert(key.to_owned(), Entry { value, version });
                    Ok(version)
                }
            }
        })
    }

    fn lock<'a>(
        &'a self,
        key: &'a str,
        ttl_ms: u32,
        timeout_ms: u32,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let ttl = Duration::from_millis(ttl_ms.max(1).into());
            let deadline = Instant::now() + Duration::from_millis(timeout_ms.into());
            loop {
                // Register interest before trying, so a release between the
                // try and the wait is not missed.
                let released = self.released.notified();
                let holder_expires = match self.try_lock(key, ttl) {
                    Ok(id) => return Ok(id),
                    Err(expires) => expires,
                };
                let now = Instant::now();
                if now >= deadline {
                    return Err(StoreError::LockTimeout);
                }
                let wake = holder_expires.min(deadline);
                let _ = tokio::time::timeout(wake.saturating_duration_since(now), released).await;
            }
        })
    }

    fn unlock<'a>(&'a self, key: &'a str, lease: u64) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut state = self.state.lock().unwrap();
            if state.leases.get(key).is_some_and(|l| l.id == lease) {
                state.leases.remove(key);
                drop(state);
                self.released.notify_waiters();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn save_is_compare_and_swap() {
        let store = MemoryTokenStore::new();
        let v1 = store.save("k", 0, Some("a".into())).await.unwrap();
        assert!(matches!(
            store.save("k", 0, Some("b".into())).await,
            Err(StoreError::Conflict(Some(Entry { ref value, .. }))) if value == "a"
        ));
        let v2 = store.save("k", v1, Some("b".into())).await.unwrap();
        assert!(v2 > v1);
        assert_eq!(store.load("k").await.unwrap().unwrap().value, "b");
        store.save("k", v2, None).await.unwrap();
        assert!(store.load("k").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn lock_is_exclusive_and_released() {
        let store = Arc::new(MemoryTokenStore::new());
        let first = store.lock("k", 10_000, 100).await.unwrap();
        assert!(matches!(
            store.lock("k", 10_000, 50).await,
            Err(StoreError::LockTimeout)
        ));
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.lock("k", 10_000, 5_000).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.unlock("k", first).await;
        let second = waiter.await.unwrap().unwrap();
        assert_ne!(first, second);
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over() {
        let store = MemoryTokenStore::new();
        store.lock("k", 30, 100).await.unwrap();
        store.lock("k", 30, 1_000).await.unwrap();
    }
}
