//! The dead-letter file: every record that failed for good, with its error,
//! one JSON document per line, appended run after run.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value, json};

pub struct DeadLetter {
    path: PathBuf,
    pipeline: String,
    /// Opened at the first failure, so a clean run leaves no empty file.
    out: Option<BufWriter<File>>,
    pub written: u64,
}

impl DeadLetter {
    pub fn new(path: &Path, pipeline: &str) -> Self {
        DeadLetter {
            path: path.to_owned(),
            pipeline: pipeline.to_owned(),
            out: None,
            written: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, stage: &str, error: &str, record: &Value) -> anyhow::Result<()> {
        if self.out.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("dead_letter.path: cannot create {}", dir.display())
                })?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .with_context(|| {
                    format!("dead_letter.path: cannot open {}", self.path.display())
                })?;
            self.out = Some(BufWriter::new(file));
        }
        if let Some(out) = &mut self.out {
            let entry = json!({
                "pipeline": self.pipeline,
                "at": crate::pipeline::summary::now_rfc3339(),
                "stage": stage,
                "error": error,
                "record": record,
            });
            serde_json::to_writer(&mut *out, &entry)?;
            out.write_all(b"\n")?;
        }
        self.written += 1;
        Ok(())
    }

    pub fn finish(self) -> anyhow::Result<()> {
        if let Some(mut out) = self.out {
            out.flush()
                .with_context(|| format!("cannot write {}", self.path.display()))?;
        }
        Ok(())
    }
}
