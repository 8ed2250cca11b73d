//! The pipeline file format. Every struct rejects unknown keys, so a typo is
//! an error with its position instead of a silently ignored setting.
//! The format is specified in docs/PIPELINES.md; `ionflow schema` prints it
//! as JSON Schema from these same types.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// A pipeline file as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "ionflow pipeline")]
pub struct PipelineConfig {
    /// Defaults to the file name without extension; names the state file.
    pub name: Option<String>,
    pub description: Option<String>,
    /// Pipeline variables, usable as `${var.NAME}`; values may use `${env.NAME}`.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Cron expression for `ionflow serve`: 5 fields, 6 with seconds, or `@hourly`-style.
    pub schedule: Option<String>,
    /// IANA time zone the schedule is read in; default UTC.
    pub timezone: Option<String>,
    /// What `serve` does when a tick finds the previous run still going.
    #[serde(default)]
    pub overlap: Overlap,
    /// What `serve` does with ticks that passed while it was not running.
    #[serde(default)]
    pub missed_runs: MissedRuns,
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionConfig>,
    pub source: SourceConfig,
    #[serde(default)]
    pub transforms: Vec<TransformConfig>,
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// Where records that fail for good are written, with their error.
    pub dead_letter: Option<DeadLetterConfig>,
    /// Named state kept between runs (watermarks for incremental runs).
    pub state: Option<StateConfig>,
    /// Offline unit tests run by `ionflow test`.
    #[serde(default)]
    pub tests: Vec<TestCase>,
}

/// A connection to one tenant. Credentials come from a `.ionapi` file or an
/// environment variable holding its JSON, never from the pipeline itself.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Path to the `.ionapi` file, relative to the pipeline file. Use
    /// `${env.INFOR_ENV}` to pick one file per environment.
    pub ionapi_file: Option<String>,
    /// Name of an environment variable that holds the `.ionapi` JSON.
    pub ionapi_env: Option<String>,
    /// `backend_service` (default when the file has saak/sask) or `client_credentials`.
    pub grant: Option<GrantName>,
    /// `form` (default) or `basic`.
    pub client_auth: Option<ClientAuthName>,
    /// Per-request timeout; default 60, at most 300 (the gateway's ceiling).
    pub timeout_secs: Option<u32>,
    /// Request bodies larger than this are refused before sending; default
    /// 10 MB (10485760), the gateway's limit for buffered endpoints.
    pub max_payload_bytes: Option<u64>,
    /// For `grant = "saml_bearer"`: a file holding the SAML assertion (XML).
    pub saml_assertion_file: Option<String>,
    /// For `grant = "saml_bearer"`: an environment variable holding it.
    pub saml_assertion_env: Option<String>,
    /// Revoke the refresh token when the run ends. Default true, except for
    /// `authorization_code`, whose grant a user gave once and must survive runs.
    pub revoke_on_exit: Option<bool>,
    /// The endpoint policy to stay under; default 1,000 calls per 60 s,
    /// the gateway's default quota.
    pub rate_limit: Option<RateLimitConfig>,
    /// For grants kept across runs: how often `ionflow serve` refreshes them
    /// so they never reach Infor's 30-day idle cut-off. Default 25 days.
    pub keepalive_interval_secs: Option<u64>,
    /// A connector component (`.wasm`) implementing `ionflow:gateway/connector`,
    /// relative to the pipeline file; the connector built into ionflow when absent.
    pub connector: Option<String>,
}

impl ConnectionConfig {
    pub fn keepalive_interval_secs(&self) -> u64 {
        self.keepalive_interval_secs
            .unwrap_or(25 * 24 * 3600)
            .max(1)
    }

    pub fn revokes_on_exit(&self) -> bool {
        self.revoke_on_exit
            .unwrap_or(self.grant != Some(GrantName::AuthorizationCode))
    }
}

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

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantName {
    BackendService,
    ClientCredentials,
    AuthorizationCode,
    SamlBearer,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthName {
    Form,
    Basic,
}

/// A client-side limit matching the gateway's quota and spike-arrest policy.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Calls allowed per window.
    pub requests: u32,
    /// The window, in seconds.
    pub window_secs: u32,
    /// Space calls evenly (window / requests apart) instead of allowing bursts.
    #[serde(default)]
    pub smoothing: bool,
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

// ----------------------------------------------------------------- sources

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// An M3 list transaction paged by key.
    M3List(M3ListSource),
    /// A Mongoose IDO collection (SyteLine / CSI), paged by bookmark.
    Ido(IdoSource),
    /// Any gateway path returning JSON, optionally paged by offset and limit.
    Gateway(GatewaySource),
    /// A Data Fabric Compass SQL query: submit, poll, page the result.
    Compass(CompassSource),
    /// Data Lake payload metadata (`payloads/list`), paged.
    DataLake(DataLakeSource),
    /// A plain HTTP(S) endpoint returning JSON, optionally paged by offset and limit.
    Http(HttpSource),
    /// A local file: JSON Lines, CSV with a header, or a JSON array.
    File(FileSource),
}

