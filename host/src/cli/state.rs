//! `ionflow state show|set|reset`: the saved watermarks of a pipeline, in
//! its state file or the shared store, read and changed without deleting
//! files by hand.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::outln;
use super::{Exit, open_storage, parse_vars};
use crate::pipeline::run_lock::RunLock;
use crate::pipeline::{Pipeline, Variables};

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Show each watermark: its saved value (or the initial one the next run starts from) and field
    #[command(after_help = "Example:\n  ionflow state show pipelines/customers.toml")]
    Show(ShowArgs),
    /// Save a value for a watermark: the next run starts after it (a backfill or a skip)
    #[command(after_help = "Example:\n  ionflow state set pipelines/customers.toml since 20260101")]
    Set(SetArgs),
    /// Forget the saved value of one watermark, or of all: the next run starts from `initial`
    #[command(after_help = "Example:\n  ionflow state reset pipelines/customers.toml since")]
    Reset(ResetArgs),
}

#[derive(Debug, Args)]
pub struct PipelineArg {
    /// The pipeline file (TOML)
    pipeline: PathBuf,
    /// Set a variable: `[vars]` NAME, and ${env.NAME} over the environment (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pipeline: PipelineArg,
    /// Only this watermark
    name: Option<String>,
    /// Print as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    #[command(flatten)]
    pipeline: PipelineArg,
    /// The watermark, as in [state.watermarks.NAME]
    name: String,
    /// Its new value
    value: String,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    #[command(flatten)]
    pipeline: PipelineArg,
    /// Only this watermark (all when left out)
    name: Option<String>,
}

async fn load(arg: &PipelineArg) -> anyhow::Result<Pipeline> {
    let vars = Variables::new(parse_vars(&arg.vars)?);
    let mut pipeline = Pipeline::load(&arg.pipeline, vars)?;
    let storage = open_storage().await?;
    pipeline.use_storage(&storage);
    Ok(pipeline)
}

pub async fn state(command: StateCommand) -> anyhow::Result<Exit> {
    match command {
        StateCommand::Show(args) => {
            let pipeline = load(&args.pipeline).await?;
            let mut marks = pipeline.watermarks().await?;
            if let Some(name) = &args.name {
                marks.retain(|m| m.name == *name);
                if marks.is_empty() {
                    anyhow::bail!(crate::pipeline::ConfigError::new(
                        &pipeline.file,
                        format!("has no watermark `{name}`")
                    ));
                }
            }
            let location = pipeline.state_location().unwrap_or_default();
            if args.json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "pipeline": pipeline.name,
                        "kept_in": location,
                        "watermarks": marks,
                    }))?
                );
            } else {
                outln!("pipeline {} (state in {location})", pipeline.name);
                for m in marks {
                    let value = match &m.saved {
                        Some(saved) => saved.clone(),
                        None => format!("{} (initial; nothing saved)", m.initial),
                    };
                    outln!(
                        "  {} = {value}   (max of `{}` over the {} records)",
                        m.name,
                        m.field,
                        if m.from == "output" {
                            "output"
                        } else {
                            "source"
                        }
                    );
                }
            }
        }
        StateCommand::Set(args) => {
            let pipeline = load(&args.pipeline).await?;
            // Not while a run of the pipeline could save over it.
            let _lock = RunLock::try_acquire(&super::state_dir()?, &args.pipeline.pipeline)?;
            pipeline.set_watermark(&args.name, &args.value).await?;
            outln!(
                "{}: {} = {} saved in {}",
                pipeline.name,
                args.name,
                args.value,
                pipeline.state_location().unwrap_or_default()
            );
        }
        StateCommand::Reset(args) => {
            let pipeline = load(&args.pipeline).await?;
            let _lock = RunLock::try_acquire(&super::state_dir()?, &args.pipeline.pipeline)?;
            pipeline.reset_watermarks(args.name.as_deref()).await?;
            outln!(
                "{}: {} reset; the next run starts from the initial value",
                pipeline.name,
                args.name.as_deref().unwrap_or("every watermark")
            );
        }
    }
    Ok(Exit::Success)
}
