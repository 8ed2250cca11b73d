//! Where records go. A sink is planned when the pipeline loads (templates
//! compiled, nothing opened) and opened when it runs.

mod file;
mod in_flight;
mod m3_bulk;
mod request;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

pub use request::{RequestPlan, method_name};

use super::config::{FileFormat, RetryConfig, SinkConfig};
use super::http::{self as plain_http, HttpRequest};
use super::interpolate::Variables;
use super::retry::{RunStats, gateway_call};
use super::template::{RenderContext, Templates};
use crate::runtime::{Connection, ErrorKind, GatewayRequest, Method};
use in_flight::{Delivered, InFlight};

/// The compiled templates and the values they may read.
pub struct Scope {
    pub templates: Arc<Templates>,
    pub vars: BTreeMap<String, String>,
    pub state: BTreeMap<String, String>,
}

impl Scope {
    pub fn render(&self, name: &str, record: &Value) -> Result<String, String> {
        self.templates.render(
            name,
            record,
            &RenderContext {
                vars: &self.vars,
                state: &self.state,
            },
        )
    }
}

/// A field value as text for a query parameter or IDO property.
pub fn field_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A record a sink refused, with the reason, for the dead-letter file.
#[derive(Debug)]
pub struct Rejected {
    pub record: Value,
    pub error: String,
}

/// What writes produced besides successes.
#[derive(Debug, Default)]
pub struct Outcome {
    pub rejected: Vec<Rejected>,
    /// Records that were delivered (or rejected) only after a retry.
    pub records_retried: u64,
}

pub enum SinkPlan {
    File {
        path: String,
        format: FileFormat,
        columns: Option<Vec<String>>,
        delimiter: u8,
    },
    Stdout {
        pretty: bool,
    },
    Gateway {
        connection: String,
        plan: RequestPlan,
        retry: RetryConfig,
    },
    Http {
        plan: RequestPlan,
        timeout: Duration,
        retry: RetryConfig,
    },
    M3Bulk(m3_bulk::BulkPlan),
}

impl SinkPlan {
    /// Compiles the sink's templates; problems come back as `(key, message)`.
    pub fn compile(
        config: &SinkConfig,
        index: usize,
        templates: &mut Templates,
        errors: &mut Vec<(String, String)>,
    ) -> SinkPlan {
        let prefix = format!("sinks[{index}]");
        match config {
            SinkConfig::File(c) => SinkPlan::File {
                path: c.path.clone(),
                format: c.format,
                columns: c.csv_columns.clone(),
                delimiter: c.csv_delimiter.as_bytes().first().copied().unwrap_or(b','),
            },
            SinkConfig::Stdout(c) => SinkPlan::Stdout { pretty: c.pretty },
            SinkConfig::Http(c) => SinkPlan::Http {
                plan: RequestPlan::http(c, &prefix, templates, errors),
                timeout: Duration::from_secs(c.timeout_secs),
                retry: c.retry,
            },
            SinkConfig::M3(c) => SinkPlan::Gateway {
                connection: c.connection.clone(),
                plan: RequestPlan::m3(c, &prefix, templates, errors),
                retry: c.retry,
            },
            SinkConfig::IdoUpdate(c) => SinkPlan::Gateway {
                connection: c.connection.clone(),
                plan: RequestPlan::ido_update(c, &prefix, templates, errors),
                retry: c.retry,
            },
            SinkConfig::IonMessage(c) => SinkPlan::Gateway {
                connection: c.connection.clone(),
                plan: RequestPlan::ion_message(c, &prefix, templates, errors),
                retry: c.retry,
            },
            SinkConfig::Gateway(c) => SinkPlan::Gateway {
                connection: c.connection.clone(),
                plan: RequestPlan::gateway(c, &prefix, templates, errors),
                retry: c.retry,
            },
            SinkConfig::M3Bulk(c) => {
                SinkPlan::M3Bulk(m3_bulk::BulkPlan::compile(c, &prefix, templates, errors))
            }
        }
    }

