//! `ionflow run --dry-run`: the run reads its source and runs its
//! transforms for real, and each sink prints what it would write or send
//! for each record (as `ionflow test` renders it) instead of doing it.

use std::io::Write as _;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::sinks::{Finished, Outcome, Scope, SinkPlan, SinkWriter};

/// Sinks replaced by printers for one dry run.
pub struct DryRun;

impl DryRun {
    pub fn writer(
        index: usize,
        kind: &'static str,
        plan: Box<dyn SinkPlan>,
        scope: Arc<Scope>,
    ) -> Box<dyn SinkWriter> {
        Box::new(DryRunWriter {
            index,
            kind,
            plan,
            scope,
            out: std::io::BufWriter::new(std::io::stdout()),
            shown: 0,
        })
    }
}

struct DryRunWriter {
    index: usize,
    kind: &'static str,
    plan: Box<dyn SinkPlan>,
    scope: Arc<Scope>,
    out: std::io::BufWriter<std::io::Stdout>,
    shown: u64,
}

impl SinkWriter for DryRunWriter {
    fn write<'a>(
        &'a mut self,
        record: &'a Value,
        out: &'a mut Outcome,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        let written = match self.plan.render(record, &self.scope) {
            // One line per write, in the shape `ionflow test` compares.
            Ok(would) => {
                self.shown += 1;
                let line = json!({
                    "sink": format!("sinks[{}]", self.index),
                    "kind": self.kind,
                    "would_send": would,
                });
                serde_json::to_writer(&mut self.out, &line)
                    .map_err(anyhow::Error::from)
                    .and_then(|()| Ok(self.out.write_all(b"\n")?))
            }
            // What would fail at run time fails here too, with its reason.
            Err(error) => {
                out.reject(record, error);
                Ok(())
            }
        };
        Box::pin(std::future::ready(written))
    }

    fn finish<'a>(
        mut self: Box<Self>,
        _out: &'a mut Outcome,
    ) -> BoxFuture<'a, anyhow::Result<Finished>> {
        let flushed = self.out.flush().map(|()| Finished {
            output: None,
            note: Some(format!(
                "sinks[{}] ({}): {} writes shown, none sent",
                self.index, self.kind, self.shown
            )),
        });
        Box::pin(std::future::ready(flushed.map_err(Into::into)))
    }
}
