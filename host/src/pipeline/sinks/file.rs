//! Files, written under a temporary name and renamed into place when the
//! run succeeds, so a reader never mistakes half a run for a whole one.
//! JSON Lines write each record as it is; CSV writes a header row and one
//! row per record.
//!
//! The temporary name, `PATH.ionflow-PID.partial`, names the writing
//! process, and the writer holds an OS lock on it. A run killed midway
//! (`kill -9`) cannot remove its file; the next file sink writing into the
//! same folder removes the files of that shape whose writer is gone.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{
    Finished, Outcome, Part, PlanContext, RecordError, Scope, SinkContext, SinkKind, SinkPlan,
    SinkWriter,
};
use crate::config::{Check, FileFormat, Variables, default_delimiter};
use ionflow_runtime::private_files;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Relative to the pipeline file; a template rendered once when the run
    /// starts (`out/items-{{ vars.company }}.jsonl`, `{{ state.since }}`);
    /// may use `${env.NAME}`.
    pub path: String,
    /// `jsonl` (default) or `csv`.
    #[serde(default)]
    pub format: FileFormat,
    /// CSV columns in order; the first record's keys when absent.
    pub csv_columns: Option<Vec<String>>,
    #[serde(default = "default_delimiter")]
    pub csv_delimiter: String,
}

impl SinkKind for FileSinkConfig {
    fn literal_keys(&self) -> &'static [&'static str] {
        &["csv_columns", "csv_delimiter"]
    }

    fn check(&self, check: &mut Check<'_, '_>) {
        if self.format == FileFormat::Json {
            check.add(
                Some("format"),
                "file sinks write `jsonl` or `csv`; a JSON array cannot be streamed, use jsonl",
            );
        }
        if self.csv_columns.is_some() && self.format != FileFormat::Csv {
            check.add(
                Some("csv_columns"),
                "only applies to format = \"csv\"; remove it or set the format",
            );
        }
        check.delimiter(&self.csv_delimiter);
        if uses_record(&self.path) {
            check.add(
                Some("path"),
                "the file path is rendered once per run and sees vars and state, not record; \
                 split records into files with one pipeline per file",
            );
        }
    }

    fn plan(&self, cx: &mut PlanContext<'_>) -> Box<dyn SinkPlan> {
        Box::new(FilePlan {
            path: cx.part("path", &self.path),
            config: self.clone(),
        })
    }
}

/// Whether a `{{ }}` or `{% %}` block of `template` names `record`.
fn uses_record(template: &str) -> bool {
    template
        .split("{{")
        .skip(1)
        .chain(template.split("{%").skip(1))
        .filter_map(|block| block.split(['}', '%']).next())
        .any(|code| {
            code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .any(|word| word == "record")
        })
}

/// A file sink whose path may be a template, rendered when the run starts.
#[derive(Debug, Clone)]
struct FilePlan {
    config: FileSinkConfig,
    path: Part,
}

impl SinkPlan for FilePlan {
    fn expand(&self, vars: &Variables) -> Result<Box<dyn SinkPlan>, String> {
        Ok(Box::new(FilePlan {
            config: self.config.clone(),
            path: self.path.expand(vars).map_err(|e| format!("path: {e}"))?,
        }))
    }

    fn render(&self, record: &Value, scope: &Scope) -> Result<Value, RecordError> {
        self.config.render(record, scope)
    }

    fn open(&self, cx: &SinkContext<'_>) -> anyhow::Result<Box<dyn SinkWriter>> {
        let path = self
            .path
            .render(&Value::Null, &cx.scope)
            .map_err(|e| anyhow::anyhow!("sinks[{}].path: {e}", cx.index))?;
        if path.trim().is_empty() {
            anyhow::bail!(
                "sinks[{}].path: the template rendered an empty path",
                cx.index
            );
        }
        self.config.open_at(&cx.base_dir.join(path))
    }
}

impl FileSinkConfig {
    fn render(&self, record: &Value, _scope: &Scope) -> Result<Value, RecordError> {
        if self.format != FileFormat::Csv {
            return Ok(record.clone());
        }
        let object = record.as_object().ok_or("a CSV row needs a JSON object")?;
        let names: Vec<&String> = match &self.csv_columns {
            Some(c) => c.iter().collect(),
            None => object.keys().collect(),
        };
        Ok(Value::Object(
            names
                .into_iter()
                .map(|c| {
                    (
                        c.clone(),
                        Value::String(object.get(c).map(cell).unwrap_or_default()),
                    )
                })
                .collect(),
        ))
    }

