//! A pipeline file as a whole: the top-level tables, parsed and checked.
//! The shared pieces are in `crate::config`; each source and sink kind
//! brings its own config struct and checks (`sources/`, `sinks/`).

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::Deserialize;

use super::sinks::SinkConfig;
use super::sources::SourceConfig;
use crate::config::{
    Check, ConfigError, ConnectionConfig, DeadLetterConfig, MissedRuns, Overlap, Problems,
    StateConfig, TestCase, TransformConfig, check_connections, parse_toml,
};

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

/// Parses a table of a pipeline file as its kind's struct, for positions.
fn probe(header: &str, kind: &str, table: &str) -> Option<toml::de::Error> {
    match header {
        "[source]" => SourceConfig::probe(kind, table),
        "[[sinks]]" => SinkConfig::probe(kind, table),
        "[[transforms]]" => TransformConfig::probe(kind, table),
        _ => None,
    }
}

impl PipelineConfig {
    /// Parses pipeline TOML; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<PipelineConfig, ConfigError> {
        parse_toml(text, file, probe)
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
        check_connections(&self.connections, problems);
        let connections: Vec<String> = self.connections.keys().cloned().collect();
        self.source.spec().check(&mut Check {
            problems,
            table: "source".into(),
            connections: connections.clone(),
        });
        for (i, sink) in self.sinks.iter().enumerate() {
            sink.spec().check(&mut Check {
                problems,
                table: format!("sinks[{i}]"),
                connections: connections.clone(),
            });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigErrors;

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
        let delivery = config.sinks[1].spec().delivery().unwrap();
        assert_eq!((delivery.connection, delivery.concurrency), (Some("m3"), 8));
        assert!(
            config.sinks[0].spec().delivery().is_none(),
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
