//! Declarative pipelines: a source, jq transforms and sinks, read from TOML.
//!
//! Data flows source → transforms → sinks one page at a time; connections
//! are opened in the connector sandbox before the first record moves.
//! Loading a pipeline compiles everything that can be compiled (jq filters,
//! templates) and reports every problem at once; running it needs nothing
//! more than the environment.

mod checks;
mod connections;
mod dead_letter;
mod definition;
mod dry_run;
mod extract;
mod http;
mod progress;
mod replay;
mod retry;
mod run;
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

pub use crate::config::{ConfigError, ConfigErrors, UsageError, Variables};
pub use definition::PipelineConfig;
pub use replay::ReplaySummary;
pub use retry::{CallError, Unavailable};
pub use sinks::SinkConfig;
pub use sources::SourceConfig;
pub use state::WatermarkView;
pub use summary::{Summary, record_run_span, recorded_state};
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