    /// The plan with `${...}` expanded, for one run with these variables.
    pub fn expand(&self, index: usize, vars: &Variables) -> anyhow::Result<SinkPlan> {
        let context = |e: String| anyhow::anyhow!("sinks[{index}]: {e}");
        Ok(match self {
            SinkPlan::Gateway {
                connection,
                plan,
                retry,
            } => SinkPlan::Gateway {
                connection: connection.clone(),
                plan: plan.expand(vars).map_err(context)?,
                retry: *retry,
            },
            SinkPlan::Http {
                plan,
                timeout,
                retry,
            } => SinkPlan::Http {
                plan: plan.expand(vars).map_err(context)?,
                timeout: *timeout,
                retry: *retry,
            },
            SinkPlan::M3Bulk(plan) => SinkPlan::M3Bulk(plan.expand(vars).map_err(context)?),
            SinkPlan::File {
                path,
                format,
                columns,
                delimiter,
            } => SinkPlan::File {
                path: path.clone(),
                format: *format,
                columns: columns.clone(),
                delimiter: *delimiter,
            },
            SinkPlan::Stdout { pretty } => SinkPlan::Stdout { pretty: *pretty },
        })
    }

    /// What the sink would write or send for one record, without doing it.
    pub fn render(&self, record: &Value, scope: &Scope) -> Result<Value, String> {
        match self {
            SinkPlan::File {
                format: FileFormat::Csv,
                columns,
                ..
            } => {
                let object = record.as_object().ok_or("a CSV row needs a JSON object")?;
                let names: Vec<&String> = match columns {
                    Some(c) => c.iter().collect(),
                    None => object.keys().collect(),
                };
                Ok(Value::Object(
                    names
                        .into_iter()
                        .map(|c| {
                            (
                                c.clone(),
                                Value::String(object.get(c).map(file::cell).unwrap_or_default()),
                            )
                        })
                        .collect(),
                ))
            }
            SinkPlan::File { .. } | SinkPlan::Stdout { .. } => Ok(record.clone()),
            SinkPlan::Gateway { plan, .. } => Ok(plan.render(record, scope)?.to_json("path")),
            SinkPlan::Http { plan, .. } => Ok(plan.render(record, scope)?.to_json("url")),
            SinkPlan::M3Bulk(plan) => plan.render_transaction(record, scope),
        }
    }
}

/// What opening a sink needs from the run.
pub struct SinkContext<'a> {
    pub connections: &'a BTreeMap<String, Arc<Connection>>,
    pub vars: &'a Variables,
    pub base_dir: &'a Path,
    pub http: &'a reqwest::Client,
    pub stats: Arc<RunStats>,
    pub scope: Arc<Scope>,
}

pub enum Sink {
    File(file::FileWriter),
    Stdout {
        out: std::io::BufWriter<std::io::Stdout>,
        pretty: bool,
    },
    Gateway {
        connection: Arc<Connection>,
        plan: Arc<RequestPlan>,
        retry: RetryConfig,
        stats: Arc<RunStats>,
        scope: Arc<Scope>,
        in_flight: InFlight,
    },
    Http {
        client: reqwest::Client,
        plan: Arc<RequestPlan>,
        timeout: Duration,
        retry: RetryConfig,
        stats: Arc<RunStats>,
        scope: Arc<Scope>,
        in_flight: InFlight,
    },
    M3Bulk(m3_bulk::BulkWriter),
}