/// M3 has no cursor: ask for `page_size` records starting at the last key
/// seen and drop the repeated first record.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct M3ListSource {
    pub connection: String,
    /// MI program, e.g. `MMS200MI`.
    pub program: String,
    /// List transaction, e.g. `LstItmByItm`.
    pub transaction: String,
    /// The field the list is ordered by, sent as the start key of each page.
    pub key_field: String,
    /// Records per call (`maxrecs`); M3 caps a call at 10,000.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Extra input fields (`CONO`, `STAT`, ...); values may use `${env.NAME}`.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Output fields to return (`returncols`); all when absent.
    pub returncols: Option<Vec<String>>,
    /// Stop after this many records.
    pub max_records: Option<u64>,
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_page_size() -> u32 {
    1000
}

/// `ido/load/{ido}` with `loadType=NEXT` and the returned bookmark until
/// `MoreRowsExist` is false.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdoSource {
    pub connection: String,
    /// IDO name, e.g. `SLItems`.
    pub ido: String,
    /// The Mongoose configuration, sent as `X-Infor-MongooseConfig`.
    pub mongoose_config: String,
    /// Properties to load.
    pub properties: Vec<String>,
    /// Mongoose filter, e.g. `RecordDate > '${state.since}'`.
    pub filter: Option<String>,
    pub order_by: Option<String>,
    /// Records per call (`recordCap`).
    #[serde(default = "default_ido_page_size")]
    pub page_size: u32,
    pub max_records: Option<u64>,
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_ido_page_size() -> u32 {
    200
}

/// Where the records are in a JSON response: a JSON pointer (`/items`) or a
/// jq filter emitting one record per output (`.data[]`); the whole
/// document, or each element when it is an array, when neither is set.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordsAt {
    /// JSON pointer to an array of records, e.g. `/items`.
    pub records_pointer: Option<String>,
    /// jq filter emitting the records, e.g. `.data[] | select(.active)`.
    pub records_jq: Option<String>,
}

/// Offset/limit paging: `offset_param` and `limit_param` are added to the
/// query; paging stops at the first page shorter than `page_size`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OffsetPaging {
    #[serde(default = "default_offset_param")]
    pub offset_param: String,
    #[serde(default = "default_limit_param")]
    pub limit_param: String,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Offset of the first page.
    #[serde(default)]
    pub start_offset: u64,
    /// Pages requested ahead at once, 1 to 64 (default 1); records still
    /// come out in offset order.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
}

fn default_offset_param() -> String {
    "offset".into()
}

