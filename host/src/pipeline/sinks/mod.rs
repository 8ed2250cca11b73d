//! Where records go: one file per sink kind, each holding its config
//! struct, its checks, its plan and writer, and its tests. A kind is
//! registered by one line in `sink_kinds!` below, which generates the
//! `SinkConfig` enum (serde and JSON Schema), the probe that places type
//! errors in the file, and the dispatch.
//!
//! A sink is planned when the pipeline loads (templates compiled, nothing
//! opened), expanded with the run's `${...}` values, and opened when it
//! runs. Sinks that send one request per record share `request.rs`; what
//! Infor products expect and answer is in `crate::products`.

mod count;
mod file;
mod gateway;
mod http;
mod ido_update;
mod in_flight;
mod ion_message;
mod m3;
mod m3_bulk;
mod request;
mod stdout;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::retry::RunStats;
use super::template::{RenderContext, Templates};
use crate::config::{Check, Variables};
use crate::products::ProductError;
use ionflow_runtime::Connection;

pub use request::Part;

/// Every sink kind with its one-line description, from the registry: what
/// `ionflow list` prints.
pub fn kinds() -> &'static [(&'static str, &'static str)] {
    KINDS
}

/// What a sink kind's config struct tells the pipeline.
pub trait SinkKind: Send + Sync {
    /// Checks what serde cannot (references, ranges, exclusive keys).
    fn check(&self, check: &mut Check<'_, '_>);

    /// How it spreads requests, for sinks that send one per record.
    fn delivery(&self) -> Option<Delivery<'_>> {
        None
    }

    /// Keys whose values are used as written: `validate` refuses `${...}`
    /// in them, as nothing would expand it.
    fn literal_keys(&self) -> &'static [&'static str] {
        &[]
    }

    /// Compiles its templates into the plan used for every run.
    fn plan(&self, cx: &mut PlanContext<'_>) -> Box<dyn SinkPlan>;
}

/// A sink ready to run: templates compiled, nothing opened.
pub trait SinkPlan: Send + Sync {
    /// The plan with `${...}` expanded, for one run with these variables.
    fn expand(&self, vars: &Variables) -> Result<Box<dyn SinkPlan>, String>;

    /// What the sink would write or send for one record, without doing it
    /// (`ionflow test`).
    fn render(&self, record: &Value, scope: &Scope) -> Result<Value, RecordError>;

    /// Opens the sink for one run.
    fn open(&self, cx: &SinkContext<'_>) -> anyhow::Result<Box<dyn SinkWriter>>;
}

/// An open sink.
pub trait SinkWriter: Send {
    /// Writes one record. Refusals land in `out`; `Err` stops the run.
    fn write<'a>(
        &'a mut self,
        record: &'a Value,
        out: &'a mut Outcome,
    ) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Whether [`Self::write_json_lines`] may stand for `write`: a sink that
    /// writes records as JSON Lines anyway.
    fn takes_json_lines(&self) -> bool {
        false
    }

    /// Writes `count` records given as JSON Lines text, each line what
    /// `serde_json::to_writer` makes of the record.
    fn write_json_lines(&mut self, _lines: &[u8], _count: usize) -> anyhow::Result<()> {
        anyhow::bail!("this sink does not take JSON text")
    }

    /// Waits for the requests in flight, so that every record written so
    /// far has its outcome; called before a run stops at a page boundary.
    fn settle<'a>(&'a mut self, _out: &'a mut Outcome) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Flushes what is buffered and makes files visible.
    fn finish<'a>(self: Box<Self>, out: &'a mut Outcome)
    -> BoxFuture<'a, anyhow::Result<Finished>>;
}

/// What a sink reports when it is done.
#[derive(Debug, Default)]
pub struct Finished {
    /// The file written, if the sink writes one.
    pub output: Option<PathBuf>,
    /// A line for the run's log (the `count` sink's number).
    pub note: Option<String>,
}

/// How a sink that sends one request per record spreads them out.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub connection: Option<&'a str>,
    pub concurrency: u32,
    pub order_key: Option<&'a str>,
}

