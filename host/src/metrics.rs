//! What `ionflow serve` exposes on `GET /metrics`, in the OpenMetrics text
//! format Prometheus scrapes, through the `prometheus-client` crate.
//!
//! One registry per process, filled from four places: the daemon (runs,
//! records, last success, pipeline files), the runtime's [`Observer`] hook
//! (every HTTP exchange of a connector, token requests by grant, in-flight
//! requests, rate-limit waits), the retry loops (retries by reason) and the
//! store (errors by operation). Labels are names from pipeline files
//! (pipeline, connection), a product path segment, an HTTP status, or a word
//! from a fixed set: never a secret, a token or a record value.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use ionflow_runtime::observe::{Exchange, ExchangeKind, Observer};

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How a run ended, as the metrics count it. The daemon fills it from the
/// run's summary, so this module knows nothing of pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Finished(RunRecords),
    Interrupted,
    Failed,
}

/// The record counts of a finished run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunRecords {
    pub read: u64,
    pub written: u64,
    pub failed: u64,
    pub dead_lettered: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PipelineLabel {
    pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    pipeline: String,
    /// succeeded, records_failed, failed or interrupted.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    connection: String,
    /// The product path segment (M3, CSI, IONSERVICES, ...), `token` for
    /// token requests, `other` for anything else.
    product: String,
    /// The HTTP status, or `none` when no answer came.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrantLabels {
    connection: String,
    grant: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabel {
    connection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    connection: String,
    /// rate_limited, server_error or network.
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: String,
}

type Seconds = Counter<f64, AtomicU64>;
type Buckets = fn() -> Histogram;

fn duration_buckets() -> Histogram {
    // 0.1 s to about 7 hours.
    Histogram::new(exponential_buckets(0.1, 3.0, 11))
}

pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    run_duration: Family<PipelineLabel, Histogram, Buckets>,
    records_in: Family<PipelineLabel, Counter>,
    records_out: Family<PipelineLabel, Counter>,
    records_failed: Family<PipelineLabel, Counter>,
    records_dead_lettered: Family<PipelineLabel, Counter>,
    last_success: Family<PipelineLabel, Gauge<f64, AtomicU64>>,
    running: Family<PipelineLabel, Gauge>,
    api_calls: Family<CallLabels, Counter>,
    token_requests: Family<GrantLabels, Counter>,
    in_flight: Family<ConnectionLabel, Gauge>,
    rate_limit_wait: Family<ConnectionLabel, Seconds>,
    retries: Family<RetryLabels, Counter>,
    store_errors: Family<OperationLabel, Counter>,
    pipelines_loaded: Gauge,
    pipeline_files_invalid: Gauge,
    reloads: Family<OutcomeLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The registry in the OpenMetrics text format.
pub fn encode() -> String {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &metrics().registry).is_err() {
        text = "# EOF\n".into();
    }
    text
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            runs: Family::default(),
            run_duration: Family::new_with_constructor(duration_buckets as Buckets),
            records_in: Family::default(),
            records_out: Family::default(),
            records_failed: Family::default(),
            records_dead_lettered: Family::default(),
            last_success: Family::default(),
            running: Family::default(),
            api_calls: Family::default(),
            token_requests: Family::default(),
            in_flight: Family::default(),
            rate_limit_wait: Family::default(),
            retries: Family::default(),
            store_errors: Family::default(),
            pipelines_loaded: Gauge::default(),
            pipeline_files_invalid: Gauge::default(),
            reloads: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "ionflow_runs",
            "Pipeline runs that ended, by outcome (succeeded, records_failed, failed, interrupted)",
            m.runs.clone(),
        );
        registry.register_with_unit(
            "ionflow_run_duration",
            "How long pipeline runs took",
            Unit::Seconds,
            m.run_duration.clone(),
        );
        registry.register(
            "ionflow_records_in",
            "Records read from sources",
            m.records_in.clone(),
        );
        registry.register(
            "ionflow_records_out",
            "Records the transforms handed to the sinks",
            m.records_out.clone(),
        );
        registry.register(
            "ionflow_records_failed",
            "Records that failed in a transform or were refused by a sink",
            m.records_failed.clone(),
        );
        registry.register(
            "ionflow_records_dead_lettered",
            "Failed records written to a dead-letter file",
            m.records_dead_lettered.clone(),
        );
        registry.register_with_unit(
            "ionflow_last_success_timestamp",
            "When a run of the pipeline last ended with every record through (Unix time)",
            Unit::Seconds,
            m.last_success.clone(),
        );
        registry.register(
            "ionflow_runs_in_progress",
            "Runs of the pipeline going on now",
            m.running.clone(),
        );
        registry.register(
            "ionflow_api_calls",
            "HTTP exchanges of the connector, by connection, product and status",
            m.api_calls.clone(),
        );
        registry.register(
            "ionflow_token_requests",
            "Requests to the token endpoint, by grant",
            m.token_requests.clone(),
        );
        registry.register(
            "ionflow_in_flight_requests",
            "HTTP exchanges of the connector waiting for an answer",
            m.in_flight.clone(),
        );
        registry.register_with_unit(
            "ionflow_rate_limit_wait",
            "Time business calls waited for the connection's rate limit",
            Unit::Seconds,
            m.rate_limit_wait.clone(),
        );
        registry.register(
            "ionflow_retries",
            "Calls sent again, by reason (rate_limited: 429; server_error: 502/503; network: timeout, connection error, 504)",
            m.retries.clone(),
        );
        registry.register(
            "ionflow_store_errors",
            "Failed operations on the store (files or PostgreSQL)",
            m.store_errors.clone(),
        );
        registry.register(
            "ionflow_pipelines_loaded",
            "Scheduled pipelines being served",
            m.pipelines_loaded.clone(),
        );
        registry.register(
            "ionflow_pipeline_files_invalid",
            "Pipeline files in the served folder that do not validate and are skipped",
            m.pipeline_files_invalid.clone(),
        );
        registry.register(
            "ionflow_reloads",
            "Reloads of the pipeline folder, by outcome (ok, problems)",
            m.reloads.clone(),
        );
        Metrics { registry, ..m }
    }

    /// A run ended: its outcome, duration and records.
    pub fn run_ended(&self, pipeline: &str, end: &RunEnd, elapsed: Duration) {
        let label = PipelineLabel {
            pipeline: pipeline.to_owned(),
        };
        let kind = match end {
            RunEnd::Finished(s) if s.failed == 0 => "succeeded",
            RunEnd::Finished(_) => "records_failed",
            RunEnd::Interrupted => "interrupted",
            RunEnd::Failed => "failed",
        };
        self.runs
            .get_or_create(&RunLabels {
                pipeline: pipeline.to_owned(),
                outcome: kind,
            })
            .inc();
        self.run_duration
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
        if let RunEnd::Finished(s) = end {
            self.records_in.get_or_create(&label).inc_by(s.read);
            self.records_out.get_or_create(&label).inc_by(s.written);
            self.records_failed.get_or_create(&label).inc_by(s.failed);
            self.records_dead_lettered
                .get_or_create(&label)
                .inc_by(s.dead_lettered);
            if s.failed == 0 {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                self.last_success.get_or_create(&label).set(now);
            }
        }
    }

    /// A pipeline is now served (its series appear at 0 before its first run).
    pub fn pipeline_served(&self, pipeline: &str) {
        let label = PipelineLabel {
            pipeline: pipeline.to_owned(),
        };
        let _ = self.running.get_or_create(&label);
        let _ = self.records_in.get_or_create(&label);
    }

    /// A pipeline is no longer served: its series go.
    pub fn pipeline_removed(&self, pipeline: &str) {
        let label = PipelineLabel {
            pipeline: pipeline.to_owned(),
        };
        self.running.remove(&label);
    }

    pub fn run_started(&self, pipeline: &str) {
        self.running
            .get_or_create(&PipelineLabel {
                pipeline: pipeline.to_owned(),
            })
            .inc();
    }

    pub fn run_stopped(&self, pipeline: &str) {
        self.running
            .get_or_create(&PipelineLabel {
                pipeline: pipeline.to_owned(),
            })
            .dec();
    }

    /// A call is sent again; `reason` is one of a fixed set.
    pub fn retried(&self, connection: &str, reason: RetryReason) {
        self.retries
            .get_or_create(&RetryLabels {
                connection: connection.to_owned(),
                reason: reason.as_str(),
            })
            .inc();
    }

    /// A store operation failed (`operation` is the store's description of
    /// what it was doing, never a value).
    pub fn store_error(&self, operation: &str) {
        self.store_errors
            .get_or_create(&OperationLabel {
                operation: operation.to_owned(),
            })
            .inc();
    }

    /// The folder was (re)loaded: how many pipelines run, how many files were skipped.
    pub fn folder_loaded(&self, served: usize, invalid: usize, reload: bool) {
        self.pipelines_loaded.set(served as i64);
        self.pipeline_files_invalid.set(invalid as i64);
        if reload {
            self.reloads
                .get_or_create(&OutcomeLabel {
                    outcome: if invalid == 0 { "ok" } else { "problems" },
                })
                .inc();
        }
    }
}

