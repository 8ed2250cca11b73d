//! Local files: JSON Lines, CSV with a header row, or one JSON array. All
//! three are read incrementally, one page at a time.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use anyhow::Context as _;
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{PageReader, SourceContext, SourceKind};
use crate::config::{Check, FileFormat, default_delimiter};
use schemars::JsonSchema;
use serde::Deserialize;

/// Records per page when reading files.
pub const PAGE_RECORDS: usize = 1000;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Relative to the pipeline file.
    pub path: String,
    /// `jsonl` (default), `csv` (first row is the header) or `json` (one array).
    #[serde(default)]
    pub format: FileFormat,
    /// CSV field separator, one ASCII character.
    #[serde(default = "default_delimiter")]
    pub csv_delimiter: String,
    pub max_records: Option<u64>,
}

impl SourceKind for FileSourceConfig {
    fn literal_keys(&self) -> &'static [&'static str] {
        &["csv_delimiter"]
    }

    fn check(&self, check: &mut Check<'_, '_>) {
        check.delimiter(&self.csv_delimiter);
    }

    fn open(&self, cx: SourceContext<'_>) -> anyhow::Result<Box<dyn PageReader>> {
        let path = cx
            .vars
            .expand(&self.path)
            .map_err(|e| anyhow::anyhow!("source.path: {e}"))?;
        let mut reader = FileReader::open(
            &cx.base_dir.join(path),
            self.format,
            self.csv_delimiter
                .as_bytes()
                .first()
                .copied()
                .unwrap_or(b','),
        )?;
        if let Some(max) = self.max_records {
            reader = reader.limited(max);
        }
        Ok(Box::new(reader))
    }
}

impl PageReader for FileReader {
    fn next_page(&mut self) -> futures::future::BoxFuture<'_, anyhow::Result<Option<Vec<Value>>>> {
        Box::pin(std::future::ready(FileReader::next_page(self)))
    }

    fn next_text_page(&mut self) -> Option<anyhow::Result<Option<JsonLines>>> {
        let Format::Jsonl { path, lines, line } = &mut self.format else {
            return None;
        };
        if self.limit.reached() {
            return Some(Ok(None));
        }
        let mut page = JsonLines {
            path: path.clone(),
            text: String::with_capacity(256 * 1024),
            lines: Vec::with_capacity(PAGE_RECORDS),
        };
        let want = self.limit.remaining(PAGE_RECORDS);
        while page.lines.len() < want {
            let start = page.text.len();
            *line += 1;
            match lines.read_line(&mut page.text) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    return Some(Err(anyhow::Error::new(e)
                        .context(format!("{}:{line}: cannot read", path.display()))));
                }
            }
            if page.text[start..].trim().is_empty() {
                page.text.truncate(start);
                continue;
            }
            page.lines.push((start..page.text.len(), *line));
        }
        self.limit.taken(page.lines.len());
        Some(Ok((!page.lines.is_empty()).then_some(page)))
    }
}

/// A page of JSON Lines as text, parsed where it is transformed.
pub struct JsonLines {
    pub path: PathBuf,
    text: String,
    /// Where each record is in `text`, and its line number in the file.
    lines: Vec<(std::ops::Range<usize>, u64)>,
}

impl JsonLines {
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn line(&self, i: usize) -> &str {
        &self.text[self.lines[i].0.clone()]
    }

    pub fn line_number(&self, i: usize) -> u64 {
        self.lines[i].1
    }
}

pub struct FileReader {
    format: Format,
    limit: super::Limit,
}

enum Format {
    Jsonl {
        path: PathBuf,
        lines: BufReader<File>,
        line: u64,
    },
    Csv {
        path: PathBuf,
        reader: csv::Reader<File>,
        headers: Vec<String>,
    },
    /// A JSON array parsed on a blocking thread that hands over pages
    /// through a channel of capacity one, so at most two pages are in memory.
    JsonArray {
        pages: Receiver<Result<Vec<Value>, String>>,
        path: PathBuf,
    },
}

