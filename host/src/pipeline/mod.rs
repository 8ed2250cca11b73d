//! Declarative pipelines: a source, jq transforms and sinks, read from TOML.
//!
//! Data flows source → transforms → sinks one page at a time; connections
//! are opened in the connector sandbox before the first record moves.
//! Loading a pipeline compiles everything that can be compiled (jq filters,
//! templates) and reports every problem at once; running it needs nothing
//! more than the environment.

pub mod config;
mod dead_letter;
mod extract;
mod http;
pub mod interpolate;
mod retry;
mod sink;
mod source;
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

pub use config::{ConfigError, ConfigErrors, PipelineConfig};
pub use interpolate::Variables;
pub use summary::Summary;
pub use transform::JqFilter;

use crate::runtime::{ClientAuth, Connection, ConnectionOptions, Grant, Runtime};
use config::{ClientAuthName, GrantName, Problems, SourceConfig, TransformConfig};
use dead_letter::DeadLetter;
use retry::RunStats;
use sink::{Outcome, Scope, Sink, SinkContext, SinkPlan};
use source::{Source, SourceContext};
use state::Watermarks;
use template::Templates;

/// A validated pipeline: parsed, references checked, jq and templates compiled.
pub struct Pipeline {
    pub name: String,
    pub file: PathBuf,
    /// Relative paths in the pipeline resolve against this folder.
    pub base_dir: PathBuf,
    pub config: PipelineConfig,
    transforms: Vec<(JqFilter, Duration)>,
    sinks: Vec<SinkPlan>,
    templates: Arc<Templates>,
    vars: Variables,
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
        let records_jq = match &config.source {
            SourceConfig::Gateway(s) => s.records_jq.as_deref(),
            SourceConfig::Http(s) => s.records_jq.as_deref(),
            _ => None,
        };
        if let Some(code) = records_jq
            && let Err(e) = JqFilter::compile(code)
        {
            problems.add("source", Some("records_jq"), e);
        }

        let mut templates = Templates::default();
        let mut sinks = Vec::new();
        for (i, s) in config.sinks.iter().enumerate() {
            let mut errors = Vec::new();
            sinks.push(SinkPlan::compile(s, i, &mut templates, &mut errors));
            for (key, e) in errors {
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
            transforms,
            sinks,
            templates: Arc::new(templates),
            vars,
        })
    }

    /// Reads each connection's `.ionapi` JSON and opens it in the sandbox.
    /// No network call happens here.
    pub async fn open_connections(
        &self,
        runtime: &Runtime,
    ) -> anyhow::Result<BTreeMap<String, Arc<Connection>>> {
        let mut open = BTreeMap::new();
        for (name, conn) in &self.config.connections {
            let (json, origin) = self.ionapi_json(name, conn)?;
            let options = ConnectionOptions {
                grant: conn.grant.map(|g| match g {
                    GrantName::BackendService => Grant::BackendService,
                    GrantName::ClientCredentials => Grant::ClientCredentials,
                }),
                client_auth: conn.client_auth.map(|c| match c {
                    ClientAuthName::Form => ClientAuth::Form,
                    ClientAuthName::Basic => ClientAuth::Basic,
                }),
                renew_before_secs: None,
                request_timeout_ms: conn.timeout_secs.map(|s| s * 1000),
                max_payload_bytes: None,
            };
            let connection = runtime
                .open(name, &json, options)
                .await
                .with_context(|| format!("connection `{name}` ({origin})"))?;
            open.insert(name.clone(), Arc::new(connection));
        }
        Ok(open)
    }

    fn ionapi_json(
        &self,
        name: &str,
        conn: &config::ConnectionConfig,
    ) -> Result<(String, String), ConfigError> {
        let in_file = |message: String| ConfigError::new(&self.file, message);
        if let Some(var) = &conn.ionapi_env {
            let json = std::env::var(var).map_err(|_| {
                in_file(format!(
                    "connections.{name}.ionapi_env: environment variable {var} is not set; \
                     export it with the .ionapi file's JSON"
                ))
            })?;
            return Ok((json, format!("environment variable {var}")));
        }
        let raw = conn.ionapi_file.as_deref().unwrap_or_default();
        let path = self
            .vars
            .expand(raw)
            .map_err(|e| in_file(format!("connections.{name}.ionapi_file: {e}")))?;
        let path = self.base_dir.join(path);
        let json = std::fs::read_to_string(&path).map_err(|e| {
            in_file(format!(
                "connections.{name}.ionapi_file: cannot read {}: {e}; download the file from \
                 Infor OS > API Gateway > Authorized Apps or fix the path",
                path.display()
            ))
        })?;
        Ok((json, path.display().to_string()))
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
    fn prepare_sinks(&self, vars: &Variables) -> anyhow::Result<(Scope, Vec<SinkPlan>)> {
        let templates = self
            .templates
            .expanded(vars)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let plans = self
            .sinks
            .iter()
            .enumerate()
            .map(|(i, p)| p.expand(i, vars))
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
    fn transform(&self, record: Value) -> Result<Vec<Value>, TransformFailure> {
        let mut batch = vec![record];
        for (i, (filter, budget)) in self.transforms.iter().enumerate() {
            let mut next = Vec::with_capacity(batch.len());
            for r in &batch {
                let out =
                    filter
                        .apply_within(r, Some(*budget))
                        .map_err(|error| TransformFailure {
                            stage: format!("transforms[{i}]"),
                            error,
                        })?;
                next.extend(out);
            }
            batch = next;
        }
        Ok(batch)
    }

    /// Runs the pipeline once.
    pub async fn run(&self, runtime: &Runtime, show_progress: bool) -> anyhow::Result<Summary> {
        let started = Instant::now();
        let connections = self.open_connections(runtime).await?;
        let stats = Arc::new(RunStats::default());
        let http = reqwest::Client::builder()
            .user_agent(concat!("ionflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("could not build the HTTP client")?;

        let state_path = self.state_path();
        let mut watermarks = match (&state_path, &self.config.state) {
            (Some(path), Some(state)) => Some(Watermarks::load(path, &state.watermarks)?),
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

        let mut source = Source::new(
            &self.config.source,
            SourceContext {
                connections: &connections,
                vars: &vars,
                base_dir: &self.base_dir,
                http: &http,
                stats: stats.clone(),
            },
        )?;
        let sink_cx = SinkContext {
            connections: &connections,
            vars: &vars,
            base_dir: &self.base_dir,
            http: &http,
            stats: stats.clone(),
            scope,
        };
        let mut sinks = plans
            .iter()
            .enumerate()
            .map(|(i, plan)| Sink::open(plan, i, &sink_cx))
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
                let outputs = match self.transform(record.clone()) {
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
        }
        for (i, sink) in sinks.into_iter().enumerate() {
            let output = sink.finish(&mut outcome).await?;
            drain(&mut outcome, &mut summary, &mut dead_letter, &self.name, i)?;
            if let Some(path) = output {
                summary.outputs.push(path);
            }
        }
        progress.finish();
        if let Some(dl) = dead_letter {
            if dl.written > 0 {
                summary.dead_letter = Some(dl.path().to_owned());
            }
            dl.finish()?;
        }
        // A failed record must be read again next run, so the watermark
        // only moves when every record went through.
        if summary.records_failed == 0
            && let (Some(w), Some(path)) = (&watermarks, &state_path)
            && w.save()?
        {
            summary.state_saved = Some(path.clone());
        }
        for connection in connections.values() {
            summary.api_calls += connection.stats().requests();
            summary.token_requests += connection.stats().token_requests();
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
            &rejected.error,
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
