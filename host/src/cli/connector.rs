//! `ionflow connector`: the connector component and its WIT contract for
//! other hosts, and a check that a component fits the world.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::output::outln;
use super::{Exit, cache_dir, new_runtime};
use ionflow_runtime::contract::{WIT_FILES, WIT_PACKAGE};
use ionflow_runtime::{EMBEDDED_CONNECTOR, WORLD};

#[derive(Debug, Subcommand)]
pub enum ConnectorCommand {
    /// Write the embedded connector component and/or its WIT package
    #[command(
        after_help = "Example:\n  ionflow connector export --out ionflow-connector.wasm --wit wit/"
    )]
    Export(ExportArgs),
    /// Check that a component implements the ionflow:gateway/connector world
    #[command(after_help = "Example:\n  ionflow connector check vendor/connector.wasm")]
    Check(CheckArgs),
    /// Compile the embedded connector into the cache now, so that no later
    /// start pays for it (run it when building a container image)
    #[command(
        after_help = "Example:\n  IONFLOW_CACHE_DIR=/var/cache/ionflow ionflow connector precompile"
    )]
    Precompile(PrecompileArgs),
}

#[derive(Debug, Args)]
pub struct PrecompileArgs {
    /// The cache folder (default: IONFLOW_CACHE_DIR, else $XDG_CACHE_HOME/ionflow or ~/.cache/ionflow)
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Where to write the component (.wasm)
    #[arg(long)]
    out: Option<PathBuf>,
    /// A folder to write the WIT package into (one .wit file per interface)
    #[arg(long)]
    wit: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The component file (.wasm)
    component: PathBuf,
}

pub async fn connector(command: ConnectorCommand) -> anyhow::Result<Exit> {
    match command {
        ConnectorCommand::Export(args) => export(args),
        ConnectorCommand::Check(args) => check(args).await,
        ConnectorCommand::Precompile(args) => precompile(args),
    }
}

fn precompile(args: PrecompileArgs) -> anyhow::Result<Exit> {
    let dir = args.cache_dir.or_else(cache_dir).ok_or_else(|| {
        anyhow::anyhow!("no cache folder: pass --cache-dir DIR or set IONFLOW_CACHE_DIR (or HOME)")
    })?;
    let path = ionflow_runtime::precompile_embedded(&dir)?;
    outln!(
        "connector precompiled for this ionflow build: {}",
        path.display()
    );
    Ok(Exit::Success)
}

fn export(args: ExportArgs) -> anyhow::Result<Exit> {
    if args.out.is_none() && args.wit.is_none() {
        return Err(crate::pipeline::UsageError(
            "say what to export: --out FILE.wasm for the component, --wit DIR for its WIT package"
                .into(),
        )
        .into());
    }
    if let Some(out) = &args.out {
        create_parent(out)?;
        std::fs::write(out, EMBEDDED_CONNECTOR)
            .with_context(|| format!("cannot write the component to {}", out.display()))?;
        outln!(
            "component ({WORLD}, {} bytes) written to {}",
            EMBEDDED_CONNECTOR.len(),
            out.display()
        );
    }
    if let Some(dir) = &args.wit {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the WIT folder {}", dir.display()))?;
        for (name, text) in WIT_FILES {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        outln!("WIT package {WIT_PACKAGE} written to {}", dir.display());
    }
    Ok(Exit::Success)
}

async fn check(args: CheckArgs) -> anyhow::Result<Exit> {
    let runtime = new_runtime().await?;
    let component = runtime.load_connector_file(&args.component)?;
    outln!(
        "ok: {} implements {WORLD} (sha256 {})",
        args.component.display(),
        component.digest()
    );
    Ok(Exit::Success)
}

fn create_parent(path: &Path) -> anyhow::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create the folder {}", parent.display())),
        None => Ok(()),
    }
}
