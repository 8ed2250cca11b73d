//! The ownership of a grant. Every process that uses a connection's grant
//! (the tokens stored under one token-store key) holds it, registered in the
//! store (`store::holders`), from the moment the connection opens until the
//! process is done with it. A grant is revoked only by its last holder, and
//! only if every user of it in that process asked for it (`revoke_on_exit`),
//! so no process revokes a grant under another one. Whether the revocation
//! succeeds or not, the stored tokens are then deleted: after a timeout the
//! gateway may or may not have revoked them, and no later process may trust
//! a token in that state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ionflow_runtime::capabilities::TokenStore;
use ionflow_runtime::capabilities::token_store::StoreError;
use ionflow_runtime::{Connection, Grant};

use crate::store::{GrantHolders, Storage, StorageError};

/// The token-store lease taken to delete an entry: long enough to outlast a
/// dead holder's lease on PostgreSQL (the connector's ttl is its timeout,
/// 60 s by default, plus 10 s).
const DROP_LEASE_TTL_MS: u32 = 30_000;
const DROP_LEASE_WAIT_MS: u32 = 90_000;

/// How long a newcomer waits while the last holder ends the grant: the
/// revocation may wait for the token lease and then for the endpoint, each
/// bounded by the connection's timeout (`timeout_secs`, 60 by default).
pub fn join_wait(timeout_secs: Option<u32>) -> Duration {
    Duration::from_secs(3 * u64::from(timeout_secs.unwrap_or(60)) + 30)
}

/// The token-store key of a connection's grant.
pub fn key(connection: &Connection) -> &str {
    &connection.info().store_key
}

/// What became of a grant when this process let go of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Another user in this process still holds it.
    StillUsed,
    /// Left in the store for the next process, as asked.
    Kept,
    /// Another live process holds it: ending it is left to that one.
    OthersHold,
    /// Revoked at the revocation endpoint; the stored tokens are gone.
    Revoked,
    /// The revocation failed; the stored tokens were deleted anyway.
    Dropped,
    /// Whether others hold it could not be found out; it was kept.
    Unknown,
}

/// This process's holds, one per grant, counted per user (a pipeline's
/// connections, a daemon's pipelines).
pub struct Grants {
    holders: Arc<dyn GrantHolders>,
    tokens: Arc<dyn TokenStore>,
    keys: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Held>>>>,
}

#[derive(Default)]
struct Held {
    users: usize,
    /// Whether every user so far asked for a revocation at the end.
    revoke: bool,
}

impl Grants {
    pub fn new(holders: Arc<dyn GrantHolders>, tokens: Arc<dyn TokenStore>) -> Self {
        Grants {
            holders,
            tokens,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The grants of `storage`'s token store; on PostgreSQL a holder that
    /// stops renewing is gone after `lease`.
    pub fn of(storage: &dyn Storage, lease: Duration) -> Self {
        Self::new(storage.grant_holders(lease), storage.tokens())
    }

    fn held(&self, key: &str) -> Arc<tokio::sync::Mutex<Held>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.to_owned())
            .or_default()
            .clone()
    }

    /// Holds `connection`'s grant for one more user in this process; the
    /// first one registers the process in the store, waiting up to `wait`
    /// while a last holder elsewhere is ending the grant. `revoke_on_exit`
    /// is this user's wish for the end; a user's login
    /// (`authorization_code`) is never revoked on exit.
    pub async fn hold(
        &self,
        connection: &Connection,
        revoke_on_exit: bool,
        wait: Duration,
    ) -> Result<(), StorageError> {
        let revoke = revoke_on_exit && !matches!(connection.info().grant, Grant::AuthorizationCode);
        let key = key(connection);
        let held = self.held(key);
        let mut held = held.lock().await;
        if held.users == 0 {
            self.holders.join(key, wait).await?;
            held.revoke = revoke;
        } else {
            held.revoke &= revoke;
        }
        held.users += 1;
        Ok(())
    }

