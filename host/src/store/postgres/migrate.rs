//! Schema migrations, embedded in the binary and applied at start-up. An
//! advisory lock makes workers that start together migrate one at a time;
//! `ionflow_schema_version` records what is applied.

use tokio_postgres::Client;

use super::super::StorageError;
use super::db::Db;

/// In order; a new schema is a new file at the end, never an edit.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_grant_holders.sql")),
    (3, include_str!("migrations/0003_rate_budget.sql")),
];

/// Any constant that no other application on the database uses.
const MIGRATION_LOCK: i64 = 0x696f_6e66_6c6f_7701;

pub async fn migrate(db: &Db) -> Result<i32, StorageError> {
    // A session of its own: the advisory lock belongs to the session.
    let client = db.open().await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| db.failed("taking the migration lock", e))?;
    let outcome = apply(db, &client).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    outcome
}

async fn apply(db: &Db, client: &Client) -> Result<i32, StorageError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS ionflow_schema_version (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(|e| db.failed("creating ionflow_schema_version", e))?;
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM ionflow_schema_version",
            &[],
        )
        .await
        .map_err(|e| db.failed("reading the schema version", e))?;
    let current: i32 = row.get(0);
    let newest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > newest {
        return Err(StorageError::Setting(format!(
            "the PostgreSQL store {} has schema version {current}, newer than this ionflow \
             knows ({newest}); upgrade ionflow on this worker",
            db.url()
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        // One transaction per migration: a failed one leaves nothing half done.
        let script = format!(
            "BEGIN;\n{sql}\nINSERT INTO ionflow_schema_version (version) VALUES ({version});\nCOMMIT;"
        );
        if let Err(e) = client.batch_execute(&script).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(db.failed(&format!("applying migration {version}"), e));
        }
        tracing::info!(target: "ionflow::store", event = "migrated", store = %db.url(), version);
    }
    Ok(newest)
}
