//! `ionflow run`, `ionflow validate` and `ionflow test`.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;
use tracing::Instrument as _;

use chrono::Utc;
use codespan_reporting::term::termcolor::{
    Color, ColorChoice, ColorSpec, StandardStream, WriteColor,
};

use super::diagnostics::Report;
use super::output::{out, outln};
use super::{Exit, grants_of, interactive, open_storage, parse_vars, settings};
use crate::pipeline::run_lock::{LockHeld, RunLock};
use crate::pipeline::{ConfigErrors, Pipeline, RunOptions, Session, Variables};
use crate::store::Claim;
use ionflow_runtime::Runtime;
use ionflow_runtime::capabilities::MemoryTokenStore;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline file (TOML)
    pipeline: PathBuf,
    /// Print the run summary as JSON on stdout
    #[arg(long)]
    json: bool,
    /// Set a variable: `[vars]` NAME, and ${env.NAME} over the environment (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Start every watermark at its `initial` value; the saved ones are neither used nor changed
    #[arg(long)]
    full_refresh: bool,
    /// Stop after N records from the source
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Read for real and print each write the sinks would make (JSON Lines on stdout); send nothing, write nothing, save no state
    #[arg(long)]
    dry_run: bool,
    /// Run again whenever the pipeline file (or a `file` source's input) changes; Ctrl-C stops
    #[arg(long)]
    watch: bool,
}

pub async fn run(args: RunArgs, quiet: bool) -> anyhow::Result<Exit> {
    if !args.watch {
        return run_once(&args, quiet).await;
    }
    let shutdown = super::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let watched = watched_files(&args);
        let before = modified(&watched);
        match run_once(&args, quiet).await {
            Ok(_) => {}
            Err(e) if Exit::classify(&e) == Exit::Interrupted => return Ok(Exit::Interrupted),
            // A broken edit is shown and the watch goes on.
            Err(e) => eprintln!("error: {e:#}"),
        }
        eprintln!(
            "watching {} for changes; Ctrl-C stops",
            watched
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        // Polling a handful of files twice a second costs nothing and
        // needs no file-system notification API (or crate).
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(Exit::Success),
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            if modified(&watched) != before {
                // Let an editor finish writing before reading the file.
                tokio::time::sleep(Duration::from_millis(200)).await;
                break;
            }
        }
    }
}

/// The pipeline file and, for a `file` source, its input.
fn watched_files(args: &RunArgs) -> Vec<PathBuf> {
    let mut files = vec![args.pipeline.clone()];
    let vars = Variables::new(parse_vars(&args.vars).unwrap_or_default());
    if let Ok(pipeline) = Pipeline::load(&args.pipeline, vars)
        && let crate::pipeline::SourceConfig::File(source) = &pipeline.config.source
        && let Ok(path) = pipeline.variables().expand(&source.path)
    {
        files.push(pipeline.base_dir.join(path));
    }
    files
}

