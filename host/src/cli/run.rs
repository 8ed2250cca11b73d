//! `ionflow run` and `ionflow validate`.

use std::path::PathBuf;

use clap::Args;

use super::{Exit, interactive, new_runtime, parse_vars};
use crate::pipeline::run_lock::RunLock;
use crate::pipeline::{Pipeline, Variables};

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
    let vars = Variables::new(parse_vars(&args.vars)?);
    let pipeline = Pipeline::load(&args.pipeline, vars)?;
    let _lock = RunLock::try_acquire(&super::state_dir()?, &args.pipeline)?;
    let runtime = new_runtime()?;
    let summary = pipeline
        .run_until(
            &runtime,
            interactive(quiet) && !args.json,
            super::shutdown_signal(),
        )
        .await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else if !quiet {
        print!("{summary}");
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

/// Checks every file and reports every problem, not just the first file's.
pub async fn validate(args: ValidateArgs) -> anyhow::Result<Exit> {
    let vars = Variables::new(parse_vars(&args.vars)?);
    let runtime = new_runtime()?;
    let mut worst = Exit::Success;
    for path in &args.pipelines {
        let checked = match Pipeline::load(path, vars.clone()) {
            Ok(pipeline) => pipeline.open_connections(&runtime).await.map(|_| ()),
            Err(e) => Err(e.into()),
        };
        match checked {
            Ok(()) => println!("ok: {}", path.display()),
            Err(e) => {
                eprintln!("error: {e:#}");
                worst = Exit::Config;
            }
        }
    }
    Ok(worst)
}