    fn open_at(&self, path: &Path) -> anyhow::Result<Box<dyn SinkWriter>> {
        let delimiter = self
            .csv_delimiter
            .as_bytes()
            .first()
            .copied()
            .unwrap_or(b',');
        let layout = match self.format {
            FileFormat::Csv => Layout::csv(self.csv_columns.clone(), delimiter),
            _ => Layout::Jsonl,
        };
        Ok(Box::new(FileWriter::create(path, layout)?))
    }
}

impl SinkWriter for FileWriter {
    fn write<'a>(
        &'a mut self,
        record: &'a Value,
        out: &'a mut Outcome,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        let written = match FileWriter::write(self, record) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refused)) => {
                out.reject(record, refused);
                Ok(())
            }
            Err(e) => Err(e),
        };
        Box::pin(std::future::ready(written))
    }

    fn takes_json_lines(&self) -> bool {
        matches!(self.layout, Layout::Jsonl)
    }

    fn write_json_lines(&mut self, lines: &[u8], _count: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.takes_json_lines(),
            "a CSV file does not take JSON text"
        );
        self.out.write_all(lines)?;
        Ok(())
    }

    fn finish<'a>(
        self: Box<Self>,
        _out: &'a mut Outcome,
    ) -> BoxFuture<'a, anyhow::Result<Finished>> {
        let finished = FileWriter::finish(*self).map(|path| Finished {
            output: Some(path),
            note: None,
        });
        Box::pin(std::future::ready(finished))
    }
}

pub enum Layout {
    Jsonl,
    Csv {
        /// Fixed by the pipeline, or taken from the first record.
        columns: Option<Vec<String>>,
        /// Whether the columns came from the first record (then a later
        /// record with another field is an error, not a silent drop).
        inferred: bool,
        delimiter: u8,
        header_written: bool,
    },
}

pub struct FileWriter {
    path: PathBuf,
    partial: PathBuf,
    out: BufWriter<File>,
    layout: Layout,
    finished: bool,
}

/// A run that stopped early leaves no half-written `.partial` file behind.
impl Drop for FileWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

impl Layout {
    pub fn csv(columns: Option<Vec<String>>, delimiter: u8) -> Layout {
        Layout::Csv {
            inferred: columns.is_none(),
            columns,
            delimiter,
            header_written: false,
        }
    }
}

impl FileWriter {
    pub fn create(path: &Path, layout: Layout) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("could not create the folder {}", dir.display()))?;
        }
        let folder = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        remove_abandoned_partials(folder);
        let mut partial = path.as_os_str().to_owned();
        partial.push(format!(
            "{PARTIAL_MARK}{}{PARTIAL_SUFFIX}",
            std::process::id()
        ));
        let partial = PathBuf::from(partial);
        let file = File::create(&partial)
            .with_context(|| format!("could not create {}", partial.display()))?;
        // Held until the file is renamed or removed: a cleaner in another
        // process (or on another machine sharing the folder) sees it taken.
        // A file system without locks still has the process id and the age.
        let _ = file.try_lock();
        Ok(FileWriter {
            path: path.to_owned(),
            partial,
            out: BufWriter::with_capacity(256 * 1024, file),
            layout,
            finished: false,
        })
    }

    /// Writes one record; `Err(String)` rejects this record only.
    pub fn write(&mut self, record: &Value) -> anyhow::Result<Result<(), String>> {
        match &mut self.layout {
            Layout::Jsonl => {
                serde_json::to_writer(&mut self.out, record)?;
                self.out.write_all(b"\n")?;
                Ok(Ok(()))
            }
            Layout::Csv {
                columns,
                inferred,
                delimiter,
                header_written,
            } => {
                let Some(object) = record.as_object() else {
                    return Ok(Err(
                        "a CSV row needs a JSON object; reshape the record with a jq transform"
                            .into(),
                    ));
                };
                let columns = columns.get_or_insert_with(|| object.keys().cloned().collect());
                if *inferred && let Some(extra) = object.keys().find(|k| !columns.contains(k)) {
                    return Ok(Err(format!(
                        "field `{extra}` is not a column of this CSV file (the columns come from the \
                         first record); list the columns in csv_columns"
                    )));
                }
                if !*header_written {
                    csv_row(&mut self.out, *delimiter, columns.iter())?;
                    *header_written = true;
                }
                csv_row(
                    &mut self.out,
                    *delimiter,
                    columns
                        .iter()
                        .map(|c| object.get(c).map(cell).unwrap_or_default()),
                )?;
                Ok(Ok(()))
            }
        }
    }

    /// With fixed columns an empty run still writes the header row.
    fn write_pending_header(&mut self) -> anyhow::Result<()> {
        if let Layout::Csv {
            columns: Some(columns),
            delimiter,
            header_written: header_written @ false,
            ..
        } = &mut self.layout
        {
            csv_row(&mut self.out, *delimiter, columns.iter())?;
            *header_written = true;
        }
        Ok(())
    }

    pub fn finish(mut self) -> anyhow::Result<PathBuf> {
        self.write_pending_header()?;
        self.out
            .flush()
            .with_context(|| format!("could not write {}", self.partial.display()))?;
        self.out.get_ref().sync_all()?;
        std::fs::rename(&self.partial, &self.path).with_context(|| {
            format!(
                "could not move {} to {}",
                self.partial.display(),
                self.path.display()
            )
        })?;
        self.finished = true;
        Ok(self.path.clone())
    }
}

