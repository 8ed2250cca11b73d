//! Traces over OTLP/HTTP: a span per run, per source page and per gateway
//! call, sent when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and not even set up when
//! it is not (docs/DEPLOY.md, "Traces").
//!
//! Each call holds a span per HTTP exchange of the connector (token
//! requests included), made by ionflow-runtime with the same target.
//!
//! The spans are `tracing` spans; `tracing-opentelemetry` turns them into
//! OpenTelemetry spans. The exporter runs on the batch processor's own
//! thread with a bounded queue: a run never waits for the collector, a full
//! queue drops spans, and the process waits at most [`FLUSH_WAIT`] for the
//! last batch when it ends.
//!
//! Attributes are names, counts and statuses only: never a header, a
//! token, a credential, a query string or a record value (see
//! `products::route` for what of a gateway path is shown).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::Span;
use tracing::field::Empty;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The target of the run span: log lines of a run carry its fields.
pub const RUN_TARGET: &str = "ionflow::run";
/// The target of page, call and HTTP exchange spans (the last made by
/// ionflow-runtime): exported, but left out of log lines, so that a line's
/// span stays the run's (with the pipeline and run id).
pub const SPAN_TARGET: &str = "ionflow::span";

/// How long the end of the process waits for spans still queued.
pub const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// The exporter of this process, kept to flush it at the end.
static PROVIDER: std::sync::OnceLock<SdkTracerProvider> = std::sync::OnceLock::new();

/// Why traces could not be set up; the process runs on without them.
#[derive(Debug, thiserror::Error)]
#[error(
    "traces are off: {0}; set OTEL_EXPORTER_OTLP_ENDPOINT to the collector's OTLP/HTTP base URL (e.g. http://collector:4318)"
)]
pub struct SetupError(String);

/// Whether the environment asks for traces: an OTLP endpoint is set and
/// neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` says no.
pub fn wanted() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let is = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// Installs `subscriber` (the log lines) as the process's subscriber, with
/// the traces' layer on top when the environment asks for traces. Returns
/// why traces are off when they were asked for and could not be set up;
/// the caller logs it, as the subscriber is in place then.
pub fn init<S>(subscriber: S) -> Option<SetupError>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let (traces, error) = match layer::<S>() {
        Ok(layer) => (layer, None),
        Err(e) => (None, Some(e)),
    };
    subscriber.with(traces).init();
    error
}

/// The layer that exports our spans, when the environment asks for traces.
/// It sees the run, page and call spans only: no log event, so nothing a
/// log line says becomes part of a trace.
fn layer<S>() -> Result<Option<impl Layer<S> + Send + Sync>, SetupError>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    if !wanted() {
        return Ok(None);
    }
    // The exporter builds reqwest's blocking client, which needs the
    // process's TLS provider (see ionflow_runtime::tls).
    ionflow_runtime::tls::install();
    // Endpoint, headers, timeout and compression come from the standard
    // OTEL_EXPORTER_OTLP_* variables, read by the builder.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| SetupError(e.to_string()))?;
    let mut resource = opentelemetry_sdk::Resource::builder().with_attribute(
        opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    );
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    if !named {
        resource = resource.with_service_name("ionflow");
    }
    // The batch processor's defaults bound it (queue of 2,048 spans, 30 s
    // per export) and OTEL_BSP_* may change them.
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(Reporting(exporter))
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("ionflow");
    let _ = PROVIDER.set(provider);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Source files, threads and busy/idle times say nothing about a run.
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_target(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span() && (meta.target() == RUN_TARGET || meta.target() == SPAN_TARGET)
        }));
    Ok(Some(layer))
}

/// The exporter, saying in the log when spans stop reaching the collector
/// and when they reach it again: one line each way, not one per batch. The
/// SDK's own messages are off (they carry no `message` field, which every
/// JSON log line has).
#[derive(Debug)]
struct Reporting<E>(E);

/// Whether the last export failed (and was reported).
static FAILING: AtomicBool = AtomicBool::new(false);

