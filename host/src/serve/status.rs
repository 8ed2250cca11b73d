//! The HTTP endpoint of `ionflow serve`: `GET /status` (what each pipeline
//! did), `GET /metrics` (Prometheus), `/healthz` (the process answers) and
//! `/readyz` (pipelines loaded, store reachable).
//!
//! It may listen on any address (`0.0.0.0:9187` for kubelet probes and a
//! Prometheus scraper), so nothing it serves carries a secret, a token or a
//! record: run summaries are counts and paths, and a failed run shows the
//! kind of error only; the message is in the log.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::pipeline::{Pipeline, Summary};
use crate::store::Storage;

#[derive(Debug, Clone, Serialize)]
pub struct PipelineStatus {
    pub pipeline: String,
    pub file: String,
    pub schedule: String,
    pub timezone: String,
    pub running: bool,
    pub runs: u64,
    pub skipped: u64,
    pub last_start: Option<DateTime<Utc>>,
    pub last_end: Option<DateTime<Utc>>,
    pub next_run: Option<DateTime<Utc>>,
    pub last_summary: Option<Summary>,
    /// The kind of the last run's error (`config`, `auth`, `unavailable`,
    /// `failure`, `interrupted`, `lock_held`); the message is in the log,
    /// since it may quote an answer of the gateway.
    pub last_error: Option<&'static str>,
}

impl PipelineStatus {
    pub fn new(pipeline: &Pipeline) -> Self {
        let schedule = pipeline.schedule.as_ref();
        PipelineStatus {
            pipeline: pipeline.name.clone(),
            file: pipeline.file.display().to_string(),
            schedule: schedule.map(|s| s.expression.clone()).unwrap_or_default(),
            timezone: schedule.map(|s| s.timezone.to_string()).unwrap_or_default(),
            running: false,
            runs: 0,
            skipped: 0,
            last_start: None,
            last_end: None,
            next_run: None,
            last_summary: None,
            last_error: None,
        }
    }
}

/// A pipeline file of the folder that does not validate, and is skipped.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileProblem {
    pub file: String,
    /// What `ionflow validate` would say about it (file:line:column, the key, the fix).
    pub problems: Vec<String>,
    /// The pipeline of this file that still runs on its previous definition, if any.
    pub still_serving: Option<String>,
}

/// What the endpoint reads: shared with the schedulers and the reloader.
#[derive(Default)]
pub struct Board {
    pub pipelines: std::collections::BTreeMap<String, PipelineStatus>,
    pub problems: Vec<FileProblem>,
    /// Set once the folder has been read.
    pub loaded: bool,
}

pub type Shared = Arc<Mutex<Board>>;

#[derive(Clone)]
struct App {
    board: Shared,
    storage: Arc<dyn Storage>,
}

/// Binds `addr` and serves until the process ends.
pub async fn serve(
    addr: SocketAddr,
    board: Shared,
    storage: Arc<dyn Storage>,
) -> anyhow::Result<SocketAddr> {
    // An address this machine cannot listen on is the command line's
    // mistake (exit 2), like a malformed one.
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        crate::pipeline::UsageError(format!(
            "--status-addr {addr}: cannot listen there ({e}); pick a free port on an address \
             of this machine (127.0.0.1 or 0.0.0.0)"
        ))
    })?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/status", axum::routing::get(status))
        .route("/metrics", axum::routing::get(metrics))
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz))
        .with_state(App { board, storage });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(bound)
}

#[derive(Serialize)]
struct StatusBody {
    pipelines: Vec<PipelineStatus>,
    problems: Vec<FileProblem>,
}

async fn status(State(app): State<App>) -> Json<StatusBody> {
    let board = app.board.lock().unwrap();
    Json(StatusBody {
        pipelines: board.pipelines.values().cloned().collect(),
        problems: board.problems.clone(),
    })
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::encode(),
    )
}

/// The process is up and its runtime answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// A store that does not answer within this is unreachable for the probe.
const STORE_PROBE: Duration = Duration::from_secs(2);

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    pipelines_loaded: bool,
    pipelines: usize,
    store: &'static str,
}

/// Ready when the folder has been read and the store answers; 503 otherwise.
async fn readyz(State(app): State<App>) -> impl IntoResponse {
    let (loaded, pipelines) = {
        let board = app.board.lock().unwrap();
        (board.loaded, board.pipelines.len())
    };
    let store = match tokio::time::timeout(STORE_PROBE, app.storage.ping()).await {
        Ok(Ok(())) => "reachable",
        Ok(Err(e)) => {
            tracing::warn!(target: "ionflow::serve", event = "not_ready", "the store does not answer: {e}");
            "unreachable"
        }
        Err(_) => {
            tracing::warn!(target: "ionflow::serve", event = "not_ready", "the store did not answer within {} s", STORE_PROBE.as_secs());
            "unreachable"
        }
    };
    let ready = loaded && store == "reachable";
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Readiness {
            ready,
            pipelines_loaded: loaded,
            pipelines,
            store,
        }),
    )
}
