//! JSON endpoints, on the gateway or plain HTTP(S), read in one call or paged
//! by offset and limit until a page comes back shorter than the limit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use serde_json::Value;

use super::{Limit, PageReader};
use crate::config::Variables;
use crate::config::{Check, MAX_CONCURRENCY, RetryConfig, default_concurrency, default_page_size};
use crate::pipeline::extract::RecordsAt;
use crate::pipeline::http::{self, HttpRequest};
use crate::pipeline::retry::{CallError, RunStats, gateway_call};
use ionflow_runtime::{Connection, GatewayRequest, Method};
use schemars::JsonSchema;
use serde::Deserialize;

pub(super) enum Target {
    Gateway {
        connection: Arc<Connection>,
        path: String,
    },
    Http {
        client: http::HttpClient,
        url: String,
        timeout: Duration,
    },
}

/// One page's answer: status, body, and what was asked, for messages.
type Answer = anyhow::Result<(u16, Vec<u8>, String)>;

/// Offset/limit paging: `offset_param` and `limit_param` are added to the
/// query; paging stops at the first page shorter than `page_size`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OffsetPaging {
    #[serde(default = "default_offset_param")]
    pub offset_param: String,
    #[serde(default = "default_limit_param")]
    pub limit_param: String,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Offset of the first page.
    #[serde(default)]
    pub start_offset: u64,
    /// Pages requested ahead at once, 1 to 64 (default 1); records still
    /// come out in offset order.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
}

pub(super) fn default_offset_param() -> String {
    "offset".into()
}

pub(super) fn default_limit_param() -> String {
    "limit".into()
}

/// Checks shared by the gateway and HTTP sources: where the records are
/// and how pages are asked for.
pub(super) fn check_records(
    check: &mut Check<'_, '_>,
    pointer: &Option<String>,
    jq: &Option<String>,
    paging: &Option<OffsetPaging>,
) {
    if pointer.is_some() && jq.is_some() {
        check.add(
            Some("records_jq"),
            "set records_pointer or records_jq, not both",
        );
    }
    if let Some(p) = pointer
        && !p.is_empty()
        && !p.starts_with('/')
    {
        check.add(
            Some("records_pointer"),
            format!("a JSON pointer starts with `/`: write \"/{p}\""),
        );
    }
    if let Some(p) = paging {
        if p.page_size == 0 {
            check.add_in("paging", Some("page_size"), "must be at least 1");
        }
        if p.concurrency == 0 || p.concurrency > MAX_CONCURRENCY {
            check.add_in(
                "paging",
                Some("concurrency"),
                format!("must be between 1 and {MAX_CONCURRENCY}"),
            );
        }
        // Paging stops at the first short page; a jq filter that drops
        // elements would make a full page look short and end the run early.
        if jq.is_some() {
            check.add(
                Some("records_jq"),
                "cannot be combined with paging: use records_pointer and filter in a [[transforms]] jq step",
            );
        }
    }
}

pub struct OffsetReader {
    target: Arc<Target>,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    records_at: RecordsAt,
    paging: Option<OffsetPaging>,
    /// The offset of the next page to ask for.
    offset: u64,
    limit: Limit,
    done: bool,
    retry: RetryConfig,
    stats: Arc<RunStats>,
    /// Pages asked for ahead (`paging.concurrency`), taken in offset order.
    ahead: FuturesOrdered<BoxFuture<'static, Answer>>,
}

fn expand_map(
    vars: &Variables,
    what: &str,
    map: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<(String, String)>> {
    map.iter()
        .map(|(k, v)| {
            vars.expand(v)
                .map(|v| (k.clone(), v))
                .map_err(|e| anyhow::anyhow!("source.{what}.{k}: {e}"))
        })
        .collect()
}

/// The settings a gateway source and an HTTP source have in common.
pub(super) struct Shared<'a> {
    pub query: &'a BTreeMap<String, String>,
    pub headers: &'a BTreeMap<String, String>,
    pub records_pointer: Option<&'a str>,
    pub records_jq: Option<&'a str>,
    pub paging: &'a Option<OffsetPaging>,
    pub max_records: Option<u64>,
    pub retry: RetryConfig,
}

