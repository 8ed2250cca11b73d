//! Declarative pipelines: a source, jq transforms and sinks, read from TOML.
//!
//! Data flows source → transforms → sinks one page at a time; connections
//! are opened in the connector sandbox before the first record moves.

pub mod config;
pub mod interpolate;
pub mod run_lock;
mod sink;
mod source;
mod summary;
mod transform;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

pub use config::{ConfigError, PipelineConfig};
pub use interpolate::Variables;
pub use summary::Summary;
pub use transform::JqFilter;

use crate::credentials::{self, ResolvedConnection};
use crate::runtime::{Connection, Runtime};
use crate::schedule::Schedule;
use config::TransformConfig;
use sink::Sink;
use source::Source;

/// The run was stopped by a signal before it finished.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted: the run was stopped before it finished; records written so far are in the sinks' .partial files"
)]
pub struct Interrupted;

/// A validated pipeline: parsed, references checked, jq compiled.
pub struct Pipeline {
    pub name: String,
    pub file: PathBuf,
    /// Relative paths in the pipeline resolve against this folder.
    pub base_dir: PathBuf,
    pub config: PipelineConfig,
    pub schedule: Option<Schedule>,
    transforms: Vec<JqFilter>,
    vars: Variables,
}

impl Pipeline {
    pub fn load(path: &Path, vars: Variables) -> Result<Pipeline, ConfigError> {
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
    ) -> Result<Pipeline, ConfigError> {
        let config = PipelineConfig::parse(text, file)?;
        config.check_references(file)?;
        let transforms = config
            .transforms
            .iter()
            .enumerate()
            .map(|(i, t)| match t {
                TransformConfig::Jq(jq) => JqFilter::compile(&jq.filter)
                    .map_err(|e| ConfigError::new(file, format!("transforms[{i}].filter: {e}"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let schedule = match &config.schedule {
            None => None,
            Some(expression) => Some(
                Schedule::parse(expression, config.timezone.as_deref()).map_err(|e| {
                    let key = if e.message.starts_with("timezone") {
                        "timezone"
                    } else {
                        "schedule"
                    };
                    ConfigError {
                        file: file.to_owned(),
                        position: config::value_position(text, key, e.offset.unwrap_or(0)),
                        message: e.message,
                    }
                })?,
            ),
        };
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
            let connection = runtime
                .open_with(
                    &connector,
                    name,
                    resolved.ionapi_json.expose(),
                    resolved.options,
                    1,
                )
                .await
                .with_context(|| format!("connection `{name}` ({})", resolved.source))?;
            open.insert(name.clone(), Arc::new(connection));
        }
        Ok(open)
    }

    /// The credentials and options of `[connections.NAME]`.
    pub fn connection(&self, name: &str) -> Result<ResolvedConnection, ConfigError> {
        let config = self.config.connections.get(name).ok_or_else(|| {
            ConfigError::new(&self.file, format!("defines no connection `{name}`"))
        })?;
        credentials::from_pipeline(name, config, &self.file, &self.base_dir, &self.vars)
    }

    /// Runs the pipeline once, then revokes the refresh tokens of the
    /// connections configured to (the default), whether the run succeeded or not.
    pub async fn run(&self, runtime: &Runtime, show_progress: bool) -> anyhow::Result<Summary> {
        self.run_until(runtime, show_progress, std::future::pending())
            .await
    }

    /// Like `run`, but stops when `stop` resolves (a signal): records already
    /// written stay in the sinks' `.partial` files, and tokens are revoked.
    pub async fn run_until(
        &self,
        runtime: &Runtime,
        show_progress: bool,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<Summary> {
        let connections = self.open_connections(runtime).await?;
        // A guest call cancelled midway would leave its instance unusable,
        // and the revocation below needs it: so a signal only raises a flag,
        // and the run stops at the next page boundary.
        let stopping = std::sync::atomic::AtomicBool::new(false);
        let run = self.run_with(&connections, show_progress, &stopping);
        tokio::pin!(run, stop);
        let outcome = tokio::select! {
            outcome = &mut run => outcome,
            () = &mut stop => {
                stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                run.await
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
        let mut source = Source::new(&self.config.source, connections, &self.vars)?;
        let mut sinks = self
            .config
            .sinks
            .iter()
            .map(|s| Sink::open(s, &self.base_dir, &self.vars))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let progress = progress_bar(show_progress, &self.name);
        let mut summary = Summary {
            pipeline: self.name.clone(),
            ..Summary::default()
        };

        while let Some(page) = source.next_page().await? {
            for record in page {
                summary.records_in += 1;
                let mut batch = vec![record];
                let mut failed = None;
                for (i, filter) in self.transforms.iter().enumerate() {
                    let mut next = Vec::with_capacity(batch.len());
                    for r in &batch {
                        match filter.apply(r) {
                            Ok(out) => next.extend(out),
                            Err(e) => {
                                failed = Some(format!("transforms[{i}]: {e}"));
                                break;
                            }
                        }
                    }
                    if failed.is_some() {
                        break;
                    }
                    batch = next;
                }
                if let Some(reason) = failed {
                    summary.records_failed += 1;
                    tracing::warn!(pipeline = %self.name, record = summary.records_in, "record failed: {reason}");
                    continue;
                }
                for record in &batch {
                    for sink in &mut sinks {
                        sink.write(record).await?;
                    }
                    summary.records_out += 1;
                }
            }
            progress.set_message(format!(
                "{} records in, {} out",
                summary.records_in, summary.records_out
            ));
            progress.tick();
            // Checked after the page is written: what was fetched is kept.
            if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                progress.finish_and_clear();
                return Err(Interrupted.into());
            }
        }
        for sink in sinks {
            if let Some(path) = sink.finish().await? {
                summary.outputs.push(path);
            }
        }
        progress.finish_and_clear();
        summary.duration_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }
}

/// A spinner on a terminal; nothing when output is piped or logged.
fn progress_bar(show: bool, name: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(name.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}
