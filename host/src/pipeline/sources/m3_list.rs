//! An M3 list transaction, paged by key.

use std::sync::Arc;

use anyhow::Context as _;
use serde_json::Value;
use tracing::Instrument as _;

use super::{Limit, PageReader, SourceContext, SourceKind};
use crate::config::Variables;
use crate::config::{Check, RetryConfig, default_page_size};
use crate::pipeline::retry::{CallError, RunStats, gateway_call};
use crate::products::m3;
use ionflow_runtime::{Connection, GatewayRequest, GatewayResponse, Method};
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

/// M3 has no cursor: ask for `page_size` records starting at the last key
/// seen and drop the repeated first record.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct M3ListSourceConfig {
    pub connection: String,
    /// MI program, e.g. `MMS200MI`.
    pub program: String,
    /// List transaction, e.g. `LstItmByItm`.
    pub transaction: String,
    /// The field the list is ordered by, sent as the start key of each page.
    pub key_field: String,
    /// Records per call (`maxrecs`); M3 caps a call at 10,000.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Extra input fields (`CONO`, `STAT`, ...); values may use `${env.NAME}`.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Output fields to return (`returncols`); all when absent.
    pub returncols: Option<Vec<String>>,
    /// Stop after this many records.
    pub max_records: Option<u64>,
    #[serde(default)]
    pub retry: RetryConfig,
}

impl SourceKind for M3ListSourceConfig {
    fn literal_keys(&self) -> &'static [&'static str] {
        &["program", "transaction", "key_field", "returncols"]
    }

    fn check(&self, check: &mut Check<'_, '_>) {
        check.connection(&self.connection);
        check.range(
            "page_size",
            self.page_size.into(),
            10_000,
            " (M3's cap per call)",
        );
    }

    fn connection(&self) -> Option<&str> {
        Some(&self.connection)
    }

    fn open(&self, cx: SourceContext<'_>) -> anyhow::Result<Box<dyn PageReader>> {
        let connection = cx.connection(&self.connection)?;
        Ok(Box::new(M3ListReader::new(
            self, connection, cx.vars, cx.stats,
        )?))
    }
}

impl PageReader for M3ListReader {
    fn next_page(&mut self) -> futures::future::BoxFuture<'_, anyhow::Result<Option<Vec<Value>>>> {
        Box::pin(M3ListReader::next_page(self))
    }
}

pub struct M3ListReader {
    connection: Arc<Connection>,
    path: String,
    transaction: String,
    key_field: String,
    page_size: u32,
    /// The fixed input fields, without the key.
    query: Vec<(String, String)>,
    /// The key to start the next page at; `None` before the first page.
    next_key: Option<String>,
    start_key: Option<String>,
    limit: Limit,
    done: bool,
    retry: RetryConfig,
    stats: Arc<RunStats>,
    /// The next page's call, started as soon as its key is known, so that it
    /// runs while the pipeline works on the page just returned. A reader
    /// dropped before taking it lets it finish (a read; cancelling a call
    /// inside the sandbox would lose the instance).
    ahead: Option<tokio::task::JoinHandle<anyhow::Result<GatewayResponse>>>,
    /// The span current when the reader was opened: the run's. A task
    /// enters only the spans it is given, and its log lines find the run's
    /// pipeline and run id only if the run's span is among them.
    run_span: tracing::Span,
}

impl M3ListReader {
    pub fn new(
        config: &M3ListSourceConfig,
        connection: Arc<Connection>,
        vars: &Variables,
        stats: Arc<RunStats>,
    ) -> anyhow::Result<Self> {
        let mut query = Vec::new();
        let mut start_key = None;
        for (name, value) in &config.query {
            let value = vars
                .expand(value)
                .map_err(|e| anyhow::anyhow!("source.query.{name}: {e}"))?;
            if *name == config.key_field {
                start_key = Some(value);
            } else {
                query.push((name.clone(), value));
            }
        }
        if let Some(cols) = &config.returncols {
            let mut cols = cols.clone();
            // Paging needs the key in every record.
            if !cols.contains(&config.key_field) {
                cols.push(config.key_field.clone());
            }
            query.push(("returncols".into(), cols.join(",")));
        }
        Ok(M3ListReader {
            connection,
            path: m3::execute_path(&config.program, &config.transaction),
            transaction: config.transaction.clone(),
            key_field: config.key_field.clone(),
            page_size: config.page_size,
            query,
            next_key: None,
            start_key,
            limit: Limit::new(config.max_records),
            done: false,
            retry: config.retry,
            stats,
            ahead: None,
            run_span: tracing::Span::current(),
        })
    }

    /// Starts the call for the page at `next_key` (or the start key) as a task.
    fn start_call(&self, maxrecs: u32) -> tokio::task::JoinHandle<anyhow::Result<GatewayResponse>> {
        let mut query = self.query.clone();
        if let Some(key) = self.next_key.as_ref().or(self.start_key.as_ref()) {
            query.push((self.key_field.clone(), key.clone()));
        }
        query.push(("maxrecs".into(), maxrecs.to_string()));
        let request = GatewayRequest {
            method: Method::Get,
            path: self.path.clone(),
            query,
            headers: vec![],
            body: vec![],
            timeout_ms: None,
        };
        let (connection, retry, stats) = (self.connection.clone(), self.retry, self.stats.clone());
        let what = format!(
            "M3 {} via connection `{}`",
            self.transaction,
            self.connection.name()
        );
        // The prefetch logs in the run's span, as the call it stands for
        // would, and its call's span nests under the current page's.
        tokio::spawn(
            async move {
                gateway_call(&connection, request, &retry, true, &stats)
                    .await
                    .map(|(response, _)| response)
                    .map_err(CallError::into_anyhow)
                    .context(what)
            }
            .in_current_span()
            .instrument(self.run_span.clone()),
        )
    }

    pub async fn next_page(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
        if self.done || self.limit.reached() {
            return Ok(None);
        }
        let continuing = self.next_key.is_some();
        // A continuation page repeats the previous page's last record, so ask
        // for one more to still move `page_size` records forward.
        let maxrecs = if continuing {
            self.page_size + 1
        } else {
            self.page_size
        };
        let call = match self.ahead.take() {
            Some(call) => call,
            None => self.start_call(maxrecs),
        };
        let response = call
            .await
            .context("the call for the next M3 page stopped")??;
        let mut records = m3::records(response.status, &response.body, &self.transaction)?;
        let fetched = records.len();
        if continuing
            && let Some(first) = records.first()
            && key_of(first, &self.key_field) == self.next_key.as_deref()
        {
            records.remove(0);
        }
        if fetched < maxrecs as usize || records.is_empty() {
            self.done = true;
        }
        if let Some(last) = records.last() {
            let key = key_of(last, &self.key_field).ok_or_else(|| {
                anyhow::anyhow!(
                    "M3 {}: a record has no `{}` field, so the list cannot be paged by it; \
                     check source.key_field",
                    self.transaction,
                    self.key_field
                )
            })?;
            self.next_key = Some(key.to_owned());
        }
        let records = self.limit.take(records);
        if !self.done && !self.limit.reached() {
            // A continuation page asks for one record more (see above).
            self.ahead = Some(self.start_call(self.page_size + 1));
        }
        Ok(Some(records))
    }
}

fn key_of<'a>(record: &'a Value, field: &str) -> Option<&'a str> {
    record.get(field).and_then(Value::as_str)
}
