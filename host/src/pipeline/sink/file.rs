//! JSON Lines files, written under a temporary name and renamed into place
//! when the run succeeds, so a reader never mistakes half a run for a whole one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use crate::pipeline::config::FileFormat;

pub struct FileWriter {
    path: PathBuf,
    partial: PathBuf,
    out: BufWriter<File>,
}

impl FileWriter {
    pub fn create(path: &Path, format: FileFormat) -> anyhow::Result<Self> {
        let FileFormat::Jsonl = format;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("could not create the folder {}", dir.display()))?;
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        let file = File::create(&partial)
            .with_context(|| format!("could not create {}", partial.display()))?;
        Ok(FileWriter {
            path: path.to_owned(),
            partial,
            out: BufWriter::with_capacity(256 * 1024, file),
        })
    }

    pub fn write(&mut self, record: &Value) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    pub fn finish(self) -> anyhow::Result<PathBuf> {
        let file = self
            .out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("could not write {}", self.partial.display()))?;
        file.sync_all()?;
        std::fs::rename(&self.partial, &self.path).with_context(|| {
            format!(
                "could not move {} to {}",
                self.partial.display(),
                self.path.display()
            )
        })?;
        Ok(self.path)
    }
}