    /// One user of the grant `key` in this process is done. When it was
    /// the last, the process leaves the grant's holders; when every user
    /// asked for it and no other live process holds the grant, it is
    /// revoked through `via` and its stored tokens deleted. Without `via`
    /// (no connection could be opened) the grant is kept. Failures are
    /// logged, not returned: the data has moved by now.
    pub async fn release(&self, key: &str, via: Option<&Connection>) -> Released {
        let held = self.held(key);
        let mut held = held.lock().await;
        if held.users > 1 {
            held.users -= 1;
            return Released::StillUsed;
        }
        if held.users == 0 {
            return Released::Kept;
        }
        held.users = 0;
        let end = match via {
            Some(connection) if held.revoke => connection,
            _ => {
                if let Err(e) = self.holders.leave(key, None).await {
                    tracing::warn!(target: "ionflow::grants", "could not remove this process from the grant's holders (its hold lapses on its own): {e}");
                }
                return Released::Kept;
            }
        };
        let mut ended = None;
        let outcome = self
            .holders
            .leave(
                key,
                Some(Box::pin(async {
                    ended = Some(self.end(key, end).await);
                })),
            )
            .await;
        let released = match (outcome, ended) {
            (Ok(true), Some(ended)) => ended,
            (Ok(_), _) => Released::OthersHold,
            (Err(e), _) => {
                tracing::warn!(
                    target: "ionflow::grants",
                    connection = %end.name(),
                    "could not find out whether other processes hold the grant, so it was kept: {e}"
                );
                Released::Unknown
            }
        };
        match released {
            Released::OthersHold => tracing::info!(
                target: "ionflow::grants",
                event = "grant_left",
                connection = %end.name(),
                "another live process holds the grant; it is not revoked"
            ),
            Released::Revoked => tracing::info!(
                target: "ionflow::grants",
                event = "grant_revoked",
                connection = %end.name(),
                "this process was the grant's last holder: revoked"
            ),
            _ => {}
        }
        released
    }

    /// Revokes through `via`, then deletes the stored tokens either way.
    async fn end(&self, key: &str, via: &Connection) -> Released {
        let revoked = match via.revoke().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(
                    target: "ionflow::grants",
                    connection = %via.name(),
                    "could not revoke the grant ({e}); its stored tokens are deleted so that no \
                     later run uses them, and it ends on its own when its refresh token expires"
                );
                false
            }
        };
        self.forget(key, via.name()).await;
        if revoked {
            Released::Revoked
        } else {
            Released::Dropped
        }
    }

    /// Deletes the stored tokens of `key` (logged, not returned, on failure).
    pub async fn forget(&self, key: &str, connection: &str) {
        if let Err(e) = drop_stored(self.tokens.as_ref(), key).await {
            tracing::warn!(
                target: "ionflow::grants",
                connection = %connection,
                "could not delete the stored tokens: {e}; the next run finds out they no longer \
                 work and requests new ones"
            );
        }
    }
}

/// Deletes `key`'s entry under its token lease, with compare-and-swap on
/// the version as every writer does. True when there was one.
async fn drop_stored(tokens: &dyn TokenStore, key: &str) -> Result<bool, String> {
    let lease = tokens
        .lock(key, DROP_LEASE_TTL_MS, DROP_LEASE_WAIT_MS)
        .await
        .map_err(describe)?;
    let outcome = async {
        // A conflict means a writer slipped in; delete what it wrote.
        for _ in 0..3 {
            let Some(entry) = tokens.load(key).await.map_err(describe)? else {
                return Ok(false);
            };
            match tokens.save(key, entry.version, None).await {
                Ok(_) => return Ok(true),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(describe(e)),
            }
        }
        Err("the entry kept changing while it was being deleted".to_owned())
    }
    .await;
    tokens.unlock(key, lease).await;
    outcome
}

/// A token-store error in words; it never holds a stored value.
fn describe(e: StoreError) -> String {
    match e {
        StoreError::Conflict(_) => "the entry changed meanwhile".to_owned(),
        StoreError::Unavailable(why) => why,
        StoreError::LockTimeout => {
            format!("its lease stayed taken for {} s", DROP_LEASE_WAIT_MS / 1000)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ionflow_runtime::capabilities::MemoryTokenStore;

    #[tokio::test]
    async fn dropping_deletes_whatever_version_is_stored() {
        let tokens = MemoryTokenStore::new();
        assert!(!drop_stored(&tokens, "k").await.unwrap());
        let v1 = tokens.save("k", 0, Some("one".into())).await.unwrap();
        tokens.save("k", v1, Some("two".into())).await.unwrap();
        assert!(drop_stored(&tokens, "k").await.unwrap());
        assert!(tokens.load("k").await.unwrap().is_none());
        // The lease is free again afterwards.
        let lease = tokens.lock("k", 1_000, 10).await.unwrap();
        tokens.unlock("k", lease).await;
    }

    #[test]
    fn a_newcomer_waits_longer_than_a_revocation_can_take() {
        assert_eq!(join_wait(None), Duration::from_secs(210));
        assert_eq!(join_wait(Some(1)), Duration::from_secs(33));
    }
}