const PARTIAL_MARK: &str = ".ionflow-";
const PARTIAL_SUFFIX: &str = ".partial";

/// The writer's process id in a name `NAME.ionflow-PID.partial`.
fn partial_writer(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(PARTIAL_SUFFIX)?;
    let (_, pid) = stem.rsplit_once(PARTIAL_MARK)?;
    pid.parse().ok()
}

/// Removes the partial files in `folder` that no live writer holds: not
/// locked by anyone, and written by a process that is gone (or untouched
/// for longer than any write takes). Files of other programs, whatever
/// their names, are never touched.
fn remove_abandoned_partials(folder: &Path) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(partial_writer) else {
            continue;
        };
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let Ok(meta) = file.metadata() else {
            continue;
        };
        if !meta.is_file()
            || file.try_lock().is_err()
            || !private_files::abandoned(Some(pid), meta.modified().ok())
        {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            tracing::info!(path = %path.display(), "removed the partial output of a run that was killed");
        }
    }
}

/// One CSV row, quoted as needed, onto `out`.
fn csv_row<I, T>(out: &mut BufWriter<File>, delimiter: u8, cells: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    let mut row = csv::WriterBuilder::new()
        .delimiter(delimiter)
        .from_writer(out);
    row.write_record(cells)?;
    row.flush()?;
    Ok(())
}

/// A CSV cell: text as it is, other scalars as JSON, nested values as JSON text.
pub fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn partials_of_gone_writers_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let own = format!("a.jsonl.ionflow-{}.partial", std::process::id());
        let names = [
            "b.jsonl.ionflow-2147483632.partial",
            own.as_str(),
            "c.2024.partial",
            "d.jsonl.partial",
            "e.jsonl.ionflow-x.partial",
        ];
        for name in names {
            std::fs::write(dir.path().join(name), "{}\n").unwrap();
        }
        // A dead process id, but the file is locked: a writer elsewhere.
        let held = dir.path().join("f.jsonl.ionflow-2147483633.partial");
        let lock = File::create(&held).unwrap();
        lock.lock().unwrap();
        let w = FileWriter::create(&dir.path().join("g.jsonl"), Layout::Jsonl).unwrap();
        assert!(
            !dir.path().join(names[0]).exists(),
            "a dead writer's partial goes"
        );
        for kept in &names[1..] {
            assert!(dir.path().join(kept).exists(), "{kept} is kept");
        }
        assert!(held.exists(), "a locked partial is kept");
        assert!(
            w.partial
                .to_str()
                .unwrap()
                .ends_with(&format!(".ionflow-{}.partial", std::process::id()))
        );
        drop(w);
        assert_eq!(partial_writer("x.ionflow-12.partial"), Some(12));
        assert_eq!(partial_writer("x.partial"), None);
    }

    #[test]
    fn a_path_template_may_not_read_records() {
        assert!(uses_record("out/{{ record.x }}.jsonl"));
        assert!(uses_record("out/{% if record %}a{% endif %}.jsonl"));
        assert!(!uses_record("out/records-{{ vars.x }}.jsonl"));
        assert!(!uses_record("out/record.jsonl"));
    }

    #[test]
    fn csv_has_a_header_and_rejects_strays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.csv");
        let mut w = FileWriter::create(&path, Layout::csv(None, b',')).unwrap();
        w.write(&json!({"a": "x, y", "b": 1})).unwrap().unwrap();
        w.write(&json!({"a": null, "b": true})).unwrap().unwrap();
        assert!(
            w.write(&json!({"c": 1}))
                .unwrap()
                .unwrap_err()
                .contains("`c`")
        );
        assert!(w.write(&json!([1])).unwrap().is_err());
        w.finish().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "a,b\n\"x, y\",1\n,true\n"
        );

        let empty = dir.path().join("e.csv");
        let w = FileWriter::create(&empty, Layout::csv(Some(vec!["x".into()]), b';')).unwrap();
        w.finish().unwrap();
        assert_eq!(std::fs::read_to_string(&empty).unwrap(), "x\n");
    }
}
