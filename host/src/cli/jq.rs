//! `ionflow jq FILTER [FILE]`: a filter over sample records, the way a
//! pipeline's transform runs it (same jq, same `$state`, `$vars`, `$env`,
//! `$run`), to try a transform before putting it in a pipeline.

use std::io::{BufRead as _, Read as _, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use super::{Exit, new_session, parse_vars};
use crate::pipeline::{JqFilter, JqGlobals, JqLimits, Pipeline, Variables};

/// Records read from a file or stdin at most: a sample, not a data set.
const MAX_SAMPLE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Args)]
pub struct JqArgs {
    /// The jq filter, e.g. 'select(.STAT == "20") | {item: .ITNO}'
    filter: String,
    /// Records: JSON Lines, a JSON array or one JSON value (stdin when left out)
    file: Option<PathBuf>,
    /// Take the records from this pipeline's source instead (with its
    /// saved watermarks and [vars]), through its connection
    #[arg(long, value_name = "PIPELINE", conflicts_with = "file")]
    from: Option<PathBuf>,
    /// How many records to take with --from
    #[arg(long, default_value_t = 10, value_name = "N")]
    limit: u64,
    /// Set a variable: `[vars]` NAME, and ${env.NAME} over the environment (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Time budget per record, as a transform's timeout_ms
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
}

fn parse_records(text: &str, origin: &str) -> anyhow::Result<Vec<Value>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let value: Value =
            serde_json::from_str(text).with_context(|| format!("{origin} is not a JSON array"))?;
        return Ok(match value {
            Value::Array(items) => items,
            other => vec![other],
        });
    }
    // JSON Lines, or one JSON value spread over several lines.
    let mut records = Vec::new();
    for (i, line) in std::io::Cursor::new(text).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(v) => records.push(v),
            Err(e) if records.is_empty() => {
                return serde_json::from_str(text)
                    .map(|v| vec![v])
                    .with_context(|| {
                        format!(
                            "{origin}:{}: not JSON ({e}); give JSON Lines or a JSON array",
                            i + 1
                        )
                    });
            }
            Err(e) => anyhow::bail!("{origin}:{}: not JSON: {e}", i + 1),
        }
    }
    Ok(records)
}

pub async fn jq(args: JqArgs) -> anyhow::Result<Exit> {
    let filter = JqFilter::compile(&args.filter)
        .map_err(|e| crate::pipeline::ConfigError::new(std::path::Path::new("FILTER"), e))?;
    let vars = Variables::new(parse_vars(&args.vars)?);
    let (records, globals) = match (&args.from, &args.file) {
        (Some(pipeline), _) => {
            let pipeline = Pipeline::load(pipeline, vars)?;
            let (runtime, grants) = new_session().await?;
            pipeline.sample(&runtime, &grants, args.limit).await?
        }
        (None, Some(file)) => {
            let mut text = String::new();
            std::fs::File::open(file)
                .with_context(|| format!("cannot read {}", file.display()))?
                .take(MAX_SAMPLE_BYTES)
                .read_to_string(&mut text)
                .with_context(|| format!("cannot read {}", file.display()))?;
            (
                parse_records(&text, &file.display().to_string())?,
                globals_of(&vars, &args.filter),
            )
        }
        (None, None) => {
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_SAMPLE_BYTES)
                .read_to_string(&mut text)
                .context("reading records from stdin")?;
            (
                parse_records(&text, "stdin")?,
                globals_of(&vars, &args.filter),
            )
        }
    };
    let limits = JqLimits {
        time: std::time::Duration::from_millis(args.timeout_ms),
        memory_mib: crate::config::default_jq_max_memory_mb() as usize,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let mut failed = 0;
    for (i, record) in records.iter().enumerate() {
        match filter.apply_with(record.clone(), limits, &globals) {
            Ok(outputs) => {
                for output in outputs {
                    serde_json::to_writer(&mut out, &output)?;
                    out.write_all(b"\n")?;
                }
            }
            Err(e) => {
                failed += 1;
                out.flush()?;
                eprintln!("record {i}: {e}");
            }
        }
    }
    out.flush()?;
    Ok(if failed > 0 {
        Exit::RecordsFailed
    } else {
        Exit::Success
    })
}

/// `$vars` and `$env` from `--var` (and the environment) without a pipeline.
fn globals_of(vars: &Variables, filter: &str) -> JqGlobals {
    let object = |pairs: Vec<(String, String)>| {
        Value::Object(
            pairs
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        )
    };
    let env = crate::pipeline::jq_env_names(filter)
        .into_iter()
        .filter_map(|name| Some((name.clone(), vars.env(&name)?)))
        .collect();
    let given = vars
        .overrides()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    JqGlobals::new(
        &Value::Object(Default::default()),
        &object(given),
        &object(env),
        &serde_json::json!({ "started_at": crate::pipeline::now_rfc3339() }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lines_arrays_and_single_values() {
        assert_eq!(
            parse_records("{\"a\":1}\n\n{\"a\":2}\n", "x")
                .unwrap()
                .len(),
            2
        );
        assert_eq!(parse_records(" [1, 2, 3]", "x").unwrap().len(), 3);
        assert_eq!(parse_records("{\n \"a\": 1\n}\n", "x").unwrap().len(), 1);
        let e = parse_records("{\"a\":1}\nnope\n", "f.jsonl").unwrap_err();
        assert!(e.to_string().contains("f.jsonl:2"), "{e}");
    }
}