impl Sink {
    pub fn open(plan: &SinkPlan, index: usize, cx: &SinkContext<'_>) -> anyhow::Result<Sink> {
        let connection = |name: &str| {
            cx.connections
                .get(name)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("sinks[{index}].connection: `{name}` is not open"))
        };
        Ok(match plan {
            SinkPlan::File {
                path,
                format,
                columns,
                delimiter,
            } => {
                let path = cx
                    .vars
                    .expand(path)
                    .map_err(|e| anyhow::anyhow!("sinks[{index}].path: {e}"))?;
                let layout = match format {
                    FileFormat::Csv => file::Layout::csv(columns.clone(), *delimiter),
                    _ => file::Layout::Jsonl,
                };
                Sink::File(file::FileWriter::create(&cx.base_dir.join(path), layout)?)
            }
            SinkPlan::Stdout { pretty } => Sink::Stdout {
                out: std::io::BufWriter::new(std::io::stdout()),
                pretty: *pretty,
            },
            SinkPlan::Gateway {
                connection: name,
                plan,
                retry,
            } => Sink::Gateway {
                connection: connection(name)?,
                in_flight: InFlight::new(plan.concurrency),
                plan: Arc::new(plan.clone()),
                retry: *retry,
                stats: cx.stats.clone(),
                scope: cx.scope.clone(),
            },
            SinkPlan::Http {
                plan,
                timeout,
                retry,
            } => Sink::Http {
                client: cx.http.clone(),
                in_flight: InFlight::new(plan.concurrency),
                plan: Arc::new(plan.clone()),
                timeout: *timeout,
                retry: *retry,
                stats: cx.stats.clone(),
                scope: cx.scope.clone(),
            },
            SinkPlan::M3Bulk(plan) => Sink::M3Bulk(m3_bulk::BulkWriter::new(
                plan.clone(),
                connection(&plan.connection)?,
                cx.stats.clone(),
                cx.scope.clone(),
            )),
        })
    }

    /// Writes one record. Refusals land in `out`; `Err` stops the run.
    pub async fn write(&mut self, record: &Value, out: &mut Outcome) -> anyhow::Result<()> {
        let reject = |out: &mut Outcome, error: String| {
            out.rejected.push(Rejected {
                record: record.clone(),
                error,
            })
        };
        match self {
            Sink::File(w) => {
                if let Err(e) = w.write(record)? {
                    reject(out, e);
                }
            }
            Sink::Stdout {
                out: stdout,
                pretty,
            } => {
                if *pretty {
                    serde_json::to_writer_pretty(&mut *stdout, record)?;
                } else {
                    serde_json::to_writer(&mut *stdout, record)?;
                }
                stdout.write_all(b"\n")?;
            }
            Sink::Gateway {
                connection,
                plan,
                retry,
                stats,
                scope,
                in_flight,
            } => {
                let (rendered, key) = match plan.render_keyed(record, scope) {
                    Ok(r) => r,
                    Err(e) => {
                        reject(out, e);
                        return Ok(());
                    }
                };
                let mut headers = plan.headers.clone();
                if rendered.body.is_some() {
                    headers.push(("Content-Type".into(), plan.content_type.clone()));
                }
                let request = GatewayRequest {
                    method: gateway_method(rendered.method),
                    path: rendered.target,
                    query: rendered.query,
                    headers,
                    body: rendered.body.unwrap_or_default(),
                    timeout_ms: None,
                };
                let send = send_through_gateway(
                    connection.clone(),
                    plan.clone(),
                    request,
                    *retry,
                    stats.clone(),
                    record.clone(),
                );
                in_flight.start(key, Box::pin(send), out).await?;
            }
            Sink::Http {
                client,
                plan,
                timeout,
                retry,
                stats,
                scope,
                in_flight,
            } => {
                let (rendered, key) = match plan.render_keyed(record, scope) {
                    Ok(r) => r,
                    Err(e) => {
                        reject(out, e);
                        return Ok(());
                    }
                };
                if let Err(e) = plain_http::check_url(&rendered.target) {
                    reject(out, e);
                    return Ok(());
                }
                let request = HttpRequest {
                    method: reqwest::Method::from_bytes(method_name(rendered.method).as_bytes())
                        .context("HTTP method")?,
                    url: rendered.target,
                    query: rendered.query,
                    headers: plan.headers.clone(),
                    body: rendered.body.map(|b| (plan.content_type.clone(), b)),
                    timeout: *timeout,
                };
                let send = send_over_http(
                    client.clone(),
                    plan.clone(),
                    request,
                    *retry,
                    stats.clone(),
                    record.clone(),
                );
                in_flight.start(key, Box::pin(send), out).await?;
            }
            Sink::M3Bulk(w) => w.write(record, out).await?,
        }
        Ok(())
    }

    /// Waits for the requests in flight, so that every record written so far
    /// has its outcome; called before a run stops at a page boundary.
    pub async fn settle(&mut self, out: &mut Outcome) -> anyhow::Result<()> {
        match self {
            Sink::Gateway { in_flight, .. } | Sink::Http { in_flight, .. } => {
                in_flight.settle(out).await
            }
            _ => Ok(()),
        }
    }

    /// Flushes what is buffered and makes files visible; returns where output went.
    pub async fn finish(mut self, out: &mut Outcome) -> anyhow::Result<Option<PathBuf>> {
        self.settle(out).await?;
        match self {
            Sink::File(w) => w.finish().map(Some),
            Sink::Stdout { mut out, .. } => {
                out.flush()?;
                Ok(None)
            }
            Sink::Gateway { .. } | Sink::Http { .. } => Ok(None),
            Sink::M3Bulk(mut w) => {
                w.flush(out).await?;
                Ok(None)
            }
        }
    }
}