/// Why a call was sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// 429 from the gateway's quota or spike arrest.
    RateLimited,
    /// 5xx from the gateway or the product behind it.
    ServerError,
    /// No answer in time: a timeout, a connection error or the gateway's 504.
    Network,
}

impl RetryReason {
    fn as_str(self) -> &'static str {
        match self {
            RetryReason::RateLimited => "rate_limited",
            RetryReason::ServerError => "server_error",
            RetryReason::Network => "network",
        }
    }
}

/// Feeds the connector's exchanges into the metrics.
pub struct MetricsObserver;

impl Observer for MetricsObserver {
    fn exchange_started(&self, connection: &str) {
        metrics()
            .in_flight
            .get_or_create(&ConnectionLabel {
                connection: connection.to_owned(),
            })
            .inc();
    }

    fn exchange_ended(&self, exchange: &Exchange<'_>) {
        let m = metrics();
        m.in_flight
            .get_or_create(&ConnectionLabel {
                connection: exchange.connection.to_owned(),
            })
            .dec();
        let product = match exchange.kind {
            ExchangeKind::Token { grant } => {
                m.token_requests
                    .get_or_create(&GrantLabels {
                        connection: exchange.connection.to_owned(),
                        grant,
                    })
                    .inc();
                "token"
            }
            ExchangeKind::Business { product } => product,
            ExchangeKind::Other => "other",
        };
        m.api_calls
            .get_or_create(&CallLabels {
                connection: exchange.connection.to_owned(),
                product: product.to_owned(),
                status: exchange
                    .status
                    .map_or_else(|| "none".to_owned(), |s| s.to_string()),
            })
            .inc();
    }

    fn rate_limit_waited(&self, connection: &str, waited: Duration) {
        metrics()
            .rate_limit_wait
            .get_or_create(&ConnectionLabel {
                connection: connection.to_owned(),
            })
            .inc_by(waited.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        metrics().retried("m3", RetryReason::RateLimited);
        metrics().store_error("claiming a tick");
        // A family shows in the text once it has a value.
        metrics().run_ended("p", &RunEnd::Failed, std::time::Duration::from_millis(1500));
        let text = encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("ionflow_retries_total{connection=\"m3\",reason=\"rate_limited\"} 1")
        );
        assert!(
            text.contains("# TYPE ionflow_run_duration_seconds histogram"),
            "{text}"
        );
        assert!(text.contains("ionflow_store_errors_total{operation=\"claiming a tick\"}"));
    }
}
