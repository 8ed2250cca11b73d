//! The pipeline file format. Every struct rejects unknown keys, so a typo is
//! an error with its position instead of a silently ignored setting.
//! The format is specified in docs/PIPELINES.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A pipeline file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Defaults to the file name without extension.
    pub name: Option<String>,
    pub description: Option<String>,
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
    pub sinks: Vec<SinkConfig>,
}

/// A connection to one tenant. Credentials come from a `.ionapi` file or an
/// environment variable holding its JSON, never from the pipeline itself.
#[derive(Debug, Clone, Deserialize)]
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
    /// For `grant = "saml_bearer"`: a file holding the SAML assertion (XML).
    pub saml_assertion_file: Option<String>,
    /// For `grant = "saml_bearer"`: an environment variable holding it.
    pub saml_assertion_env: Option<String>,
    /// Revoke the refresh token when the run ends. Default true, except for
    /// `authorization_code`, whose grant a user gave once and must survive runs.
    pub revoke_on_exit: Option<bool>,
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

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Skip the tick (logged).
    #[default]
    Skip,
    /// Run once more as soon as the current run ends (at most one queued).
    Queue,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MissedRuns {
    /// Ticks missed during downtime are not made up.
    #[default]
    Skip,
    /// One run at start-up if any tick was missed since the last run.
    RunOnce,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GrantName {
    BackendService,
    ClientCredentials,
    AuthorizationCode,
    SamlBearer,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthName {
    Form,
    Basic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// An M3 list transaction paged by key.
    M3List(M3ListSource),
}

/// M3 has no cursor: ask for `page_size` records starting at the last key
/// seen and drop the repeated first record.
#[derive(Debug, Clone, Deserialize)]
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
}

fn default_page_size() -> u32 {
    1000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TransformConfig {
    /// A jq filter run on each record; it may emit zero, one or many records.
    Jq(JqTransform),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JqTransform {
    pub filter: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// Records written to a file, one JSON document per line.
    File(FileSink),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSink {
    /// Relative to the pipeline file; may use `${env.NAME}`.
    pub path: String,
    #[serde(default)]
    pub format: FileFormat,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    #[default]
    Jsonl,
}

/// A pipeline error that points into its file: `file:line:column: message`.
#[derive(Debug, thiserror::Error)]
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
}

impl PipelineConfig {
    /// Parses pipeline TOML; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<PipelineConfig, ConfigError> {
        let config: PipelineConfig = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_owned();
            let start = e.span().map(|span| span.start);
            ConfigError {
                file: file.to_owned(),
                position: start.map(|start| {
                    line_col(
                        text,
                        unknown_key_offset(text, start, &message).unwrap_or(start),
                    )
                }),
                message,
            }
        })?;
        if config.sinks.is_empty() {
            return Err(ConfigError::new(
                file,
                "a pipeline needs at least one sink: add a [[sinks]] table",
            ));
        }
        Ok(config)
    }

    /// The connections that the source and sinks refer to must exist.
    pub fn check_references(&self, file: &Path) -> Result<(), ConfigError> {
        let SourceConfig::M3List(source) = &self.source;
        if !self.connections.contains_key(&source.connection) {
            let known: Vec<_> = self.connections.keys().map(String::as_str).collect();
            return Err(ConfigError::new(
                file,
                format!(
                    "source.connection = \"{}\" names no connection; define [connections.{}]{}",
                    source.connection,
                    source.connection,
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!(" or use one of: {}", known.join(", "))
                    }
                ),
            ));
        }
        if source.page_size == 0 || source.page_size > 10_000 {
            return Err(ConfigError::new(
                file,
                "source.page_size must be between 1 and 10000 (M3's cap per call)",
            ));
        }
        for (name, conn) in &self.connections {
            match (&conn.ionapi_file, &conn.ionapi_env) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(ConfigError::new(
                        file,
                        format!(
                            "connections.{name}: set exactly one of ionapi_file (a path) or ionapi_env \
                             (an environment variable holding the .ionapi JSON)"
                        ),
                    ));
                }
                _ => {}
            }
            let saml_sources =
                conn.saml_assertion_file.is_some() as u8 + conn.saml_assertion_env.is_some() as u8;
            match (conn.grant == Some(GrantName::SamlBearer), saml_sources) {
                (true, 1) | (false, 0) => {}
                (true, _) => {
                    return Err(ConfigError::new(
                        file,
                        format!(
                            "connections.{name}: grant = \"saml_bearer\" needs exactly one of \
                             saml_assertion_file or saml_assertion_env"
                        ),
                    ));
                }
                (false, _) => {
                    return Err(ConfigError::new(
                        file,
                        format!(
                            "connections.{name}: saml_assertion_* is only used with grant = \"saml_bearer\""
                        ),
                    ));
                }
            }
            if conn.timeout_secs.is_some_and(|t| t == 0 || t > 300) {
                return Err(ConfigError::new(
                    file,
                    format!(
                        "connections.{name}.timeout_secs must be between 1 and 300 (the gateway's 5-minute ceiling)"
                    ),
                ));
            }
        }
        Ok(())
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

    fn parse(text: &str) -> Result<PipelineConfig, ConfigError> {
        let file = Path::new("p.toml");
        let config = PipelineConfig::parse(text, file)?;
        config.check_references(file)?;
        Ok(config)
    }

    #[test]
    fn parses_a_pipeline() {
        let p = parse(GOOD).unwrap();
        let SourceConfig::M3List(s) = &p.source;
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
        assert_eq!(e.position.unwrap().0, 19, "{e}");
    }

    #[test]
    fn unknown_kinds_and_references_are_named() {
        let e = parse(&GOOD.replace("\"m3_list\"", "\"m3_lst\"")).unwrap_err();
        assert!(e.to_string().contains("m3_lst"), "{e}");
        let e = parse(&GOOD.replace("connection = \"m3\"", "connection = \"ln\"")).unwrap_err();
        assert!(e.to_string().contains("[connections.ln]"), "{e}");
        let e = parse(&GOOD.replace("[[sinks]]\nkind = \"file\"\npath = \"out/items.jsonl\"", ""))
            .unwrap_err();
        assert!(e.to_string().contains("sink"), "{e}");
    }
}
