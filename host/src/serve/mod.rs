//! `ionflow serve`: every scheduled pipeline of a folder, each on its own
//! cron schedule, with overlap and missed-run policies, keep-alive of stored
//! grants, an HTTP endpoint (status, metrics, probes), reloads of the folder
//! and a graceful shutdown. Each tick is claimed through the store (always
//! granted by the file backend; once across workers with PostgreSQL, with a
//! lease renewed while it runs). The worker holds its pipelines' grants
//! from start-up to shutdown, so runs share one grant, and at shutdown
//! revokes those it holds last.
//!
//! Reloads: the folder is watched (and SIGHUP asks for a look); a file
//! added starts its scheduler, a file changed replaces it (a run going on
//! finishes on the old definition), a file removed stops it. A file that
//! does not validate is reported (log, `/status`, a metric) and skipped; a
//! pipeline whose file breaks keeps running on its last good definition.

mod folder;
mod scheduler;
mod status;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::grants::Grants;
use crate::metrics::metrics;
use crate::pipeline::{Pipeline, Variables};
use crate::store::Storage;
use folder::{Found, Outcome};
use ionflow_runtime::Runtime;
pub use scheduler::{keep_lease, new_run_id};
pub use status::{FileProblem, PipelineStatus};

pub struct ServeOptions {
    pub dir: PathBuf,
    pub state_dir: PathBuf,
    /// Tokens, state and schedule leases (files, or PostgreSQL for many workers).
    pub storage: Arc<dyn Storage>,
    /// This worker's name in leases and `ionflow status`.
    pub worker: String,
    /// How long a claimed tick stays claimed without a renewal.
    pub lease_secs: f64,
    /// Address for `/status`, `/metrics`, `/healthz` and `/readyz`.
    pub status_addr: Option<SocketAddr>,
    /// How long running runs may take to stop after a shutdown signal.
    pub grace: Duration,
    pub vars: Variables,
    /// Names the kind of a failed run for `/status` and the logs: the CLI
    /// passes its exit-code table, so the daemon does not import the CLI.
    pub error_kind: fn(&anyhow::Error) -> &'static str,
}

/// A pipeline being served: its file's digest and its tasks.
struct Served {
    name: String,
    digest: [u8; 32],
    /// Raised when the file changes or goes: the scheduler stops, a run
    /// going on finishes.
    retire: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Edits come in bursts (an editor writes, renames, sets modes): one look
/// after the burst.
const SETTLE: Duration = Duration::from_millis(300);

pub async fn serve(
    options: ServeOptions,
    runtime: Arc<Runtime>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let first = folder::scan(&options.dir, &options.vars)?;
    if !first
        .iter()
        .any(|f| matches!(f.outcome, Outcome::Scheduled(_) | Outcome::Invalid(_)))
    {
        anyhow::bail!(
            "no pipeline in {} has a schedule; add e.g. schedule = \"*/15 * * * *\"",
            options.dir.display()
        );
    }
    let board = status::Shared::default();
    if let Some(addr) = options.status_addr {
        let bound = status::serve(addr, board.clone(), options.storage.clone()).await?;
        tracing::info!(target: "ionflow::serve", event = "status_listening", addr = %bound, "serving /status, /metrics, /healthz and /readyz");
    }
    let (stop_sender, stop_runs) = watch::channel(false);
    let ctx = scheduler::Context {
        grants: Arc::new(Grants::of(
            options.storage.as_ref(),
            Duration::from_secs_f64(options.lease_secs),
        )),
        held: Arc::new(tokio::sync::Mutex::new(BTreeMap::new())),
        runtime,
        storage: options.storage.clone(),
        board: board.clone(),
        state_dir: options.state_dir.clone(),
        worker: options.worker.as_str().into(),
        lease_secs: options.lease_secs,
        error_kind: options.error_kind,
        stop_runs,
    };
    tracing::info!(
        target: "ionflow::serve",
        event = "worker_started",
        worker = %options.worker,
        store = %options.storage.describe(),
        lease_secs = options.lease_secs,
        "worker started",
    );
    let mut served: BTreeMap<PathBuf, Served> = BTreeMap::new();
    // Schedulers of changed or removed files, until their last run ends.
    let mut draining: Vec<JoinHandle<()>> = Vec::new();
    apply(first, &mut served, &mut draining, &ctx, false);

    let (reload_sender, mut reloads) = mpsc::channel::<&'static str>(1);
    let _watcher = watch_folder(&options.dir, reload_sender.clone());
    let _hangup = on_sighup(reload_sender);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(why) = reloads.recv() => {
                tokio::time::sleep(SETTLE).await;
                while reloads.try_recv().is_ok() {}
                tracing::info!(target: "ionflow::serve", event = "reloading", cause = why, dir = %options.dir.display(), "looking at the pipeline folder again");
                match folder::scan(&options.dir, &options.vars) {
                    Ok(found) => apply(found, &mut served, &mut draining, &ctx, true),
                    Err(e) => tracing::warn!(target: "ionflow::serve", event = "reload_failed", "{e:#}; the pipelines loaded before keep running"),
                }
            }
        }
        draining.retain(|task| !task.is_finished());
    }

    tracing::info!(
        target: "ionflow::serve",
        event = "shutting_down",
        grace_secs = options.grace.as_secs(),
        "stopping: running runs end at their next page"
    );
    let _ = stop_sender.send(true);
    let mut tasks = draining;
    for (_, s) in served {
        let _ = s.retire.send(true);
        tasks.extend(s.tasks);
    }
    let all = futures::future::join_all(tasks.iter_mut());
    if tokio::time::timeout(options.grace, all).await.is_err() {
        tracing::warn!(
            target: "ionflow::serve",
            event = "grace_expired",
            "runs still going after the grace period are cancelled"
        );
        for task in &tasks {
            task.abort();
        }
    }
    scheduler::release_grants(&ctx).await;
    Ok(())
}

