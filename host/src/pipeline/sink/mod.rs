//! Where records go.

mod file;

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::config::SinkConfig;
use super::interpolate::Variables;

pub enum Sink {
    File(file::FileWriter),
}

impl Sink {
    pub fn open(config: &SinkConfig, base_dir: &Path, vars: &Variables) -> anyhow::Result<Sink> {
        match config {
            SinkConfig::File(c) => {
                let path = vars
                    .expand(&c.path)
                    .map_err(|e| anyhow::anyhow!("sinks: path: {e}"))?;
                Ok(Sink::File(file::FileWriter::create(
                    &base_dir.join(path),
                    c.format,
                )?))
            }
        }
    }

    pub async fn write(&mut self, record: &Value) -> anyhow::Result<()> {
        match self {
            Sink::File(w) => w.write(record),
        }
    }

    /// Makes everything written durable and visible; returns where it went.
    pub async fn finish(self) -> anyhow::Result<Option<PathBuf>> {
        match self {
            Sink::File(w) => w.finish().map(Some),
        }
    }
}
