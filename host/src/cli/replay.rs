//! `ionflow replay DEAD_LETTER --pipeline P`: dead-lettered records sent
//! through the pipeline's sinks again; those that succeed leave the file.

use std::path::PathBuf;

use clap::Args;

use super::output::outln;
use super::{Exit, new_session, parse_vars};
use crate::pipeline::run_lock::RunLock;
use crate::pipeline::{Pipeline, Variables};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The dead-letter file (JSON Lines, as a run writes it)
    dead_letter: PathBuf,
    /// The pipeline whose sinks to send the records through
    #[arg(long)]
    pipeline: PathBuf,
    /// Set a variable: `[vars]` NAME, and ${env.NAME} over the environment (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Print the outcome as JSON
    #[arg(long)]
    json: bool,
}

pub async fn replay(args: ReplayArgs) -> anyhow::Result<Exit> {
    let vars = Variables::new(parse_vars(&args.vars)?);
    let pipeline = Pipeline::load(&args.pipeline, vars)?;
    // A run appending to the same dead letter meanwhile would be lost in
    // the rewrite: one at a time, with the run's lock.
    let _lock = RunLock::try_acquire(&super::state_dir()?, &args.pipeline)?;
    let (runtime, grants) = new_session().await?;
    let summary = pipeline
        .replay(
            &runtime,
            &grants,
            &args.dead_letter,
            super::shutdown_signal(),
        )
        .await?;
    if args.json {
        outln!("{}", serde_json::to_string(&summary)?);
    } else {
        outln!(
            "{}: {} delivered and removed, {} failed again (kept with the new error), {} kept as they were",
            summary.file.display(),
            summary.delivered,
            summary.failed,
            summary.kept
        );
    }
    Ok(if summary.failed > 0 {
        Exit::RecordsFailed
    } else {
        Exit::Success
    })
}
