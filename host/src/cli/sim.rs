//! `ionflow sim`: the gateway simulator as a long-running process.

use std::path::PathBuf;

use clap::Args;

use super::Exit;
use super::output::outln;
use ionflow_sim::{SimConfig, Simulator};

#[derive(Debug, Args)]
pub struct SimArgs {
    #[command(flatten)]
    config: SimConfig,
    /// Where to write the simulator's .ionapi file
    #[arg(long, default_value = "sim.ionapi")]
    ionapi_out: PathBuf,
}

pub async fn sim(args: SimArgs) -> anyhow::Result<Exit> {
    let sim = Simulator::start(args.config).await?;
    sim.write_ionapi(&args.ionapi_out)?;
    outln!("ION API Gateway simulator listening on {}", sim.base_url());
    outln!("credentials written to {}", args.ionapi_out.display());
    for line in sim.fixtures() {
        outln!("fixture: {line}");
    }
    outln!(
        "counters: {}/__sim/counters; stop with Ctrl-C",
        sim.base_url()
    );
    super::shutdown_signal().await;
    sim.shutdown().await;
    Ok(Exit::Success)
}