impl<E: SpanExporter> SpanExporter for Reporting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let outcome = self.0.export(batch).await;
        match &outcome {
            // The exporter's errors name the failure (network error, HTTP
            // status), never the endpoint or its headers.
            Err(e) if !FAILING.swap(true, Ordering::Relaxed) => tracing::warn!(
                "traces: {spans} span(s) did not reach the collector ({e}); runs go on, \
                 and spans are dropped until it answers (check OTEL_EXPORTER_OTLP_ENDPOINT)"
            ),
            Ok(()) if FAILING.swap(false, Ordering::Relaxed) => {
                tracing::info!("traces: the collector answers again")
            }
            _ => {}
        }
        outcome
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn shutdown(&self) -> OTelSdkResult {
        self.0.shutdown()
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource);
    }
}

/// Sends the spans still queued, waiting at most [`FLUSH_WAIT`]: a
/// collector that is down or slow never holds the process up for longer.
/// Called once at the end of the process, outside the async runtime.
pub fn flush() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.shutdown_with_timeout(FLUSH_WAIT)
        // A failure already reported is not reported twice.
        && !FAILING.load(Ordering::Relaxed)
    {
        tracing::warn!("traces: the last spans may not have reached the collector: {e}");
    }
}

/// The span of one run of a pipeline: its log lines carry the pipeline and
/// run id, and the trace gets the outcome and counts when it ends.
pub fn run_span(pipeline: &str, run_id: &str) -> Span {
    tracing::info_span!(
        target: RUN_TARGET,
        "run",
        pipeline = %pipeline,
        run_id = %run_id,
        outcome = Empty,
        "error.type" = Empty,
        records_in = Empty,
        records_out = Empty,
        records_failed = Empty,
        records_dead_lettered = Empty,
        api_calls = Empty,
        retries = Empty,
        otel.status_code = Empty,
    )
}

/// The counts of a finished run, as its span shows them (filled from the
/// run's summary by `pipeline::record_run_span`, so this module knows
/// nothing of pipelines).
#[derive(Debug, Clone, Copy)]
pub struct RunTotals {
    pub records_in: u64,
    pub records_out: u64,
    pub records_failed: u64,
    pub records_dead_lettered: u64,
    pub api_calls: u64,
    pub retries: u64,
}

/// Records how a run ended on its span: its totals, or the kind of its
/// failure only (the message may quote a product's answer, which may quote
/// a record).
pub fn record_run(span: &Span, outcome: Result<RunTotals, &'static str>) {
    match outcome {
        Ok(totals) => {
            let ok = totals.records_failed == 0;
            span.record("outcome", if ok { "ok" } else { "records_failed" });
            span.record("records_in", totals.records_in);
            span.record("records_out", totals.records_out);
            span.record("records_failed", totals.records_failed);
            span.record("records_dead_lettered", totals.records_dead_lettered);
            span.record("api_calls", totals.api_calls);
            span.record("retries", totals.retries);
            span.record("otel.status_code", if ok { "OK" } else { "ERROR" });
        }
        Err(kind) => {
            span.record("outcome", "failed");
            span.record("error.type", kind);
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// The span of one page read from the source (1-based); the records it
/// held are recorded when it has been read.
pub fn page_span(number: u64) -> Span {
    tracing::info_span!(target: SPAN_TARGET, "page", page = number, records = Empty)
}

/// The span of one gateway call, retries included. Only what
/// `products::route` lets out of the path is shown.
pub fn call_span(connection: &str, method: &str, path: &str) -> Span {
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "gateway call",
        otel.kind = "client",
        connection = %connection,
        http.request.method = method,
        product = Empty,
        url.path = Empty,
        m3.program = Empty,
        m3.transaction = Empty,
        ido.collection = Empty,
        http.response.status_code = Empty,
        attempts = Empty,
        "error.type" = Empty,
        otel.status_code = Empty,
    );
    // The path is read only when the span goes somewhere.
    if !span.is_disabled() {
        let route = crate::products::route::Route::of(path);
        span.record("product", route.product);
        span.record("url.path", route.path);
        span.record("m3.program", route.program);
        span.record("m3.transaction", route.transaction);
        span.record("ido.collection", route.collection);
    }
    span
}

/// Records how a call ended: the last status (a 4xx or 5xx marks the span
/// as an error), the times it was sent, and an error's kind.
pub fn record_call(span: &Span, status: Option<u16>, attempts: u32, error: Option<&str>) {
    if let Some(status) = status {
        span.record("http.response.status_code", status);
    }
    span.record("attempts", attempts);
    if let Some(kind) = error {
        span.record("error.type", kind);
    }
    let failed = error.is_some() || status.is_some_and(|s| s >= 400);
    if failed {
        span.record("otel.status_code", "ERROR");
    }
}
