//! Named state kept between runs: watermarks, the maximum of a source field,
//! saved only after a run in which no record failed, so that a failed
//! record is read again next time instead of falling behind the watermark.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{WatermarkConfig, WatermarkFrom};

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
    /// Each watermark's name, field and the records it follows.
    fields: Vec<(String, String, WatermarkFrom)>,
    /// What was saved, without the initial values: what `ionflow state` edits.
    saved: BTreeMap<String, String>,
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
        Ok(Self::with_saved(saved, path, config))
    }

    fn with_saved(
        saved: StateFile,
        path: &Path,
        config: &BTreeMap<String, WatermarkConfig>,
    ) -> Self {
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
        Watermarks {
            path: path.to_owned(),
            fields: config
                .iter()
                .map(|(n, w)| (n.clone(), w.field.clone(), w.from))
                .collect(),
            saved: saved.watermarks,
            current,
            changed: false,
        }
    }

    /// Every watermark at its `initial` value, whatever was saved: a
    /// `--full-refresh` run.
    pub fn initial(config: &BTreeMap<String, WatermarkConfig>) -> Self {
        Self::with_saved(StateFile::default(), Path::new(""), config)
    }

    /// The values saved before this run (without the initial ones).
    pub fn saved(&self) -> &BTreeMap<String, String> {
        &self.saved
    }

    /// Sets `name` to `value` (`ionflow state set`), as if a run had saved it.
    pub fn set(&mut self, name: &str, value: &str) {
        self.current.insert(name.to_owned(), value.to_owned());
        self.saved.insert(name.to_owned(), value.to_owned());
        self.changed = true;
    }

    /// Forgets the saved value of `name`, so the next run starts from its
    /// `initial` (`ionflow state reset`).
    pub fn reset(&mut self, name: &str, initial: &str) {
        self.current.insert(name.to_owned(), initial.to_owned());
        self.saved.remove(name);
        self.changed = true;
    }

    /// The JSON of what `ionflow state set|reset` leaves: only the values
    /// that were saved or set, so a reset one falls back to its `initial`.
    pub fn saved_json(&self) -> anyhow::Result<String> {
        let file = StateFile {
            watermarks: self.saved.clone(),
        };
        Ok(serde_json::to_string_pretty(&file)? + "\n")
    }

    /// The values for `${state.NAME}`.
    pub fn values(&self) -> BTreeMap<String, String> {
        self.current.clone()
    }

    /// Whether a watermark follows the transforms' outputs, so that a run
    /// must see them as records.
    pub fn reads_outputs(&self) -> bool {
        self.fields
            .iter()
            .any(|(_, _, from)| *from == WatermarkFrom::Output)
    }

    /// Raises each watermark that follows `from` to the record's field when
    /// it is larger.
    pub fn observe(&mut self, from: WatermarkFrom, record: &Value) {
        for (name, field, follows) in &self.fields {
            if *follows != from {
                continue;
            }
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
        self.write(&self.to_json()?)?;
        Ok(true)
    }

    /// Writes `json` to the state file atomically (write, then rename).
    pub fn write(&self, json: &str) -> anyhow::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the state folder {}", dir.display()))?;
        }
        let mut partial = self.path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        std::fs::write(&partial, json)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        std::fs::rename(&partial, &self.path)
            .with_context(|| format!("cannot move the new state to {}", self.path.display()))?;
        Ok(())
    }
}

/// One watermark as `ionflow state show` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct WatermarkView {
    pub name: String,
    pub field: String,
    pub from: &'static str,
    pub initial: String,
    /// The saved value; `None` when the next run starts from `initial`.
    pub saved: Option<String>,
}

/// `ionflow state`: read and change the saved watermarks of a pipeline,
/// wherever they are kept (its state file, or the shared store).
impl super::Pipeline {
    /// Where the watermarks are kept, for messages.
    pub fn state_location(&self) -> Option<String> {
        match (&self.shared_state, self.state_path()) {
            (_, None) => None,
            (Some(storage), Some(_)) => {
                Some(format!("{} (pipeline {})", storage.describe(), self.name))
            }
            (None, Some(path)) => Some(path.display().to_string()),
        }
    }

    pub(super) async fn stored_watermarks(&self) -> anyhow::Result<Watermarks> {
        let (Some(state), Some(path)) = (&self.config.state, self.state_path()) else {
            anyhow::bail!(
                "{} keeps no state: add [state.watermarks.NAME] with `field` and `initial`",
                self.file.display()
            );
        };
        match &self.shared_state {
            Some(storage) => {
                let saved = storage.load_state(&self.name).await?;
                let origin = PathBuf::from(format!("{}#{}", storage.describe(), self.name));
                Watermarks::from_saved(saved.as_deref(), &origin, &state.watermarks)
            }
            None => Watermarks::load(&path, &state.watermarks),
        }
    }

