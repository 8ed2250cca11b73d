//! The machinery of every sink that sends one request per record (M3
//! transactions, IDO updates, ION messages, any gateway path, plain
//! HTTP(S)). A kind builds a [`RequestPlan`] from its config; rendering one
//! record gives the request to send, which `ionflow test` can show without
//! sending it. The product's answer is read by `products::Answer`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::in_flight::{Delivered, InFlight};
use super::{Finished, Outcome, RecordError, Scope, SinkContext, SinkPlan, SinkWriter, field_text};
use crate::config::{HttpMethod, RetryConfig, Variables, method_name};
use crate::pipeline::http::{self as plain_http, HttpRequest};
use crate::pipeline::retry::{CallError, RunStats, Unavailable, gateway_call};
use crate::products::Answer;
use ionflow_runtime::{Connection, ErrorKind, GatewayRequest, Method};

/// A string that is either fixed or a template's name.
#[derive(Debug, Clone)]
pub enum Part {
    Fixed(String),
    Template(String),
}

impl Part {
    /// `${env.NAME}` and friends in a fixed part, for one run.
    pub fn expand(&self, vars: &Variables) -> Result<Part, String> {
        match self {
            Part::Fixed(s) => vars.expand(s).map(Part::Fixed),
            Part::Template(_) => Ok(self.clone()),
        }
    }

    /// The part's text for one record.
    pub fn render(&self, record: &Value, scope: &Scope) -> Result<String, String> {
        match self {
            Part::Fixed(s) => Ok(s.clone()),
            Part::Template(name) => scope.render(name, record),
        }
    }
}

pub fn expand_parts(
    pairs: &[(String, Part)],
    vars: &Variables,
) -> Result<Vec<(String, Part)>, String> {
    pairs
        .iter()
        .map(|(k, p)| {
            p.expand(vars)
                .map(|p| (k.clone(), p))
                .map_err(|e| format!("{k}: {e}"))
        })
        .collect()
}

/// A body that a product kind builds from the record (IDO changes, ION
/// messages), with the kind's product module.
pub trait BuildBody: Send + Sync {
    fn build(&self, record: &Value, scope: &Scope) -> Result<BuiltBody, String>;
    /// What `ionflow test` shows as the body: the body's JSON, or its text.
    fn preview(&self, record: &Value, scope: &Scope) -> Result<Value, String> {
        Ok(json_or_text(&self.build(record, scope)?.bytes))
    }
    /// The builder with `${...}` expanded in its fixed parts, for one run.
    fn expand(&self, vars: &Variables) -> Result<Arc<dyn BuildBody>, String>;
}

/// A body built for one record.
pub struct BuiltBody {
    pub bytes: Vec<u8>,
    /// Instead of the plan's content type (a multipart body's boundary).
    pub content_type: Option<String>,
}

impl From<Vec<u8>> for BuiltBody {
    fn from(bytes: Vec<u8>) -> Self {
        BuiltBody {
            bytes,
            content_type: None,
        }
    }
}

/// A body as `ionflow test` shows it: parsed when it is JSON.
fn json_or_text(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

#[derive(Clone)]
pub enum Body {
    None,
    /// The record itself as JSON.
    Record,
    Template(String),
    Built(Arc<dyn BuildBody>),
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::None => f.write_str("None"),
            Body::Record => f.write_str("Record"),
            Body::Template(name) => write!(f, "Template({name})"),
            Body::Built(_) => f.write_str("Built"),
        }
    }
}

