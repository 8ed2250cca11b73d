//! Declarative pipelines: a source, jq transforms and sinks, read from TOML.
//!
//! Data flows source → transforms → sinks one page at a time; connections
//! are opened in the connector sandbox before the first record moves.
//! Loading a pipeline compiles everything that can be compiled (jq filters,
//! templates) and reports every problem at once; running it needs nothing
//! more than the environment.

mod checks;
mod dead_letter;
mod definition;
mod dry_run;
mod extract;
mod http;
mod replay;
mod retry;
pub mod run_lock;
mod sinks;
mod sources;
mod stage;
mod state;
mod summary;
mod template;
pub mod testing;
mod transform;
mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use tracing::Instrument as _;

pub use crate::config::{ConfigError, ConfigErrors, UsageError, Variables};
pub use definition::PipelineConfig;
pub use replay::ReplaySummary;
pub use retry::{CallError, Unavailable};
pub use sinks::SinkConfig;
pub use sources::SourceConfig;
pub use state::WatermarkView;
pub use summary::{Summary, recorded_state};
pub use transform::{JqFilter, JqGlobals, JqLimits};

use crate::config::spans::Spans;
use crate::config::{MAX_CONCURRENCY, MAX_JQ_MEMORY_MB, Problems, TransformConfig, WatermarkFrom};
use crate::credentials::{self, ResolvedConnection};
use crate::grants::Grants;
use crate::schedule::Schedule;
use dead_letter::DeadLetter;
use ionflow_runtime::{Connection, RateLimit, Runtime};
use retry::RunStats;
use sinks::{Outcome, PlanContext, Scope, SinkContext, SinkPlan, SinkWriter};
use sources::SourceContext;
use stage::{Page, Stage, Transform};
use state::Watermarks;
use template::Templates;

/// Who ends the grants a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// The run is the process's whole session (`ionflow run`, `demo`): it
    /// holds its grants while it runs and releases them at its end.
    Once,
    /// A run of `ionflow serve`, which holds the grants of its pipelines
    /// from start-up to shutdown (`Pipeline::hold_grants`).
    Served,
}

/// A grant held for one of a pipeline's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldGrant {
    /// Its token-store key.
    pub key: String,
    /// The `[connections.NAME]` it was held for.
    pub connection: String,
}

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
    transforms: Arc<[Transform]>,
    sinks: Vec<Box<dyn SinkPlan>>,
    templates: Arc<Templates>,
    vars: Variables,
    /// The environment variables the jq filters read as `$env.NAME`.
    env_names: Vec<String>,
    /// A store shared by several workers keeps the watermarks instead of
    /// the state file, under the pipeline's name.
    shared_state: Option<Arc<dyn crate::store::Storage>>,
}