fn default_limit_param() -> String {
    "limit".into()
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewaySource {
    pub connection: String,
    /// Product path below `{iu}/{ti}/`, e.g. `LN/lnapi/odata/...`.
    pub path: String,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub records_pointer: Option<String>,
    pub records_jq: Option<String>,
    /// Page by offset and limit; one call when absent.
    pub paging: Option<OffsetPaging>,
    pub max_records: Option<u64>,
    #[serde(default)]
    pub retry: RetryConfig,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompassSource {
    pub connection: String,
    /// The SQL statement; may use `${state.NAME}` and `${env.NAME}`.
    pub sql: String,
    /// Rows per result page (`limit`); Compass allows at most 100,000.
    #[serde(default = "default_compass_page_size")]
    pub page_size: u32,
    /// Wait between status polls.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Give up when the job has not finished after this long.
    #[serde(default = "default_job_timeout_secs")]
    pub job_timeout_secs: u64,
    pub max_records: Option<u64>,
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_compass_page_size() -> u32 {
    10_000
}

fn default_poll_interval_ms() -> u64 {
    1000
}

fn default_job_timeout_secs() -> u64 {
    600
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataLakeSource {
    pub connection: String,
    /// Data Lake filter, e.g. `dl_document_name eq 'SyncItemMaster'`.
    pub filter: Option<String>,
    /// Sort, e.g. `dl_document_indexed_date:desc`.
    pub sort: Option<String>,
    /// Payload descriptions per page (`records`).
    #[serde(default = "default_data_lake_page_size")]
    pub page_size: u32,
    pub max_records: Option<u64>,
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_data_lake_page_size() -> u32 {
    100
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSource {
    /// `https://...`; `http://` only for loopback hosts.
    pub url: String,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Request headers; put secrets in `${env.NAME}`, never inline.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub records_pointer: Option<String>,
    pub records_jq: Option<String>,
    pub paging: Option<OffsetPaging>,
    pub max_records: Option<u64>,
    #[serde(default = "default_http_timeout_secs")]
    pub timeout_secs: u64,
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_http_timeout_secs() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
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

fn default_delimiter() -> String {
    ",".into()
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    #[default]
    Jsonl,
    Csv,
    Json,
}

// -------------------------------------------------------------- transforms

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
}

fn default_jq_timeout_ms() -> u64 {
    1000
}

// ------------------------------------------------------------------- sinks

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// Records written to a file: JSON Lines or CSV with a header.
    File(FileSink),
    /// Records written to standard output as JSON Lines.
    Stdout(StdoutSink),
    /// One HTTP(S) request per record.
    Http(HttpSink),
    /// One M3 MI transaction per record.
    M3(M3Sink),
    /// M3 transactions in bulk requests (`POST .../v2/execute`).
    M3Bulk(M3BulkSink),
    /// Mongoose IDO changes (`ido/update/{ido}`), one per record.
    IdoUpdate(IdoUpdateSink),
    /// One ION message per record.
    IonMessage(IonMessageSink),
    /// One request per record on any gateway path.
    Gateway(GatewaySink),
}

/// How a sink that sends one request per record spreads them out.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub connection: Option<&'a str>,
    pub concurrency: u32,
    pub order_key: Option<&'a str>,
}

impl SinkConfig {
    /// `None` for sinks that do not send a request per record.
    pub fn delivery(&self) -> Option<Delivery<'_>> {
        let (connection, concurrency, order_key) = match self {
            SinkConfig::File(_) | SinkConfig::Stdout(_) | SinkConfig::M3Bulk(_) => return None,
            SinkConfig::Http(s) => (None, s.concurrency, &s.order_key),
            SinkConfig::M3(s) => (Some(&s.connection), s.concurrency, &s.order_key),
            SinkConfig::IdoUpdate(s) => (Some(&s.connection), s.concurrency, &s.order_key),
            SinkConfig::IonMessage(s) => (Some(&s.connection), s.concurrency, &s.order_key),
            SinkConfig::Gateway(s) => (Some(&s.connection), s.concurrency, &s.order_key),
        };
        Some(Delivery {
            connection: connection.map(String::as_str),
            concurrency,
            order_key: order_key.as_deref(),
        })
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSink {
    /// Relative to the pipeline file; may use `${env.NAME}`.
    pub path: String,
    /// `jsonl` (default) or `csv`.
    #[serde(default)]
    pub format: FileFormat,
    /// CSV columns in order; the first record's keys when absent.
    pub csv_columns: Option<Vec<String>>,
    #[serde(default = "default_delimiter")]
    pub csv_delimiter: String,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutSink {
    /// Indent each record over several lines instead of one line each.
    #[serde(default)]
    pub pretty: bool,
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

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSink {
    /// URL template, e.g. `https://example.com/items/{{ record.item }}`.
    pub url: String,
    #[serde(default)]
    pub method: HttpMethod,
    /// Header values; put secrets in `${env.NAME}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body template; the record as JSON when absent.
    pub body: Option<String>,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    #[serde(default = "default_http_timeout_secs")]
    pub timeout_secs: u64,
    /// Requests in flight at once, 1 to 64 (default 1). Results are taken
    /// in input order, so the dead letter and the summary read as if sent one by one.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// With `concurrency` above 1: a template such as `{{ record.item }}`;
    /// records with the same key are never in flight together, so each key's
    /// requests reach the product in input order.
    pub order_key: Option<String>,
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_concurrency() -> u32 {
    1
}

/// The most requests one sink keeps in flight; each needs a connector instance.
pub const MAX_CONCURRENCY: u32 = 64;

fn default_content_type() -> String {
    "application/json".into()
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct M3Sink {
    pub connection: String,
    pub program: String,
    pub transaction: String,
    /// Input fields as templates, e.g. `ITNO = "{{ record.item }}"`; every
    /// top-level field of the record when absent.
    pub fields: Option<BTreeMap<String, String>>,
    /// Company (`cono`), a template.
    pub cono: Option<String>,
    /// Requests in flight at once, 1 to 64 (default 1). Results are taken
    /// in input order, so the dead letter and the summary read as if sent one by one.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// With `concurrency` above 1: a template such as `{{ record.item }}`;
    /// records with the same key are never in flight together, so each key's
    /// requests reach the product in input order.
    pub order_key: Option<String>,
    #[serde(default)]
    pub retry: RetryConfig,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct M3BulkSink {
    pub connection: String,
    pub program: String,
    pub transaction: String,
    pub fields: Option<BTreeMap<String, String>>,
    /// Company (`cono`) of every batch; plain text.
    pub cono: Option<String>,
    /// Transactions per request; M3 takes at most 10,000.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_batch_size() -> u32 {
    100
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdoAction {
    Insert,
    #[default]
    Update,
    Delete,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdoUpdateSink {
    pub connection: String,
    pub ido: String,
    pub mongoose_config: String,
    #[serde(default)]
    pub action: IdoAction,
    /// Property values as templates; every top-level field when absent.
    pub properties: Option<BTreeMap<String, String>>,
    /// Requests in flight at once, 1 to 64 (default 1). Results are taken
    /// in input order, so the dead letter and the summary read as if sent one by one.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// With `concurrency` above 1: a template such as `{{ record.item }}`;
    /// records with the same key are never in flight together, so each key's
    /// requests reach the product in input order.
    pub order_key: Option<String>,
    #[serde(default)]
    pub retry: RetryConfig,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IonMessageSink {
    pub connection: String,
    /// ION document name, e.g. `SyncItemMaster` or a custom `ItemExport`.
    pub document_name: String,
    /// The sender, e.g. `lid://infor.ims.ionflow`.
    pub from_logical_id: String,
    #[serde(default = "default_to_logical_id")]
    pub to_logical_id: String,
    /// Document template; the record as JSON when absent.
    pub document: Option<String>,
    /// Requests in flight at once, 1 to 64 (default 1). Results are taken
    /// in input order, so the dead letter and the summary read as if sent one by one.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// With `concurrency` above 1: a template such as `{{ record.item }}`;
    /// records with the same key are never in flight together, so each key's
    /// requests reach the product in input order.
    pub order_key: Option<String>,
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_to_logical_id() -> String {
    "lid://default".into()
}

/// How a gateway sink reads the product's answer.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Envelope {
    /// Only the HTTP status counts.
    #[default]
    Status,
    /// M3 REST: `nrOfFailedTransactions` and `errorMessage`.
    M3,
    /// Mongoose IDO: `Success` and `Message`.
    Ido,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewaySink {
    pub connection: String,
    #[serde(default)]
    pub method: HttpMethod,
    /// Path template below `{iu}/{ti}/`.
    pub path: String,
    /// Query parameter templates.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body template; the record as JSON when absent.
    pub body: Option<String>,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    #[serde(default)]
    pub envelope: Envelope,
    /// Whether a call that timed out may be sent again (only if the endpoint is idempotent).
    #[serde(default)]
    pub idempotent: bool,
    /// Requests in flight at once, 1 to 64 (default 1). Results are taken
    /// in input order, so the dead letter and the summary read as if sent one by one.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// With `concurrency` above 1: a template such as `{{ record.item }}`;
    /// records with the same key are never in flight together, so each key's
    /// requests reach the product in input order.
    pub order_key: Option<String>,
    #[serde(default)]
    pub retry: RetryConfig,
}

// -------------------------------------------------------------- runs, tests

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

/// The maximum of a source field over a run, saved when the run succeeds.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WatermarkConfig {
    /// Field of the source records (before transforms).
    pub field: String,
    /// Value before the first successful run.
    pub initial: String,
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

// ------------------------------------------------------------------ errors

/// A pipeline error that points into its file: `file:line:column: message`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", render(.file, .position, .message))]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

fn render(file: &Path, position: &Option<(usize, usize)>, message: &str) -> String {
    match position {
        Some((line, col)) => format!("{}:{line}:{col}: {message}", file.display()),
        None => format!("{}: {message}", file.display()),
    }
}

impl ConfigError {
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            position: None,
            message: message.into(),
        }
    }

    pub fn at(file: &Path, position: Option<(usize, usize)>, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_owned(),
            position,
            message: message.into(),
        }
    }
}

/// Every problem found in one pipeline file, in file order.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// Collects problems with their places in the file.
pub struct Problems<'a> {
    file: &'a Path,
    text: &'a str,
    pub found: Vec<ConfigError>,
}

impl<'a> Problems<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Problems {
            file,
            text,
            found: Vec::new(),
        }
    }

    /// A problem with `key` inside `table` (`source`, `sinks[1]`, `connections.m3`).
    pub fn add(&mut self, table: &str, key: Option<&str>, message: impl Into<String>) {
        let position = locate(self.text, table, key);
        let name = match key {
            Some(key) if table.is_empty() => key.to_owned(),
            Some(key) => format!("{table}.{key}"),
            None => table.to_owned(),
        };
        self.found.push(ConfigError::at(
            self.file,
            position,
            format!("{name}: {}", message.into()),
        ));
    }

    pub fn file(&self) -> &'a Path {
        self.file
    }

    pub fn finish(mut self) -> Result<(), ConfigErrors> {
        if self.found.is_empty() {
            return Ok(());
        }
        self.found
            .sort_by_key(|e| e.position.unwrap_or((usize::MAX, 0)));
        Err(ConfigErrors(self.found))
    }
}

impl PipelineConfig {
    /// Parses pipeline TOML; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<PipelineConfig, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_owned();
            let start = e.span().map(|span| span.start);
            let message = match message.strip_prefix("unknown field `") {
                Some(_) => format!("{message}; remove it or fix its spelling"),
                None => message,
            };
            let offset = start.map(|start| {
                unknown_key_offset(text, start, &message)
                    .or_else(|| tagged_key_offset(text, start))
                    .unwrap_or(start)
            });
            // A position at a value gets the key's name in front.
            let key = offset.and_then(|at| {
                let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let (key, _) = text[line_start..at].split_once('=')?;
                Some(key.trim().to_owned()).filter(|k| !k.is_empty())
            });
            let message = match key {
                Some(key) if !message.contains(&format!("`{key}`")) => format!("{key}: {message}"),
                _ => message,
            };
            ConfigError {
                file: file.to_owned(),
                position: offset.map(|offset| line_col(text, offset)),
                message,
            }
        })
    }

    /// Checks what the types cannot: references, ranges, exclusive keys.
    pub fn check(&self, problems: &mut Problems<'_>) {
        if self.sinks.is_empty() {
            problems.add(
                "",
                Some("sinks"),
                "a pipeline needs at least one sink: add a [[sinks]] table",
            );
        }
        for (name, conn) in &self.connections {
            let table = format!("connections.{name}");
            if conn.ionapi_file.is_some() == conn.ionapi_env.is_some() {
                problems.add(
                    &table,
                    None,
                    "set exactly one of ionapi_file (a path) or ionapi_env (an environment \
                     variable holding the .ionapi JSON)",
                );
            }
            let saml_sources =
                conn.saml_assertion_file.is_some() as u8 + conn.saml_assertion_env.is_some() as u8;
            match (conn.grant == Some(GrantName::SamlBearer), saml_sources) {
                (true, 1) | (false, 0) => {}
                (true, _) => problems.add(
                    &table,
                    Some("grant"),
                    "grant = \"saml_bearer\" needs exactly one of saml_assertion_file or \
                     saml_assertion_env",
                ),
                (false, _) => problems.add(
                    &table,
                    None,
                    "saml_assertion_file and saml_assertion_env are only used with grant = \"saml_bearer\"",
                ),
            }
            if let Some(limit) = &conn.rate_limit
                && (limit.requests == 0 || limit.window_secs == 0)
            {
                problems.add(
                    &format!("{table}.rate_limit"),
                    None,
                    "requests and window_secs must both be at least 1",
                );
            }
            if conn.max_payload_bytes == Some(0) {
                problems.add(
                    &table,
                    Some("max_payload_bytes"),
                    "must be at least 1; leave it out for the gateway's 10 MB limit",
                );
            }
            if conn.timeout_secs.is_some_and(|t| t == 0 || t > 300) {
                problems.add(
                    &table,
                    Some("timeout_secs"),
                    "must be between 1 and 300 (the gateway's 5-minute ceiling)",
                );
            }
        }
        let need_connection = |table: &str, name: &str, problems: &mut Problems<'_>| {
            if !self.connections.contains_key(name) {
                let known: Vec<_> = self.connections.keys().map(String::as_str).collect();
                problems.add(
                    table,
                    Some("connection"),
                    format!(
                        "\"{name}\" names no connection; define [connections.{name}]{}",
                        if known.is_empty() {
                            String::new()
                        } else {
                            format!(" or use one of: {}", known.join(", "))
                        }
                    ),
                );
            }
        };
        let range = |problems: &mut Problems<'_>,
                     table: &str,
                     key: &str,
                     value: u64,
                     max: u64,
                     why: &str| {
            if value == 0 || value > max {
                problems.add(
                    table,
                    Some(key),
                    format!("must be between 1 and {max}{why}"),
                );
            }
        };
        match &self.source {
            SourceConfig::M3List(s) => {
                need_connection("source", &s.connection, problems);
                range(
                    problems,
                    "source",
                    "page_size",
                    s.page_size.into(),
                    10_000,
                    " (M3's cap per call)",
                );
            }
            SourceConfig::Ido(s) => {
                need_connection("source", &s.connection, problems);
                range(
                    problems,
                    "source",
                    "page_size",
                    s.page_size.into(),
                    100_000,
                    "",
                );
                if s.properties.is_empty() {
                    problems.add(
                        "source",
                        Some("properties"),
                        "name at least one property, e.g. [\"Item\", \"Description\"]",
                    );
                }
            }
            SourceConfig::Gateway(s) => {
                check_header_secrets(problems, "source", &s.headers);
                need_connection("source", &s.connection, problems);
                check_records_at(problems, &s.records_pointer, &s.records_jq);
                check_paging(problems, &s.paging, &s.records_jq);
            }
            SourceConfig::Compass(s) => {
                need_connection("source", &s.connection, problems);
                range(
                    problems,
                    "source",
                    "page_size",
                    s.page_size.into(),
                    100_000,
                    " (Compass's cap per result page)",
                );
                if s.poll_interval_ms == 0 {
                    problems.add("source", Some("poll_interval_ms"), "must be at least 1");
                }
            }
            SourceConfig::DataLake(s) => {
                need_connection("source", &s.connection, problems);
                range(
                    problems,
                    "source",
                    "page_size",
                    s.page_size.into(),
                    10_000,
                    "",
                );
            }
            SourceConfig::Http(s) => {
                check_header_secrets(problems, "source", &s.headers);
                check_records_at(problems, &s.records_pointer, &s.records_jq);
                check_paging(problems, &s.paging, &s.records_jq);
                check_url(problems, "source", "url", &s.url);
            }
            SourceConfig::File(s) => {
                check_delimiter(problems, "source", &s.csv_delimiter);
            }
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            let table = format!("sinks[{i}]");
            match sink {
                SinkConfig::File(s) => {
                    if s.format == FileFormat::Json {
                        problems.add(&table, Some("format"), "file sinks write `jsonl` or `csv`; a JSON array cannot be streamed, use jsonl");
                    }
                    if s.csv_columns.is_some() && s.format != FileFormat::Csv {
                        problems.add(
                            &table,
                            Some("csv_columns"),
                            "only applies to format = \"csv\"; remove it or set the format",
                        );
                    }
                    check_delimiter(problems, &table, &s.csv_delimiter);
                }
                SinkConfig::Stdout(_) => {}
                SinkConfig::Http(s) => {
                    check_header_secrets(problems, &table, &s.headers);
                    check_url(problems, &table, "url", &s.url);
                }
                SinkConfig::M3(s) => need_connection(&table, &s.connection, problems),
                SinkConfig::M3Bulk(s) => {
                    need_connection(&table, &s.connection, problems);
                    range(
                        problems,
                        &table,
                        "batch_size",
                        s.batch_size.into(),
                        10_000,
                        " (M3's cap per bulk request)",
                    );
                }
                SinkConfig::IdoUpdate(s) => need_connection(&table, &s.connection, problems),
                SinkConfig::IonMessage(s) => {
                    need_connection(&table, &s.connection, problems);
                    if !s.from_logical_id.starts_with("lid://") {
                        problems.add(
                            &table,
                            Some("from_logical_id"),
                            "a logical id starts with lid://, e.g. lid://infor.ims.ionflow",
                        );
                    }
                    if !s.to_logical_id.starts_with("lid://") {
                        problems.add(
                            &table,
                            Some("to_logical_id"),
                            "a logical id starts with lid://, e.g. lid://default",
                        );
                    }
                }
                SinkConfig::Gateway(s) => {
                    check_header_secrets(problems, &table, &s.headers);
                    need_connection(&table, &s.connection, problems);
                }
            }
            if let Some(delivery) = sink.delivery() {
                range(
                    problems,
                    &table,
                    "concurrency",
                    delivery.concurrency.into(),
                    MAX_CONCURRENCY.into(),
                    " (each request in flight holds a connector instance)",
                );
                if delivery.order_key.is_some() && delivery.concurrency == 1 {
                    problems.add(
                        &table,
                        Some("order_key"),
                        "only matters with concurrency above 1, where one request at a time \
                         already keeps every record in order; remove it or raise concurrency",
                    );
                }
            }
        }
        if let Some(state) = &self.state {
            for name in state.watermarks.keys() {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    problems.add(
                        "state.watermarks",
                        None,
                        format!("`{name}`: watermark names use letters, digits and _"),
                    );
                }
            }
        }
        if let Some(dl) = &self.dead_letter
            && dl.path.trim().is_empty()
        {
            problems.add(
                "dead_letter",
                Some("path"),
                "give a file path, e.g. \"dead-letter.jsonl\"",
            );
        }
        for (t, test) in self.tests.iter().enumerate() {
            for expected in &test.requests {
                if expected.sink >= self.sinks.len() {
                    problems.add(
                        &format!("tests[{t}]"),
                        Some("requests"),
                        format!(
                            "sink = {} but the pipeline has {} sinks (counted from 0)",
                            expected.sink,
                            self.sinks.len()
                        ),
                    );
                }
            }
        }
    }
}

/// Header values that carry credentials must come from the environment,
/// so that a pipeline file can be committed and shared.
fn check_header_secrets(
    problems: &mut Problems<'_>,
    table: &str,
    headers: &BTreeMap<String, String>,
) {
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let sensitive = lower.contains("authorization")
            || ["key", "token", "secret", "password", "cookie"]
                .iter()
                .any(|word| lower.contains(word));
        if sensitive && !value.contains("${env.") && !value.contains("${var.") {
            problems.add(
                table,
                Some("headers"),
                format!(
                    "header {name} carries a credential written into the file; \
                     take it from the environment: {name} = \"${{env.NAME}}\""
                ),
            );
        }
    }
}