fn modified(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// One run; with `--json`, a failed run prints an object on stdout too.
async fn run_once(args: &RunArgs, quiet: bool) -> anyhow::Result<Exit> {
    let outcome = run_pipeline(args, quiet).await;
    if args.json
        && let Err(error) = &outcome
    {
        // A scheduler reading stdout gets an object for a failed run too.
        let exit = Exit::classify(error);
        let failure = serde_json::json!({
            "pipeline": args.pipeline.file_stem().map(|s| s.to_string_lossy()),
            "ok": false,
            "exit_code": exit as u8,
            "error_kind": exit.kind(),
            "message": format!("{error:#}"),
        });
        outln!("{failure}");
    }
    outcome
}

async fn run_pipeline(args: &RunArgs, quiet: bool) -> anyhow::Result<Exit> {
    let overrides = parse_vars(&args.vars)?;
    let vars = Variables::new(overrides.clone());
    let mut pipeline = load_or_report(&args.pipeline, vars)?;
    let span = crate::traces::run_span(&pipeline.name, &crate::serve::new_run_id());
    warn_unused_vars(&args.pipeline, &pipeline, &overrides, None);
    // A dry run writes nothing, so it takes no lock and no lease.
    let _lock = if args.dry_run {
        None
    } else {
        Some(RunLock::try_acquire(&super::state_dir()?, &args.pipeline)?)
    };
    let storage = open_storage().await?;
    pipeline.use_storage(&storage);
    let runtime = super::runtime_on(storage.tokens())?;
    let grants = grants_of(storage.as_ref());
    // With a shared store, one run of a pipeline at a time across machines
    // too: a CronJob's run takes a lease like a serve worker's tick.
    let lease_secs = settings().lease_secs;
    let lease = if storage.shared() && !args.dry_run {
        let worker = crate::store::worker_id();
        match storage
            .claim(&pipeline.name, Utc::now(), &worker, lease_secs)
            .await?
        {
            Claim::Claimed(lease) => Some(lease),
            Claim::Busy(holder) | Claim::TakenBy(holder) => {
                return Err(
                    LockHeld::elsewhere(&args.pipeline, &holder, &storage.describe()).into(),
                );
            }
        }
    } else {
        None
    };
    let stop = async {
        match &lease {
            Some(lease) => tokio::select! {
                () = super::shutdown_signal() => {}
                () = crate::serve::keep_lease(storage.as_ref(), lease, lease_secs) => {}
            },
            None => super::shutdown_signal().await,
        }
    };
    let options = RunOptions {
        show_progress: interactive(quiet) && !args.json,
        full_refresh: args.full_refresh,
        limit: args.limit,
        dry_run: args.dry_run,
    };
    let outcome = pipeline
        .run_with_options(&runtime, &grants, Session::Once, &options, stop)
        .instrument(span.clone())
        .await;
    crate::pipeline::record_run_span(&span, &outcome, |e| Exit::classify(e).kind());
    drop(span);
    if let Some(lease) = &lease {
        let (state, error) = crate::pipeline::recorded_state(&outcome);
        if let Err(e) = storage.finish(lease, state, error.as_deref()).await {
            tracing::warn!("could not record the end of the run: {e}");
        }
    }
    let summary = outcome?;
    // A stdout sink (or a dry run's listing) owns stdout: the summary then
    // goes to stderr.
    let stdout_taken = args.dry_run
        || pipeline
            .config
            .sinks
            .iter()
            .any(|s| matches!(s, crate::pipeline::SinkConfig::Stdout(_)));
    // With JSON logs, stderr holds JSON lines only.
    if args.json || (stdout_taken && super::json_logs()) {
        let json = serde_json::to_string(&summary)?;
        if stdout_taken {
            eprintln!("{json}");
        } else {
            outln!("{json}");
        }
    } else if !quiet {
        if stdout_taken {
            eprint!("{summary}");
        } else {
            out!("{summary}");
        }
    }
    Ok(if summary.records_failed > 0 {
        Exit::RecordsFailed
    } else {
        Exit::Success
    })
}

/// Loads a pipeline; its problems are shown with their lines and carets.
fn load_or_report(path: &Path, vars: Variables) -> anyhow::Result<Pipeline> {
    Pipeline::load(path, vars).map_err(|errors| {
        let mut report = Report::default();
        if let Ok(text) = std::fs::read_to_string(path) {
            report.add_file(path, text);
        }
        for e in &errors.0 {
            report.config_error(e);
        }
        report.emit();
        anyhow::Error::new(ReportedAlready(errors))
    })
}

/// Problems already shown with their snippets: `main` prints one line.
#[derive(Debug, thiserror::Error)]
#[error("the pipeline has {} problem(s), shown above", .0.0.len())]
struct ReportedAlready(#[source] ConfigErrors);

/// A `--var` that no `[vars]` entry, `${env.NAME}` or `$env.NAME` of the
/// pipeline uses: most likely a typo, which would otherwise pass silently.
fn warn_unused_vars(
    path: &Path,
    pipeline: &Pipeline,
    overrides: &std::collections::BTreeMap<String, String>,
    report: Option<&mut Report>,
) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let unused: Vec<&String> = overrides
        .keys()
        .filter(|name| {
            !pipeline.config.vars.contains_key(*name)
                && !text.contains(&format!("${{env.{name}}}"))
                && !text.contains(&format!("${{env.{name}:-"))
                && !crate::pipeline::uses_jq_env(&text, name)
        })
        .collect();
    let mut report = report;
    for name in unused {
        let message = format!(
            "--var {name}: nothing in the pipeline uses it (no [vars] {name}, ${{env.{name}}} or $env.{name}); check its spelling"
        );
        match report.as_deref_mut() {
            Some(report) => report.warning(path, message),
            None => eprintln!("warning: {}: {message}", path.display()),
        }
    }
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Pipeline files, or folders whose *.toml files to check
    #[arg(required = true)]
    pipelines: Vec<PathBuf>,
    /// Set a variable: `[vars]` NAME, and ${env.NAME} over the environment (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Read no .ionapi file at all, even those that are there
    #[arg(long)]
    offline: bool,
    /// Print the problems as JSON on stdout
    #[arg(long)]
    json: bool,
}

/// The `*.toml` files named, folders expanded (not recursively, like `serve`).
pub fn pipeline_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| anyhow::anyhow!("cannot read the folder {}: {e}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "toml"))
                .collect();
            found.sort();
            if found.is_empty() {
                anyhow::bail!("{} holds no .toml file", path.display());
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Checks every file and reports every problem of every file, not just the
/// first. Credentials are read only when they are there (never with
/// `--offline`), and no call leaves the machine.
pub async fn validate(args: ValidateArgs) -> anyhow::Result<Exit> {
    let overrides = parse_vars(&args.vars)?;
    let vars = Variables::new(overrides.clone());
    let files = pipeline_files(&args.pipelines)?;
    let mut report = Report::default();
    // Tokens are never asked for here: a store in memory keeps validate
    // away from the configured one (and its database).
    let mut runtime: Option<Runtime> = None;
    for path in &files {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                report.error(path, format!("cannot read the pipeline file: {e}"));
                continue;
            }
        };
        report.add_file(path, text);
        let pipeline = match Pipeline::load(path, vars.clone()) {
            Ok(pipeline) => pipeline,
            Err(errors) => {
                for e in &errors.0 {
                    report.config_error(e);
                }
                continue;
            }
        };
        warn_unused_vars(path, &pipeline, &overrides, Some(&mut report));
        for name in pipeline.config.connections.keys() {
            match pipeline.missing_credentials(name) {
                Err(e) => {
                    report.config_error(&e);
                    continue;
                }
                Ok(Some(note)) => {
                    report.note(path, note);
                    continue;
                }
                Ok(None) if args.offline => continue,
                Ok(None) => {}
            }
            if runtime.is_none() {
                runtime = Some(super::runtime_on(Arc::new(MemoryTokenStore::new()))?);
            }
            if let Some(runtime) = &runtime
                && let Err(e) = pipeline.open_connection(runtime, name).await
            {
                report.error(path, format!("{e:#}"));
            }
        }
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report.to_json(&files))?);
    } else {
        report.emit();
        for path in &files {
            if report.errors_in(path) == 0 {
                outln!("ok: {}", path.display());
            }
        }
    }
    Ok(if report.errors() > 0 {
        Exit::Config
    } else {
        Exit::Success
    })
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Pipeline files whose [[tests]] to run, or folders of them
    #[arg(required = true)]
    pipelines: Vec<PathBuf>,
    /// Set a variable: `[vars]` NAME, and ${env.NAME} over the environment (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
}

