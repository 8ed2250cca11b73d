//! Grant holders in PostgreSQL, for processes on many machines: a row per
//! key and holder in `ionflow_grant_holders` whose expiry the holder renews
//! every third of its lease while it lives (the database's clock decides,
//! so machines' clocks may differ). Joining inserts the row under a shared
//! advisory lock on the key; the last holder leaving keeps the exclusive
//! lock, in a transaction on a session of its own, while it ends the grant,
//! so a newcomer waits for it, and a leaver that dies midway releases the
//! lock with its session.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::super::StorageError;
use super::super::holders::GrantHolders;
use super::db::Db;

/// How often a waiting newcomer asks again.
const JOIN_POLL: Duration = Duration::from_millis(25);
/// How long a leaver waits for another leaver's exclusive lock.
const LEAVE_WAIT: Duration = Duration::from_secs(120);

/// Inserts or renews this holder's row, only while no last holder keeps
/// the key's exclusive lock (then no row comes back).
const JOIN: &str = "INSERT INTO ionflow_grant_holders (key, holder, expires_at)
     SELECT $1, $2, now() + make_interval(secs => $3)
     WHERE pg_try_advisory_xact_lock_shared($4)
     ON CONFLICT (key, holder) DO UPDATE SET expires_at = excluded.expires_at
     RETURNING 1";

pub struct PostgresHolders {
    shared: Arc<Shared>,
    renewal: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Shared {
    db: Arc<Db>,
    /// Unique per process, even for processes given one worker name.
    holder: String,
    lease: Duration,
    held: Mutex<BTreeSet<String>>,
}

/// The advisory lock of a key: 64 bits of a digest, in a namespace of our own.
fn lock_id(key: &str) -> i64 {
    let digest = Sha256::digest(format!("ionflow-grant:{key}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

impl PostgresHolders {
    pub fn new(db: Arc<Db>, worker: &str, lease: Duration) -> Self {
        PostgresHolders {
            shared: Arc::new(Shared {
                db,
                holder: format!("{worker}#{:016x}", fastrand::u64(..)),
                lease,
                held: Mutex::new(BTreeSet::new()),
            }),
            renewal: Mutex::new(None),
        }
    }

    /// Renews every held row each third of the lease, for as long as this
    /// value lives. A row that expired meanwhile (the database was out of
    /// reach) is inserted again.
    fn start_renewal(&self) {
        let mut renewal = self
            .renewal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if renewal.is_some() {
            return;
        }
        let shared = self.shared.clone();
        *renewal = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(shared.lease / 3).await;
                let keys: Vec<String> = shared.held().iter().cloned().collect();
                for key in keys {
                    match shared.try_join(&key).await {
                        Ok(true) => {}
                        // A last holder is ending it right now: next round.
                        Ok(false) => {}
                        Err(e) => tracing::warn!(
                            target: "ionflow::store",
                            "could not renew this process's hold on a grant (it lapses after {:.1} s): {e}",
                            shared.lease.as_secs_f64()
                        ),
                    }
                }
            }
        }));
    }
}

impl Drop for PostgresHolders {
    fn drop(&mut self) {
        if let Some(task) = self
            .renewal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl Shared {
    fn held(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One attempt to insert or renew the row: false while a last holder
    /// keeps the key.
    async fn try_join(&self, key: &str) -> Result<bool, StorageError> {
        let client = self.db.client().await?;
        let row = client
            .query_opt(
                JOIN,
                &[&key, &self.holder, &self.lease.as_secs_f64(), &lock_id(key)],
            )
            .await
            .map_err(|e| self.db.failed("registering a grant holder", e))?;
        Ok(row.is_some())
    }

    async fn delete_own(&self, key: &str) -> Result<(), StorageError> {
        let client = self.db.client().await?;
        client
            .execute(
                "DELETE FROM ionflow_grant_holders WHERE key = $1 AND holder = $2",
                &[&key, &self.holder],
            )
            .await
            .map_err(|e| self.db.failed("removing a grant holder", e))?;
        Ok(())
    }

    /// Under the key's exclusive lock: removes this holder and the expired
    /// ones, and ends the grant if nobody is left.
    async fn leave_last(
        &self,
        session: &Client,
        key: &str,
        if_last: BoxFuture<'_, ()>,
    ) -> Result<bool, StorageError> {
        let failed = |what, e| self.db.failed(what, e);
        session
            .batch_execute("BEGIN")
            .await
            .map_err(|e| failed("starting a transaction", e))?;
        tokio::time::timeout(
            LEAVE_WAIT,
            session.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_id(key)]),
        )
        .await
        .map_err(|_| {
            StorageError::Unavailable(format!(
                "PostgreSQL store {}: another process kept a grant's lock for {} s",
                self.db.url(),
                LEAVE_WAIT.as_secs()
            ))
        })?
        .map_err(|e| failed("locking a grant", e))?;
        // Each statement after the lock sees every holder committed before it.
        session
            .execute(
                "DELETE FROM ionflow_grant_holders
                 WHERE key = $1 AND (holder = $2 OR expires_at <= clock_timestamp())",
                &[&key, &self.holder],
            )
            .await
            .map_err(|e| failed("removing a grant holder", e))?;
        let live: i64 = session
            .query_one(
                "SELECT count(*) FROM ionflow_grant_holders WHERE key = $1",
                &[&key],
            )
            .await
            .map_err(|e| failed("counting grant holders", e))?
            .get(0);
        if live > 0 {
            session
                .batch_execute("COMMIT")
                .await
                .map_err(|e| failed("committing", e))?;
            return Ok(false);
        }
        if_last.await;
        if let Err(e) = session.batch_execute("COMMIT").await {
            // The grant has ended; only this holder's row outlives it, until it expires.
            tracing::warn!(target: "ionflow::store", "{}", failed("committing", e));
        }
        Ok(true)
    }
}

impl GrantHolders for PostgresHolders {
    fn join<'a>(&'a self, key: &'a str, wait: Duration) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let deadline = Instant::now() + wait;
            while !self.shared.try_join(key).await? {
                if Instant::now() >= deadline {
                    return Err(StorageError::Unavailable(format!(
                        "PostgreSQL store {}: another process has been ending this grant for \
                         {} s; run again once it is done",
                        self.shared.db.url(),
                        wait.as_secs()
                    )));
                }
                tokio::time::sleep(JOIN_POLL).await;
            }
            self.shared.held().insert(key.to_owned());
            self.start_renewal();
            Ok(())
        })
    }

    fn leave<'a>(
        &'a self,
        key: &'a str,
        if_last: Option<BoxFuture<'a, ()>>,
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(async move {
            self.shared.held().remove(key);
            let Some(if_last) = if_last else {
                self.shared.delete_own(key).await?;
                return Ok(false);
            };
            // A transaction needs a session of its own: the shared client
            // pipelines every task's queries on one connection.
            let outcome = match self.shared.db.open().await {
                Ok(session) => self.shared.leave_last(&session, key, if_last).await,
                Err(e) => Err(e),
            };
            if outcome.is_err() {
                // Not knowing whether others hold it, keep the grant; this
                // holder goes at least.
                let _ = self.shared.delete_own(key).await;
            }
            outcome
        })
    }
}
