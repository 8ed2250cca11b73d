//! One scheduled pipeline: its ticks, claims through the store, the catch-up
//! of missed ticks, the run itself (under its lease), and the keep-alive of
//! grants it keeps between runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use super::status::{PipelineStatus, Shared};
use crate::config::{MissedRuns, Overlap};
use crate::grants::Grants;
use crate::metrics::{RunEnd, RunRecords, metrics};
use crate::pipeline::run_lock::RunLock;
use crate::pipeline::{HeldGrant, Pipeline, Session, Summary};
use crate::schedule::Due;
use crate::store::{Claim, RunState, Storage, TickLease};
use ionflow_runtime::Runtime;

/// Resolves once the stop flag is raised.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// The grants held for each pipeline, by name, with the definition they
/// were held for.
pub(super) type HeldByPipeline = BTreeMap<String, (Arc<Pipeline>, Vec<HeldGrant>)>;

/// What a scheduler needs besides its pipeline: shared by all of them.
#[derive(Clone)]
pub(super) struct Context {
    pub runtime: Arc<Runtime>,
    pub grants: Arc<Grants>,
    /// The grants held for each pipeline, by name, until shutdown, with the
    /// definition they were held for.
    pub held: Arc<tokio::sync::Mutex<HeldByPipeline>>,
    pub storage: Arc<dyn Storage>,
    pub board: Shared,
    pub state_dir: PathBuf,
    pub worker: Arc<str>,
    pub lease_secs: f64,
    /// Raised on SIGTERM: running runs stop at the next page.
    pub stop_runs: watch::Receiver<bool>,
    /// The kind of a failed run (`ServeOptions::error_kind`).
    pub error_kind: fn(&anyhow::Error) -> &'static str,
}

impl Context {
    fn update(&self, name: &str, f: &mut dyn FnMut(&mut PipelineStatus)) {
        if let Some(status) = self.board.lock().unwrap().pipelines.get_mut(name) {
            f(status);
        }
    }
}

/// Holds the grants of `pipeline`'s connections for the life of this
/// worker, each with its connection's wish for shutdown (`revoke_on_exit`:
/// revoke by default). A pipeline whose file changed holds the new
/// definition's grants first, then lets go of the old ones, so a grant both
/// use is never left without a holder in between.
pub(super) async fn hold_grants(ctx: &Context, pipeline: &Arc<Pipeline>) -> anyhow::Result<()> {
    let mut held = ctx.held.lock().await;
    if held
        .get(&pipeline.name)
        .is_some_and(|(p, _)| Arc::ptr_eq(p, pipeline))
    {
        return Ok(());
    }
    let connections = pipeline.open_connections(&ctx.runtime).await?;
    let grants = pipeline
        .hold_grants(&ctx.grants, &connections, true)
        .await?;
    if let Some((old, old_grants)) = held.insert(pipeline.name.clone(), (pipeline.clone(), grants))
    {
        release_held(ctx, &old, &old_grants).await;
    }
    Ok(())
}

/// Lets go of every grant this worker holds (at shutdown); a grant it holds
/// last, and was asked to revoke, is revoked.
pub(super) async fn release_grants(ctx: &Context) {
    let mut held = ctx.held.lock().await;
    for (_, (pipeline, grants)) in std::mem::take(&mut *held) {
        release_held(ctx, &pipeline, &grants).await;
    }
}

/// Releases `grants` of `pipeline` through fresh connections (a run's
/// instances may have been abandoned midway).
async fn release_held(ctx: &Context, pipeline: &Pipeline, grants: &[HeldGrant]) {
    let connections = pipeline
        .open_connections(&ctx.runtime)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(target: "ionflow::serve", pipeline = %pipeline.name, "could not reopen connections to revoke; the grants are kept: {e:#}");
            BTreeMap::new()
        });
    pipeline
        .release_grants(&ctx.grants, grants, &connections)
        .await;
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

