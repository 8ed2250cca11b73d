//! Data Lake payload descriptions (`datalakeapi/v1/payloads/list`), paged
//! with `page` (from 1) and `records` until a page comes back short.

use std::sync::Arc;

use anyhow::Context as _;
use serde_json::Value;

use super::Limit;
use crate::pipeline::config::{DataLakeSource, RetryConfig};
use crate::pipeline::http::excerpt;
use crate::pipeline::interpolate::Variables;
use crate::pipeline::retry::{RunStats, gateway_call};
use crate::runtime::{Connection, GatewayRequest, Method};

pub const LIST_PATH: &str = "IONSERVICES/datalakeapi/v1/payloads/list";

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
        config: &DataLakeSource,
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
            path: LIST_PATH.into(),
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
        if !(200..300).contains(&response.status) {
            anyhow::bail!(
                "Data Lake payloads/list answered HTTP {}: {}",
                response.status,
                excerpt(&response.body)
            );
        }
        let mut document: Value = serde_json::from_slice(&response.body)
            .context("Data Lake payloads/list: the answer is not JSON")?;
        let records = match document.get_mut("records").map(Value::take) {
            Some(Value::Array(records)) => records,
            _ => anyhow::bail!("Data Lake payloads/list: the answer has no `records` array"),
        };
        if (records.len() as u64) < u64::from(self.page_size) {
            self.done = true;
        }
        self.page += 1;
        Ok(Some(self.limit.take(records)))
    }
}
