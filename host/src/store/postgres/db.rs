//! One PostgreSQL connection per process, shared by every task (tokio-postgres
//! pipelines concurrent queries on it), and opened again if the server drops it.

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::super::{MaskedUrl, StorageError};

pub struct Db {
    url: MaskedUrl,
    client: Mutex<Option<Arc<Client>>>,
}

impl Db {
    pub async fn connect(url: &MaskedUrl) -> Result<Self, StorageError> {
        let db = Db {
            url: url.clone(),
            client: Mutex::new(None),
        };
        db.client().await?;
        Ok(db)
    }

    pub fn url(&self) -> &MaskedUrl {
        &self.url
    }

    /// The live client, reconnecting once if the last one was closed.
    pub async fn client(&self) -> Result<Arc<Client>, StorageError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref()
            && !client.is_closed()
        {
            return Ok(client.clone());
        }
        let client = Arc::new(self.open().await?);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// A connection of its own, for work that needs a session (migrations).
    pub async fn open(&self) -> Result<Client, StorageError> {
        // TLS is not offered yet: loopback, a private network or a sidecar
        // proxy (docs/DEPLOY.md). The URL parsed when the setting was read.
        let config: tokio_postgres::Config = self
            .url
            .expose()
            .parse()
            .map_err(|e| StorageError::Setting(format!("{}: {e}", self.url)))?;
        let connecting = config.connect(NoTls);
        let (client, connection) =
            tokio::time::timeout(std::time::Duration::from_secs(10), connecting)
                .await
                .map_err(|_| self.unreachable("no answer within 10 s"))?
                .map_err(|e| self.unreachable(&with_sources(&e)))?;
        let url = self.url.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(target: "ionflow::store", store = %url, "the database connection ended: {e}");
            }
        });
        Ok(client)
    }

    fn unreachable(&self, why: &str) -> StorageError {
        crate::metrics::metrics().store_error("connecting");
        StorageError::Unavailable(format!(
            "cannot connect to the PostgreSQL store {} ({why}); check that the server \
             runs and accepts TCP connections there, and the user, password and database \
             in the URL (IONFLOW_STORE or `store` in the config file)",
            self.url
        ))
    }

    /// A failed query, naming what was being done and the store.
    pub fn failed(&self, what: &str, e: tokio_postgres::Error) -> StorageError {
        crate::metrics::metrics().store_error(what);
        StorageError::Unavailable(format!(
            "PostgreSQL store {}: {what} failed: {}",
            self.url,
            e.as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_else(|| with_sources(&e))
        ))
    }
}

/// tokio-postgres keeps the useful part ("Connection refused", "password
/// authentication failed") in the error's source.
fn with_sources(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