/// An answer that arrived, judged by the sink's product envelope.
fn judge(plan: &RequestPlan, status: u16, body: &[u8], retries: u32, record: Value) -> Delivered {
    let retried = retries > 0;
    match plan.check_answer(status, body) {
        Ok(()) => Delivered::Accepted { retried },
        Err(error) => Delivered::Rejected {
            record,
            error,
            retried,
        },
    }
}

/// One record's request through the connection, and what became of it.
async fn send_through_gateway(
    connection: Arc<Connection>,
    plan: Arc<RequestPlan>,
    request: GatewayRequest,
    retry: RetryConfig,
    stats: Arc<RunStats>,
    record: Value,
) -> Delivered {
    match gateway_call(&connection, request, &retry, plan.idempotent, &stats).await {
        Ok((response, retries)) => judge(&plan, response.status, &response.body, retries, record),
        Err(e) => {
            let error = match e.kind() {
                // The call may or may not have reached the product:
                // the record goes to the dead letter for a person to check.
                ErrorKind::Unavailable if !plan.idempotent => format!(
                    "{}: {e}; the outcome is unknown, check before sending it again",
                    plan.label
                ),
                ErrorKind::Failed => format!("{}: {e}", plan.label),
                _ => {
                    return Delivered::Fatal(anyhow::Error::new(e).context(format!(
                        "{} via connection `{}`",
                        plan.label,
                        connection.name()
                    )));
                }
            };
            Delivered::Rejected {
                record,
                error,
                retried: false,
            }
        }
    }
}

/// One record's plain HTTP(S) request, and what became of it.
async fn send_over_http(
    client: reqwest::Client,
    plan: Arc<RequestPlan>,
    request: HttpRequest,
    retry: RetryConfig,
    stats: Arc<RunStats>,
    record: Value,
) -> Delivered {
    match plain_http::send(&client, &request, &retry, plan.idempotent, &stats).await {
        Ok((response, retries)) => judge(&plan, response.status, &response.body, retries, record),
        Err(e) => Delivered::Rejected {
            record,
            error: format!("{e:#}"),
            retried: false,
        },
    }
}

pub fn gateway_method(m: super::config::HttpMethod) -> Method {
    use super::config::HttpMethod as H;
    match m {
        H::Get => Method::Get,
        H::Post => Method::Post,
        H::Put => Method::Put,
        H::Patch => Method::Patch,
        H::Delete => Method::Delete,
    }
}
