//! What a run did, for people and for log shippers.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::store::RunState;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub pipeline: String,
    /// Records read from the source.
    pub records_in: u64,
    /// Records the transforms handed to the sinks.
    pub records_out: u64,
    /// Records that failed in a transform or were refused by a sink.
    pub records_failed: u64,
    /// Failed records written to the dead-letter file.
    pub records_dead_lettered: u64,
    /// Records delivered only after a call was sent again (429, 5xx, network).
    pub records_retried: u64,
    /// Every call sent again, source pages included.
    pub retries: u64,
    /// HTTP exchanges made: the connector's (token requests included) and plain HTTP(S).
    pub api_calls: u64,
    pub token_requests: u64,
    pub duration_ms: u64,
    pub outputs: Vec<PathBuf>,
    /// Where failed records went, when any did.
    pub dead_letter: Option<PathBuf>,
    /// The state file, when this run saved it.
    pub state_saved: Option<PathBuf>,
    /// What sinks report when they finish (the `count` sink's number).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pipeline {}: {} records in, {} out, {} failed, {} retried in {:.2} s ({} API calls, {} token requests)",
            self.pipeline,
            self.records_in,
            self.records_out,
            self.records_failed,
            self.records_retried,
            self.duration_ms as f64 / 1000.0,
            self.api_calls,
            self.token_requests,
        )?;
        for output in &self.outputs {
            writeln!(f, "  wrote {}", output.display())?;
        }
        for note in &self.notes {
            writeln!(f, "  {note}")?;
        }
        if let Some(path) = &self.dead_letter {
            writeln!(
                f,
                "  {} failed records appended to {}",
                self.records_failed,
                path.display()
            )?;
        }
        if let Some(path) = &self.state_saved {
            writeln!(f, "  state saved to {}", path.display())?;
        }
        Ok(())
    }
}

/// Records how a run ended on its trace span (`crate::traces`);
/// `error_kind` names a failure (the CLI's exit-code table).
pub fn record_run_span(
    span: &tracing::Span,
    outcome: &anyhow::Result<Summary>,
    error_kind: fn(&anyhow::Error) -> &'static str,
) {
    let outcome = match outcome {
        Ok(s) => Ok(crate::traces::RunTotals {
            records_in: s.records_in,
            records_out: s.records_out,
            records_failed: s.records_failed,
            records_dead_lettered: s.records_dead_lettered,
            api_calls: s.api_calls,
            retries: s.retries,
        }),
        Err(e) => Err(error_kind(e)),
    };
    crate::traces::record_run(span, outcome);
}

/// UTC now as `2026-05-01T10:00:00Z`, without a date crate.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// How a run's outcome is recorded with its lease in the store, and the
/// error to show with it (`ionflow run` and `serve` record runs alike).
pub fn recorded_state(outcome: &anyhow::Result<Summary>) -> (RunState, Option<String>) {
    match outcome {
        Ok(s) if s.records_failed == 0 => (RunState::Succeeded, None),
        Ok(s) => (
            RunState::Failed,
            Some(format!("{} records failed", s.records_failed)),
        ),
        Err(e) => (RunState::Failed, Some(format!("{e:#}"))),
    }
}
