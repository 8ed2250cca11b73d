//! `ionflow serve`: every scheduled pipeline of a folder, each on its own
//! cron schedule, with overlap and missed-run policies, keep-alive of stored
//! grants, a loopback status endpoint and a graceful shutdown.

mod status;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::pipeline::config::{MissedRuns, Overlap};
use crate::pipeline::run_lock::RunLock;
use crate::pipeline::{Pipeline, Variables};
use crate::runtime::Runtime;
pub use status::PipelineStatus;

type Statuses = Arc<Mutex<BTreeMap<String, PipelineStatus>>>;

pub struct ServeOptions {
    pub dir: PathBuf,
    pub state_dir: PathBuf,
    /// Loopback address for `GET /status`.
    pub status_addr: Option<SocketAddr>,
    /// How long running runs may take to stop after a shutdown signal.
    pub grace: Duration,
    pub vars: Variables,
}

/// Loads every pipeline with a schedule in `dir`; any broken file stops
/// start-up with all problems listed, before anything runs.
pub fn load_scheduled(dir: &Path, vars: &Variables) -> anyhow::Result<Vec<Pipeline>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut pipelines = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        match Pipeline::load(&file, vars.clone()) {
            Ok(p) if p.schedule.is_some() => pipelines.push(p),
            Ok(p) => tracing::info!(pipeline = %p.name, "no schedule; not served"),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        return Err(crate::pipeline::ConfigError::new(dir, problems.join("\n")).into());
    }
    if pipelines.is_empty() {
        anyhow::bail!(
            "no pipeline in {} has a schedule; add e.g. schedule = \"*/15 * * * *\"",
            dir.display()
        );
    }
    Ok(pipelines)
}

pub async fn serve(
    options: ServeOptions,
    runtime: Arc<Runtime>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let pipelines = load_scheduled(&options.dir, &options.vars)?;
    let statuses: Statuses = Arc::new(Mutex::new(
        pipelines
            .iter()
            .map(|p| (p.name.clone(), PipelineStatus::new(p)))
            .collect(),
    ));
    if let Some(addr) = options.status_addr {
        let bound = status::serve(addr, statuses.clone()).await?;
        tracing::info!(target: "ionflow::serve", event = "status_listening", addr = %bound);
    }
    let (stop_sender, stop) = watch::channel(false);
    let mut schedulers = Vec::new();
    for pipeline in pipelines {
        let pipeline = Arc::new(pipeline);
        tracing::info!(
            target: "ionflow::serve",
            event = "scheduled",
            pipeline = %pipeline.name,
            schedule = %pipeline.schedule.as_ref().map(|s| s.expression.as_str()).unwrap_or_default(),
        );
        schedulers.push(tokio::spawn(keepalive(
            pipeline.clone(),
            runtime.clone(),
            stop.clone(),
        )));
        schedulers.push(tokio::spawn(scheduler(
            pipeline,
            runtime.clone(),
            statuses.clone(),
            stop.clone(),
            options.state_dir.clone(),
        )));
    }

    shutdown.await;
    tracing::info!(
        target: "ionflow::serve",
        event = "shutting_down",
        grace_secs = options.grace.as_secs()
    );
    let _ = stop_sender.send(true);
    let all = futures::future::join_all(schedulers.iter_mut());
    if tokio::time::timeout(options.grace, all).await.is_err() {
        tracing::warn!(
            target: "ionflow::serve",
            event = "grace_expired",
            "runs still going after the grace period are cancelled"
        );
        for task in &schedulers {
            task.abort();
        }
    }
    Ok(())
}

/// Resolves once the stop flag is raised.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

async fn scheduler(
    pipeline: Arc<Pipeline>,
    runtime: Arc<Runtime>,
    statuses: Statuses,
    mut stop: watch::Receiver<bool>,
    state_dir: PathBuf,
) {
    let Some(schedule) = pipeline.schedule.clone() else {
        return;
    };
    let name = pipeline.name.clone();
    let update = |f: &mut dyn FnMut(&mut PipelineStatus)| {
        if let Some(status) = statuses.lock().unwrap().get_mut(&name) {
            f(status);
        }
    };
    let run_stop = stop.clone();
    let start = |tick: DateTime<Utc>| {
        tokio::spawn(run_once(
            pipeline.clone(),
            runtime.clone(),
            statuses.clone(),
            run_stop.clone(),
            state_dir.clone(),
            tick,
        ))
    };
    let mut running: Option<JoinHandle<()>> = None;
    let mut queued = false;

    let last_tick_file = state_dir
        .join("serve")
        .join(format!("{}.last-tick", file_key(&pipeline.file)));
    if pipeline.config.missed_runs == MissedRuns::RunOnce
        && let Some(last) = read_tick(&last_tick_file)
        && schedule.fired_between(last, Utc::now())
    {
        tracing::info!(target: "ionflow::serve", event = "missed_run", pipeline = %name, since = %last);
        running = Some(start(Utc::now()));
    }

    loop {
        let Some(next) = schedule.next_after(Utc::now()) else {
            tracing::warn!(target: "ionflow::serve", pipeline = %name, "the schedule has no future fire time");
            break;
        };
        update(&mut |s| s.next_run = Some(next));
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|stopping| *stopping) => break,
            _ = async { running.as_mut().expect("guarded").await }, if running.is_some() => {
                running = None;
                if std::mem::take(&mut queued) {
                    running = Some(start(Utc::now()));
                }
                continue;
            }
        }
        write_tick(&last_tick_file, next);
        if running.as_ref().is_some_and(|r| !r.is_finished()) {
            match pipeline.config.overlap {
                Overlap::Skip => {
                    update(&mut |s| s.skipped += 1);
                    tracing::info!(
                        target: "ionflow::serve",
                        event = "tick_skipped",
                        pipeline = %name,
                        tick = %next,
                        "the previous run is still going"
                    );
                }
                Overlap::Queue => queued = true,
            }
            continue;
        }
        running = Some(start(next));
    }
    if let Some(run) = running {
        let _ = run.await;
    }
}