fn check_records_at(problems: &mut Problems<'_>, pointer: &Option<String>, jq: &Option<String>) {
    if pointer.is_some() && jq.is_some() {
        problems.add(
            "source",
            Some("records_jq"),
            "set records_pointer or records_jq, not both",
        );
    }
    if let Some(p) = pointer
        && !p.is_empty()
        && !p.starts_with('/')
    {
        problems.add(
            "source",
            Some("records_pointer"),
            format!("a JSON pointer starts with `/`: write \"/{p}\""),
        );
    }
}

fn check_paging(problems: &mut Problems<'_>, paging: &Option<OffsetPaging>, jq: &Option<String>) {
    if let Some(p) = paging {
        if p.page_size == 0 {
            problems.add("source.paging", Some("page_size"), "must be at least 1");
        }
        if p.concurrency == 0 || p.concurrency > MAX_CONCURRENCY {
            problems.add(
                "source.paging",
                Some("concurrency"),
                format!("must be between 1 and {MAX_CONCURRENCY}"),
            );
        }
        // Paging stops at the first short page; a jq filter that drops
        // elements would make a full page look short and end the run early.
        if jq.is_some() {
            problems.add(
                "source",
                Some("records_jq"),
                "cannot be combined with paging: use records_pointer and filter in a [[transforms]] jq step",
            );
        }
    }
}