/// Makes the served set match the folder as found: starts new and changed
/// pipelines, retires changed and removed ones, reports invalid files.
fn apply(
    found: Vec<Found>,
    served: &mut BTreeMap<PathBuf, Served>,
    draining: &mut Vec<JoinHandle<()>>,
    ctx: &scheduler::Context,
    reload: bool,
) {
    let mut problems = Vec::new();
    let present: Vec<PathBuf> = found.iter().map(|f| f.file.clone()).collect();
    for gone in served
        .keys()
        .filter(|f| !present.contains(f))
        .cloned()
        .collect::<Vec<_>>()
    {
        let old = served.remove(&gone).expect("listed");
        tracing::info!(target: "ionflow::serve", event = "pipeline_removed", pipeline = %old.name, file = %gone.display(), "the file is gone; no more runs are scheduled");
        retire(old, draining, ctx, true);
    }
    for Found {
        file,
        digest,
        outcome,
    } in found
    {
        if served.get(&file).is_some_and(|s| s.digest == digest) {
            continue;
        }
        match outcome {
            Outcome::Scheduled(pipeline) => {
                let clash = served
                    .iter()
                    .find(|(f, s)| **f != file && s.name == pipeline.name)
                    .map(|(f, _)| f.display().to_string());
                if let Some(other) = clash {
                    report(
                        &mut problems,
                        &file,
                        vec![format!(
                            "{}: the pipeline name `{}` is already served from {other}; names \
                             identify schedules and watermarks, so give one of them another `name`",
                            file.display(),
                            pipeline.name
                        )],
                        served.get(&file).map(|s| s.name.clone()),
                    );
                    continue;
                }
                let previous = served.remove(&file);
                let renamed = previous.as_ref().is_some_and(|p| p.name != pipeline.name);
                if let Some(previous) = previous {
                    tracing::info!(target: "ionflow::serve", event = "pipeline_changed", pipeline = %pipeline.name, file = %file.display(), "the file changed; a run going on finishes on the previous definition");
                    retire(previous, draining, ctx, renamed);
                } else if reload {
                    tracing::info!(target: "ionflow::serve", event = "pipeline_added", pipeline = %pipeline.name, file = %file.display(), "a new pipeline file; scheduling it");
                }
                served.insert(file, start(*pipeline, digest, ctx));
            }
            Outcome::Unscheduled(name) => {
                if let Some(previous) = served.remove(&file) {
                    tracing::info!(target: "ionflow::serve", event = "pipeline_removed", pipeline = %previous.name, file = %file.display(), "the file has no schedule any more; no more runs are scheduled");
                    retire(previous, draining, ctx, true);
                } else {
                    tracing::info!(target: "ionflow::serve", pipeline = %name, "no schedule; not served");
                }
            }
            Outcome::Invalid(found) => {
                report(
                    &mut problems,
                    &file,
                    found,
                    served.get(&file).map(|s| s.name.clone()),
                );
            }
        }
    }
    metrics().folder_loaded(served.len(), problems.len(), reload);
    let mut board = ctx.board.lock().unwrap();
    board.problems = problems;
    board.loaded = true;
}