/// The registry: `Variant(ConfigStruct) = "kind"`, with the doc line that
/// the JSON Schema and `ionflow schema` show for the kind.
macro_rules! sink_kinds {
    ($( $(#[doc = $doc:literal])* $variant:ident($config:ty) = $kind:literal, )*) => {
        /// `[[sinks]]`: where records go, chosen by `kind`.
        #[derive(Debug, Clone, Deserialize, JsonSchema)]
        #[serde(tag = "kind", deny_unknown_fields)]
        pub enum SinkConfig {
            $( $(#[doc = $doc])* #[serde(rename = $kind)] $variant($config), )*
        }

        const KINDS: &[(&str, &str)] = &[ $( ($kind, concat!($($doc),*)), )* ];

        impl SinkConfig {
            /// The kind's own behaviour.
            pub fn spec(&self) -> &dyn SinkKind {
                match self {
                    $( SinkConfig::$variant(config) => config, )*
                }
            }

            /// The `kind` name as written in the file.
            pub fn kind_name(&self) -> &'static str {
                match self {
                    $( SinkConfig::$variant(_) => $kind, )*
                }
            }

            /// Parses a `[[sinks]]` table as the struct of `kind`, for the
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

sink_kinds! {
    /// Records written to a file: JSON Lines or CSV with a header.
    File(file::FileSinkConfig) = "file",
    /// Records written to standard output as JSON Lines.
    Stdout(stdout::StdoutSinkConfig) = "stdout",
    /// One HTTP(S) request per record.
    Http(http::HttpSinkConfig) = "http",
    /// One M3 MI transaction per record.
    M3(m3::M3SinkConfig) = "m3",
    /// M3 transactions in bulk requests (`POST .../v2/execute`).
    M3Bulk(m3_bulk::M3BulkSinkConfig) = "m3_bulk",
    /// Mongoose IDO changes (`ido/update/{ido}`), one per record.
    IdoUpdate(ido_update::IdoUpdateSinkConfig) = "ido_update",
    /// One ION message per record.
    IonMessage(ion_message::IonMessageSinkConfig) = "ion_message",
    /// One request per record on any gateway path.
    Gateway(gateway::GatewaySinkConfig) = "gateway",
    /// Records counted and discarded: for trying a source and its transforms.
    Count(count::CountSinkConfig) = "count",
}

/// Compiling one sink's templates: problems come back as `(key, message)`
/// so that `validate` can place them in the file.
pub struct PlanContext<'a> {
    /// `sinks[N]`, the prefix of this sink's template names.
    pub prefix: String,
    pub templates: &'a mut Templates,
    pub errors: Vec<(String, String)>,
}

impl PlanContext<'_> {
    /// `source` as a template named `{prefix}.{key}`, or fixed text when
    /// it has no template syntax.
    pub fn part(&mut self, key: &str, source: &str) -> Part {
        if !source.contains("{{") && !source.contains("{%") {
            return Part::Fixed(source.to_owned());
        }
        Part::Template(self.template(key, source))
    }

    /// `source` compiled as the template `{prefix}.{key}`; its name.
    pub fn template(&mut self, key: &str, source: &str) -> String {
        let name = format!("{}.{key}", self.prefix);
        if let Err(e) = self.templates.add(&name, source) {
            self.errors.push((key.to_owned(), e));
        }
        name
    }

    /// Every value of `map` as a part, keyed `{key}.{name}`.
    pub fn parts(&mut self, key: &str, map: &BTreeMap<String, String>) -> Vec<(String, Part)> {
        map.iter()
            .map(|(k, v)| (k.clone(), self.part(&format!("{key}.{k}"), v)))
            .collect()
    }
}

/// The compiled templates and the values they may read.
pub struct Scope {
    pub templates: Arc<Templates>,
    pub vars: BTreeMap<String, String>,
    pub state: BTreeMap<String, String>,
}

impl Scope {
    pub fn render(&self, name: &str, record: &Value) -> Result<String, String> {
        self.templates.render(
            name,
            record,
            &RenderContext {
                vars: &self.vars,
                state: &self.state,
            },
        )
    }
}

/// A field value as text for a query parameter or IDO property.
pub fn field_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Why a sink failed one record: what its dead-letter line says.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordError {
    /// The record does not fit the sink: a template fails, a CSV row
    /// needs an object, a URL is not allowed.
    #[error("{0}")]
    Shape(String),
    /// The product read the request and refused it.
    #[error(transparent)]
    Product(#[from] ProductError),
    /// The request may have reached the product, and nobody knows whether
    /// the product acted on it.
    #[error("{label}: {reason}; the outcome is unknown, check before sending it again")]
    OutcomeUnknown { label: String, reason: String },
    /// The call failed and the product did not act on it.
    #[error("{label}: {reason}")]
    Failed { label: String, reason: String },
    /// A plain HTTP(S) request that failed, with its cause.
    #[error("{0}")]
    Http(String),
}

impl From<String> for RecordError {
    fn from(message: String) -> Self {
        RecordError::Shape(message)
    }
}

impl From<&str> for RecordError {
    fn from(message: &str) -> Self {
        RecordError::Shape(message.to_owned())
    }
}

/// A record a sink refused, with the reason, for the dead-letter file.
#[derive(Debug)]
pub struct Rejected {
    pub record: Value,
    pub error: RecordError,
}

/// What writes produced besides successes.
#[derive(Debug, Default)]
pub struct Outcome {
    pub rejected: Vec<Rejected>,
    /// Records that were delivered (or rejected) only after a retry.
    pub records_retried: u64,
}

impl Outcome {
    pub fn reject(&mut self, record: &Value, error: impl Into<RecordError>) {
        self.rejected.push(Rejected {
            record: record.clone(),
            error: error.into(),
        });
    }
}

/// What opening a sink needs from the run.
pub struct SinkContext<'a> {
    /// The sink's place in `[[sinks]]`, for messages.
    pub index: usize,
    pub connections: &'a BTreeMap<String, Arc<Connection>>,
    pub vars: &'a Variables,
    pub base_dir: &'a Path,
    pub http: &'a crate::pipeline::http::HttpClient,
    pub stats: Arc<RunStats>,
    pub scope: Arc<Scope>,
}

impl SinkContext<'_> {
    /// The open connection called `name`.
    pub fn connection(&self, name: &str) -> anyhow::Result<Arc<Connection>> {
        self.connections.get(name).cloned().ok_or_else(|| {
            anyhow::anyhow!("sinks[{}].connection: `{name}` is not open", self.index)
        })
    }
}