async fn run_once(
    pipeline: Arc<Pipeline>,
    runtime: Arc<Runtime>,
    statuses: Statuses,
    stop: watch::Receiver<bool>,
    state_dir: PathBuf,
    tick: DateTime<Utc>,
) {
    let name = pipeline.name.clone();
    let update = |f: &mut dyn FnMut(&mut PipelineStatus)| {
        if let Some(status) = statuses.lock().unwrap().get_mut(&name) {
            f(status);
        }
    };
    // The same lock as `ionflow run`, so a cron job and serve never overlap.
    let _lock = match RunLock::try_acquire(&state_dir, &pipeline.file) {
        Ok(lock) => lock,
        Err(e) => {
            update(&mut |s| s.skipped += 1);
            tracing::info!(target: "ionflow::serve", event = "tick_skipped", pipeline = %name, tick = %tick, "{e}");
            return;
        }
    };
    let started = Utc::now();
    update(&mut |s| {
        s.running = true;
        s.last_start = Some(started);
    });
    tracing::info!(target: "ionflow::serve", event = "run_started", pipeline = %name, tick = %tick);
    let outcome = pipeline.run_until(&runtime, false, stopped(stop)).await;
    let ended = Utc::now();
    match &outcome {
        Ok(summary) => tracing::info!(
            target: "ionflow::serve",
            event = "run_finished",
            pipeline = %name,
            tick = %tick,
            records_in = summary.records_in,
            records_out = summary.records_out,
            records_failed = summary.records_failed,
            api_calls = summary.api_calls,
            duration_ms = summary.duration_ms,
        ),
        Err(e) => tracing::warn!(
            target: "ionflow::serve",
            event = "run_failed",
            pipeline = %name,
            tick = %tick,
            error = %format!("{e:#}"),
        ),
    }
    update(&mut |s| {
        s.running = false;
        s.runs += 1;
        s.last_end = Some(ended);
        match &outcome {
            Ok(summary) => {
                s.last_summary = Some(summary.clone());
                s.last_error = None;
            }
            Err(e) => s.last_error = Some(format!("{e:#}")),
        }
    });
}

/// Refreshes the grants that outlive runs (`revoke_on_exit = false`) before
/// Infor's idle cut-off of 30 days.
async fn keepalive(
    pipeline: Arc<Pipeline>,
    runtime: Arc<Runtime>,
    mut stop: watch::Receiver<bool>,
) {
    let kept: Vec<(String, Duration)> = pipeline
        .config
        .connections
        .iter()
        .filter(|(_, c)| !c.revokes_on_exit())
        .map(|(name, c)| {
            (
                name.clone(),
                Duration::from_secs(c.keepalive_interval_secs()),
            )
        })
        .collect();
    if kept.is_empty() {
        return;
    }
    let Ok(connections) = pipeline.open_connections(&runtime).await else {
        return;
    };
    let interval = kept.iter().map(|(_, d)| *d).min().unwrap_or(Duration::MAX);
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        for (name, _) in &kept {
            let outcome = connections[name].refresh().await;
            match outcome {
                Ok(_) => {
                    tracing::info!(target: "ionflow::serve", event = "keepalive", pipeline = %pipeline.name, connection = %name)
                }
                Err(e) => {
                    tracing::warn!(target: "ionflow::serve", event = "keepalive_failed", pipeline = %pipeline.name, connection = %name, error = %e)
                }
            }
        }
    }
}

fn file_key(file: &Path) -> String {
    use sha2::{Digest, Sha256};
    let canonical = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_owned());
    let digest = Sha256::digest(canonical.to_string_lossy().as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

fn read_tick(path: &Path) -> Option<DateTime<Utc>> {
    let text = std::fs::read_to_string(path).ok()?;
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn write_tick(path: &Path, tick: DateTime<Utc>) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(path, tick.to_rfc3339()) {
        tracing::warn!(path = %path.display(), "could not record the last tick: {e}");
    }
}