fn check_url(problems: &mut Problems<'_>, table: &str, key: &str, url: &str) {
    if !(url.starts_with("https://")
        || url.starts_with("http://")
        || url.starts_with("${")
        || url.starts_with("{{"))
    {
        problems.add(
            table,
            Some(key),
            "must start with https:// (or http:// for a loopback host)",
        );
    }
}

fn check_delimiter(problems: &mut Problems<'_>, table: &str, delimiter: &str) {
    if delimiter.len() != 1 || !delimiter.is_ascii() {
        problems.add(
            table,
            Some("csv_delimiter"),
            "must be one ASCII character, e.g. \",\" or \";\"",
        );
    }
}

/// Finds `key` inside `table` by reading the file's headers: good enough for
/// pointing a person at a line, and it never fails, only gives up.
fn locate(text: &str, table: &str, key: Option<&str>) -> Option<(usize, usize)> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut current = String::new();
    let mut header_at = None;
    let mut offset = 0;
    let wanted_table = table.to_owned();
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        let indent = line.len() - line.trim_start().len();
        if let Some(name) = trimmed
            .strip_prefix("[[")
            .and_then(|r| r.split("]]").next())
        {
            let name = name.trim().to_owned();
            let n = counts.entry(name.clone()).or_insert(0);
            current = format!("{name}[{n}]");
            *n += 1;
            if current == wanted_table {
                header_at = Some(offset + indent);
            }
        } else if let Some(name) = trimmed.strip_prefix('[').and_then(|r| r.split(']').next()) {
            current = name.trim().to_owned();
            if current == wanted_table {
                header_at = Some(offset + indent);
            }
        } else if current == wanted_table
            && let Some(key) = key
            && let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(line_col(text, offset + indent));
        } else if wanted_table.is_empty()
            && current.is_empty()
            && let Some(key) = key
            && trimmed
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return Some(line_col(text, offset + indent));
        }
        offset += line.len();
    }
    header_at.map(|at| line_col(text, at))
}

