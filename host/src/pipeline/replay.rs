//! `ionflow replay`: records of a dead-letter file sent through the
//! pipeline's sinks again. A record that failed in a sink goes to that sink
//! only (the others had it already); one that failed in a transform goes
//! through the transforms and every sink. Those that succeed leave the file,
//! which is rewritten once, atomically (write, then rename), so a crash
//! loses nothing: at worst a record is sent again by the next replay.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::retry::RunStats;
use super::sinks::{Outcome, SinkContext, SinkWriter};
use super::{Interrupted, Pipeline, RunOptions};
use crate::grants::Grants;
use ionflow_runtime::Runtime;

/// What a replay did.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReplaySummary {
    pub file: PathBuf,
    /// Records sent and accepted: removed from the file.
    pub delivered: u64,
    /// Records refused again: kept, with the new error.
    pub failed: u64,
    /// Lines left as they were: not this pipeline's, not JSON, or for a
    /// sink that writes files (replaying into a file would replace it).
    pub kept: u64,
}

/// Sinks that write locally are not replayed into: their output of the
/// original run is complete apart from the refused records, and opening
/// them again would replace it.
fn replayable(kind: &str) -> bool {
    !matches!(kind, "file" | "stdout" | "count")
}

impl Pipeline {
    pub async fn replay(
        &self,
        runtime: &Runtime,
        grants: &Grants,
        file: &Path,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<ReplaySummary> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the dead-letter file {}", file.display()))?;
        let connections = self.open_connections(runtime).await?;
        // Held like a run's ([`Session::Once`](super::Session::Once)).
        let held = self.hold_grants(grants, &connections, false).await?;
        let stats = Arc::new(RunStats::default());
        let http = super::http::HttpClient::new(runtime.limits().response_bytes);
        let state = match &self.config.state {
            Some(_) => self.stored_watermarks().await?.values(),
            None => BTreeMap::new(),
        };
        let vars = self.vars.clone().with_state(state);
        let (scope, plans) = self.prepare_sinks(&vars)?;
        let scope = Arc::new(scope);
        let globals = self.jq_globals(&vars, &RunOptions::default());
        let mut sinks: Vec<Option<Box<dyn SinkWriter>>> = Vec::new();
        for (index, plan) in plans.iter().enumerate() {
            let kind = self.config.sinks[index].kind_name();
            sinks.push(if replayable(kind) {
                Some(plan.open(&SinkContext {
                    index,
                    connections: &connections,
                    vars: &vars,
                    base_dir: &self.base_dir,
                    http: &http,
                    stats: stats.clone(),
                    scope: scope.clone(),
                })?)
            } else {
                None
            });
        }

        let mut summary = ReplaySummary {
            file: file.to_owned(),
            ..ReplaySummary::default()
        };
        let mut remaining: Vec<String> = Vec::new();
        tokio::pin!(stop);
        let mut stopped = false;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let entry: Option<Value> = serde_json::from_str(line).ok();
            let target = entry.as_ref().and_then(|e| {
                let stage = e.get("stage")?.as_str()?;
                let record = e.get("record")?;
                let of_this = e
                    .get("pipeline")
                    .and_then(Value::as_str)
                    .is_none_or(|p| p == self.name);
                of_this.then_some((stage.to_owned(), record.clone()))
            });
            let Some((stage, record)) = target.filter(|_| !stopped) else {
                summary.kept += 1;
                remaining.push(line.to_owned());
                continue;
            };
            // Checked between records, never inside a call.
            if futures::FutureExt::now_or_never(&mut stop).is_some() {
                stopped = true;
                summary.kept += 1;
                remaining.push(line.to_owned());
                continue;
            }
            let targets: Vec<(usize, Value)> = match sink_index(&stage) {
                Some(i) if i < sinks.len() => vec![(i, record.clone())],
                Some(_) => Vec::new(),
                None => match self.transform(&record, &globals) {
                    Ok(outputs) => outputs
                        .into_iter()
                        .flat_map(|o| (0..sinks.len()).map(move |i| (i, o.clone())))
                        .collect(),
                    Err(failure) => {
                        summary.failed += 1;
                        remaining.push(entry_line(
                            &self.name,
                            &failure.stage,
                            &failure.error,
                            &record,
                        ));
                        continue;
                    }
                },
            };
            let mut failure: Option<(String, String)> = None;
            let mut sent = false;
            for (i, output) in targets {
                let Some(sink) = sinks[i].as_mut() else {
                    continue;
                };
                sent = true;
                let mut outcome = Outcome::default();
                sink.write(&output, &mut outcome).await?;
                sink.settle(&mut outcome).await?;
                if let Some(rejected) = outcome.rejected.into_iter().next() {
                    failure = Some((format!("sinks[{i}]"), rejected.error.to_string()));
                    break;
                }
            }
            match (failure, sent) {
                (Some((stage, error)), _) => {
                    summary.failed += 1;
                    remaining.push(entry_line(&self.name, &stage, &error, &record));
                }
                (None, true) => summary.delivered += 1,
                (None, false) => {
                    summary.kept += 1;
                    remaining.push(line.to_owned());
                }
            }
        }
        for sink in sinks.into_iter().flatten() {
            let mut outcome = Outcome::default();
            sink.finish(&mut outcome).await?;
        }
        self.release_grants(grants, &held, &connections).await;
        rewrite(file, &remaining)?;
        if stopped {
            return Err(Interrupted.into());
        }
        Ok(summary)
    }
}

/// `sinks[2]` → 2; any other stage (`transforms[0]`) → `None`.
fn sink_index(stage: &str) -> Option<usize> {
    stage
        .strip_prefix("sinks[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn entry_line(pipeline: &str, stage: &str, error: &str, record: &Value) -> String {
    json!({
        "pipeline": pipeline,
        "at": super::summary::now_rfc3339(),
        "stage": stage,
        "error": error,
        "record": record,
    })
    .to_string()
}

/// Replaces the file with the lines still failing, atomically; an empty
/// result removes the file, as a clean run leaves none.
fn rewrite(file: &Path, lines: &[String]) -> anyhow::Result<()> {
    if lines.is_empty() {
        return std::fs::remove_file(file)
            .with_context(|| format!("cannot remove {}", file.display()));
    }
    let mut partial = file.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?,
    );
    for line in lines {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    let out = out.into_inner().map_err(|e| e.into_error())?;
    out.sync_all()?;
    std::fs::rename(&partial, file)
        .with_context(|| format!("cannot replace {}", file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_name_their_sink() {
        assert_eq!(sink_index("sinks[2]"), Some(2));
        assert_eq!(sink_index("transforms[0]"), None);
        assert!(!replayable("file") && replayable("m3"));
    }

    #[test]
    fn the_file_is_replaced_whole_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dl.jsonl");
        std::fs::write(&file, "a\nb\nc\n").unwrap();
        rewrite(&file, &["b".to_owned()]).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "b\n");
        rewrite(&file, &[]).unwrap();
        assert!(!file.exists());
    }
}
