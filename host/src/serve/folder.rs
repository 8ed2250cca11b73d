//! The served folder: every `*.toml` file in it, loaded, and what changed
//! since the last look (a file's digest says whether to load it anew).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};

use crate::pipeline::{Pipeline, Variables};

/// A folder with more pipeline files than this is refused: each file is a
/// scheduler, and a runaway generator of files must not become thousands.
pub const MAX_FILES: usize = 2_000;
/// A pipeline file larger than this is not read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// One file of the folder as found now.
pub struct Found {
    pub file: PathBuf,
    /// SHA-256 of the text loaded (of the error, when it could not be read).
    pub digest: [u8; 32],
    pub outcome: Outcome,
}

pub enum Outcome {
    /// A valid pipeline with a schedule.
    Scheduled(Box<Pipeline>),
    /// A valid pipeline without a schedule: not served.
    Unscheduled(String),
    /// What `ionflow validate` would report.
    Invalid(Vec<String>),
}

/// Reads and loads every pipeline file of `dir`, sorted by name.
pub fn scan(dir: &Path, vars: &Variables) -> anyhow::Result<Vec<Found>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
        .collect();
    files.sort();
    if files.len() > MAX_FILES {
        anyhow::bail!(
            "{} holds {} pipeline files; serve at most {MAX_FILES} from one folder",
            dir.display(),
            files.len()
        );
    }
    Ok(files.into_iter().map(|file| load(file, vars)).collect())
}

fn load(file: PathBuf, vars: &Variables) -> Found {
    let text = std::fs::metadata(&file)
        .and_then(|m| {
            if m.len() > MAX_FILE_BYTES {
                Err(std::io::Error::other(format!(
                    "{} bytes; a pipeline file is at most {MAX_FILE_BYTES}",
                    m.len()
                )))
            } else {
                std::fs::read_to_string(&file)
            }
        })
        .map_err(|e| format!("{}: cannot read the pipeline file: {e}", file.display()));
    let digest: [u8; 32] = match &text {
        Ok(text) => Sha256::digest(text.as_bytes()).into(),
        Err(e) => Sha256::digest(e.as_bytes()).into(),
    };
    let outcome = match text {
        Err(e) => Outcome::Invalid(vec![e]),
        Ok(text) => {
            let base_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
            match Pipeline::from_text(&text, &file, &base_dir, vars.clone()) {
                Ok(p) if p.schedule.is_some() => Outcome::Scheduled(Box::new(p)),
                Ok(p) => Outcome::Unscheduled(p.name),
                Err(errors) => Outcome::Invalid(errors.0.iter().map(|e| e.to_string()).collect()),
            }
        }
    };
    Found {
        file,
        digest,
        outcome,
    }
}