impl Body {
    /// A `body` template, or the record as JSON for methods that carry one.
    pub fn from_template(
        body: Option<&str>,
        method: HttpMethod,
        cx: &mut super::PlanContext<'_>,
    ) -> Body {
        match body {
            Some(source) => Body::Template(cx.template("body", source)),
            None if matches!(method, HttpMethod::Get | HttpMethod::Delete) => Body::None,
            None => Body::Record,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RequestPlan {
    pub method: HttpMethod,
    /// A gateway path below `{iu}/{ti}/`, or a full URL for plain HTTP.
    pub target: Part,
    pub query: Vec<(String, Part)>,
    /// When set, every top-level field of the record becomes a query parameter.
    pub query_from_record: bool,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    pub content_type: String,
    /// How the product's answer is read.
    pub answer: Answer,
    /// Whether a call that timed out may be sent again.
    pub idempotent: bool,
    /// For error messages: `M3 MMS200MI/AddItmBasic`, `IDO SLItems`, ...
    pub label: String,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// Records with the same rendered key never overlap in flight.
    pub order_key: Option<Part>,
}

/// One rendered request.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub method: HttpMethod,
    pub target: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// Instead of the plan's content type, for this body.
    pub content_type: Option<String>,
}

impl Rendered {
    /// What `ionflow test` compares; headers are left out as they may hold secrets.
    pub fn to_json(&self, target_key: &str) -> Value {
        let mut out = serde_json::Map::new();
        out.insert("method".into(), json!(method_name(self.method)));
        out.insert(target_key.into(), json!(self.target));
        if !self.query.is_empty() {
            out.insert(
                "query".into(),
                Value::Object(
                    self.query
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                ),
            );
        }
        if let Some(body) = &self.body {
            out.insert("body".into(), json_or_text(body));
        }
        Value::Object(out)
    }
}

impl RequestPlan {
    /// The plan with `${...}` expanded in its fixed parts, for one run.
    pub fn expand(&self, vars: &Variables) -> Result<RequestPlan, String> {
        let mut plan = self.clone();
        plan.target = self.target.expand(vars)?;
        plan.order_key = self
            .order_key
            .as_ref()
            .map(|k| k.expand(vars))
            .transpose()?;
        plan.query = expand_parts(&self.query, vars)?;
        plan.headers = self
            .headers
            .iter()
            .map(|(k, v)| {
                vars.expand(v)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| format!("headers.{k}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        if let Body::Built(builder) = &self.body {
            plan.body = Body::Built(builder.expand(vars)?);
        }
        Ok(plan)
    }

    /// Renders the request for one record; `Err` fails the record.
    pub fn render(&self, record: &Value, scope: &Scope) -> Result<Rendered, String> {
        let mut query = Vec::new();
        if self.query_from_record {
            let object = record.as_object().ok_or(
                "the record is not a JSON object, so its fields cannot be the input fields; \
                 reshape it with jq or list the fields",
            )?;
            for (k, v) in object {
                query.push((k.clone(), field_text(v)));
            }
        }
        for (k, p) in &self.query {
            query.push((k.clone(), p.render(record, scope)?));
        }
        let (body, content_type) = match &self.body {
            Body::None => (None, None),
            Body::Record => (
                Some(serde_json::to_vec(record).map_err(|e| e.to_string())?),
                None,
            ),
            Body::Template(name) => (Some(scope.render(name, record)?.into_bytes()), None),
            Body::Built(builder) => {
                let built = builder.build(record, scope)?;
                (Some(built.bytes), built.content_type)
            }
        };
        Ok(Rendered {
            method: self.method,
            target: self.target.render(record, scope)?,
            query,
            body,
            content_type,
        })
    }

    /// What `ionflow test` shows for one record: the request with a built
    /// body as its builder presents it.
    pub fn preview(
        &self,
        record: &Value,
        scope: &Scope,
        target_key: &str,
    ) -> Result<Value, String> {
        let mut shown = self.render(record, scope)?.to_json(target_key);
        if let Body::Built(builder) = &self.body {
            shown["body"] = builder.preview(record, scope)?;
        }
        Ok(shown)
    }

    /// The request for one record and its order key; `Err` fails the record.
    pub fn render_keyed(
        &self,
        record: &Value,
        scope: &Scope,
    ) -> Result<(Rendered, Option<String>), String> {
        let key = match &self.order_key {
            None => None,
            Some(part) => Some(
                part.render(record, scope)
                    .map_err(|e| format!("order_key: {e}"))?,
            ),
        };
        Ok((self.render(record, scope)?, key))
    }

    /// An answer that arrived, judged by the product's envelope.
    fn judge(&self, status: u16, body: &[u8], retries: u32, record: Value) -> Delivered {
        let retried = retries > 0;
        match self.answer.check(status, body) {
            Ok(()) => Delivered::Accepted { retried },
            Err(error) => Delivered::Rejected {
                record,
                error: error.into(),
                retried,
            },
        }
    }
}

/// A sink that sends each record's request through a gateway connection.
#[derive(Debug, Clone)]
pub struct GatewayPlan {
    pub connection: String,
    pub plan: RequestPlan,
    pub retry: RetryConfig,
}

impl SinkPlan for GatewayPlan {
    fn expand(&self, vars: &Variables) -> Result<Box<dyn SinkPlan>, String> {
        Ok(Box::new(GatewayPlan {
            connection: self.connection.clone(),
            plan: self.plan.expand(vars)?,
            retry: self.retry,
        }))
    }

    fn render(&self, record: &Value, scope: &Scope) -> Result<Value, RecordError> {
        Ok(self.plan.preview(record, scope, "path")?)
    }

    fn open(&self, cx: &SinkContext<'_>) -> anyhow::Result<Box<dyn SinkWriter>> {
        Ok(Box::new(GatewayWriter {
            connection: cx.connection(&self.connection)?,
            in_flight: InFlight::new(self.plan.concurrency),
            plan: Arc::new(self.plan.clone()),
            retry: self.retry,
            stats: cx.stats.clone(),
            scope: cx.scope.clone(),
        }))
    }
}

struct GatewayWriter {
    connection: Arc<Connection>,
    plan: Arc<RequestPlan>,
    retry: RetryConfig,
    stats: Arc<RunStats>,
    scope: Arc<Scope>,
    in_flight: InFlight,
}

impl SinkWriter for GatewayWriter {
    fn write<'a>(
        &'a mut self,
        record: &'a Value,
        out: &'a mut Outcome,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let (rendered, key) = match self.plan.render_keyed(record, &self.scope) {
                Ok(r) => r,
                Err(e) => {
                    out.reject(record, e);
                    return Ok(());
                }
            };
            let mut headers = self.plan.headers.clone();
            if rendered.body.is_some() {
                let content_type = rendered
                    .content_type
                    .unwrap_or_else(|| self.plan.content_type.clone());
                headers.push(("Content-Type".into(), content_type));
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
                self.connection.clone(),
                self.plan.clone(),
                request,
                self.retry,
                self.stats.clone(),
                record.clone(),
            );
            self.in_flight.start(key, Box::pin(send), out).await
        })
    }