/// Schedules `pipeline` until `stop` is raised (shutdown, or the file was
/// changed or removed); a run going on then finishes first, on this
/// definition, unless the runs are stopped too.
pub(super) async fn scheduler(
    pipeline: Arc<Pipeline>,
    ctx: Context,
    mut stop: watch::Receiver<bool>,
) {
    let Some(schedule) = pipeline.schedule.clone() else {
        return;
    };
    let name = pipeline.name.clone();
    let file = pipeline.file.display().to_string();
    let update = |f: &mut dyn FnMut(&mut PipelineStatus)| ctx.update(&name, f);
    let start = |lease: TickLease| tokio::spawn(run_once(pipeline.clone(), ctx.clone(), lease));
    let mut running: Option<JoinHandle<()>> = None;
    let mut queued = false;
    // A tick that found another worker's run going, under `overlap = "queue"`.
    let mut waiting_tick: Option<DateTime<Utc>> = None;
    // The first tick the store could not be asked about (it was down):
    // under `missed_runs = "run_once"` it runs once when the store is back,
    // as the ticks a stopped worker missed do.
    let mut missed_tick: Option<DateTime<Utc>> = None;
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
        tracing::info!(target: "ionflow::serve", event = "missed_run", pipeline = %name, since = %last, "a tick passed while no worker served this pipeline; running it once");
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
    // The last tick handled. The next one is the schedule's next after it,
    // not after "now": when handling a tick took past the following one (a
    // slow store, a loaded machine), that tick is handled late instead of
    // lost without a word. Of several that passed, the latest is handled and
    // the others are reported as skipped.
    let mut handled: Option<DateTime<Utc>> = None;
    loop {
        let next = match pending.take() {
            Some(next) => next,
            None => {
                let Some(due) = schedule.due(handled, Utc::now()) else {
                    tracing::warn!(target: "ionflow::serve", pipeline = %name, "the schedule has no future fire time");
                    break;
                };
                // One line per passed tick for the first few, then a count:
                // a suspended machine may come back a day of ticks later.
                for tick in &due.skipped {
                    tracing::info!(
                        target: "ionflow::serve",
                        event = "tick_skipped",
                        pipeline = %name,
                        tick = %tick,
                        "the scheduler was busy past this tick; a later one runs"
                    );
                }
                if due.skipped_count > 0 {
                    update(&mut |s| s.skipped += due.skipped_count);
                }
                if due.skipped_count > due.skipped.len() as u64 {
                    let count = due.skipped_count;
                    let at_least = if count == Due::COUNTED {
                        "at least "
                    } else {
                        ""
                    };
                    tracing::info!(
                        target: "ionflow::serve",
                        event = "ticks_skipped",
                        pipeline = %name,
                        count,
                        until = %due.tick,
                        "{at_least}{count} ticks passed while the scheduler was busy; the latest runs"
                    );
                }
                let next = due.tick;
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
                    running = catch_up(&ctx, &name, &mut missed_tick).await.map(start);
                }
                if running.is_none() {
                    running = take_over_lapsed(&ctx, &name, retries).await.map(start);
                }
                pending = Some(next);
                continue;
            }
        }
        write_tick(&last_tick_file, next);
        handled = Some(next);
        // The tick missed during a store outage goes first; this one then
        // meets it as it would meet any run still going.
        if running.as_ref().is_none_or(|r| r.is_finished())
            && let Some(lease) = catch_up(&ctx, &name, &mut missed_tick).await
        {
            running = Some(start(lease));
        }
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
            Err(e) => {
                if retries && missed_tick.is_none() {
                    missed_tick = Some(next);
                }
                tracing::warn!(
                    target: "ionflow::serve",
                    event = "claim_failed",
                    pipeline = %name,
                    tick = %next,
                    "the tick was not run: {e}{}",
                    if retries {
                        "; it runs once when the store answers again (missed_runs = \"run_once\")"
                    } else {
                        ""
                    }
                )
            }
        }
    }
    if let Some(run) = running {
        let _ = run.await;
    }
}

