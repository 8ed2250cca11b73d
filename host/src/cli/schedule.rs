//! `ionflow schedule` (check an expression) and `ionflow serve` (the daemon).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;

use super::output::outln;
use super::{Exit, open_storage, parse_vars, settings, shutdown_signal, state_dir};
use crate::pipeline::{ConfigError, Pipeline, UsageError, Variables};
use crate::serve::{ServeOptions, serve};

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// The pipeline file whose `schedule` to show
    pipeline: PathBuf,
    /// How many fire times to print
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// Start from this instant (RFC 3339) instead of now
    #[arg(long)]
    from: Option<DateTime<Utc>>,
}

pub async fn schedule(args: ScheduleArgs) -> anyhow::Result<Exit> {
    let pipeline = Pipeline::load(&args.pipeline, Variables::default())?;
    let Some(schedule) = &pipeline.schedule else {
        return Err(ConfigError::new(
            &args.pipeline,
            "has no schedule; add one at the top level, e.g. schedule = \"*/15 * * * *\"",
        )
        .into());
    };
    outln!(
        "{} ({}), time zone {}",
        schedule.expression,
        schedule.describe(),
        schedule.timezone
    );
    for time in schedule.upcoming(args.from.unwrap_or_else(Utc::now), args.count) {
        outln!(
            "{}  {}",
            time.format("%Y-%m-%d %H:%M:%S %Z"),
            time.with_timezone(&Utc).format("%Y-%m-%dT%H:%M:%SZ")
        );
    }
    Ok(Exit::Success)
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Folder of pipeline files; those with a `schedule` are run on it
    dir: PathBuf,
    /// Serve /status, /metrics, /healthz and /readyz on this address
    /// (127.0.0.1:9187 for this machine only; 0.0.0.0:9187 for probes and
    /// Prometheus in a container)
    #[arg(long)]
    status_addr: Option<SocketAddr>,
    /// Seconds running runs get to finish after SIGTERM/SIGINT
    #[arg(long, default_value_t = 30)]
    grace_secs: u64,
    /// Set a variable for ${env.NAME}, overriding the environment (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Seconds a claimed tick stays claimed without renewal; a worker that
    /// dies loses its runs to another worker after this long (default: the
    /// config file's `lease_secs`, else 30)
    #[arg(long)]
    lease_secs: Option<f64>,
}

pub async fn serve_command(args: ServeArgs) -> anyhow::Result<Exit> {
    let lease_secs = args.lease_secs.unwrap_or(settings().lease_secs);
    if !(lease_secs.is_finite() && (0.2..=86_400.0).contains(&lease_secs)) {
        return Err(UsageError(format!(
            "--lease-secs {lease_secs}: use 0.2 to 86400 seconds"
        ))
        .into());
    }
    // Handlers first: a signal during start-up must not kill the process.
    let shutdown = shutdown_signal();
    let storage = open_storage().await?;
    let runtime = super::runtime_on(storage.tokens())?
        .with_observer(Arc::new(crate::metrics::MetricsObserver));
    let options = ServeOptions {
        dir: args.dir,
        state_dir: state_dir()?,
        storage,
        worker: crate::store::worker_id(),
        lease_secs,
        status_addr: args.status_addr,
        grace: Duration::from_secs(args.grace_secs),
        vars: Variables::new(parse_vars(&args.vars)?),
        error_kind: |e| Exit::classify(e).kind(),
    };
    serve(options, Arc::new(runtime), shutdown).await?;
    Ok(Exit::Success)
}
