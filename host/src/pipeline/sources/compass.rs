//! A Compass SQL query: one job submitted, polled until it finishes, then
//! its result read page by page with offset and limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;

use super::{Limit, PageReader, SourceContext, SourceKind};
use crate::config::Variables;
use crate::config::{Check, RetryConfig};
use crate::pipeline::retry::{CallError, RunStats, gateway_call};
use crate::products::compass::{self, JobStatus};
use ionflow_runtime::{Connection, GatewayRequest, Method};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompassSourceConfig {
    pub connection: String,
    /// The SQL statement; may use `${state.NAME}` and `${env.NAME}`.
    pub sql: String,
    /// Rows per result page (`limit`); Compass allows at most 100,000.
    #[serde(default = "default_compass_page_size")]
    pub page_size: u32,
    /// Wait between status polls.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Give up when the job has not finished after this long.
    #[serde(default = "default_job_timeout_secs")]
    pub job_timeout_secs: u64,
    pub max_records: Option<u64>,
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_compass_page_size() -> u32 {
    10_000
}

fn default_poll_interval_ms() -> u64 {
    1000
}

fn default_job_timeout_secs() -> u64 {
    600
}

impl SourceKind for CompassSourceConfig {
    fn check(&self, check: &mut Check<'_, '_>) {
        check.connection(&self.connection);
        check.range(
            "page_size",
            self.page_size.into(),
            100_000,
            " (Compass's cap per result page)",
        );
        if self.poll_interval_ms == 0 {
            check.add(Some("poll_interval_ms"), "must be at least 1");
        }
    }

    fn connection(&self) -> Option<&str> {
        Some(&self.connection)
    }

    fn open(&self, cx: SourceContext<'_>) -> anyhow::Result<Box<dyn PageReader>> {
        let connection = cx.connection(&self.connection)?;
        Ok(Box::new(CompassReader::new(
            self, connection, cx.vars, cx.stats,
        )?))
    }
}

impl PageReader for CompassReader {
    fn next_page(&mut self) -> futures::future::BoxFuture<'_, anyhow::Result<Option<Vec<Value>>>> {
        Box::pin(CompassReader::next_page(self))
    }
}

pub struct CompassReader {
    connection: Arc<Connection>,
    sql: String,
    page_size: u32,
    poll_interval: Duration,
    job_timeout: Duration,
    query_id: Option<String>,
    offset: u64,
    limit: Limit,
    done: bool,
    retry: RetryConfig,
    stats: Arc<RunStats>,
}

impl CompassReader {
    pub fn new(
        config: &CompassSourceConfig,
        connection: Arc<Connection>,
        vars: &Variables,
        stats: Arc<RunStats>,
    ) -> anyhow::Result<Self> {
        Ok(CompassReader {
            connection,
            sql: vars
                .expand(&config.sql)
                .map_err(|e| anyhow::anyhow!("source.sql: {e}"))?,
            page_size: config.page_size,
            poll_interval: Duration::from_millis(config.poll_interval_ms),
            job_timeout: Duration::from_secs(config.job_timeout_secs),
            query_id: None,
            offset: 0,
            limit: Limit::new(config.max_records),
            done: false,
            retry: config.retry,
            stats,
        })
    }

    async fn call(
        &self,
        request: GatewayRequest,
        idempotent: bool,
    ) -> anyhow::Result<(u16, Vec<u8>)> {
        let path = request.path.clone();
        let (response, _) = gateway_call(
            &self.connection,
            request,
            &self.retry,
            idempotent,
            &self.stats,
        )
        .await
        .map_err(CallError::into_anyhow)
        .with_context(|| format!("Compass {path} via connection `{}`", self.connection.name()))?;
        Ok((response.status, response.body))
    }

    fn get(path: String, query: Vec<(String, String)>) -> GatewayRequest {
        GatewayRequest {
            method: Method::Get,
            path,
            query,
            headers: vec![("Accept".into(), "application/json".into())],
            body: vec![],
            timeout_ms: None,
        }
    }

    async fn run_job(&mut self) -> anyhow::Result<String> {
        let submit = GatewayRequest {
            method: Method::Post,
            path: compass::JOBS_PATH.into(),
            query: vec![],
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: self.sql.clone().into_bytes(),
            timeout_ms: None,
        };
        // A second submission would start a second job: only a 429 is retried.
        let (status, body) = self.call(submit, false).await?;
        let query_id = compass::submitted(status, &body)?;
        let started = Instant::now();
        loop {
            let (status, body) = self
                .call(Self::get(compass::status_path(&query_id), vec![]), true)
                .await?;
            match compass::job_status(status, &body)? {
                JobStatus::Finished => return Ok(query_id),
                JobStatus::Failed(message) => {
                    anyhow::bail!("Compass query {query_id} failed: {message}")
                }
                JobStatus::Running if started.elapsed() > self.job_timeout => anyhow::bail!(
                    "Compass query {query_id} did not finish within {} s; raise source.job_timeout_secs",
                    self.job_timeout.as_secs()
                ),
                JobStatus::Running => tokio::time::sleep(self.poll_interval).await,
            }
        }
    }

    pub async fn next_page(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
        if self.done || self.limit.reached() {
            return Ok(None);
        }
        let query_id = match &self.query_id {
            Some(id) => id.clone(),
            None => {
                let id = self.run_job().await?;
                self.query_id = Some(id.clone());
                id
            }
        };
        let (status, body) = self
            .call(
                Self::get(
                    compass::result_path(&query_id),
                    vec![
                        ("offset".into(), self.offset.to_string()),
                        ("limit".into(), self.page_size.to_string()),
                    ],
                ),
                true,
            )
            .await?;
        let rows = compass::result_rows(status, &body)?;
        if (rows.len() as u64) < u64::from(self.page_size) {
            self.done = true;
        }
        self.offset += rows.len() as u64;
        Ok(Some(self.limit.take(rows)))
    }
}
