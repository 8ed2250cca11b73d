//! `ionflow serve`: every scheduled pipeline of a folder, each on its own
//! cron schedule, with overlap and missed-run policies, keep-alive of stored
//! grants, a loopback status endpoint and a graceful shutdown. Each tick is
//! claimed through the store (always granted by the file backend; once
//! across workers with PostgreSQL, with a lease renewed while it runs).
//! The worker holds its pipelines' grants from start-up to shutdown, so
//! runs share one grant, and at shutdown revokes those it holds last.

mod status;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{MissedRuns, Overlap};
use crate::grants::Grants;
use crate::pipeline::run_lock::RunLock;
use crate::pipeline::{HeldGrant, Pipeline, Session, Variables};
use crate::store::{Claim, RunState, Storage, TickLease};
use ionflow_runtime::Runtime;
pub use status::PipelineStatus;

type Statuses = Arc<Mutex<BTreeMap<String, PipelineStatus>>>;

pub struct ServeOptions {
    pub dir: PathBuf,
    pub state_dir: PathBuf,
    /// Tokens, state and schedule leases (files, or PostgreSQL for many workers).
    pub storage: Arc<dyn Storage>,
    /// This worker's name in leases and `ionflow status`.
    pub worker: String,
    /// How long a claimed tick stays claimed without a renewal.
    pub lease_secs: f64,
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
        .map_err(|e| {
            crate::pipeline::UsageError(format!("cannot read the folder {}: {e}", dir.display()))
        })?
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
        return Err(crate::pipeline::ConfigError::new(
            dir,
            "no pipeline in this folder has a schedule; add one to a pipeline, e.g. \
             schedule = \"*/15 * * * *\"",
        )
        .into());
    }
    Ok(pipelines)
}

pub async fn serve(
    options: ServeOptions,
    runtime: Arc<Runtime>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut pipelines = load_scheduled(&options.dir, &options.vars)?;
    for pipeline in &mut pipelines {
        pipeline.use_storage(&options.storage);
    }
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
    let ctx = Context {
        grants: Arc::new(Grants::of(
            options.storage.as_ref(),
            Duration::from_secs_f64(options.lease_secs),
        )),
        held: Arc::new(tokio::sync::Mutex::new(BTreeMap::new())),
        runtime: runtime.clone(),
        storage: options.storage.clone(),
        statuses: statuses.clone(),
        state_dir: options.state_dir.clone(),
        worker: options.worker.as_str().into(),
        lease_secs: options.lease_secs,
    };
    tracing::info!(
        target: "ionflow::serve",
        event = "worker_started",
        worker = %options.worker,
        store = %options.storage.describe(),
        lease_secs = options.lease_secs,
    );
    let pipelines: Vec<Arc<Pipeline>> = pipelines.into_iter().map(Arc::new).collect();
    for pipeline in &pipelines {
        // Held from now on; a pipeline whose connections cannot open yet
        // tries again before each of its runs.
        if let Err(e) = hold_grants(&ctx, pipeline).await {
            tracing::warn!(target: "ionflow::serve", pipeline = %pipeline.name, "{e:#}");
        }
    }
    let mut schedulers = Vec::new();
    for pipeline in pipelines.iter().cloned() {
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
        schedulers.push(tokio::spawn(scheduler(pipeline, ctx.clone(), stop.clone())));
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
    release_grants(&ctx, &pipelines).await;
    Ok(())
}

/// Holds the grants of `pipeline`'s connections for the life of this
/// worker, once, each with its connection's wish for shutdown
/// (`revoke_on_exit`: revoke by default).
async fn hold_grants(ctx: &Context, pipeline: &Pipeline) -> anyhow::Result<()> {
    let mut held = ctx.held.lock().await;
    if held.contains_key(&pipeline.name) {
        return Ok(());
    }
    let connections = pipeline.open_connections(&ctx.runtime).await?;
    let grants = pipeline
        .hold_grants(&ctx.grants, &connections, true)
        .await?;
    held.insert(pipeline.name.clone(), grants);
    Ok(())
}

/// At shutdown: lets go of every grant this worker holds; a grant it holds
/// last, and was asked to revoke, is revoked through a fresh connection (a
/// run's instances may have been abandoned midway).
async fn release_grants(ctx: &Context, pipelines: &[Arc<Pipeline>]) {
    let mut held = ctx.held.lock().await;
    for pipeline in pipelines {
        let Some(grants) = held.remove(&pipeline.name) else {
            continue;
        };
        let connections = pipeline
            .open_connections(&ctx.runtime)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(target: "ionflow::serve", pipeline = %pipeline.name, "could not reopen connections to revoke; the grants are kept: {e:#}");
                BTreeMap::new()
            });
        pipeline
            .release_grants(&ctx.grants, &grants, &connections)
            .await;
    }
}

