//! What a run did, for people and for log shippers.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub pipeline: String,
    pub records_in: u64,
    pub records_out: u64,
    pub records_failed: u64,
    /// HTTP exchanges the connector made, token requests included.
    pub api_calls: u64,
    pub token_requests: u64,
    pub duration_ms: u64,
    pub outputs: Vec<PathBuf>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pipeline {}: {} records in, {} out, {} failed in {:.2} s ({} API calls, {} token requests)",
            self.pipeline,
            self.records_in,
            self.records_out,
            self.records_failed,
            self.duration_ms as f64 / 1000.0,
            self.api_calls,
            self.token_requests,
        )?;
        for output in &self.outputs {
            writeln!(f, "  wrote {}", output.display())?;
        }
        Ok(())
    }
}