fn report(
    problems: &mut Vec<FileProblem>,
    file: &Path,
    found: Vec<String>,
    still_serving: Option<String>,
) {
    tracing::warn!(
        target: "ionflow::serve",
        event = "pipeline_invalid",
        file = %file.display(),
        still_serving = still_serving.as_deref().unwrap_or(""),
        "{}; {}",
        found.join("; "),
        match &still_serving {
            Some(name) => format!("pipeline {name} keeps running on its previous definition"),
            None => "the file is skipped until it is fixed".to_owned(),
        }
    );
    problems.push(FileProblem {
        file: file.display().to_string(),
        problems: found,
        still_serving,
    });
}

/// Starts the scheduler (and keep-alive) of a pipeline.
fn start(mut pipeline: Pipeline, digest: [u8; 32], ctx: &scheduler::Context) -> Served {
    pipeline.use_storage(&ctx.storage);
    let pipeline = Arc::new(pipeline);
    tracing::info!(
        target: "ionflow::serve",
        event = "scheduled",
        pipeline = %pipeline.name,
        schedule = %pipeline.schedule.as_ref().map(|s| s.expression.as_str()).unwrap_or_default(),
        "scheduled",
    );
    {
        let mut board = ctx.board.lock().unwrap();
        let fresh = PipelineStatus::new(&pipeline);
        match board.pipelines.get_mut(&pipeline.name) {
            // A changed definition keeps the pipeline's history.
            Some(status) => {
                status.file = fresh.file;
                status.schedule = fresh.schedule;
                status.timezone = fresh.timezone;
            }
            None => {
                board.pipelines.insert(pipeline.name.clone(), fresh);
            }
        }
    }
    metrics().pipeline_served(&pipeline.name);
    let (retire, stop) = watch::channel(false);
    // Held from now on, so that runs share one grant; a pipeline whose
    // connections cannot open yet tries again before each of its runs.
    let holding = {
        let (ctx, pipeline) = (ctx.clone(), pipeline.clone());
        async move {
            if let Err(e) = scheduler::hold_grants(&ctx, &pipeline).await {
                tracing::warn!(target: "ionflow::serve", pipeline = %pipeline.name, "{e:#}");
            }
        }
    };
    let tasks = vec![
        tokio::spawn(holding),
        tokio::spawn(scheduler::keepalive(
            pipeline.clone(),
            ctx.runtime.clone(),
            stop.clone(),
        )),
        tokio::spawn(scheduler::scheduler(pipeline.clone(), ctx.clone(), stop)),
    ];
    Served {
        name: pipeline.name.clone(),
        digest,
        retire,
        tasks,
    }
}

/// Stops scheduling a pipeline; its tasks drain (a run going on finishes).
fn retire(
    served: Served,
    draining: &mut Vec<JoinHandle<()>>,
    ctx: &scheduler::Context,
    forget: bool,
) {
    let _ = served.retire.send(true);
    draining.extend(served.tasks);
    if forget {
        ctx.board.lock().unwrap().pipelines.remove(&served.name);
        metrics().pipeline_removed(&served.name);
    }
}

/// Watches the folder; any event asks for a reload. Without a watcher
/// (inotify limits, an unsupported file system) SIGHUP still works.
fn watch_folder(
    dir: &Path,
    reload: mpsc::Sender<&'static str>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let mut watcher = match notify::recommended_watcher(
        move |event: notify::Result<notify::Event>| {
            // Pipelines write their outputs next to their files: only a
            // pipeline file's change is worth a look.
            let pipeline_file = |e: &notify::Event| {
                e.paths
                    .iter()
                    .any(|p| p.extension().is_some_and(|x| x == "toml"))
            };
            if event.is_ok_and(|e| !e.kind.is_access() && pipeline_file(&e)) {
                // A reload already asked for covers this one too.
                let _ = reload.try_send("file change");
            }
        },
    ) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(target: "ionflow::serve", event = "watch_failed", "cannot watch {} ({e}); send SIGHUP to reload", dir.display());
            return None;
        }
    };
    if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(target: "ionflow::serve", event = "watch_failed", "cannot watch {} ({e}); send SIGHUP to reload", dir.display());
        return None;
    }
    Some(watcher)
}

/// SIGHUP asks for a reload, as for most daemons.
fn on_sighup(reload: mpsc::Sender<&'static str>) -> Option<JoinHandle<()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).ok()?;
        Some(tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let _ = reload.try_send("SIGHUP");
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = reload;
        None
    }
}
