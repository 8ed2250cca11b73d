//! `ionflow run`, `ionflow validate` and `ionflow test`.

use std::path::PathBuf;

use clap::Args;
use tracing::Instrument as _;

use chrono::Utc;

use super::output::{out, outln};
use super::{Exit, grants_of, interactive, new_runtime, open_storage, parse_vars, settings};
use crate::pipeline::run_lock::{LockHeld, RunLock};
use crate::pipeline::{Pipeline, Session, Variables};
use crate::store::Claim;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline file (TOML)
    pipeline: PathBuf,
    /// Print the run summary as JSON on stdout
    #[arg(long)]
    json: bool,
    /// Set a variable for ${env.NAME}, overriding the environment (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
}

pub async fn run(args: RunArgs, quiet: bool) -> anyhow::Result<Exit> {
    let outcome = run_pipeline(&args, quiet).await;
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
        println!("{failure}");
    }
    outcome
}

async fn run_pipeline(args: &RunArgs, quiet: bool) -> anyhow::Result<Exit> {
    let vars = Variables::new(parse_vars(&args.vars)?);
    let mut pipeline = Pipeline::load(&args.pipeline, vars)?;
    let span =
        tracing::info_span!("run", pipeline = %pipeline.name, run_id = %crate::serve::new_run_id());
    let _lock = RunLock::try_acquire(&super::state_dir()?, &args.pipeline)?;
    let storage = open_storage().await?;
    pipeline.use_storage(&storage);
    let runtime = super::runtime_on(storage.tokens())?;
    let grants = grants_of(storage.as_ref());
    // With a shared store, one run of a pipeline at a time across machines
    // too: a CronJob's run takes a lease like a serve worker's tick.
    let lease_secs = settings().lease_secs;
    let lease = if storage.shared() {
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
    let outcome = pipeline
        .run_until(
            &runtime,
            &grants,
            Session::Once,
            interactive(quiet) && !args.json,
            stop,
        )
        .instrument(span)
        .await;
    if let Some(lease) = &lease {
        let (state, error) = crate::pipeline::recorded_state(&outcome);
        if let Err(e) = storage.finish(lease, state, error.as_deref()).await {
            tracing::warn!("could not record the end of the run: {e}");
        }
    }
    let summary = outcome?;
    // A stdout sink owns stdout: the summary then goes to stderr.
    let stdout_sink = pipeline
        .config
        .sinks
        .iter()
        .any(|s| matches!(s, crate::pipeline::SinkConfig::Stdout(_)));
    // With JSON logs, stderr holds JSON lines only.
    if args.json || (stdout_sink && super::json_logs()) {
        let json = serde_json::to_string(&summary)?;
        if stdout_sink {
            eprintln!("{json}");
        } else {
            outln!("{json}");
        }
    } else if !quiet {
        if stdout_sink {
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

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Pipeline files to check
    #[arg(required = true)]
    pipelines: Vec<PathBuf>,
    /// Set a variable for ${env.NAME}, overriding the environment (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
}

/// Checks every file and reports every problem, not just the first.
pub async fn validate(args: ValidateArgs) -> anyhow::Result<Exit> {
    let vars = Variables::new(parse_vars(&args.vars)?);
    let runtime = new_runtime().await?;
    let mut worst = Exit::Success;
    for path in &args.pipelines {
        match Pipeline::load(path, vars.clone()) {
            Ok(pipeline) => match pipeline.open_connections(&runtime).await {
                Ok(_) => outln!("ok: {}", path.display()),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    worst = Exit::Config;
                }
            },
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("error: {e}");
                }
                worst = Exit::Config;
            }
        }
    }
    Ok(worst)
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Pipeline files whose [[tests]] to run
    #[arg(required = true)]
    pipelines: Vec<PathBuf>,
    /// Set a variable for ${env.NAME}, overriding the environment (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
}

/// Runs the pipelines' unit tests offline: no connection is opened.
pub fn test(args: TestArgs, quiet: bool) -> anyhow::Result<Exit> {
    let vars = Variables::new(parse_vars(&args.vars)?);
    let (mut passed, mut failed) = (0, 0);
    for path in &args.pipelines {
        let pipeline = match Pipeline::load(path, vars.clone()) {
            Ok(p) => p,
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("error: {e}");
                }
                return Ok(Exit::Config);
            }
        };
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
                    outln!("ok   {} :: {}", path.display(), result.name);
                }
            } else {
                failed += 1;
                outln!("FAIL {} :: {}", path.display(), result.name);
                for f in &result.failures {
                    outln!("    {f}");
                }
            }
        }
    }
    if !quiet || failed > 0 {
        outln!("{passed} passed, {failed} failed");
    }
    Ok(if failed > 0 {
        Exit::RecordsFailed
    } else {
        Exit::Success
    })
}