/// Runs the pipelines' unit tests offline: no connection is opened.
pub fn test(args: TestArgs, quiet: bool) -> anyhow::Result<Exit> {
    let overrides = parse_vars(&args.vars)?;
    let vars = Variables::new(overrides.clone());
    let color = if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let mut out = StandardStream::stdout(color);
    let (mut passed, mut failed) = (0, 0);
    for path in &pipeline_files(&args.pipelines)? {
        let pipeline = match load_or_report(path, vars.clone()) {
            Ok(p) => p,
            Err(_) => return Ok(Exit::Config),
        };
        warn_unused_vars(path, &pipeline, &overrides, None);
        if pipeline.config.tests.is_empty() {
            eprintln!(
                "warning: {} has no [[tests]]; add one with `input` and `output`",
                path.display()
            );
        }
        for result in pipeline.run_tests() {
            if result.failures.is_empty() {
                passed += 1;
                if !quiet {
                    paint(&mut out, Some(Color::Green), "ok  ")?;
                    writeln!(out, " {} :: {}", path.display(), result.name)?;
                }
            } else {
                failed += 1;
                paint(&mut out, Some(Color::Red), "FAIL")?;
                writeln!(out, " {} :: {}", path.display(), result.name)?;
                for f in &result.failures {
                    for line in f.lines() {
                        let trimmed = line.trim_start();
                        let color = if trimmed.starts_with("- ") {
                            Some(Color::Red)
                        } else if trimmed.starts_with("+ ") {
                            Some(Color::Green)
                        } else {
                            None
                        };
                        write!(out, "    ")?;
                        paint(&mut out, color, line)?;
                        writeln!(out)?;
                    }
                }
            }
        }
    }
    if !quiet || failed > 0 {
        writeln!(out, "{passed} passed, {failed} failed")?;
    }
    Ok(if failed > 0 {
        Exit::RecordsFailed
    } else {
        Exit::Success
    })
}

fn paint(out: &mut StandardStream, color: Option<Color>, text: &str) -> std::io::Result<()> {
    match color {
        Some(color) => {
            out.set_color(ColorSpec::new().set_fg(Some(color)))?;
            write!(out, "{text}")?;
            out.reset()
        }
        None => write!(out, "{text}"),
    }
}
