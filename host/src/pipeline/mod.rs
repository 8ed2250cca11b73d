//! Declarative pipelines: a source, jq transforms and sinks, read from TOML.
//!
//! Data flows source → transforms → sinks one page at a time; connections
//! are opened in the connector sandbox before the first record moves.
//! Loading a pipeline compiles everything that can be compiled (jq filters,
//! templates) and reports every problem at once; running it needs nothing
//! more than the environment.

mod dead_letter;
mod definition;
mod extract;
mod http;
mod retry;
pub mod run_lock;
mod sinks;
mod sources;
mod state;
mod summary;
mod template;
pub mod testing;
mod transform;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

pub use crate::config::{ConfigError, ConfigErrors, Variables};
pub use definition::PipelineConfig;
pub use sinks::SinkConfig;
pub use sources::SourceConfig;
pub use summary::{Summary, recorded_state};
pub use transform::JqFilter;

use crate::config::{MAX_CONCURRENCY, Problems, TransformConfig};
use crate::credentials::{self, ResolvedConnection};
use crate::schedule::Schedule;
use dead_letter::DeadLetter;
use ionflow_runtime::{Connection, RateLimit, Runtime};
use retry::RunStats;
use sinks::{Outcome, PlanContext, Scope, SinkContext, SinkPlan, SinkWriter};
use sources::SourceContext;
use state::Watermarks;
use template::Templates;

/// The run was stopped by a signal before it finished.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted: the run was stopped before it finished; no output file was completed and no state was saved, so the next run starts over"
)]
pub struct Interrupted;

/// A validated pipeline: parsed, references checked, jq and templates compiled.
pub struct Pipeline {
    pub name: String,
    pub file: PathBuf,
    /// Relative paths in the pipeline resolve against this folder.
    pub base_dir: PathBuf,
    pub config: PipelineConfig,
    pub schedule: Option<Schedule>,
    transforms: Vec<(JqFilter, Duration)>,
    sinks: Vec<Box<dyn SinkPlan>>,
    templates: Arc<Templates>,
    vars: Variables,
    /// A store shared by several workers keeps the watermarks instead of
    /// the state file, under the pipeline's name.
    shared_state: Option<Arc<dyn crate::store::Storage>>,
}

/// A transform step that failed a record.
struct TransformFailure {
    stage: String,
    error: String,
}