    fn settle<'a>(&'a mut self, out: &'a mut Outcome) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(self.in_flight.settle(out))
    }

    fn finish<'a>(
        mut self: Box<Self>,
        out: &'a mut Outcome,
    ) -> BoxFuture<'a, anyhow::Result<Finished>> {
        Box::pin(async move {
            self.in_flight.settle(out).await?;
            Ok(Finished::default())
        })
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
        Ok((response, retries)) => plan.judge(response.status, &response.body, retries, record),
        Err(e) => match unanswered(e, &plan.label, plan.idempotent) {
            Ok(error) => Delivered::Rejected {
                record,
                error,
                retried: false,
            },
            Err(stop) => Delivered::Fatal(stop.context(format!(
                "{} via connection `{}`",
                plan.label,
                connection.name()
            ))),
        },
    }
}

/// What a write that got no answer to judge becomes: the record's dead
/// letter when only this record is concerned, or an error that stops the
/// run (exit code from its cause) when the whole run is: no token could be
/// had, the gateway stayed unavailable or refused the rate, credentials
/// were refused. "Outcome unknown" is said only of a request the product
/// may have seen.
pub fn unanswered(
    error: CallError,
    label: &str,
    idempotent: bool,
) -> Result<RecordError, anyhow::Error> {
    let label = label.to_owned();
    match error {
        // Not repeated (a write): the product may have acted on it.
        CallError::Unavailable(e) if e.reached && !idempotent => Ok(RecordError::OutcomeUnknown {
            label,
            reason: e.reason(),
        }),
        CallError::Unavailable(e) => Err(e.into()),
        CallError::Connector(e) => match e.kind() {
            ErrorKind::Unavailable if !idempotent && e.may_have_reached_product() => {
                Ok(RecordError::OutcomeUnknown {
                    label,
                    reason: e.to_string(),
                })
            }
            // Refused before it reached the product (a 413, a body over the
            // connection's limit): this record alone, and it did not happen.
            ErrorKind::Failed if !e.may_have_reached_product() => Ok(RecordError::Failed {
                label,
                reason: e.to_string(),
            }),
            _ => Err(e.into()),
        },
    }
}

