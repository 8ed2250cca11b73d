//! `ionflow status`: the scheduled pipelines the store knows, their last and
//! next run, and which worker holds a lease now.

use clap::Args;

use super::output::outln;
use super::{Exit, open_storage};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the status as JSON (an array, one object per pipeline)
    #[arg(long)]
    json: bool,
}

pub async fn status(args: StatusArgs) -> anyhow::Result<Exit> {
    let storage = open_storage().await?;
    let rows = storage.status().await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(Exit::Success);
    }
    outln!("store: {}", storage.describe());
    if rows.is_empty() {
        outln!("no scheduled pipeline has been served with this store yet (`ionflow serve DIR`)");
        return Ok(Exit::Success);
    }
    let time = |t: &Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )
    };
    outln!(
        "{:<24} {:<16} {:<21} {:<10} {:<21} {:>5}  LEASE",
        "PIPELINE",
        "SCHEDULE",
        "LAST RUN (TICK)",
        "RESULT",
        "NEXT RUN",
        "RUNS"
    );
    for row in &rows {
        let lease = match (&row.lease_holder, &row.lease_tick) {
            (Some(worker), tick) => format!(
                "{worker} (tick {}, expires {})",
                time(tick),
                time(&row.lease_expires_at)
            ),
            _ => "-".to_owned(),
        };
        outln!(
            "{:<24} {:<16} {:<21} {:<10} {:<21} {:>5}  {lease}",
            row.pipeline,
            row.schedule,
            time(&row.last_tick),
            row.last_state.as_deref().unwrap_or("-"),
            time(&row.next_run),
            row.runs,
        );
        if let Some(error) = &row.last_error {
            outln!("    last error: {error}");
        }
    }
    Ok(Exit::Success)
}
