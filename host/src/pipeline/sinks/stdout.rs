//! `kind = "stdout"`: records written to standard output as JSON Lines.

use std::io::Write as _;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{
    Finished, Outcome, PlanContext, RecordError, Scope, SinkContext, SinkKind, SinkPlan, SinkWriter,
};
use crate::config::{Check, Variables};

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// Indent each record over several lines instead of one line each.
    #[serde(default)]
    pub pretty: bool,
}

impl SinkKind for StdoutSinkConfig {
    fn check(&self, _check: &mut Check<'_, '_>) {}

    fn plan(&self, _cx: &mut PlanContext<'_>) -> Box<dyn SinkPlan> {
        Box::new(self.clone())
    }
}

impl SinkPlan for StdoutSinkConfig {
    fn expand(&self, _vars: &Variables) -> Result<Box<dyn SinkPlan>, String> {
        Ok(Box::new(self.clone()))
    }

    fn render(&self, record: &Value, _scope: &Scope) -> Result<Value, RecordError> {
        Ok(record.clone())
    }

    fn open(&self, _cx: &SinkContext<'_>) -> anyhow::Result<Box<dyn SinkWriter>> {
        Ok(Box::new(StdoutWriter {
            out: std::io::BufWriter::new(std::io::stdout()),
            pretty: self.pretty,
        }))
    }
}

struct StdoutWriter {
    out: std::io::BufWriter<std::io::Stdout>,
    pretty: bool,
}

impl SinkWriter for StdoutWriter {
    fn write<'a>(
        &'a mut self,
        record: &'a Value,
        _out: &'a mut Outcome,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        let written = (|| {
            if self.pretty {
                serde_json::to_writer_pretty(&mut self.out, record)?;
            } else {
                serde_json::to_writer(&mut self.out, record)?;
            }
            self.out.write_all(b"\n")?;
            Ok(())
        })();
        Box::pin(std::future::ready(written))
    }

    fn takes_json_lines(&self) -> bool {
        !self.pretty
    }

    fn write_json_lines(&mut self, lines: &[u8], _count: usize) -> anyhow::Result<()> {
        anyhow::ensure!(!self.pretty, "pretty output does not take JSON text");
        self.out.write_all(lines)?;
        Ok(())
    }

    fn finish<'a>(
        mut self: Box<Self>,
        _out: &'a mut Outcome,
    ) -> BoxFuture<'a, anyhow::Result<Finished>> {
        let flushed = self.out.flush().map(|()| Finished::default());
        Box::pin(std::future::ready(flushed.map_err(Into::into)))
    }
}
