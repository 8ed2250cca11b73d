//! Where records come from: one file per source kind, each holding its
//! config struct, its checks, its reader and its tests. A kind is
//! registered by one line in `source_kinds!` below, which generates the
//! `SourceConfig` enum (serde and JSON Schema), the probe that places type
//! errors in the file, and the dispatch; a kind left out of a match cannot
//! happen, because there is no match to forget.
//!
//! Each source yields pages, so memory holds one page at a time however
//! large the data set.

mod compass;
mod data_lake;
mod file;
mod gateway;
mod http;
mod ido;
mod m3_list;
mod offset;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::retry::RunStats;
use crate::config::{Check, Variables};
use ionflow_runtime::Connection;

pub use file::JsonLines;

/// What a source kind's config struct tells the pipeline.
pub trait SourceKind: Send + Sync {
    /// Checks what serde cannot (references, ranges, exclusive keys).
    fn check(&self, check: &mut Check<'_, '_>);

    /// The connection it reads through, if it reads through the gateway.
    fn connection(&self) -> Option<&str> {
        None
    }

    /// Requests it keeps in flight on its connection (pages read ahead).
    fn concurrency(&self) -> u32 {
        1
    }

    /// A jq filter of its own, compiled (and checked) when the pipeline loads.
    fn records_jq(&self) -> Option<&str> {
        None
    }

    /// Keys whose values are used as written: `validate` refuses `${...}`
    /// in them, as nothing would expand it.
    fn literal_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// Opens the reader for one run.
    fn open(&self, cx: SourceContext<'_>) -> anyhow::Result<Box<dyn PageReader>>;
}

/// An open source: pages of records until it is exhausted.
pub trait PageReader: Send {
    /// The next page of records; `None` when the source is exhausted.
    fn next_page(&mut self) -> BoxFuture<'_, anyhow::Result<Option<Vec<Value>>>>;

    /// The next page as JSON Lines text, for a reader that has it (a JSON
    /// Lines file); `None` when it has not, and the run calls `next_page`.
    fn next_text_page(&mut self) -> Option<anyhow::Result<Option<JsonLines>>> {
        None
    }
}

/// What a source needs from the run.
pub struct SourceContext<'a> {
    pub connections: &'a BTreeMap<String, Arc<Connection>>,
    pub vars: &'a Variables,
    pub base_dir: &'a Path,
    pub http: &'a crate::pipeline::http::HttpClient,
    pub stats: Arc<RunStats>,
}

impl SourceContext<'_> {
    /// The open connection called `name`.
    pub fn connection(&self, name: &str) -> anyhow::Result<Arc<Connection>> {
        self.connections
            .get(name)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("source.connection: `{name}` is not open"))
    }
}

/// Every source kind with its one-line description, from the registry:
/// what `ionflow list` prints.
pub fn kinds() -> &'static [(&'static str, &'static str)] {
    KINDS
}

/// The registry: `Variant(ConfigStruct) = "kind"`, with the doc line that
/// the JSON Schema and `ionflow schema` show for the kind.
macro_rules! source_kinds {
    ($( $(#[doc = $doc:literal])* $variant:ident($config:ty) = $kind:literal, )*) => {
        /// `[source]`: the one source of a pipeline, chosen by `kind`.
        #[derive(Debug, Clone, Deserialize, JsonSchema)]
        #[serde(tag = "kind", deny_unknown_fields)]
        pub enum SourceConfig {
            $( $(#[doc = $doc])* #[serde(rename = $kind)] $variant($config), )*
        }

        const KINDS: &[(&str, &str)] = &[ $( ($kind, concat!($($doc),*)), )* ];

        impl SourceConfig {
            /// The kind's own behaviour.
            pub fn spec(&self) -> &dyn SourceKind {
                match self {
                    $( SourceConfig::$variant(config) => config, )*
                }
            }

            /// The `kind` name as written in the file.
            pub fn kind_name(&self) -> &'static str {
                match self {
                    $( SourceConfig::$variant(_) => $kind, )*
                }
            }

            /// Parses a `[source]` table as the struct of `kind`, for the
            /// position of a type error; `None` for an unknown kind.
            pub fn probe(kind: &str, table: &str) -> Option<toml::de::Error> {
                match kind {
                    $( $kind => toml::from_str::<$config>(table).err(), )*
                    _ => None,
                }
            }
        }
    };
}

source_kinds! {
    /// An M3 list transaction paged by key.
    M3List(m3_list::M3ListSourceConfig) = "m3_list",
    /// A Mongoose IDO collection (SyteLine / CSI), paged by bookmark.
    Ido(ido::IdoSourceConfig) = "ido",
    /// Any gateway path returning JSON, optionally paged by offset and limit.
    Gateway(gateway::GatewaySourceConfig) = "gateway",
    /// A Data Fabric Compass SQL query: submit, poll, page the result.
    Compass(compass::CompassSourceConfig) = "compass",
    /// Data Lake payload metadata (`payloads/list`), paged.
    DataLake(data_lake::DataLakeSourceConfig) = "data_lake",
    /// A plain HTTP(S) endpoint returning JSON, optionally paged by offset and limit.
    Http(http::HttpSourceConfig) = "http",
    /// A local file: JSON Lines, CSV with a header, or a JSON array.
    File(file::FileSourceConfig) = "file",
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

    /// How many of `wanted` records may still be handed out.
    pub fn remaining(&self, wanted: usize) -> usize {
        self.remaining.map_or(wanted, |r| {
            usize::try_from(r).unwrap_or(usize::MAX).min(wanted)
        })
    }

    /// Counts `n` records handed out.
    pub fn taken(&mut self, n: usize) {
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.saturating_sub(n as u64);
        }
    }

    pub fn take(&mut self, mut records: Vec<Value>) -> Vec<Value> {
        if let Some(remaining) = &mut self.remaining {
            records.truncate(usize::try_from(*remaining).unwrap_or(usize::MAX));
            *remaining -= records.len() as u64;
        }
        records
    }
}