/// Claims the tick missed while the store was unreachable, once it answers.
async fn catch_up(
    ctx: &Context,
    name: &str,
    missed_tick: &mut Option<DateTime<Utc>>,
) -> Option<TickLease> {
    let tick = (*missed_tick)?;
    match ctx
        .storage
        .claim(name, tick, &ctx.worker, ctx.lease_secs)
        .await
    {
        Ok(Claim::Claimed(lease)) => {
            *missed_tick = None;
            tracing::info!(
                target: "ionflow::serve",
                event = "missed_run",
                pipeline = %name,
                tick = %tick,
                "the store answers again; running the ticks it missed once"
            );
            Some(lease)
        }
        // Another worker caught it up.
        Ok(Claim::TakenBy(_)) => {
            *missed_tick = None;
            None
        }
        Ok(Claim::Busy(_)) | Err(_) => None,
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

/// A run's id in logs and traces: unique enough to tell runs apart.
pub fn new_run_id() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// Runs one claimed tick inside a span naming the pipeline and the run, so
/// that every line the run logs (the connector's included) carries both.
async fn run_once(pipeline: Arc<Pipeline>, ctx: Context, lease: TickLease) {
    let span = crate::traces::run_span(&pipeline.name, &new_run_id());
    let error_kind = ctx.error_kind;
    let outcome = run_traced(pipeline, ctx, lease)
        .instrument(span.clone())
        .await;
    match outcome {
        Some(outcome) => crate::pipeline::record_run_span(&span, &outcome, error_kind),
        None => {
            span.record("outcome", "skipped");
        }
    }
}

/// The run's outcome, or `None` when the tick was skipped (another run of
/// the pipeline holds its lock).
async fn run_traced(
    pipeline: Arc<Pipeline>,
    ctx: Context,
    lease: TickLease,
) -> Option<anyhow::Result<crate::pipeline::Summary>> {
    let name = pipeline.name.clone();
    let tick = lease.tick;
    let stop = ctx.stop_runs.clone();
    let update = |f: &mut dyn FnMut(&mut PipelineStatus)| ctx.update(&name, f);
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
            return None;
        }
    };
    let started = Utc::now();
    let clock = std::time::Instant::now();
    update(&mut |s| {
        s.running = true;
        s.last_start = Some(started);
    });
    metrics().run_started(&name);
    tracing::info!(
        target: "ionflow::serve",
        event = "run_started",
        pipeline = %name,
        tick = %tick,
        worker = %ctx.worker,
        attempt = lease.attempt,
        "run started",
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
    metrics().run_stopped(&name);
    metrics().run_ended(&name, &run_end(&outcome), clock.elapsed());
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
            "run finished",
        ),
        Err(e) => tracing::warn!(
            target: "ionflow::serve",
            event = "run_failed",
            pipeline = %name,
            tick = %tick,
            worker = %ctx.worker,
            error = %format!("{e:#}"),
            error_kind = (ctx.error_kind)(e),
            "run failed",
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
            Err(e) => s.last_error = Some((ctx.error_kind)(e)),
        }
    });
    Some(outcome)
}

/// How the metrics count a run's outcome.
fn run_end(outcome: &anyhow::Result<Summary>) -> RunEnd {
    match outcome {
        Ok(s) => RunEnd::Finished(RunRecords {
            read: s.records_in,
            written: s.records_out,
            failed: s.records_failed,
            dead_lettered: s.records_dead_lettered,
        }),
        Err(e) if e.is::<crate::pipeline::Interrupted>() => RunEnd::Interrupted,
        Err(_) => RunEnd::Failed,
    }
}

/// Refreshes the grants that outlive runs (`revoke_on_exit = false`) before
/// Infor's idle cut-off of 30 days.
pub(super) async fn keepalive(
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
                    tracing::info!(target: "ionflow::serve", event = "keepalive", pipeline = %pipeline.name, connection = %name, "refreshed the kept grant")
                }
                Err(e) => {
                    tracing::warn!(target: "ionflow::serve", event = "keepalive_failed", pipeline = %pipeline.name, connection = %name, error = %e, "could not refresh the kept grant")
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