/// Inside tagged tables (`kind = ...`) serde buffers the table and loses
/// positions, so a wrong type is reported at the table's header. Parsing the
/// table again as its kind's own struct, on a copy of the file in which
/// everything else is blanked out (so offsets stay true), finds the key.
fn tagged_key_offset(text: &str, table_start: usize) -> Option<usize> {
    let header_start = text[..table_start].rfind('\n').map_or(0, |i| i + 1);
    let header = text[header_start..].lines().next()?.trim();
    let body_start = header_start + text[header_start..].find('\n')? + 1;
    let body_end = text[body_start..]
        .match_indices('\n')
        .map(|(i, _)| body_start + i + 1)
        .find(|&i| text[i..].trim_start().starts_with('['))
        .unwrap_or(text.len());
    let body = &text[body_start..body_end];
    let table: toml::Table = toml::from_str(body).ok()?;
    let kind = table.get("kind")?.as_str()?;
    // The copy keeps only the table's lines, minus `kind`, at their offsets.
    let mut copy = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').scan(0, |at, l| {
        let start = *at;
        *at += l.len();
        Some((start, l))
    }) {
        let keep = i >= body_start && i < body_end && !line.trim_start().starts_with("kind");
        if keep {
            copy.push_str(line);
        } else {
            copy.extend(line.chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
        }
    }
    let error = match header {
        "[source]" => probe_source(kind, &copy)?,
        "[[sinks]]" => probe_sink(kind, &copy)?,
        "[[transforms]]" => toml::from_str::<JqTransform>(&copy).err()?,
        _ => return None,
    };
    error
        .span()
        .map(|span| span.start)
        .filter(|&at| at >= body_start)
}