impl FileReader {
    pub fn open(path: &Path, format: FileFormat, delimiter: u8) -> anyhow::Result<FileReader> {
        let file = File::open(path).with_context(|| {
            format!("source.path: cannot open {}; check the path (relative paths start at the pipeline's folder)", path.display())
        })?;
        let format = match format {
            FileFormat::Jsonl => Format::Jsonl {
                path: path.to_owned(),
                lines: BufReader::with_capacity(256 * 1024, file),
                line: 0,
            },
            FileFormat::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .delimiter(delimiter)
                    .has_headers(true)
                    .from_reader(file);
                let headers = reader
                    .headers()
                    .with_context(|| format!("{}: cannot read the CSV header row", path.display()))?
                    .iter()
                    .map(str::to_owned)
                    .collect();
                Format::Csv {
                    path: path.to_owned(),
                    reader,
                    headers,
                }
            }
            FileFormat::Json => {
                let (tx, rx) = sync_channel(1);
                let display = path.display().to_string();
                std::thread::spawn(move || stream_array(file, tx, display));
                Format::JsonArray {
                    pages: rx,
                    path: path.to_owned(),
                }
            }
        };
        Ok(FileReader {
            format,
            limit: super::Limit::new(None),
        })
    }

    pub fn limited(mut self, max_records: u64) -> Self {
        self.limit = super::Limit::new(Some(max_records));
        self
    }

    pub fn next_page(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
        if self.limit.reached() {
            return Ok(None);
        }
        Ok(self.read_page()?.map(|page| self.limit.take(page)))
    }

    fn read_page(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
        match &mut self.format {
            Format::Jsonl { path, lines, line } => {
                let mut page = Vec::with_capacity(PAGE_RECORDS);
                let mut text = String::new();
                while page.len() < PAGE_RECORDS {
                    text.clear();
                    *line += 1;
                    let read = lines
                        .read_line(&mut text)
                        .with_context(|| format!("{}:{line}: cannot read", path.display()))?;
                    if read == 0 {
                        break;
                    }
                    if text.trim().is_empty() {
                        continue;
                    }
                    let record = serde_json::from_str(&text).with_context(|| {
                        format!("{}:{line}: not a JSON document; JSON Lines files hold one document per line", path.display())
                    })?;
                    page.push(record);
                }
                Ok((!page.is_empty()).then_some(page))
            }
            Format::Csv {
                path,
                reader,
                headers,
            } => {
                let mut page = Vec::with_capacity(PAGE_RECORDS);
                let mut row = csv::StringRecord::new();
                while page.len() < PAGE_RECORDS {
                    let more = reader.read_record(&mut row).with_context(|| {
                        format!("{}: CSV row {}", path.display(), reader.position().line())
                    })?;
                    if !more {
                        break;
                    }
                    let record: Map<String, Value> = headers
                        .iter()
                        .zip(row.iter())
                        .map(|(h, v)| (h.clone(), Value::String(v.to_owned())))
                        .collect();
                    page.push(Value::Object(record));
                }
                Ok((!page.is_empty()).then_some(page))
            }
            Format::JsonArray { pages, path } => match pages.recv() {
                Ok(Ok(page)) => Ok(Some(page)),
                Ok(Err(e)) => Err(anyhow::anyhow!("{}: {e}", path.display())),
                Err(_) => Ok(None),
            },
        }
    }
}

fn stream_array(file: File, tx: SyncSender<Result<Vec<Value>, String>>, path: String) {
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(256 * 1024, file));
    let outcome = PageSeed { tx: &tx }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| format!("not a JSON array of records ({e})"));
    if let Err(e) = outcome {
        // The reader may have stopped listening; nothing else to tell.
        let _ = tx.send(Err(e));
    }
    tracing::trace!(%path, "JSON array read");
}

struct PageSeed<'a> {
    tx: &'a SyncSender<Result<Vec<Value>, String>>,
}

impl<'de> DeserializeSeed<'de> for PageSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PageSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut page = Vec::with_capacity(PAGE_RECORDS);
        while let Some(record) = seq.next_element::<Value>()? {
            page.push(record);
            if page.len() == PAGE_RECORDS {
                let full = std::mem::replace(&mut page, Vec::with_capacity(PAGE_RECORDS));
                if self.tx.send(Ok(full)).is_err() {
                    // The run stopped; drain quietly.
                    return Ok(());
                }
            }
        }
        if !page.is_empty() {
            let _ = self.tx.send(Ok(page));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(path: &Path, format: FileFormat) -> anyhow::Result<Vec<Value>> {
        let mut r = FileReader::open(path, format, b',')?;
        let mut all = Vec::new();
        while let Some(page) = r.next_page()? {
            all.extend(page);
        }
        Ok(all)
    }

    #[test]
    fn reads_the_three_formats() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("a.jsonl");
        std::fs::write(&jsonl, "{\"a\":1}\n\n{\"a\":2}\n").unwrap();
        assert_eq!(read_all(&jsonl, FileFormat::Jsonl).unwrap().len(), 2);
        let csv = dir.path().join("a.csv");
        std::fs::write(&csv, "ITNO,ITDS\nA1,\"Bolt, M8\"\nA2,Nut\n").unwrap();
        let rows = read_all(&csv, FileFormat::Csv).unwrap();
        assert_eq!(rows[0]["ITDS"], "Bolt, M8");
        let json = dir.path().join("a.json");
        let many: Vec<Value> = (0..2500).map(|i| serde_json::json!({"i": i})).collect();
        std::fs::write(&json, serde_json::to_string(&many).unwrap()).unwrap();
        assert_eq!(read_all(&json, FileFormat::Json).unwrap(), many);
        std::fs::write(&json, "{\"not\": \"an array\"}").unwrap();
        assert!(
            read_all(&json, FileFormat::Json)
                .unwrap_err()
                .to_string()
                .contains("not a JSON array")
        );
        std::fs::write(&jsonl, "{\"a\":1}\n{oops\n").unwrap();
        assert!(
            read_all(&jsonl, FileFormat::Jsonl)
                .unwrap_err()
                .to_string()
                .contains("a.jsonl:2")
        );
    }
}
