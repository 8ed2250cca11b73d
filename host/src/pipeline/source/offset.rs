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

use super::Limit;
use crate::pipeline::config::{GatewaySource, HttpSource, OffsetPaging, RetryConfig};
use crate::pipeline::extract::RecordsAt;
use crate::pipeline::http::{self, HttpRequest};
use crate::pipeline::interpolate::Variables;
use crate::pipeline::retry::{RunStats, gateway_call};
use crate::runtime::{Connection, GatewayRequest, Method};

enum Target {
    Gateway {
        connection: Arc<Connection>,
        path: String,
    },
    Http {
        client: reqwest::Client,
        url: String,
        timeout: Duration,
    },
}

/// One page's answer: status, body, and what was asked, for messages.
type Answer = anyhow::Result<(u16, Vec<u8>, String)>;

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
struct Shared<'a> {
    query: &'a BTreeMap<String, String>,
    headers: &'a BTreeMap<String, String>,
    records_pointer: Option<&'a str>,
    records_jq: Option<&'a str>,
    paging: &'a Option<OffsetPaging>,
    max_records: Option<u64>,
    retry: RetryConfig,
}

impl OffsetReader {
    fn with_target(
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

    pub fn gateway(
        config: &GatewaySource,
        connection: Arc<Connection>,
        vars: &Variables,
        stats: Arc<RunStats>,
    ) -> anyhow::Result<Self> {
        let path = vars
            .expand(&config.path)
            .map_err(|e| anyhow::anyhow!("source.path: {e}"))?;
        Self::with_target(
            Target::Gateway { connection, path },
            Shared {
                query: &config.query,
                headers: &config.headers,
                records_pointer: config.records_pointer.as_deref(),
                records_jq: config.records_jq.as_deref(),
                paging: &config.paging,
                max_records: config.max_records,
                retry: config.retry,
            },
            vars,
            stats,
        )
    }

    pub fn http(
        config: &HttpSource,
        client: reqwest::Client,
        vars: &Variables,
        stats: Arc<RunStats>,
    ) -> anyhow::Result<Self> {
        let url = vars
            .expand(&config.url)
            .map_err(|e| anyhow::anyhow!("source.url: {e}"))?;
        http::check_url(&url).map_err(|e| anyhow::anyhow!("source.url: {e}"))?;
        Self::with_target(
            Target::Http {
                client,
                url,
                timeout: Duration::from_secs(config.timeout_secs),
            },
            Shared {
                query: &config.query,
                headers: &config.headers,
                records_pointer: config.records_pointer.as_deref(),
                records_jq: config.records_jq.as_deref(),
                paging: &config.paging,
                max_records: config.max_records,
                retry: config.retry,
            },
            vars,
            stats,
        )
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
                        .with_context(|| {
                            format!("GET {path} via connection `{}`", connection.name())
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

    pub async fn next_page(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
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
