//! The connector's token store in PostgreSQL: compare-and-swap on a version
//! column, and leases as rows with an expiry (the database's clock decides,
//! so workers' clocks may differ), so that across workers exactly one
//! spends a refresh token and every other reads the rotated one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

use super::db::Db;
use ionflow_runtime::capabilities::TokenStore;
use ionflow_runtime::capabilities::token_store::{Entry, StoreError};

/// How often a waiter asks again for a held lease.
const LOCK_POLL: Duration = Duration::from_millis(25);

pub struct PostgresTokenStore {
    db: Arc<Db>,
    worker: String,
}

impl PostgresTokenStore {
    pub fn new(db: Arc<Db>, worker: &str) -> Self {
        PostgresTokenStore {
            db,
            worker: worker.to_owned(),
        }
    }

    async fn current(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let client = self.db.client().await.map_err(unavailable)?;
        let row = client
            .query_opt(
                "SELECT value, version FROM ionflow_tokens WHERE key = $1",
                &[&key],
            )
            .await
            .map_err(|e| unavailable(self.db.failed("reading a token entry", e)))?;
        Ok(row.map(|r| Entry {
            value: r.get(0),
            version: r.get::<_, i64>(1) as u64,
        }))
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: u64,
        value: Option<String>,
    ) -> Result<u64, StoreError> {
        let client = self.db.client().await.map_err(unavailable)?;
        let expected_i = expected as i64;
        let written = match (&value, expected) {
            (Some(value), 0) => client
                .query_opt(
                    "INSERT INTO ionflow_tokens (key, version, value)
                     VALUES ($1, nextval('ionflow_token_versions'), $2)
                     ON CONFLICT (key) DO NOTHING RETURNING version",
                    &[&key, value],
                )
                .await
                .map(|r| r.map(|r| r.get::<_, i64>(0) as u64)),
            (Some(value), _) => client
                .query_opt(
                    "UPDATE ionflow_tokens
                     SET value = $3, version = nextval('ionflow_token_versions'), updated_at = now()
                     WHERE key = $1 AND version = $2 RETURNING version",
                    &[&key, &expected_i, value],
                )
                .await
                .map(|r| r.map(|r| r.get::<_, i64>(0) as u64)),
            (None, 0) => {
                // Deleting nothing: succeeds only if there is nothing.
                return match self.current(key).await? {
                    None => Ok(0),
                    current => Err(StoreError::Conflict(current)),
                };
            }
            (None, _) => client
                .query_opt(
                    "DELETE FROM ionflow_tokens WHERE key = $1 AND version = $2 RETURNING 0::bigint",
                    &[&key, &expected_i],
                )
                .await
                .map(|r| r.map(|_| 0)),
        }
        .map_err(|e| unavailable(self.db.failed("writing a token entry", e)))?;
        match written {
            Some(version) => Ok(version),
            None => Err(StoreError::Conflict(self.current(key).await?)),
        }
    }

    async fn try_lock(&self, key: &str, ttl_ms: u32) -> Result<Option<u64>, StoreError> {
        let client = self.db.client().await.map_err(unavailable)?;
        let ttl_secs = f64::from(ttl_ms.max(1)) / 1000.0;
        // Insert, or take over a row whose holder let it expire.
        let row = client
            .query_opt(
                "INSERT INTO ionflow_token_leases AS l (key, lease_id, holder, expires_at)
                 VALUES ($1, nextval('ionflow_lease_ids'), $2, now() + make_interval(secs => $3))
                 ON CONFLICT (key) DO UPDATE
                     SET lease_id = excluded.lease_id, holder = excluded.holder,
                         expires_at = excluded.expires_at
                     WHERE l.expires_at <= now()
                 RETURNING lease_id",
                &[&key, &self.worker, &ttl_secs],
            )
            .await
            .map_err(|e| unavailable(self.db.failed("taking a token lease", e)))?;
        Ok(row.map(|r| r.get::<_, i64>(0) as u64))
    }
}

fn unavailable(e: super::super::StorageError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl TokenStore for PostgresTokenStore {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>, StoreError>> {
        Box::pin(self.current(key))
    }

    fn save<'a>(
        &'a self,
        key: &'a str,
        expected_version: u64,
        value: Option<String>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.compare_and_swap(key, expected_version, value))
    }

    fn lock<'a>(
        &'a self,
        key: &'a str,
        ttl_ms: u32,
        timeout_ms: u32,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let deadline = Instant::now() + Duration::from_millis(timeout_ms.into());
            loop {
                if let Some(id) = self.try_lock(key, ttl_ms).await? {
                    return Ok(id);
                }
                if Instant::now() >= deadline {
                    return Err(StoreError::LockTimeout);
                }
                tokio::time::sleep(LOCK_POLL).await;
            }
        })
    }

    fn unlock<'a>(&'a self, key: &'a str, lease: u64) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Ok(client) = self.db.client().await else {
                return; // The lease lapses at its expiry.
            };
            let lease = lease as i64;
            if let Err(e) = client
                .execute(
                    "DELETE FROM ionflow_token_leases WHERE key = $1 AND lease_id = $2",
                    &[&key, &lease],
                )
                .await
            {
                tracing::warn!(target: "ionflow::store", "could not end a token lease (it lapses at its expiry): {e}");
            }
        })
    }
}
