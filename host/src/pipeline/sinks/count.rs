//! `kind = "count"`: counts the records that reach it and discards them,
//! for trying a source and its transforms without writing anything. The
//! number is in the run's log and in `ionflow test` nothing is rendered
//! but the record itself.

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::{
    Finished, Outcome, PlanContext, RecordError, Scope, SinkContext, SinkKind, SinkPlan, SinkWriter,
};
use crate::config::{Check, Variables};

/// Counts records and discards them.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CountSinkConfig {
    /// Names the count in the log line; `sinks[N]` when absent.
    pub label: Option<String>,
}

impl SinkKind for CountSinkConfig {
    fn literal_keys(&self) -> &'static [&'static str] {
        &["label"]
    }

    fn check(&self, check: &mut Check<'_, '_>) {
        if self.label.as_deref().is_some_and(|l| l.trim().is_empty()) {
            check.add(Some("label"), "give a name, or leave the key out");
        }
    }

    fn plan(&self, _cx: &mut PlanContext<'_>) -> Box<dyn SinkPlan> {
        Box::new(self.clone())
    }
}

impl SinkPlan for CountSinkConfig {
    fn expand(&self, _vars: &Variables) -> Result<Box<dyn SinkPlan>, String> {
        Ok(Box::new(self.clone()))
    }

    fn render(&self, record: &Value, _scope: &Scope) -> Result<Value, RecordError> {
        Ok(record.clone())
    }

    fn open(&self, cx: &SinkContext<'_>) -> anyhow::Result<Box<dyn SinkWriter>> {
        Ok(Box::new(Counter {
            label: self
                .label
                .clone()
                .unwrap_or_else(|| format!("sinks[{}]", cx.index)),
            records: 0,
        }))
    }
}

struct Counter {
    label: String,
    records: u64,
}

impl SinkWriter for Counter {
    fn write<'a>(
        &'a mut self,
        _record: &'a Value,
        _out: &'a mut Outcome,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        self.records += 1;
        Box::pin(std::future::ready(Ok(())))
    }

    fn takes_json_lines(&self) -> bool {
        true
    }

    fn write_json_lines(&mut self, _lines: &[u8], count: usize) -> anyhow::Result<()> {
        self.records += count as u64;
        Ok(())
    }

    fn finish<'a>(
        self: Box<Self>,
        _out: &'a mut Outcome,
    ) -> BoxFuture<'a, anyhow::Result<Finished>> {
        let note = format!("{}: {} records counted", self.label, self.records);
        Box::pin(std::future::ready(Ok(Finished {
            output: None,
            note: Some(note),
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_every_record_and_keeps_none() {
        let mut counter: Box<dyn SinkWriter> = Box::new(Counter {
            label: "seen".into(),
            records: 0,
        });
        let mut out = Outcome::default();
        for i in 0..5 {
            counter
                .write(&serde_json::json!({ "n": i }), &mut out)
                .await
                .unwrap();
        }
        let finished = counter.finish(&mut out).await.unwrap();
        assert_eq!(finished.note.as_deref(), Some("seen: 5 records counted"));
        assert!(finished.output.is_none());
        assert!(out.rejected.is_empty());
    }
}
