//! JSON endpoints, on the gateway or plain HTTP(S), read in one call or paged
//! by offset and limit until a page comes back shorter than the limit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
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

pub struct OffsetReader {
    target: Target,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    records_at: RecordsAt,
    paging: Option<OffsetPaging>,
    offset: u64,
    limit: Limit,
    done: bool,
    retry: RetryConfig,
    stats: Arc<RunStats>,
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
            target,
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

    pub async fn next_page(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
        if self.done || self.limit.reached() {
            return Ok(None);
        }
        let mut query = self.query.clone();
        if let Some(p) = &self.paging {
            query.push((p.offset_param.clone(), self.offset.to_string()));
            query.push((p.limit_param.clone(), p.page_size.to_string()));
        }
        let (status, body, origin) = match &self.target {
            Target::Gateway { connection, path } => {
                let request = GatewayRequest {
                    method: Method::Get,
                    path: path.clone(),
                    query,
                    headers: self.headers.clone(),
                    body: vec![],
                    timeout_ms: None,
                };
                let (response, _) =
                    gateway_call(connection, request, &self.retry, true, &self.stats)
                        .await
                        .with_context(|| {
                            format!("GET {path} via connection `{}`", connection.name())
                        })?;
                (response.status, response.body, path.clone())
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
                    headers: self.headers.clone(),
                    body: None,
                    timeout: *timeout,
                };
                let (response, _) =
                    http::send(client, &request, &self.retry, true, &self.stats).await?;
                (response.status, response.body, url.clone())
            }
        };
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
        match &self.paging {
            Some(p) if records.len() as u64 >= u64::from(p.page_size) => {
                self.offset += records.len() as u64;
            }
            _ => self.done = true,
        }
        Ok(Some(self.limit.take(records)))
    }
}