/// Resolves once the stop flag is raised.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// What a scheduler needs besides its pipeline: shared by all of them.
#[derive(Clone)]
struct Context {
    runtime: Arc<Runtime>,
    grants: Arc<Grants>,
    /// The grants held for each pipeline, by name, until shutdown.
    held: Arc<tokio::sync::Mutex<BTreeMap<String, Vec<HeldGrant>>>>,
    storage: Arc<dyn Storage>,
    statuses: Statuses,
    state_dir: PathBuf,
    worker: Arc<str>,
    lease_secs: f64,
}

/// Why the scheduler woke up.
enum Wake {
    Tick,
    Stop,
    RunEnded,
    /// Time to look for lapsed leases and queued ticks (shared stores only).
    Watch,
}

/// A retry after a lapsed lease is attempt 2; a run lost twice is abandoned.
const MAX_ATTEMPTS: i32 = 2;

async fn scheduler(pipeline: Arc<Pipeline>, ctx: Context, mut stop: watch::Receiver<bool>) {
    let Some(schedule) = pipeline.schedule.clone() else {
        return;
    };
    let name = pipeline.name.clone();
    let file = pipeline.file.display().to_string();
    let update = |f: &mut dyn FnMut(&mut PipelineStatus)| {
        if let Some(status) = ctx.statuses.lock().unwrap().get_mut(&name) {
            f(status);
        }
    };
    let run_stop = stop.clone();
    let start = |lease: TickLease| {
        tokio::spawn(run_once(
            pipeline.clone(),
            ctx.clone(),
            run_stop.clone(),
            lease,
        ))
    };
    let mut running: Option<JoinHandle<()>> = None;
    let mut queued = false;
    // A tick that found another worker's run going, under `overlap = "queue"`.
    let mut waiting_tick: Option<DateTime<Utc>> = None;
    // Lapsed leases are looked for twice per lease period.
    let watch_every = Duration::from_secs_f64((ctx.lease_secs / 2.0).max(0.1));
    let retries = pipeline.config.missed_runs == MissedRuns::RunOnce;

    let last_tick_file = ctx
        .state_dir
        .join("serve")
        .join(format!("{}.last-tick", file_key(&pipeline.file)));
    if pipeline.config.missed_runs == MissedRuns::RunOnce
        && let Some(last) = read_tick(&last_tick_file)
        && schedule.fired_between(last, Utc::now())
    {
        tracing::info!(target: "ionflow::serve", event = "missed_run", pipeline = %name, since = %last);
        // The first missed fire time: workers that missed the same tick claim the same row.
        let tick = schedule.next_after(last).unwrap_or_else(Utc::now);
        if let Some(lease) = claim(&ctx, &name, tick).await {
            running = Some(start(lease));
        }
    }

    // The tick being waited for. It is kept when the scheduler wakes for
    // another reason (a run ended, a look for lapsed leases), so a wake-up
    // just after the tick's time cannot skip past it.
    let mut pending: Option<DateTime<Utc>> = None;
    loop {
        let next = match pending.take() {
            Some(next) => next,
            None => {
                let Some(next) = schedule.next_after(Utc::now()) else {
                    tracing::warn!(target: "ionflow::serve", pipeline = %name, "the schedule has no future fire time");
                    break;
                };
                update(&mut |s| s.next_run = Some(next));
                if let Err(e) = ctx
                    .storage
                    .record_schedule(&name, &file, &schedule.expression, Some(next), &ctx.worker)
                    .await
                {
                    tracing::warn!(target: "ionflow::serve", pipeline = %name, "could not record the schedule: {e}");
                }
                next
            }
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        let shared = ctx.storage.shared();
        let wake = tokio::select! {
            () = tokio::time::sleep(wait) => Wake::Tick,
            _ = stop.wait_for(|stopping| *stopping) => Wake::Stop,
            _ = async { running.as_mut().expect("guarded").await }, if running.is_some() => Wake::RunEnded,
            () = tokio::time::sleep(watch_every), if shared && running.is_none() => Wake::Watch,
        };
        match wake {
            Wake::Tick => {}
            Wake::Stop => break,
            Wake::RunEnded => {
                running = None;
                if std::mem::take(&mut queued)
                    && let Some(lease) = claim(&ctx, &name, Utc::now()).await
                {
                    running = Some(start(lease));
                }
                pending = Some(next);
                continue;
            }
            Wake::Watch => {
                if let Some(tick) = waiting_tick {
                    match ctx
                        .storage
                        .claim(&name, tick, &ctx.worker, ctx.lease_secs)
                        .await
                    {
                        Ok(Claim::Claimed(lease)) => {
                            waiting_tick = None;
                            running = Some(start(lease));
                        }
                        Ok(Claim::TakenBy(_)) => waiting_tick = None,
                        Ok(Claim::Busy(_)) => {}
                        Err(e) => tracing::warn!(target: "ionflow::serve", pipeline = %name, "{e}"),
                    }
                }
                if running.is_none() {
                    running = take_over_lapsed(&ctx, &name, retries).await.map(start);
                }
                pending = Some(next);
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
        match ctx
            .storage
            .claim(&name, next, &ctx.worker, ctx.lease_secs)
            .await
        {
            Ok(Claim::Claimed(lease)) => running = Some(start(lease)),
            Ok(Claim::TakenBy(worker)) => tracing::debug!(
                target: "ionflow::serve",
                event = "tick_taken",
                pipeline = %name,
                tick = %next,
                worker = %worker,
                "another worker runs this tick"
            ),
            Ok(Claim::Busy(worker)) => match pipeline.config.overlap {
                Overlap::Skip => {
                    update(&mut |s| s.skipped += 1);
                    tracing::info!(
                        target: "ionflow::serve",
                        event = "tick_skipped",
                        pipeline = %name,
                        tick = %next,
                        holder = %worker,
                        "a run on another worker is still going"
                    );
                }
                Overlap::Queue => waiting_tick = Some(next),
            },
            Err(e) => tracing::warn!(
                target: "ionflow::serve",
                event = "claim_failed",
                pipeline = %name,
                tick = %next,
                "the tick was not run: {e}"
            ),
        }
    }
    if let Some(run) = running {
        let _ = run.await;
    }
}

/// Claims a tick, logging why not.
async fn claim(ctx: &Context, name: &str, tick: DateTime<Utc>) -> Option<TickLease> {
    match ctx
        .storage
        .claim(name, tick, &ctx.worker, ctx.lease_secs)
        .await
    {
        Ok(Claim::Claimed(lease)) => Some(lease),
        Ok(Claim::TakenBy(worker) | Claim::Busy(worker)) => {
            tracing::info!(target: "ionflow::serve", event = "tick_skipped", pipeline = %name, tick = %tick, holder = %worker, "another worker holds the lease");
            None
        }
        Err(e) => {
            tracing::warn!(target: "ionflow::serve", event = "claim_failed", pipeline = %name, tick = %tick, "{e}");
            None
        }
    }
}

/// A run whose worker stopped renewing its lease (it died, or lost the
/// database) is retried here once under `missed_runs = "run_once"`, and
/// abandoned otherwise.
async fn take_over_lapsed(ctx: &Context, name: &str, retries: bool) -> Option<TickLease> {
    let lapsed = match ctx.storage.lapsed(name).await {
        Ok(lapsed) => lapsed,
        Err(e) => {
            tracing::warn!(target: "ionflow::serve", pipeline = %name, "{e}");
            return None;
        }
    };
    for run in lapsed {
        if retries && run.attempts < MAX_ATTEMPTS {
            match ctx
                .storage
                .take_over(name, &run, &ctx.worker, ctx.lease_secs)
                .await
            {
                Ok(Some(lease)) => {
                    tracing::info!(
                        target: "ionflow::serve",
                        event = "lease_taken_over",
                        pipeline = %name,
                        tick = %run.tick,
                        previous_worker = %run.worker,
                        attempt = lease.attempt,
                        "the worker running this tick stopped renewing its lease; retrying it here"
                    );
                    return Some(lease);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(target: "ionflow::serve", pipeline = %name, "{e}"),
            }
        } else {
            let reason = format!(
                "the lease of worker {} lapsed during attempt {}; not retried (missed_runs = {})",
                run.worker,
                run.attempts,
                if retries {
                    "\"run_once\", retried already"
                } else {
                    "\"skip\""
                }
            );
            if let Ok(true) = ctx.storage.abandon(name, &run, &reason).await {
                tracing::warn!(target: "ionflow::serve", event = "run_abandoned", pipeline = %name, tick = %run.tick, "{reason}");
            }
        }
    }
    None
}

/// Renews `lease` every third of its period until the run ends; resolves
/// if the lease is lost, so the run stops instead of running twice.
pub async fn keep_lease(storage: &dyn Storage, lease: &TickLease, lease_secs: f64) {
    let every = Duration::from_secs_f64((lease_secs / 3.0).max(0.05));
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match storage.renew(lease, lease_secs).await {
            Ok(true) => last_renewed = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::warn!(target: "ionflow::serve", event = "lease_lost", pipeline = %lease.pipeline, tick = %lease.tick, "another worker took this run over; stopping it");
                return;
            }
            Err(e) => {
                tracing::warn!(target: "ionflow::serve", pipeline = %lease.pipeline, "could not renew the lease: {e}");
                if last_renewed.elapsed().as_secs_f64() >= lease_secs {
                    tracing::warn!(target: "ionflow::serve", event = "lease_lost", pipeline = %lease.pipeline, tick = %lease.tick, "the lease lapsed; stopping the run");
                    return;
                }
            }
        }
    }
}

async fn run_once(
    pipeline: Arc<Pipeline>,
    ctx: Context,
    stop: watch::Receiver<bool>,
    lease: TickLease,
) {
    let name = pipeline.name.clone();
    let tick = lease.tick;
    let update = |f: &mut dyn FnMut(&mut PipelineStatus)| {
        if let Some(status) = ctx.statuses.lock().unwrap().get_mut(&name) {
            f(status);
        }
    };
    // The same lock as `ionflow run`, so a cron job and serve never overlap.
    let _lock = match RunLock::try_acquire(&ctx.state_dir, &pipeline.file) {
        Ok(lock) => lock,
        Err(e) => {
            update(&mut |s| s.skipped += 1);
            tracing::info!(target: "ionflow::serve", event = "tick_skipped", pipeline = %name, tick = %tick, "{e}");
            let reason = format!("{e:#}");
            let _ = ctx
                .storage
                .finish(&lease, RunState::Abandoned, Some(&reason))
                .await;
            return;
        }
    };
    let started = Utc::now();
    update(&mut |s| {
        s.running = true;
        s.last_start = Some(started);
    });
    tracing::info!(
        target: "ionflow::serve",
        event = "run_started",
        pipeline = %name,
        tick = %tick,
        worker = %ctx.worker,
        attempt = lease.attempt,
    );
    let lease_lost = keep_lease(ctx.storage.as_ref(), &lease, ctx.lease_secs);
    let stop_run = async {
        tokio::select! {
            () = stopped(stop) => {}
            () = lease_lost => {}
        }
    };
    let outcome = match hold_grants(&ctx, &pipeline).await {
        Ok(()) => {
            pipeline
                .run_until(&ctx.runtime, &ctx.grants, Session::Served, false, stop_run)
                .await
        }
        Err(e) => Err(e),
    };
    let ended = Utc::now();
    match &outcome {
        Ok(summary) => tracing::info!(
            target: "ionflow::serve",
            event = "run_finished",
            pipeline = %name,
            tick = %tick,
            worker = %ctx.worker,
            attempt = lease.attempt,
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
            worker = %ctx.worker,
            error = %format!("{e:#}"),
        ),
    }
    let (state, error) = crate::pipeline::recorded_state(&outcome);
    if let Err(e) = ctx.storage.finish(&lease, state, error.as_deref()).await {
        tracing::warn!(target: "ionflow::serve", pipeline = %name, "could not record the end of the run: {e}");
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
        .filter(|(_, c)| !c.revokes_on_exit(true))
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
        let _ = ionflow_runtime::private_files::create_dir(dir);
    }
    if let Err(e) = ionflow_runtime::private_files::write(path, tick.to_rfc3339().as_bytes()) {
        tracing::warn!(path = %path.display(), "could not record the last tick: {e}");
    }
}