fn probe<T: serde::de::DeserializeOwned>(text: &str) -> Option<toml::de::Error> {
    toml::from_str::<T>(text).err()
}

fn probe_source(kind: &str, text: &str) -> Option<toml::de::Error> {
    match kind {
        "m3_list" => probe::<M3ListSource>(text),
        "ido" => probe::<IdoSource>(text),
        "gateway" => probe::<GatewaySource>(text),
        "compass" => probe::<CompassSource>(text),
        "data_lake" => probe::<DataLakeSource>(text),
        "http" => probe::<HttpSource>(text),
        "file" => probe::<FileSource>(text),
        _ => None,
    }
}

fn probe_sink(kind: &str, text: &str) -> Option<toml::de::Error> {
    match kind {
        "file" => probe::<FileSink>(text),
        "stdout" => probe::<StdoutSink>(text),
        "http" => probe::<HttpSink>(text),
        "m3" => probe::<M3Sink>(text),
        "m3_bulk" => probe::<M3BulkSink>(text),
        "ido_update" => probe::<IdoUpdateSink>(text),
        "ion_message" => probe::<IonMessageSink>(text),
        "gateway" => probe::<GatewaySink>(text),
        _ => None,
    }
}

/// Inside tagged tables (`kind = ...`) the TOML parser can only point at the
/// table; find the offending key itself so the position names its line.
fn unknown_key_offset(text: &str, table_start: usize, message: &str) -> Option<usize> {
    let key = message.strip_prefix("unknown field `")?.split('`').next()?;
    let mut offset = table_start;
    for line in text.get(table_start..)?.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(offset + (line.len() - trimmed.len()));
        }
        offset += line.len();
    }
    None
}

/// Where a top-level string value starts, for errors inside the value.
pub fn value_position(text: &str, key: &str, offset_in_value: usize) -> Option<(usize, usize)> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key)
            && let Some(value) = rest.trim_start().strip_prefix('=')
        {
            let value = value.trim_start();
            let quote = usize::from(value.starts_with(['"', '\'']));
            let start = offset + (line.len() - value.len()) + quote + offset_in_value;
            return Some(line_col(text, start));
        }
        offset += line.len();
    }
    None
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "items"
[connections.m3]
ionapi_file = "m3.ionapi"

[source]
kind = "m3_list"
connection = "m3"
program = "MMS200MI"
transaction = "LstItmByItm"
key_field = "ITNO"

[[transforms]]
kind = "jq"
filter = "{item: .ITNO}"

