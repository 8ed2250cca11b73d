//! The pipeline file format's shared pieces, a leaf of the crate: it
//! imports nothing else of ionflow, so that `credentials`, `pipeline`,
//! `serve` and the CLI can all depend on it. Every struct rejects unknown
//! keys, so a typo is an error with its position instead of a silently
//! ignored setting. Each source and sink kind keeps its own config struct
//! beside its code (`pipeline/sources/`, `pipeline/sinks/`); the format is
//! specified in docs/PIPELINES.md and `ionflow schema` prints it as JSON
//! Schema from these same types.

pub mod checks;
mod connection;
pub mod interpolate;
mod problems;
pub mod spans;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub use checks::Check;
pub use connection::{
    ClientAuthName, ConnectionConfig, ConnectionsTable, GrantName, RateLimitConfig,
    check_connections,
};
pub use interpolate::Variables;
pub use problems::{
    ConfigError, ConfigErrors, Probe, Problems, UsageError, line_col, parse_toml, value_position,
};

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Skip the tick (logged).
    #[default]
    Skip,
    /// Run once more as soon as the current run ends (at most one queued).
    Queue,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissedRuns {
    /// Ticks missed during downtime are not made up.
    #[default]
    Skip,
    /// One run at start-up if any tick was missed since the last run.
    RunOnce,
}

/// Retries of calls that the gateway refused for now (429, 504, network).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts after the first; 0 disables retries.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Upper bound of the first retry's wait, doubled each time; the wait is
    /// drawn at random below it (full jitter). A 429's Retry-After wins.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// No retry starts after this much time has passed since the first attempt.
    #[serde(default = "default_max_elapsed_secs")]
    pub max_elapsed_secs: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: default_max_retries(),
            backoff_ms: default_backoff_ms(),
            max_elapsed_secs: default_max_elapsed_secs(),
        }
    }
}

fn default_max_retries() -> u32 {
    3
}

fn default_backoff_ms() -> u64 {
    500
}

fn default_max_elapsed_secs() -> u64 {
    300
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    #[default]
    Jsonl,
    Csv,
    Json,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    #[default]
    Post,
    Put,
    Patch,
    Delete,
}

pub fn method_name(m: HttpMethod) -> &'static str {
    match m {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Delete => "DELETE",
    }
}

/// Requests in flight at once for a sink, or pages for a source: 1 unless set.
pub fn default_concurrency() -> u32 {
    1
}

/// The most requests one sink keeps in flight; each needs a connector instance.
pub const MAX_CONCURRENCY: u32 = 64;

pub fn default_content_type() -> String {
    "application/json".into()
}

pub fn default_delimiter() -> String {
    ",".into()
}

pub fn default_http_timeout_secs() -> u64 {
    60
}

pub fn default_page_size() -> u32 {
    1000
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TransformConfig {
    /// A jq filter run on each record; it may emit zero, one or many records.
    Jq(JqTransform),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JqTransform {
    pub filter: String,
    /// Time budget per record; a record that takes longer fails.
    #[serde(default = "default_jq_timeout_ms")]
    pub timeout_ms: u64,
    /// Memory the filter may allocate per record (MiB, at most 1024); a
    /// record that needs more fails.
    #[serde(default = "default_jq_max_memory_mb")]
    pub max_memory_mb: u32,
}

fn default_jq_timeout_ms() -> u64 {
    1000
}

/// The largest `max_memory_mb`: the workers' stacks are sized for walking
/// the deepest value that fits in it.
pub const MAX_JQ_MEMORY_MB: u32 = 1024;

pub fn default_jq_max_memory_mb() -> u32 {
    256
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// JSON Lines file, appended to; relative to the pipeline file.
    pub path: String,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// State file; default `.ionflow/state/{name}.json` next to the pipeline.
    pub path: Option<String>,
    /// Watermarks by name, usable as `${state.NAME}` in the source.
    #[serde(default)]
    pub watermarks: BTreeMap<String, WatermarkConfig>,
}

/// The maximum of a field over a run, saved when the run succeeds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WatermarkConfig {
    /// Field of the records `from` names: the source's (before transforms,
    /// the default) or those the run wrote (after transforms).
    pub field: String,
    /// Value before the first successful run.
    pub initial: String,
    /// `source` (default): the maximum over the records read; `output`: over
    /// the records handed to the sinks, whatever the source, so a watermark
    /// can follow a field a transform computed or kept.
    #[serde(default)]
    pub from: WatermarkFrom,
}

/// Which records a watermark follows.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WatermarkFrom {
    /// The records the source read, before any transform.
    #[default]
    Source,
    /// The records the transforms handed to the sinks.
    Output,
}

/// Given input records, the transforms must produce `output`; sinks may be
/// checked with `requests`, what a sink would send for each output record.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    pub input: Vec<Value>,
    pub output: Option<Vec<Value>>,
    #[serde(default)]
    pub requests: Vec<ExpectedRequests>,
    /// Values for `${state.NAME}` and `{{ state.NAME }}` in the test.
    #[serde(default)]
    pub state: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectedRequests {
    /// Index of the sink in `[[sinks]]`, from 0.
    pub sink: usize,
    /// One rendered request per output record; only the keys given are compared.
    pub expect: Vec<Value>,
}

/// Every transform kind with its one-line description, as `ionflow list`
/// prints it (one kind today; kept beside the enum it describes).
pub fn transform_kinds() -> &'static [(&'static str, &'static str)] {
    &[(
        "jq",
        "A jq filter run on each record; it may emit zero, one or many records.",
    )]
}

impl TransformConfig {
    /// Parses a `[[transforms]]` table as the struct of `kind`, for the
    /// position of a type error; `None` for an unknown kind.
    pub fn probe(kind: &str, table: &str) -> Option<toml::de::Error> {
        match kind {
            "jq" => toml::from_str::<JqTransform>(table).err(),
            _ => None,
        }
    }
}