/// How one run differs from a plain scheduled one.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// A progress line on the terminal.
    pub show_progress: bool,
    /// Start every watermark at its `initial` value and save none: the saved
    /// ones stay as they were for the next ordinary run.
    pub full_refresh: bool,
    /// Stop reading after this many source records.
    pub limit: Option<u64>,
    /// Read for real, print what each sink would write or send, send and
    /// write nothing (no dead letter, no state).
    pub dry_run: bool,
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
        let config = match PipelineConfig::parse(text, file) {
            Ok(config) => config,
            Err(first) => return Err(Self::every_problem(text, file, base_dir, &vars, first)),
        };
        let mut problems = Problems::new(file, text);
        config.check(&mut problems);

        let vars = match vars.with_pipeline_vars(&config.vars) {
            Ok(vars) => vars,
            Err((name, e)) => {
                problems.add("vars", Some(&name), e);
                Variables::default()
            }
        };
        let spans = Spans::parse(text);
        let literal = checks::literal_ranges(&spans, &config);
        check_references(text, &config, &literal, &mut problems);
        checks::check_literal_interpolation(text, &spans, &config, &mut problems);

        let mut transforms = Vec::new();
        let mut env_names = Vec::new();
        for (i, t) in config.transforms.iter().enumerate() {
            let TransformConfig::Jq(jq) = t;
            if !(1..=MAX_JQ_MEMORY_MB).contains(&jq.max_memory_mb) {
                problems.add(
                    &format!("transforms[{i}]"),
                    Some("max_memory_mb"),
                    format!("must be between 1 and {MAX_JQ_MEMORY_MB} (MiB per record)"),
                );
            }
            env_names.extend(transform::env_names(&jq.filter));
            match JqFilter::compile(&jq.filter) {
                Ok(filter) => transforms.push(Transform {
                    filter,
                    limits: JqLimits {
                        time: Duration::from_millis(jq.timeout_ms),
                        memory_mib: jq.max_memory_mb.clamp(1, MAX_JQ_MEMORY_MB) as usize,
                    },
                }),
                Err(e) => problems.add(&format!("transforms[{i}]"), Some("filter"), e),
            }
        }
        if let Some(code) = config.source.spec().records_jq()
            && let Err(e) = JqFilter::compile(code)
        {
            problems.add("source", Some("records_jq"), e);
        }
        env_names.sort();
        env_names.dedup();

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
        let watermarks: Vec<String> = config
            .state
            .as_ref()
            .map(|s| s.watermarks.keys().cloned().collect())
            .unwrap_or_default();
        for undefined in templates.undefined_names(&config.vars, &watermarks) {
            checks::report_undefined(text, &spans, &undefined, &config, &mut problems);
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
            transforms: transforms.into(),
            sinks,
            templates: Arc::new(templates),
            vars,
            env_names,
            shared_state: None,
        })
    }

    /// The first `limit` records of the source, as a run would read them
    /// (with its saved watermarks), and the jq variables a run would have:
    /// `ionflow jq --from`.
    pub async fn sample(
        &self,
        runtime: &Runtime,
        grants: &Grants,
        limit: u64,
    ) -> anyhow::Result<(Vec<Value>, JqGlobals)> {
        let connections = self.open_connections(runtime).await?;
        let held = self.hold_grants(grants, &connections, false).await?;
        let state = match &self.config.state {
            Some(_) => self.stored_watermarks().await?.values(),
            None => BTreeMap::new(),
        };
        let vars = self.vars.clone().with_state(state);
        let globals = self.jq_globals(&vars, &RunOptions::default());
        let http = http::HttpClient::new(runtime.limits().response_bytes)?;
        let read = async {
            let mut source = self.config.source.spec().open(SourceContext {
                connections: &connections,
                vars: &vars,
                base_dir: &self.base_dir,
                http: &http,
                stats: Arc::new(RunStats::default()),
            })?;
            let mut records = Vec::new();
            while (records.len() as u64) < limit
                && let Some(page) = source.next_page().await?
            {
                records.extend(page);
            }
            records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            anyhow::Ok(records)
        };
        let records = read.await;
        self.release_grants(grants, &held, &connections).await;
        Ok((records?, globals))
    }

    /// The variables the pipeline was loaded with (`--var`, `[vars]`).
    pub fn variables(&self) -> &Variables {
        &self.vars
    }

    /// `$state`, `$vars`, `$env` and `$run` for the jq filters of one run.
    fn jq_globals(&self, vars: &Variables, options: &RunOptions) -> JqGlobals {
        let strings = |map: &BTreeMap<String, String>| {
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )
        };
        let env = Value::Object(
            self.env_names
                .iter()
                .filter_map(|name| Some((name.clone(), Value::String(vars.env(name)?))))
                .collect(),
        );
        let run = serde_json::json!({
            "started_at": summary::now_rfc3339(),
            "pipeline": self.name,
            "full_refresh": options.full_refresh,
            "dry_run": options.dry_run,
        });
        JqGlobals::new(&strings(vars.state()), &strings(vars.vars()), &env, &run)
    }

    /// The file does not parse: the parser stops at its first problem, so
    /// each offending `key = value` line is blanked out (offsets stay true)
    /// and the file parsed again, up to a bound, to report the others too,
    /// and the checks run on what then parses.
    fn every_problem(
        text: &str,
        file: &Path,
        base_dir: &Path,
        vars: &Variables,
        first: ConfigError,
    ) -> ConfigErrors {
        const MAX_PARSE_PROBLEMS: usize = 20;
        let mut errors = vec![first];
        let mut copy = text.to_owned();
        while errors.len() < MAX_PARSE_PROBLEMS {
            let Some((line, _)) = errors.last().and_then(|e| e.position) else {
                break;
            };
            let start: usize = copy
                .split_inclusive('\n')
                .take(line.saturating_sub(1))
                .map(str::len)
                .sum();
            if start >= copy.len() {
                break;
            }
            let end = copy[start..].find('\n').map_or(copy.len(), |i| start + i);
            let line_text = &copy[start..end];
            // Only a whole `key = value` line can go without breaking the rest.
            if !line_text.contains('=') || toml::from_str::<toml::Table>(line_text).is_err() {
                break;
            }
            let blank = " ".repeat(line_text.len());
            copy.replace_range(start..end, &blank);
            match PipelineConfig::parse(&copy, file) {
                Ok(_) => {
                    if let Err(more) = Self::from_text(&copy, file, base_dir, vars.clone()) {
                        errors.extend(more.0);
                    }
                    break;
                }
                // A key blanked out may leave a required one missing: that
                // is not a mistake of the file.
                Err(next) if next.message.starts_with("missing field") => break,
                Err(next) if errors.iter().any(|e| e.position == next.position) => break,
                Err(next) => errors.push(next),
            }
        }
        errors.sort_by_key(|e| e.position.unwrap_or((usize::MAX, 0)));
        ConfigErrors(errors)
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
        for name in self.config.connections.keys() {
            open.insert(name.clone(), self.open_connection(runtime, name).await?);
        }
        Ok(open)
    }

    /// Reads `[connections.NAME]`'s `.ionapi` JSON and opens it in the
    /// sandbox, which checks the file; no network call happens here.
    pub async fn open_connection(
        &self,
        runtime: &Runtime,
        name: &str,
    ) -> anyhow::Result<Arc<Connection>> {
        let conn = self.config.connections.get(name).ok_or_else(|| {
            ConfigError::new(&self.file, format!("defines no connection `{name}`"))
        })?;
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
        // Workers on one shared store draw from one budget per connection:
        // the gateway's quota is the tenant's, not a process's.
        match self.shared_state.as_ref().and_then(|s| s.rate_budget()) {
            Some(budget) => connection.set_shared_rate_limit(limit, budget),
            None => connection.set_rate_limit(limit),
        }
        Ok(Arc::new(connection))
    }

    /// Where `[connections.NAME]`'s credentials would come from, when they
    /// are not there: `validate` checks a pipeline without them.
    pub fn missing_credentials(&self, name: &str) -> Result<Option<String>, ConfigError> {
        let Some(conn) = self.config.connections.get(name) else {
            return Ok(None);
        };
        let key = format!("connections.{name}");
        if let Some(var) = &conn.ionapi_env
            && std::env::var_os(var).is_none()
        {
            return Ok(Some(format!(
                "{key}.ionapi_env: {var} is not set here; checked without the credentials (a run needs them)"
            )));
        }
        if let Some(raw) = &conn.ionapi_file {
            let expanded = self
                .vars
                .expand(raw)
                .map_err(|e| ConfigError::new(&self.file, format!("{key}.ionapi_file: {e}")))?;
            let path = self.base_dir.join(expanded);
            if !path.exists() {
                return Ok(Some(format!(
                    "{key}.ionapi_file: {} is not there; checked without the credentials (a run needs them)",
                    path.display()
                )));
            }
        }
        if let Some(var) = &conn.saml_assertion_env
            && std::env::var_os(var).is_none()
        {
            return Ok(Some(format!(
                "{key}.saml_assertion_env: {var} is not set here; checked without the assertion"
            )));
        }
        if let Some(raw) = &conn.saml_assertion_file
            && let Ok(expanded) = self.vars.expand(raw)
            && !self.base_dir.join(&expanded).exists()
        {
            return Ok(Some(format!(
                "{key}.saml_assertion_file: {expanded} is not there; checked without the assertion"
            )));
        }
        Ok(None)
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

    pub fn state_path(&self) -> Option<PathBuf> {
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

    /// Runs a record through every transform: zero, one or many records out
    /// (`ionflow test`; a run transforms whole pages, see `stage`).
    fn transform(
        &self,
        record: &Value,
        globals: &JqGlobals,
    ) -> Result<Vec<Value>, TransformFailure> {
        if self.transforms.is_empty() {
            return Ok(vec![record.clone()]);
        }
        match stage::run_one(&self.transforms, record.clone(), globals) {
            stage::Outcome::Records(outputs) => Ok(outputs),
            stage::Outcome::Failed { stage, error } => Err(TransformFailure { stage, error }),
            stage::Outcome::Text { .. } | stage::Outcome::BadLine(_) => Err(TransformFailure {
                stage: "transforms".into(),
                error: "the transform gave no records".into(),
            }),
        }
    }

    /// Writes a transformed page to the sinks in input order, and its
    /// failed records to the dead letter.
    async fn deliver(
        &self,
        done: stage::Done,
        sinks: &mut [Box<dyn SinkWriter>],
        outcome: &mut Outcome,
        summary: &mut Summary,
        dead_letter: &mut Option<DeadLetter>,
        watermarks: &mut Option<Watermarks>,
    ) -> anyhow::Result<()> {
        // A line that is not JSON stops the run before any record of its
        // page is written, as when pages were parsed as they were read.
        if let Page::Lines(lines) = &*done.page
            && let Some((i, error)) = done.outcomes.iter().enumerate().find_map(|(i, o)| match o {
                stage::Outcome::BadLine(e) => Some((i, e)),
                _ => None,
            })
        {
            return Err(anyhow::anyhow!("{error}").context(format!(
                "{}:{}: not a JSON document; JSON Lines files hold one document per line",
                lines.path.display(),
                lines.line_number(i)
            )));
        }
        for (i, result) in done.outcomes.iter().enumerate() {
            match result {
                stage::Outcome::Records(outputs) => {
                    for output in outputs {
                        summary.records_out += 1;
                        if let Some(w) = watermarks.as_mut() {
                            w.observe(WatermarkFrom::Output, output);
                        }
                        for (s, sink) in sinks.iter_mut().enumerate() {
                            sink.write(output, outcome).await?;
                            drain(outcome, summary, dead_letter, &self.name, s)?;
                        }
                    }
                }
                stage::Outcome::Text {
                    chunk,
                    range,
                    count,
                } => {
                    summary.records_out += *count as u64;
                    let text = done.text(*chunk, range.clone());
                    for sink in sinks.iter_mut() {
                        sink.write_json_lines(text, *count)?;
                    }
                }
                stage::Outcome::Failed { stage, error } => {
                    summary.records_failed += 1;
                    let parsed;
                    let record = match &*done.page {
                        Page::Records(records) => &records[i],
                        Page::Lines(lines) => {
                            parsed = serde_json::from_str(lines.line(i))?;
                            &parsed
                        }
                    };
                    fail(dead_letter, &self.name, stage, error, record)?;
                }
                stage::Outcome::BadLine(_) => {}
            }
        }
        Ok(())
    }

    /// Runs the pipeline once as the whole of this process's session: it
    /// holds each connection's grant while it runs and releases it at the
    /// end ([`Session::Once`]), whether the run succeeded or not.
    pub async fn run(
        &self,
        runtime: &Runtime,
        grants: &Grants,
        show_progress: bool,
    ) -> anyhow::Result<Summary> {
        self.run_until(
            runtime,
            grants,
            Session::Once,
            show_progress,
            std::future::pending(),
        )
        .await
    }

    /// Like `run`, but stops when `stop` resolves (a signal): no output file
    /// is completed, no watermark moves, and the grants are released.
    pub async fn run_until(
        &self,
        runtime: &Runtime,
        grants: &Grants,
        session: Session,
        show_progress: bool,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Summary> {
        let options = RunOptions {
            show_progress,
            ..RunOptions::default()
        };
        self.run_with_options(runtime, grants, session, &options, stop)
            .await
    }

    /// Like `run_until`, with the options of `ionflow run`.
    pub async fn run_with_options(
        &self,
        runtime: &Runtime,
        grants: &Grants,
        session: Session,
        options: &RunOptions,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Summary> {
        let connections = self.open_connections(runtime).await?;
        let held = match session {
            Session::Once => self.hold_grants(grants, &connections, false).await?,
            Session::Served => Vec::new(),
        };
        let progress = Progress::new(options.show_progress, &self.name, &connections);
        // A guest call cancelled midway leaves its instance unusable, so a
        // signal first raises a flag and the run stops at the next page
        // boundary. A page that does not end within STOP_GRACE (a call
        // waiting on the rate limit, a slow gateway) is abandoned, and the
        // grants are released through fresh instances instead.
        const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
        let stopping = std::sync::atomic::AtomicBool::new(false);
        let max_response_bytes = runtime.limits().response_bytes;
        let run = self.run_with(
            &connections,
            max_response_bytes,
            options,
            &progress,
            &stopping,
        );
        tokio::pin!(run, stop);
        let outcome = tokio::select! {
            outcome = &mut run => outcome,
            () = &mut stop => {
                stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                // Said at once, so a person knows why nothing ends yet.
                progress.say(&format!(
                    "stopping: {}; the run ends at the next page boundary (at most {} s)",
                    progress.waiting_for(),
                    STOP_GRACE.as_secs()
                ));
                match tokio::time::timeout(STOP_GRACE, &mut run).await {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        tracing::warn!(pipeline = %self.name, "the current page did not end within {} s; abandoning it", STOP_GRACE.as_secs());
                        let fresh = self.open_connections(runtime).await.unwrap_or_else(|e| {
                            tracing::warn!("could not reopen connections to revoke; the grants are kept: {e:#}");
                            BTreeMap::new()
                        });
                        self.release_grants(grants, &held, &fresh).await;
                        return Err(Interrupted.into());
                    }
                }
            }
        };
        progress.finish();
        self.release_grants(grants, &held, &connections).await;
        let mut summary = outcome?;
        for connection in connections.values() {
            summary.api_calls += connection.stats().requests();
            summary.token_requests += connection.stats().token_requests();
        }
        Ok(summary)
    }

    /// Holds the grant of each of `connections` for this process, each
    /// with its connection's wish for the end (`revoke_on_exit`, as a
    /// `daemon` or a one-shot run reads it). On failure nothing stays held.
    pub async fn hold_grants(
        &self,
        grants: &Grants,
        connections: &BTreeMap<String, Arc<Connection>>,
        daemon: bool,
    ) -> anyhow::Result<Vec<HeldGrant>> {
        let mut held = Vec::new();
        for (name, connection) in connections {
            let config = &self.config.connections[name];
            let wait = crate::grants::join_wait(config.timeout_secs);
            if let Err(e) = grants
                .hold(connection, config.revokes_on_exit(daemon), wait)
                .await
            {
                self.release_grants(grants, &held, &BTreeMap::new()).await;
                return Err(anyhow::Error::new(e)
                    .context(format!("connection `{name}`: holding its grant")));
            }
            held.push(HeldGrant {
                key: crate::grants::key(connection).to_owned(),
                connection: name.clone(),
            });
        }
        Ok(held)
    }

    /// Lets go of grants held by `hold_grants`; a grant this process holds
    /// last and was asked to revoke is revoked through its connection in
    /// `connections` (and kept when that is missing).
    pub async fn release_grants(
        &self,
        grants: &Grants,
        held: &[HeldGrant],
        connections: &BTreeMap<String, Arc<Connection>>,
    ) {
        for grant in held {
            let via = connections
                .get(&grant.connection)
                .filter(|c| crate::grants::key(c) == grant.key);
            grants.release(&grant.key, via.map(Arc::as_ref)).await;
        }
    }

    async fn run_with(
        &self,
        connections: &BTreeMap<String, Arc<Connection>>,
        max_response_bytes: u64,
        options: &RunOptions,
        progress: &Progress,
        stopping: &std::sync::atomic::AtomicBool,
    ) -> anyhow::Result<Summary> {
        let started = Instant::now();
        let stats = Arc::new(RunStats::default());
        let http = http::HttpClient::new(max_response_bytes)?;

        let state_path = self.state_path();
        let mut watermarks = match (&state_path, &self.config.state, &self.shared_state) {
            // Saved values are ignored and nothing is saved over them.
            (Some(_), Some(state), _) if options.full_refresh => {
                Some(Watermarks::initial(&state.watermarks))
            }
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
        let globals = self.jq_globals(&vars, options);

        let mut source = self.config.source.spec().open(SourceContext {
            connections,
            vars: &vars,
            base_dir: &self.base_dir,
            http: &http,
            stats: stats.clone(),
        })?;
        let mut sinks: Vec<Box<dyn SinkWriter>> = plans
            .into_iter()
            .enumerate()
            .map(|(index, plan)| {
                if options.dry_run {
                    return Ok(dry_run::DryRun::writer(
                        index,
                        self.config.sinks[index].kind_name(),
                        plan,
                        scope.clone(),
                    ));
                }
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
            .filter(|_| !options.dry_run)
            .map(|d| -> anyhow::Result<DeadLetter> {
                let path = vars
                    .expand(&d.path)
                    .map_err(|e| anyhow::anyhow!("dead_letter.path: {e}"))?;
                Ok(DeadLetter::new(&self.base_dir.join(path), &self.name))
            })
            .transpose()?;
        let mut summary = Summary {
            pipeline: self.name.clone(),
            ..Summary::default()
        };
        let mut outcome = Outcome::default();
        let mut remaining = options.limit;

        // Output watermarks read the records as they leave the transforms.
        let outputs_observed = watermarks.as_ref().is_some_and(Watermarks::reads_outputs);
        let stage = (!self.transforms.is_empty()).then(|| {
            let text = !outputs_observed && sinks.iter().all(|s| s.takes_json_lines());
            Stage::new(self.transforms.clone(), text, globals.clone())
        });
        // JSON Lines go to the workers as text when nothing on this thread
        // needs the records first: transforms to run, no watermarks, no
        // record limit to cut a page at.
        let mut text_pages = stage.is_some() && watermarks.is_none() && remaining.is_none();
        // The page the workers transform while this thread writes the one
        // before, with its span: the calls its sinks make nest under it.
        let mut pending: Option<(stage::Pending, tracing::Span)> = None;
        let mut pages_read = 0;
        loop {
            let (page, span) = if remaining == Some(0) {
                (None, tracing::Span::none())
            } else {
                pages_read += 1;
                let span = crate::traces::page_span(pages_read);
                let page = match text_pages
                    .then(|| span.in_scope(|| source.next_text_page()))
                    .flatten()
                {
                    Some(page) => page?.map(Page::Lines),
                    None => {
                        text_pages = false;
                        source
                            .next_page()
                            .instrument(span.clone())
                            .await?
                            .map(Page::Records)
                    }
                };
                (page, span)
            };
            let exhausted = page.is_none();
            span.record("records", 0_u64);
            let ready = match page {
                Some(mut page) => {
                    progress.page();
                    if let (Some(left), Page::Records(records)) = (&mut remaining, &mut page) {
                        records.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                        *left -= records.len() as u64;
                    }
                    span.record("records", page.len() as u64);
                    summary.records_in += page.len() as u64;
                    if let (Some(w), Page::Records(records)) = (&mut watermarks, &page) {
                        for record in records {
                            w.observe(WatermarkFrom::Source, record);
                        }
                    }
                    match (&stage, page) {
                        (Some(stage), page) => pending
                            .replace((stage.submit(page), span))
                            .map(|(p, span)| (p.wait(), span)),
                        // Without transforms, records go straight to the sinks.
                        (None, Page::Records(records)) => {
                            Some((stage::Done::untransformed(records), span))
                        }
                        (None, Page::Lines(_)) => {
                            anyhow::bail!("a page of text reached a pipeline without transforms")
                        }
                    }
                }
                None => pending.take().map(|(p, span)| (p.wait(), span)),
            };
            if let Some((done, span)) = ready {
                self.deliver(
                    done,
                    &mut sinks,
                    &mut outcome,
                    &mut summary,
                    &mut dead_letter,
                    &mut watermarks,
                )
                .instrument(span)
                .await?;
                progress.update(&summary);
            }
            // Checked between pages, never inside a guest call.
            if stopping.load(Ordering::SeqCst) {
                // Requests already sent finish, so each record's outcome is known.
                for (i, sink) in sinks.iter_mut().enumerate() {
                    sink.settle(&mut outcome).await?;
                    drain(&mut outcome, &mut summary, &mut dead_letter, &self.name, i)?;
                }
                return Err(Interrupted.into());
            }
            if exhausted && pending.is_none() {
                break;
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
        if let Some(dl) = dead_letter {
            summary.records_dead_lettered = dl.written;
            if dl.written > 0 {
                summary.dead_letter = Some(dl.path().to_owned());
            }
            dl.finish()?;
        }
        // A failed record must be read again next run, so the watermark
        // only moves when every record went through.
        if summary.records_failed == 0
            && !options.full_refresh
            && !options.dry_run
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
        if options.full_refresh && watermarks.is_some() {
            summary
                .notes
                .push("full refresh: the saved watermarks were not used and are unchanged".into());
        }
        if options.dry_run {
            summary
                .notes
                .push("dry run: nothing was sent or written, no state saved".into());
        }
        summary.api_calls += stats.http_calls.load(Ordering::Relaxed);
        summary.retries = stats.retries.load(Ordering::Relaxed);
        summary.records_retried = outcome.records_retried;
        summary.duration_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }
}

/// Every source kind and its one-line description (`ionflow list`).
pub fn source_kinds() -> &'static [(&'static str, &'static str)] {
    sources::kinds()
}

/// Every sink kind and its one-line description (`ionflow list`).
pub fn sink_kinds() -> &'static [(&'static str, &'static str)] {
    sinks::kinds()
}

/// Every transform kind and its one-line description (`ionflow list`).
pub fn transform_kinds() -> &'static [(&'static str, &'static str)] {
    crate::config::transform_kinds()
}

/// The names a jq filter reads as `$env.NAME`.
pub fn jq_env_names(code: &str) -> Vec<String> {
    transform::env_names(code)
}

/// UTC now, as `$run.started_at` gives it.
pub fn now_rfc3339() -> String {
    summary::now_rfc3339()
}

/// Whether a jq filter in `text` reads `$env.NAME`.
pub fn uses_jq_env(text: &str, name: &str) -> bool {
    transform::env_names(text).iter().any(|n| n == name)
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
fn check_references(
    text: &str,
    config: &PipelineConfig,
    literal: &[std::ops::Range<usize>],
    problems: &mut Problems<'_>,
) {
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
            let in_literal = literal.iter().any(|r| r.contains(&start));
            if !in_literal && !known.iter().any(|k| **k == name) {
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

/// A progress line on a terminal once a run has taken a second, so that
/// short runs print nothing but their summary; never when output is piped.
/// It is redrawn four times a second from counters, so a run blocked in a
/// call (the rate limiter, a slow gateway) still says what it waits for.
struct Progress {
    show: bool,
    bar: ProgressBar,
    counters: Arc<ProgressCounters>,
    connections: Vec<(String, Arc<Connection>)>,
    ticker: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct ProgressCounters {
    records_in: AtomicU64,
    records_out: AtomicU64,
    records_failed: AtomicU64,
    pages: AtomicU64,
}

const PROGRESS_AFTER: Duration = Duration::from_secs(1);

impl Progress {
    fn new(show: bool, name: &str, connections: &BTreeMap<String, Arc<Connection>>) -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(name.to_owned());
        let progress = Progress {
            show,
            bar,
            counters: Arc::new(ProgressCounters::default()),
            connections: connections
                .iter()
                .map(|(n, c)| (n.clone(), c.clone()))
                .collect(),
            ticker: std::sync::Mutex::new(None),
        };
        if show && tokio::runtime::Handle::try_current().is_ok() {
            let ticker = tokio::spawn(progress.tick());
            *progress
                .ticker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ticker);
        }
        progress
    }

    /// Redraws the line from the counters until the run ends.
    fn tick(&self) -> impl std::future::Future<Output = ()> + use<> {
        let bar = self.bar.clone();
        let counters = self.counters.clone();
        let connections = self.connections.clone();
        async move {
            let started = Instant::now();
            let mut last = (Instant::now(), 0u64);
            let mut rate = 0.0;
            let mut visible = false;
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if !visible && started.elapsed() >= PROGRESS_AFTER {
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    visible = true;
                }
                let calls: u64 = connections.iter().map(|(_, c)| c.stats().requests()).sum();
                let elapsed = last.0.elapsed().as_secs_f64();
                if elapsed >= 1.0 {
                    rate = calls.saturating_sub(last.1) as f64 / elapsed;
                    last = (Instant::now(), calls);
                }
                let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
                let mut message = format!(
                    "{} records in, {} out, {} failed · {} pages · {} calls ({:.1}/s)",
                    load(&counters.records_in),
                    load(&counters.records_out),
                    load(&counters.records_failed),
                    load(&counters.pages),
                    calls,
                    rate
                );
                if let Some(wait) = rate_limit_wait(&connections) {
                    message.push_str(" · ");
                    message.push_str(&wait);
                }
                bar.set_message(message);
            }
        }
    }

    fn page(&self) {
        self.counters.pages.fetch_add(1, Ordering::Relaxed);
    }

    fn update(&self, summary: &Summary) {
        let c = &self.counters;
        c.records_in.store(summary.records_in, Ordering::Relaxed);
        c.records_out.store(summary.records_out, Ordering::Relaxed);
        c.records_failed
            .store(summary.records_failed, Ordering::Relaxed);
    }

    /// What the run is waiting for now, for a person who pressed Ctrl-C.
    fn waiting_for(&self) -> String {
        rate_limit_wait(&self.connections)
            .unwrap_or_else(|| "waiting for the current page and the calls in flight".into())
    }

    /// A line for the person at the terminal, above the progress line; a
    /// warning in the log otherwise.
    fn say(&self, message: &str) {
        if self.show {
            self.bar.suspend(|| eprintln!("ionflow: {message}"));
        } else {
            tracing::warn!("{message}");
        }
    }

    fn finish(&self) {
        let ticker = self
            .ticker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(ticker) = ticker {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `waiting 41 s for the rate limit: 1,000 calls per 60 s (connection m3)`.
fn rate_limit_wait(connections: &[(String, Arc<Connection>)]) -> Option<String> {
    connections.iter().find_map(|(name, c)| {
        c.rate_limit_wait().map(|(left, limit)| {
            format!(
                "waiting {} s for the rate limit: {limit} (connection {name})",
                left.as_secs_f64().ceil()
            )
        })
    })
}