    async fn store_watermarks(&self, w: &Watermarks) -> anyhow::Result<()> {
        let json = w.saved_json()?;
        match &self.shared_state {
            Some(storage) => Ok(storage.save_state(&self.name, &json).await?),
            None => w.write(&json),
        }
    }

    /// Every watermark with its saved value.
    pub async fn watermarks(&self) -> anyhow::Result<Vec<WatermarkView>> {
        let w = self.stored_watermarks().await?;
        let config = self.config.state.as_ref().map(|s| &s.watermarks);
        Ok(config
            .into_iter()
            .flatten()
            .map(|(name, c)| WatermarkView {
                name: name.clone(),
                field: c.field.clone(),
                from: match c.from {
                    WatermarkFrom::Source => "source",
                    WatermarkFrom::Output => "output",
                },
                initial: c.initial.clone(),
                saved: w.saved().get(name).cloned(),
            })
            .collect())
    }

    fn watermark_named(&self, name: &str) -> anyhow::Result<&WatermarkConfig> {
        let config = self.config.state.as_ref().map(|s| &s.watermarks);
        config.and_then(|w| w.get(name)).ok_or_else(|| {
            let known: Vec<&str> = config
                .into_iter()
                .flatten()
                .map(|(n, _)| n.as_str())
                .collect();
            anyhow::Error::new(crate::config::ConfigError::new(
                &self.file,
                format!(
                    "has no watermark `{name}`; it has: {}",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ))
        })
    }

    /// Saves `value` for watermark `name`: the next run starts there (a backfill).
    pub async fn set_watermark(&self, name: &str, value: &str) -> anyhow::Result<()> {
        self.watermark_named(name)?;
        let mut w = self.stored_watermarks().await?;
        w.set(name, value);
        self.store_watermarks(&w).await
    }

    /// Forgets the saved value of `name`, or of every watermark: the next
    /// run starts from `initial`.
    pub async fn reset_watermarks(&self, name: Option<&str>) -> anyhow::Result<()> {
        let mut w = self.stored_watermarks().await?;
        let config = self.config.state.as_ref().map(|s| &s.watermarks);
        match name {
            Some(name) => {
                let initial = self.watermark_named(name)?.initial.clone();
                w.reset(name, &initial);
            }
            None => {
                for (name, c) in config.into_iter().flatten() {
                    w.reset(name, &c.initial);
                }
            }
        }
        self.store_watermarks(&w).await
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
                    from: WatermarkFrom::Source,
                },
            ),
            (
                "n".to_string(),
                WatermarkConfig {
                    field: "N".into(),
                    initial: "0".into(),
                    from: WatermarkFrom::Source,
                },
            ),
            (
                "out".to_string(),
                WatermarkConfig {
                    field: "n".into(),
                    initial: "0".into(),
                    from: WatermarkFrom::Output,
                },
            ),
        ]);
        let mut w = Watermarks::load(&path, &config).unwrap();
        assert_eq!(w.values()["since"], "2000-01-01 00:00:00");
        for r in [
            json!({"RecordDate": "2026-05-01 10:00:00", "N": 9}),
            json!({"RecordDate": "2026-04-01 00:00:00", "N": 10}),
        ] {
            w.observe(WatermarkFrom::Source, &r);
        }
        w.observe(WatermarkFrom::Output, &json!({"n": 3, "N": 99}));
        assert_eq!(w.values()["since"], "2026-05-01 10:00:00");
        assert_eq!(w.values()["n"], "10", "numbers compare as numbers");
        assert_eq!(
            w.values()["out"],
            "3",
            "an output watermark follows output records only"
        );
        assert!(w.save().unwrap());
        let mut again = Watermarks::load(&path, &config).unwrap();
        assert_eq!(again.values(), w.values());

        // `ionflow state reset since` and `set n 5`: only saved values stay.
        again.reset("since", "2000-01-01 00:00:00");
        again.set("n", "5");
        again.write(&again.saved_json().unwrap()).unwrap();
        let after = Watermarks::load(&path, &config).unwrap();
        assert_eq!(after.values()["since"], "2000-01-01 00:00:00");
        assert_eq!(after.values()["n"], "5");
        assert!(!after.saved().contains_key("since"));
        assert_eq!(Watermarks::initial(&config).values()["n"], "0");
    }
}