[[sinks]]
kind = "file"
path = "out/items.jsonl"
"#;

    fn parse(text: &str) -> Result<PipelineConfig, ConfigErrors> {
        let file = Path::new("p.toml");
        let config = PipelineConfig::parse(text, file)?;
        let mut problems = Problems::new(file, text);
        config.check(&mut problems);
        problems.finish()?;
        Ok(config)
    }

    #[test]
    fn parses_a_pipeline() {
        let p = parse(GOOD).unwrap();
        let SourceConfig::M3List(s) = &p.source else {
            panic!()
        };
        assert_eq!(s.page_size, 1000);
        assert_eq!(p.sinks.len(), 1);
    }

    #[test]
    fn unknown_keys_are_errors_with_positions() {
        let e = parse(&GOOD.replace("key_field", "key_feild")).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("p.toml:11:1: "), "{text}");
        assert!(text.contains("key_feild"), "{text}");

        let e = parse(&GOOD.replace("path = ", "paht = ")).unwrap_err();
        assert!(e.to_string().contains("paht"), "{e}");
        assert_eq!(e.0[0].position.unwrap().0, 19, "{e}");
    }

    #[test]
    fn unknown_kinds_and_references_are_named() {
        let e = parse(&GOOD.replace("\"m3_list\"", "\"m3_lst\"")).unwrap_err();
        assert!(e.to_string().contains("m3_lst"), "{e}");
        let e = parse(&GOOD.replace("connection = \"m3\"", "connection = \"ln\"")).unwrap_err();
        assert!(e.to_string().contains("[connections.ln]"), "{e}");
        assert!(
            e.to_string().starts_with("p.toml:8:1: source.connection"),
            "{e}"
        );
        let e = parse(&GOOD.replace("[[sinks]]\nkind = \"file\"\npath = \"out/items.jsonl\"", ""))
            .unwrap_err();
        assert!(e.to_string().contains("sink"), "{e}");
    }

    #[test]
    fn every_semantic_problem_is_reported_at_its_line() {
        let text =
            GOOD.replace(
                "key_field = \"ITNO\"",
                "key_field = \"ITNO\"\npage_size = 0",
            )
            .replace(
                "ionapi_file = \"m3.ionapi\"",
                "ionapi_file = \"m3.ionapi\"\ntimeout_secs = 900",
            ) + "\n[[sinks]]\nkind = \"file\"\npath = \"x.csv\"\ncsv_delimiter = \";;\"\n";
        let e = parse(&text).unwrap_err();
        assert_eq!(e.0.len(), 3, "{e}");
        assert!(
            e.0[0]
                .to_string()
                .starts_with("p.toml:5:1: connections.m3.timeout_secs"),
            "{e}"
        );
        assert!(
            e.0[1]
                .to_string()
                .starts_with("p.toml:13:1: source.page_size"),
            "{e}"
        );
        assert!(
            e.0[2]
                .to_string()
                .starts_with("p.toml:26:1: sinks[1].csv_delimiter"),
            "{e}"
        );
    }

    #[test]
    fn concurrency_order_key_and_payload_limit_are_checked_where_written() {
        let sink = "\n[[sinks]]\nkind = \"m3\"\nconnection = \"m3\"\nprogram = \"MMS200MI\"\n\
                    transaction = \"AddItmBasic\"\n";
        let text = GOOD.replace(
            "ionapi_file = \"m3.ionapi\"",
            "ionapi_file = \"m3.ionapi\"\nmax_payload_bytes = 0",
        ) + sink
            + "concurrency = 65\n"
            + sink
            + "order_key = \"{{ record.ITNO }}\"\n";
        let e = parse(&text).unwrap_err();
        let lines: Vec<String> = e.0.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 3, "{e}");
        assert!(
            lines[0].starts_with("p.toml:5:1: connections.m3.max_payload_bytes"),
            "{e}"
        );
        assert!(
            lines[1].starts_with("p.toml:27:1: sinks[1].concurrency: must be between 1 and 64"),
            "{e}"
        );
        assert!(
            lines[2].starts_with("p.toml:34:1: sinks[2].order_key: only matters"),
            "{e}"
        );
        let fine = GOOD.to_owned() + sink + "concurrency = 8\norder_key = \"{{ record.ITNO }}\"\n";
        let config = parse(&fine).unwrap();
        let delivery = config.sinks[1].delivery().unwrap();
        assert_eq!((delivery.connection, delivery.concurrency), (Some("m3"), 8));
        assert!(
            config.sinks[0].delivery().is_none(),
            "a file sink sends no requests"
        );
    }

    #[test]
    fn wrong_types_inside_tagged_tables_point_at_the_key() {
        let e = parse(&GOOD.replace("key_field = \"ITNO\"", "key_field = 7")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("p.toml:11:13: key_field: invalid type: integer `7`"),
            "{e}"
        );
        let e = parse(&GOOD.replace(
            "path = \"out/items.jsonl\"",
            "path = \"x\"\nformat = \"xml\"",
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("p.toml:20:10: format: unknown variant `xml`"),
            "{e}"
        );
        let e = parse(&GOOD.replace("filter = \"{item: .ITNO}\"", "filter = [1]")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("p.toml:15:10: filter: invalid type"),
            "{e}"
        );
    }
}