/// A sink that sends each record's request over plain HTTP(S).
#[derive(Debug, Clone)]
pub struct HttpPlan {
    pub plan: RequestPlan,
    pub timeout: Duration,
    pub retry: RetryConfig,
}

impl SinkPlan for HttpPlan {
    fn expand(&self, vars: &Variables) -> Result<Box<dyn SinkPlan>, String> {
        Ok(Box::new(HttpPlan {
            plan: self.plan.expand(vars)?,
            timeout: self.timeout,
            retry: self.retry,
        }))
    }

    fn render(&self, record: &Value, scope: &Scope) -> Result<Value, RecordError> {
        Ok(self.plan.preview(record, scope, "url")?)
    }

    fn open(&self, cx: &SinkContext<'_>) -> anyhow::Result<Box<dyn SinkWriter>> {
        Ok(Box::new(HttpWriter {
            client: cx.http.clone(),
            in_flight: InFlight::new(self.plan.concurrency),
            plan: Arc::new(self.plan.clone()),
            timeout: self.timeout,
            retry: self.retry,
            stats: cx.stats.clone(),
            scope: cx.scope.clone(),
        }))
    }
}

struct HttpWriter {
    client: plain_http::HttpClient,
    plan: Arc<RequestPlan>,
    timeout: Duration,
    retry: RetryConfig,
    stats: Arc<RunStats>,
    scope: Arc<Scope>,
    in_flight: InFlight,
}

impl SinkWriter for HttpWriter {
    fn write<'a>(
        &'a mut self,
        record: &'a Value,
        out: &'a mut Outcome,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let (rendered, key) = match self.plan.render_keyed(record, &self.scope) {
                Ok(r) => r,
                Err(e) => {
                    out.reject(record, e);
                    return Ok(());
                }
            };
            if let Err(e) = plain_http::check_url(&rendered.target) {
                out.reject(record, e);
                return Ok(());
            }
            let request = HttpRequest {
                method: reqwest::Method::from_bytes(method_name(rendered.method).as_bytes())?,
                url: rendered.target,
                query: rendered.query,
                headers: self.plan.headers.clone(),
                body: rendered.body.map(|b| {
                    let content_type = rendered
                        .content_type
                        .unwrap_or_else(|| self.plan.content_type.clone());
                    (content_type, b)
                }),
                timeout: self.timeout,
            };
            let send = send_over_http(
                self.client.clone(),
                self.plan.clone(),
                request,
                self.retry,
                self.stats.clone(),
                record.clone(),
            );
            self.in_flight.start(key, Box::pin(send), out).await
        })
    }

    fn settle<'a>(&'a mut self, out: &'a mut Outcome) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(self.in_flight.settle(out))
    }

    fn finish<'a>(
        mut self: Box<Self>,
        out: &'a mut Outcome,
    ) -> BoxFuture<'a, anyhow::Result<Finished>> {
        Box::pin(async move {
            self.in_flight.settle(out).await?;
            Ok(Finished::default())
        })
    }
}

/// One record's plain HTTP(S) request, and what became of it.
async fn send_over_http(
    client: plain_http::HttpClient,
    plan: Arc<RequestPlan>,
    request: HttpRequest,
    retry: RetryConfig,
    stats: Arc<RunStats>,
    record: Value,
) -> Delivered {
    match plain_http::send(&client, &request, &retry, plan.idempotent, &stats).await {
        Ok((response, retries)) => plan.judge(response.status, &response.body, retries, record),
        Err(e) => match e.downcast::<Unavailable>() {
            // Sent once and not repeated: the server may have acted on it.
            Ok(e) if e.reached && !plan.idempotent => Delivered::Rejected {
                record,
                error: RecordError::OutcomeUnknown {
                    label: plan.label.clone(),
                    reason: e.reason(),
                },
                retried: false,
            },
            // The endpoint stayed unavailable: the run stops.
            Ok(e) => Delivered::Fatal(e.into()),
            Err(e) => Delivered::Rejected {
                record,
                error: RecordError::Http(format!("{e:#}")),
                retried: false,
            },
        },
    }
}

pub fn gateway_method(m: HttpMethod) -> Method {
    match m {
        HttpMethod::Get => Method::Get,
        HttpMethod::Post => Method::Post,
        HttpMethod::Put => Method::Put,
        HttpMethod::Patch => Method::Patch,
        HttpMethod::Delete => Method::Delete,
    }
}
