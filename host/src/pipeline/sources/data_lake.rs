//! Data Lake payload descriptions (`datalakeapi/v1/payloads/list`), paged
//! with `page` (from 1) and `records` until a page comes back short.

use std::sync::Arc;

use anyhow::Context as _;
use serde_json::Value;

use super::{Limit, PageReader, SourceContext, SourceKind};
use crate::config::Variables;
use crate::config::{Check, RetryConfig};
use crate::pipeline::retry::{RunStats, gateway_call};
use crate::products::data_lake;
use ionflow_runtime::{Connection, GatewayRequest, Method};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataLakeSourceConfig {
    pub connection: String,
    /// Data Lake filter, e.g. `dl_document_name eq 'SyncItemMaster'`.
    pub filter: Option<String>,
    /// Sort, e.g. `dl_document_indexed_date:desc`.
    pub sort: Option<String>,
    /// Payload descriptions per page (`records`).
    #[serde(default = "default_data_lake_page_size")]
    pub page_size: u32,
    pub max_records: Option<u64>,
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_data_lake_page_size() -> u32 {
    100
}

impl SourceKind for DataLakeSourceConfig {
    fn literal_keys(&self) -> &'static [&'static str] {
        &["sort"]
    }

    fn check(&self, check: &mut Check<'_, '_>) {
        check.connection(&self.connection);
        check.range("page_size", self.page_size.into(), 10_000, "");
    }

    fn connection(&self) -> Option<&str> {
        Some(&self.connection)
    }

    fn open(&self, cx: SourceContext<'_>) -> anyhow::Result<Box<dyn PageReader>> {
        let connection = cx.connection(&self.connection)?;
        Ok(Box::new(DataLakeReader::new(
            self, connection, cx.vars, cx.stats,
        )?))
    }
}

impl PageReader for DataLakeReader {
    fn next_page(&mut self) -> futures::future::BoxFuture<'_, anyhow::Result<Option<Vec<Value>>>> {
        Box::pin(DataLakeReader::next_page(self))
    }
}

pub struct DataLakeReader {
    connection: Arc<Connection>,
    query: Vec<(String, String)>,
    page_size: u32,
    page: u64,
    limit: Limit,
    done: bool,
    retry: RetryConfig,
    stats: Arc<RunStats>,
}

impl DataLakeReader {
    pub fn new(
        config: &DataLakeSourceConfig,
        connection: Arc<Connection>,
        vars: &Variables,
        stats: Arc<RunStats>,
    ) -> anyhow::Result<Self> {
        let mut query = Vec::new();
        if let Some(filter) = &config.filter {
            query.push((
                "filter".into(),
                vars.expand(filter)
                    .map_err(|e| anyhow::anyhow!("source.filter: {e}"))?,
            ));
        }
        if let Some(sort) = &config.sort {
            query.push(("sort".into(), sort.clone()));
        }
        Ok(DataLakeReader {
            connection,
            query,
            page_size: config.page_size,
            page: 1,
            limit: Limit::new(config.max_records),
            done: false,
            retry: config.retry,
            stats,
        })
    }

    pub async fn next_page(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
        if self.done || self.limit.reached() {
            return Ok(None);
        }
        let mut query = self.query.clone();
        query.push(("page".into(), self.page.to_string()));
        query.push(("records".into(), self.page_size.to_string()));
        let request = GatewayRequest {
            method: Method::Get,
            path: data_lake::LIST_PATH.into(),
            query,
            headers: vec![],
            body: vec![],
            timeout_ms: None,
        };
        let (response, _) = gateway_call(&self.connection, request, &self.retry, true, &self.stats)
            .await
            .with_context(|| {
                format!(
                    "Data Lake payloads/list via connection `{}`",
                    self.connection.name()
                )
            })?;
        let records = data_lake::list_page(response.status, &response.body)?;
        if (records.len() as u64) < u64::from(self.page_size) {
            self.done = true;
        }
        self.page += 1;
        Ok(Some(self.limit.take(records)))
    }
}
