//! `ionflow demo`: the demo pipeline against an in-process simulator.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use tracing::Instrument as _;

use super::output::{out, outln};
use super::{Exit, interactive, new_session};
use crate::pipeline::{Pipeline, Variables};
use ionflow_sim::{SimConfig, Simulator};

/// The demo ships inside the binary, so `ionflow demo` works from any folder.
const DEMO_PIPELINE: &str = include_str!("../../../pipelines/demo.toml");

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the demo's output
    #[arg(long, default_value = "ionflow-demo")]
    out: PathBuf,
    /// Items in the simulated M3 catalogue
    #[arg(long, default_value_t = 2500)]
    items: usize,
}

pub async fn demo(args: DemoArgs, quiet: bool) -> anyhow::Result<Exit> {
    let sim = Simulator::start(SimConfig {
        items: args.items,
        ..SimConfig::default()
    })
    .await
    .context("could not start the gateway simulator")?;
    let result = run_demo(&sim, &args, quiet).await;
    sim.shutdown().await;
    result
}

async fn run_demo(sim: &Simulator, args: &DemoArgs, quiet: bool) -> anyhow::Result<Exit> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("could not create {}", args.out.display()))?;
    let out = std::fs::canonicalize(&args.out)?;
    // The simulator's credentials are throwaway, but they are still
    // credentials: keep them out of the output folder.
    let secrets_dir = private_temp_dir()?;
    let ionapi = secrets_dir.join("sim.ionapi");
    sim.write_ionapi(&ionapi)?;
    let vars = Variables::new(BTreeMap::from([
        (
            "IONFLOW_DEMO_IONAPI".to_string(),
            ionapi.display().to_string(),
        ),
        ("IONFLOW_DEMO_OUT".to_string(), out.display().to_string()),
    ]));
    if !quiet {
        outln!(
            "gateway simulator on {} ({} items)",
            sim.base_url(),
            args.items
        );
    }
    let outcome = async {
        let pipeline = Pipeline::from_text(
            DEMO_PIPELINE,
            Path::new("pipelines/demo.toml"),
            &std::env::current_dir()?,
            vars,
        )?;
        let (runtime, grants) = new_session().await?;
        let span = crate::traces::run_span(&pipeline.name, &crate::serve::new_run_id());
        let outcome = pipeline
            .run(&runtime, &grants, interactive(quiet))
            .instrument(span.clone())
            .await;
        crate::pipeline::record_run_span(&span, &outcome, |e| Exit::classify(e).kind());
        outcome
    }
    .await;
    let _ = std::fs::remove_dir_all(&secrets_dir);
    let summary = outcome?;
    if !quiet {
        out!("{summary}");
    }
    Ok(if summary.records_failed > 0 {
        Exit::RecordsFailed
    } else {
        Exit::Success
    })
}

fn private_temp_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ionflow-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(dir)
}
