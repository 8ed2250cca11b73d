//! Where records come from. Each source yields pages, so memory holds one
//! page at a time however large the data set.

mod compass;
mod data_lake;
mod file;
mod ido;
mod m3_list;
mod offset;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::config::SourceConfig;
use super::interpolate::Variables;
use super::retry::RunStats;
use crate::runtime::Connection;

pub enum Source {
    M3List(m3_list::M3ListReader),
    Ido(ido::IdoReader),
    Offset(offset::OffsetReader),
    Compass(compass::CompassReader),
    DataLake(data_lake::DataLakeReader),
    File(file::FileReader),
}

/// What a source needs from the run.
pub struct SourceContext<'a> {
    pub connections: &'a BTreeMap<String, Arc<Connection>>,
    pub vars: &'a Variables,
    pub base_dir: &'a Path,
    pub http: &'a reqwest::Client,
    pub stats: Arc<RunStats>,
}

impl Source {
    pub fn new(config: &SourceConfig, cx: SourceContext<'_>) -> anyhow::Result<Source> {
        let connection = |name: &str| {
            cx.connections
                .get(name)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("source.connection: `{name}` is not open"))
        };
        Ok(match config {
            SourceConfig::M3List(c) => Source::M3List(m3_list::M3ListReader::new(
                c,
                connection(&c.connection)?,
                cx.vars,
                cx.stats,
            )?),
            SourceConfig::Ido(c) => Source::Ido(ido::IdoReader::new(
                c,
                connection(&c.connection)?,
                cx.vars,
                cx.stats,
            )?),
            SourceConfig::Gateway(c) => Source::Offset(offset::OffsetReader::gateway(
                c,
                connection(&c.connection)?,
                cx.vars,
                cx.stats,
            )?),
            SourceConfig::Http(c) => Source::Offset(offset::OffsetReader::http(
                c,
                cx.http.clone(),
                cx.vars,
                cx.stats,
            )?),
            SourceConfig::Compass(c) => Source::Compass(compass::CompassReader::new(
                c,
                connection(&c.connection)?,
                cx.vars,
                cx.stats,
            )?),
            SourceConfig::DataLake(c) => Source::DataLake(data_lake::DataLakeReader::new(
                c,
                connection(&c.connection)?,
                cx.vars,
                cx.stats,
            )?),
            SourceConfig::File(c) => {
                let path = cx
                    .vars
                    .expand(&c.path)
                    .map_err(|e| anyhow::anyhow!("source.path: {e}"))?;
                let mut reader = file::FileReader::open(
                    &cx.base_dir.join(path),
                    c.format,
                    c.csv_delimiter.as_bytes().first().copied().unwrap_or(b','),
                )?;
                if let Some(max) = c.max_records {
                    reader = reader.limited(max);
                }
                Source::File(reader)
            }
        })
    }

    /// The next page of records; `None` when the source is exhausted.
    pub async fn next_page(&mut self) -> anyhow::Result<Option<Vec<Value>>> {
        match self {
            Source::M3List(reader) => reader.next_page().await,
            Source::Ido(reader) => reader.next_page().await,
            Source::Offset(reader) => reader.next_page().await,
            Source::Compass(reader) => reader.next_page().await,
            Source::DataLake(reader) => reader.next_page().await,
            Source::File(reader) => reader.next_page(),
        }
    }
}

/// `max_records`: how many records a source may still hand out.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    remaining: Option<u64>,
}

impl Limit {
    pub fn new(max: Option<u64>) -> Self {
        Limit { remaining: max }
    }

    pub fn reached(&self) -> bool {
        self.remaining == Some(0)
    }

    pub fn take(&mut self, mut records: Vec<Value>) -> Vec<Value> {
        if let Some(remaining) = &mut self.remaining {
            records.truncate(usize::try_from(*remaining).unwrap_or(usize::MAX));
            *remaining -= records.len() as u64;
        }
        records
    }
}