impl OffsetReader {
    pub(super) fn with_target(
        target: Target,
        shared: Shared<'_>,
        vars: &Variables,
        stats: Arc<RunStats>,
    ) -> anyhow::Result<Self> {
        Ok(OffsetReader {
            target: Arc::new(target),
            query: expand_map(vars, "query", shared.query)?,
            headers: expand_map(vars, "headers", shared.headers)?,
            records_at: RecordsAt::new(shared.records_pointer, shared.records_jq)
                .map_err(|e| anyhow::anyhow!("source.{e}"))?,
            offset: shared.paging.as_ref().map_or(0, |p| p.start_offset),
            paging: shared.paging.clone(),
            limit: Limit::new(shared.max_records),
            done: false,
            retry: shared.retry,
            stats,
            ahead: FuturesOrdered::new(),
        })
    }

    /// The request for the page at `offset`, ready to run on its own.
    fn fetch(&self, offset: u64) -> BoxFuture<'static, Answer> {
        let mut query = self.query.clone();
        if let Some(p) = &self.paging {
            query.push((p.offset_param.clone(), offset.to_string()));
            query.push((p.limit_param.clone(), p.page_size.to_string()));
        }
        let (target, headers, retry, stats) = (
            self.target.clone(),
            self.headers.clone(),
            self.retry,
            self.stats.clone(),
        );
        Box::pin(async move {
            match &*target {
                Target::Gateway { connection, path } => {
                    let request = GatewayRequest {
                        method: Method::Get,
                        path: path.clone(),
                        query,
                        headers,
                        body: vec![],
                        timeout_ms: None,
                    };
                    let (response, _) = gateway_call(connection, request, &retry, true, &stats)
                        .await
                        .map_err(CallError::into_anyhow)
                        .with_context(|| {
                            format!("source: GET {path} via connection `{}`", connection.name())
                        })?;
                    Ok((response.status, response.body, path.clone()))
                }
                Target::Http {
                    client,
                    url,
                    timeout,
                } => {
                    let request = HttpRequest {
                        method: reqwest::Method::GET,
                        url: url.clone(),
                        query,
                        headers,
                        body: None,
                        timeout: *timeout,
                    };
                    let (response, _) = http::send(client, &request, &retry, true, &stats).await?;
                    Ok((response.status, response.body, url.clone()))
                }
            }
        })
    }

    async fn read_page(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
        if self.done || self.limit.reached() {
            // Pages asked for beyond the end are reads; dropping them is safe.
            self.ahead.clear();
            return Ok(None);
        }
        let depth = match &self.paging {
            Some(p) => p.concurrency.max(1) as usize,
            None => 1,
        };
        while self.ahead.len() < depth {
            self.ahead.push_back(self.fetch(self.offset));
            match &self.paging {
                Some(p) => self.offset += u64::from(p.page_size),
                None => break,
            }
        }
        let Some(answer) = self.ahead.next().await else {
            return Ok(None);
        };
        let (status, body, origin) = answer?;
        if !(200..300).contains(&status) {
            anyhow::bail!(
                "GET {origin} answered HTTP {status}: {}",
                http::excerpt(&body)
            );
        }
        let document: Value = serde_json::from_slice(&body)
            .with_context(|| format!("GET {origin}: the answer is not JSON"))?;
        let records = self
            .records_at
            .extract(document)
            .map_err(|e| anyhow::anyhow!("GET {origin}: {e}"))?;
        let got = records.len() as u64;
        match &self.paging {
            Some(p) if got == u64::from(p.page_size) => {}
            // One page at a time: the next starts after what came, however long.
            Some(p) if got > u64::from(p.page_size) && depth == 1 => {
                self.offset += got - u64::from(p.page_size);
            }
            // Pages asked for ahead sit at fixed steps of page_size, so a
            // longer page would overlap the next one.
            Some(p) if got > u64::from(p.page_size) => anyhow::bail!(
                "GET {origin}: the endpoint sent {got} records for {}={}; with \
                 source.paging.concurrency above 1 every full page must hold exactly page_size \
                 records: set limit_param to the parameter it honours, or concurrency = 1",
                p.limit_param,
                p.page_size
            ),
            _ => {
                self.done = true;
                self.ahead.clear();
            }
        }
        Ok(Some(self.limit.take(records)))
    }
}

impl PageReader for OffsetReader {
    fn next_page(&mut self) -> BoxFuture<'_, anyhow::Result<Option<Vec<Value>>>> {
        Box::pin(self.read_page())
    }
}
