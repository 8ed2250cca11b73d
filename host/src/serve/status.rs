//! The loopback status endpoint of `ionflow serve`: `GET /status`.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Statuses;
use crate::pipeline::{Pipeline, Summary, UsageError};

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
    pub last_error: Option<String>,
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

/// Binds `addr` (loopback only: the status lists pipeline errors) and serves.
pub async fn serve(addr: SocketAddr, statuses: Statuses) -> anyhow::Result<SocketAddr> {
    if !addr.ip().is_loopback() {
        return Err(UsageError(format!(
            "--status-addr {addr}: the status endpoint listens on loopback only; use \
             127.0.0.1:PORT (or [::1]:PORT)"
        ))
        .into());
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        UsageError(format!(
            "--status-addr {addr}: cannot listen there ({e}); pick a free port"
        ))
    })?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/status", axum::routing::get(status))
        .with_state(statuses);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(bound)
}

async fn status(State(statuses): State<Statuses>) -> Json<Vec<PipelineStatus>> {
    Json(statuses.lock().unwrap().values().cloned().collect())
}
