//! One rate-limit budget per connection for every worker on the database: a
//! sliding window of reservations (`ionflow_rate_grants`), taken by one
//! function call (`ionflow_reserve_calls`, migration 0002) that serialises
//! workers on an advisory lock per key. A worker reserves a batch of calls
//! at a time (`ionflow_runtime`'s limiter decides how many), so the database
//! sees one round trip per batch, not per call.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ionflow_runtime::{RateLimit, Reservation, SharedBudget};

use super::db::Db;

pub struct PostgresBudget {
    db: Arc<Db>,
}

impl PostgresBudget {
    pub fn new(db: Arc<Db>) -> Self {
        PostgresBudget { db }
    }
}

impl SharedBudget for PostgresBudget {
    fn reserve<'a>(
        &'a self,
        key: &'a str,
        limit: RateLimit,
        wanted: u32,
        hold: Duration,
    ) -> BoxFuture<'a, Result<Reservation, String>> {
        Box::pin(async move {
            let client = self.db.client().await.map_err(|e| e.to_string())?;
            let limit_calls = i32::try_from(limit.requests).unwrap_or(i32::MAX);
            let wanted = i32::try_from(wanted).unwrap_or(i32::MAX);
            let row = client
                .query_one(
                    "SELECT granted, retry_secs FROM ionflow_reserve_calls($1, $2, $3, $4, $5)",
                    &[
                        &key,
                        &limit_calls,
                        &limit.window.as_secs_f64(),
                        &hold.as_secs_f64(),
                        &wanted,
                    ],
                )
                .await
                .map_err(|e| self.db.failed("reserving rate-limit calls", e).to_string())?;
            let granted: i32 = row.get(0);
            let retry_secs: f64 = row.get(1);
            Ok(Reservation {
                granted: granted.max(0) as u32,
                retry_in: Duration::from_secs_f64(retry_secs.clamp(0.0, 86_400.0)),
            })
        })
    }
}