impl Pipeline {
    pub fn load(path: &Path, vars: Variables) -> Result<Pipeline, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, format!("cannot read the pipeline file: {e}")))?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_text(&text, path, &base_dir, vars)
    }

    pub fn from_text(
        text: &str,
        file: &Path,
        base_dir: &Path,
        vars: Variables,
    ) -> Result<Pipeline, ConfigErrors> {
        let config = PipelineConfig::parse(text, file)?;
        let mut problems = Problems::new(file, text);
        config.check(&mut problems);

        let vars = match vars.with_pipeline_vars(&config.vars) {
            Ok(vars) => vars,
            Err((name, e)) => {
                problems.add("vars", Some(&name), e);
                Variables::default()
            }
        };
        check_references(text, &config, &mut problems);

        let mut transforms = Vec::new();
        for (i, t) in config.transforms.iter().enumerate() {
            let TransformConfig::Jq(jq) = t;
            match JqFilter::compile(&jq.filter) {
                Ok(f) => transforms.push((f, Duration::from_millis(jq.timeout_ms))),
                Err(e) => problems.add(&format!("transforms[{i}]"), Some("filter"), e),
            }
        }
        if let Some(code) = config.source.spec().records_jq()
            && let Err(e) = JqFilter::compile(code)
        {
            problems.add("source", Some("records_jq"), e);
        }

        let mut templates = Templates::default();
        let mut sinks = Vec::new();
        for (i, s) in config.sinks.iter().enumerate() {
            let mut cx = PlanContext {
                prefix: format!("sinks[{i}]"),
                templates: &mut templates,
                errors: Vec::new(),
            };
            sinks.push(s.spec().plan(&mut cx));
            for (key, e) in cx.errors {
                let (table_key, detail) = match key.split_once('.') {
                    Some((table_key, rest)) => (table_key.to_owned(), format!("{rest}: {e}")),
                    None => (key.clone(), e),
                };
                problems.add(
                    &format!("sinks[{i}]"),
                    Some(&table_key),
                    format!("template does not compile: {detail}"),
                );
            }
        }
        let schedule = config.schedule.as_ref().and_then(|expression| {
            Schedule::parse(expression, config.timezone.as_deref())
                .map_err(|e| {
                    let key = if e.message.starts_with("timezone") {
                        "timezone"
                    } else {
                        "schedule"
                    };
                    problems.found.push(ConfigError {
                        file: file.to_owned(),
                        position: crate::config::value_position(text, key, e.offset.unwrap_or(0)),
                        message: e.message,
                    });
                })
                .ok()
        });
        problems.finish()?;

        let name = config.name.clone().unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "pipeline".into())
        });
        Ok(Pipeline {
            name,
            file: file.to_owned(),
            base_dir: base_dir.to_owned(),
            config,
            schedule,
            transforms,
            sinks,
            templates: Arc::new(templates),
            vars,
            shared_state: None,
        })
    }

    /// Keeps the watermarks in `storage` when it is shared by several
    /// workers (PostgreSQL); with the file backend the state file stays.
    pub fn use_storage(&mut self, storage: &Arc<dyn crate::store::Storage>) {
        self.shared_state = storage.shared().then(|| storage.clone());
    }

    /// Reads each connection's `.ionapi` JSON and opens it in the sandbox.
    /// No network call happens here.
    pub async fn open_connections(
        &self,
        runtime: &Runtime,
    ) -> anyhow::Result<BTreeMap<String, Arc<Connection>>> {
        let mut open = BTreeMap::new();
        for (name, conn) in &self.config.connections {
            let resolved = self.connection(name)?;
            let connector = match &conn.connector {
                Some(raw) => {
                    let path = self.base_dir.join(self.vars.expand(raw).map_err(|e| {
                        ConfigError::new(&self.file, format!("connections.{name}.connector: {e}"))
                    })?);
                    runtime.load_connector_file(&path).with_context(|| {
                        format!("{}: connections.{name}.connector", self.file.display())
                    })?
                }
                None => runtime.default_connector().clone(),
            };
            let mut connection = runtime
                .open_with(
                    &connector,
                    name,
                    resolved.ionapi_json.expose(),
                    resolved.options,
                    self.instances_for(name),
                )
                .await
                .with_context(|| format!("connection `{name}` ({})", resolved.source))?;
            let limit = match conn.rate_limit {
                Some(limit) => RateLimit {
                    requests: limit.requests,
                    window: Duration::from_secs(limit.window_secs.into()),
                    smoothing: limit.smoothing,
                },
                None => RateLimit::default(),
            };
            // Workers on one shared store draw from one budget per
            // connection: the gateway's quota is the tenant's, not a process's.
            match self.shared_state.as_ref().and_then(|s| s.rate_budget()) {
                Some(budget) => connection.set_shared_rate_limit(limit, budget),
                None => connection.set_rate_limit(limit),
            }
            open.insert(name.clone(), Arc::new(connection));
        }
        Ok(open)
    }

    /// One connector instance per request a sink of this connection may
    /// have in flight: an instance serves one call at a time.
    fn instances_for(&self, connection: &str) -> usize {
        let source = self.config.source.spec();
        let source = match source.connection() {
            Some(name) if name == connection => source.concurrency(),
            _ => 1,
        };
        self.config
            .sinks
            .iter()
            .filter_map(|s| s.spec().delivery())
            .filter(|d| d.connection == Some(connection))
            .map(|d| d.concurrency)
            .fold(source, u32::max)
            .clamp(1, MAX_CONCURRENCY) as usize
    }

    /// The credentials and options of `[connections.NAME]`.
    pub fn connection(&self, name: &str) -> Result<ResolvedConnection, ConfigError> {
        let config = self.config.connections.get(name).ok_or_else(|| {
            ConfigError::new(&self.file, format!("defines no connection `{name}`"))
        })?;
        credentials::from_pipeline(name, config, &self.file, &self.base_dir, &self.vars)
    }

    fn state_path(&self) -> Option<PathBuf> {
        let state = self.config.state.as_ref()?;
        Some(match &state.path {
            Some(p) => self.base_dir.join(p),
            None => self
                .base_dir
                .join(".ionflow/state")
                .join(format!("{}.json", self.name)),
        })
    }

    /// Templates and sink plans with `${...}` expanded for one run.
    fn prepare_sinks(&self, vars: &Variables) -> anyhow::Result<(Scope, Vec<Box<dyn SinkPlan>>)> {
        let templates = self
            .templates
            .expanded(vars)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let plans = self
            .sinks
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.expand(vars)
                    .map_err(|e| anyhow::anyhow!("sinks[{i}]: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((
            Scope {
                templates: Arc::new(templates),
                vars: vars.vars().clone(),
                state: vars.state().clone(),
            },
            plans,
        ))
    }

    /// Runs a record through every transform: zero, one or many records out.
    /// The record is borrowed: the first filter reads it in place, so it
    /// is not copied for the dead letter's sake.
    fn transform(&self, record: &Value) -> Result<Vec<Value>, TransformFailure> {
        let mut batch: Option<Vec<Value>> = None;
        for (i, (filter, budget)) in self.transforms.iter().enumerate() {
            let inputs = batch.as_deref().unwrap_or(std::slice::from_ref(record));
            let mut next = Vec::with_capacity(inputs.len());
            for r in inputs {
                let out =
                    filter
                        .apply_within(r, Some(*budget))
                        .map_err(|error| TransformFailure {
                            stage: format!("transforms[{i}]"),
                            error,
                        })?;
                next.extend(out);
            }
            batch = Some(next);
        }
        Ok(batch.unwrap_or_else(|| vec![record.clone()]))
    }

    /// Runs the pipeline once, then revokes the refresh tokens of the
    /// connections configured to (the default), whether the run succeeded or not.
    pub async fn run(&self, runtime: &Runtime, show_progress: bool) -> anyhow::Result<Summary> {
        self.run_until(runtime, show_progress, std::future::pending())
            .await
    }

    /// Like `run`, but stops when `stop` resolves (a signal): no output file
    /// is completed, no watermark moves, and tokens are revoked.
    pub async fn run_until(
        &self,
        runtime: &Runtime,
        show_progress: bool,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Summary> {
        let connections = self.open_connections(runtime).await?;
        // A guest call cancelled midway leaves its instance unusable, so a
        // signal first raises a flag and the run stops at the next page
        // boundary. A page that does not end within STOP_GRACE (a call
        // waiting on the rate limit, a slow gateway) is abandoned, and the
        // tokens are revoked through fresh instances instead.
        const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
        let stopping = std::sync::atomic::AtomicBool::new(false);
        let run = self.run_with(&connections, show_progress, &stopping);
        tokio::pin!(run, stop);
        let outcome = tokio::select! {
            outcome = &mut run => outcome,
            () = &mut stop => {
                stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                match tokio::time::timeout(STOP_GRACE, &mut run).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        tracing::warn!(pipeline = %self.name, "the current page did not end within {} s; abandoning it", STOP_GRACE.as_secs());
                        match self.open_connections(runtime).await {
                            Ok(fresh) => self.revoke(&fresh).await,
                            Err(e) => tracing::warn!("could not reopen connections to revoke: {e:#}"),
                        }
                        return Err(Interrupted.into());
                    }
                }
            }
        };
        self.revoke(&connections).await;
        let mut summary = outcome?;
        for connection in connections.values() {
            summary.api_calls += connection.stats().requests();
            summary.token_requests += connection.stats().token_requests();
        }
        Ok(summary)
    }

    /// Ends the grants of the connections that do not keep theirs, so that
    /// no orphan refresh token outlives the run. A failure here is logged,
    /// not fatal: the data has already moved.
    pub async fn revoke(&self, connections: &BTreeMap<String, Arc<Connection>>) {
        for (name, connection) in connections {
            if !self.config.connections[name].revokes_on_exit() {
                continue;
            }
            if let Err(e) = connection.revoke().await {
                tracing::warn!(connection = %name, "could not revoke the refresh token: {e}");
            }
        }
    }

    async fn run_with(
        &self,
        connections: &BTreeMap<String, Arc<Connection>>,
        show_progress: bool,
        stopping: &std::sync::atomic::AtomicBool,
    ) -> anyhow::Result<Summary> {
        let started = Instant::now();
        let stats = Arc::new(RunStats::default());
        let http = reqwest::Client::builder()
            .user_agent(concat!("ionflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("could not build the HTTP client")?;

        let state_path = self.state_path();
        let mut watermarks = match (&state_path, &self.config.state, &self.shared_state) {
            (Some(_), Some(state), Some(storage)) => {
                let saved = storage.load_state(&self.name).await?;
                let origin = PathBuf::from(format!("{}#{}", storage.describe(), self.name));
                Some(Watermarks::from_saved(
                    saved.as_deref(),
                    &origin,
                    &state.watermarks,
                )?)
            }
            (Some(path), Some(state), None) => Some(Watermarks::load(path, &state.watermarks)?),
            _ => None,
        };
        let vars = self.vars.clone().with_state(
            watermarks
                .as_ref()
                .map(Watermarks::values)
                .unwrap_or_default(),
        );
        let (scope, plans) = self.prepare_sinks(&vars)?;
        let scope = Arc::new(scope);

        let mut source = self.config.source.spec().open(SourceContext {
            connections,
            vars: &vars,
            base_dir: &self.base_dir,
            http: &http,
            stats: stats.clone(),
        })?;
        let mut sinks: Vec<Box<dyn SinkWriter>> = plans
            .iter()
            .enumerate()
            .map(|(index, plan)| {
                plan.open(&SinkContext {
                    index,
                    connections,
                    vars: &vars,
                    base_dir: &self.base_dir,
                    http: &http,
                    stats: stats.clone(),
                    scope: scope.clone(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut dead_letter = self
            .config
            .dead_letter
            .as_ref()
            .map(|d| -> anyhow::Result<DeadLetter> {
                let path = vars
                    .expand(&d.path)
                    .map_err(|e| anyhow::anyhow!("dead_letter.path: {e}"))?;
                Ok(DeadLetter::new(&self.base_dir.join(path), &self.name))
            })
            .transpose()?;
        let mut progress = Progress::new(show_progress, &self.name);
        let mut summary = Summary {
            pipeline: self.name.clone(),
            ..Summary::default()
        };
        let mut outcome = Outcome::default();

        while let Some(page) = source.next_page().await? {
            for record in page {
                summary.records_in += 1;
                if let Some(w) = &mut watermarks {
                    w.observe(&record);
                }
                let outputs = match self.transform(&record) {
                    Ok(outputs) => outputs,
                    Err(failure) => {
                        summary.records_failed += 1;
                        fail(
                            &mut dead_letter,
                            &self.name,
                            &failure.stage,
                            &failure.error,
                            &record,
                        )?;
                        continue;
                    }
                };
                for output in &outputs {
                    summary.records_out += 1;
                    for (i, sink) in sinks.iter_mut().enumerate() {
                        sink.write(output, &mut outcome).await?;
                        drain(&mut outcome, &mut summary, &mut dead_letter, &self.name, i)?;
                    }
                }
            }
            progress.update(&summary);
            // Checked between pages, never inside a guest call.
            if stopping.load(Ordering::SeqCst) {
                // Requests already sent finish, so each record's outcome is known.
                for (i, sink) in sinks.iter_mut().enumerate() {
                    sink.settle(&mut outcome).await?;
                    drain(&mut outcome, &mut summary, &mut dead_letter, &self.name, i)?;
                }
                progress.finish();
                return Err(Interrupted.into());
            }
        }
        for (i, sink) in sinks.into_iter().enumerate() {
            let finished = sink.finish(&mut outcome).await?;
            drain(&mut outcome, &mut summary, &mut dead_letter, &self.name, i)?;
            if let Some(note) = finished.note {
                tracing::info!(pipeline = %self.name, "{note}");
                summary.notes.push(note);
            }
            if let Some(path) = finished.output {
                summary.outputs.push(path);
            }
        }
        progress.finish();
        if let Some(dl) = dead_letter {
            summary.records_dead_lettered = dl.written as u64;
            if dl.written > 0 {
                summary.dead_letter = Some(dl.path().to_owned());
            }
            dl.finish()?;
        }
        // A failed record must be read again next run, so the watermark
        // only moves when every record went through.
        if summary.records_failed == 0
            && let Some(w) = &watermarks
        {
            match (&self.shared_state, &state_path) {
                (Some(storage), _) => {
                    if w.changed() {
                        storage.save_state(&self.name, &w.to_json()?).await?;
                        summary.state_saved = Some(PathBuf::from(format!(
                            "{} (pipeline {})",
                            storage.describe(),
                            self.name
                        )));
                    }
                }
                (None, Some(path)) => {
                    if w.save()? {
                        summary.state_saved = Some(path.clone());
                    }
                }
                (None, None) => {}
            }
        }
        summary.api_calls += stats.http_calls.load(Ordering::Relaxed);
        summary.retries = stats.retries.load(Ordering::Relaxed);
        summary.records_retried = outcome.records_retried;
        summary.duration_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }
}

/// Moves the records a sink refused into the summary and the dead letter.
fn drain(
    outcome: &mut Outcome,
    summary: &mut Summary,
    dead_letter: &mut Option<DeadLetter>,
    pipeline: &str,
    sink: usize,
) -> anyhow::Result<()> {
    for rejected in outcome.rejected.drain(..) {
        summary.records_failed += 1;
        fail(
            dead_letter,
            pipeline,
            &format!("sinks[{sink}]"),
            &rejected.error.to_string(),
            &rejected.record,
        )?;
    }
    Ok(())
}

fn fail(
    dead_letter: &mut Option<DeadLetter>,
    pipeline: &str,
    stage: &str,
    error: &str,
    record: &Value,
) -> anyhow::Result<()> {
    tracing::warn!(pipeline, stage, "record failed: {error}");
    match dead_letter {
        Some(dl) => dl.write(stage, error, record),
        None => Ok(()),
    }
}

/// `${var.X}` and `${state.X}` must name a declared variable or watermark;
/// checked on the text so the error points at the line.
fn check_references(text: &str, config: &PipelineConfig, problems: &mut Problems<'_>) {
    let watermarks: Vec<&String> = config
        .state
        .as_ref()
        .map(|s| s.watermarks.keys().collect())
        .unwrap_or_default();
    for (scope, known, table) in [
        ("state", watermarks, "[state.watermarks.NAME]"),
        ("var", config.vars.keys().collect(), "[vars]"),
    ] {
        let needle = format!("${{{scope}.");
        let mut from = 0;
        while let Some(at) = text[from..].find(&needle) {
            let start = from + at + needle.len();
            let name: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !known.iter().any(|k| **k == name) {
                let line = text[..start].matches('\n').count() + 1;
                let col = text[..start]
                    .rsplit('\n')
                    .next()
                    .map_or(0, |l| l.chars().count())
                    - needle.len()
                    + 1;
                problems.found.push(ConfigError::at(
                    problems.file(),
                    Some((line, col)),
                    format!("${{{scope}.{name}}} is not defined; declare it in {table}"),
                ));
            }
            from = start;
        }
    }
}

/// A spinner on a terminal once a run has taken a second, so that short
/// runs print nothing but their summary; never when output is piped.
struct Progress {
    bar: Option<ProgressBar>,
    show: bool,
    name: String,
    started: Instant,
}

const PROGRESS_AFTER: Duration = Duration::from_secs(1);

impl Progress {
    fn new(show: bool, name: &str) -> Self {
        Progress {
            bar: None,
            show,
            name: name.to_owned(),
            started: Instant::now(),
        }
    }

    fn update(&mut self, summary: &Summary) {
        if self.bar.is_none() && self.show && self.started.elapsed() >= PROGRESS_AFTER {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(self.name.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            self.bar = Some(bar);
        }
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "{} records in, {} out, {} failed",
                summary.records_in, summary.records_out, summary.records_failed
            ));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
