//! Named state kept between runs: watermarks, the maximum of a source field,
//! saved only after a run in which no record failed, so that a failed
//! record is read again next time instead of falling behind the watermark.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::WatermarkConfig;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    #[serde(default)]
    watermarks: BTreeMap<String, String>,
}

/// The watermarks of one pipeline: the values the run started with and the
/// maxima seen since.
#[derive(Debug)]
pub struct Watermarks {
    path: PathBuf,
    fields: Vec<(String, String)>,
    current: BTreeMap<String, String>,
    changed: bool,
}

impl Watermarks {
    /// Reads the state file; a missing file means every watermark is at its `initial`.
    pub fn load(path: &Path, config: &BTreeMap<String, WatermarkConfig>) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Self::from_saved(text.as_deref(), path, config)
    }

    /// The watermarks from saved JSON (a file's or a shared store's; `origin`
    /// names it in errors and is where `save` writes for the file backend).
    pub fn from_saved(
        text: Option<&str>,
        origin: &Path,
        config: &BTreeMap<String, WatermarkConfig>,
    ) -> anyhow::Result<Self> {
        let path = origin;
        let saved = match text {
            Some(text) => serde_json::from_str::<StateFile>(text).with_context(|| {
                format!(
                    "the state file {} is not valid; fix it or delete it to start from the initial watermarks",
                    path.display()
                )
            })?,
            None => StateFile::default(),
        };
        let current = config
            .iter()
            .map(|(name, w)| {
                let value = saved
                    .watermarks
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| w.initial.clone());
                (name.clone(), value)
            })
            .collect();
        Ok(Watermarks {
            path: path.to_owned(),
            fields: config
                .iter()
                .map(|(n, w)| (n.clone(), w.field.clone()))
                .collect(),
            current,
            changed: false,
        })
    }

    /// The values for `${state.NAME}`.
    pub fn values(&self) -> BTreeMap<String, String> {
        self.current.clone()
    }

    /// Raises each watermark to the record's field when it is larger.
    pub fn observe(&mut self, record: &Value) {
        for (name, field) in &self.fields {
            let Some(value) = record.get(field).and_then(scalar_text) else {
                continue;
            };
            let current = self.current.get(name);
            if current.is_none_or(|c| greater(&value, c)) {
                self.current.insert(name.clone(), value);
                self.changed = true;
            }
        }
    }

    /// Whether a run moved a watermark.
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// The JSON `save` writes, also what a shared store keeps.
    pub fn to_json(&self) -> anyhow::Result<String> {
        let file = StateFile {
            watermarks: self.current.clone(),
        };
        Ok(serde_json::to_string_pretty(&file)? + "\n")
    }

    /// Writes the file atomically (write, then rename).
    pub fn save(&self) -> anyhow::Result<bool> {
        if !self.changed && self.path.exists() {
            return Ok(false);
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the state folder {}", dir.display()))?;
        }
        let mut partial = self.path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        std::fs::write(&partial, self.to_json()?)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, &self.path)
            .with_context(|| format!("cannot move the new state to {}", self.path.display()))?;
        Ok(true)
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Numbers compare as numbers; everything else as text, which orders ISO
/// dates, M3's YYYYMMDD and Mongoose's `yyyy-MM-dd HH:mm:ss` correctly.
fn greater(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x > y,
        _ => a > b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_the_maximum_and_saves_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s/p.json");
        let config = BTreeMap::from([
            (
                "since".to_string(),
                WatermarkConfig {
                    field: "RecordDate".into(),
                    initial: "2000-01-01 00:00:00".into(),
                },
            ),
            (
                "n".to_string(),
                WatermarkConfig {
                    field: "N".into(),
                    initial: "0".into(),
                },
            ),
        ]);
        let mut w = Watermarks::load(&path, &config).unwrap();
        assert_eq!(w.values()["since"], "2000-01-01 00:00:00");
        for r in [
            json!({"RecordDate": "2026-05-01 10:00:00", "N": 9}),
            json!({"RecordDate": "2026-04-01 00:00:00", "N": 10}),
        ] {
            w.observe(&r);
        }
        assert_eq!(w.values()["since"], "2026-05-01 10:00:00");
        assert_eq!(w.values()["n"], "10", "numbers compare as numbers");
        assert!(w.save().unwrap());
        let again = Watermarks::load(&path, &config).unwrap();
        assert_eq!(again.values(), w.values());
    }
}
