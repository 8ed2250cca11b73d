//! M3 transactions in bulk: `batch_size` records per POST to
//! `m3api-rest/v2/execute`, each transaction's outcome mapped back to its record.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;

use super::request::{Part, expand_parts, unanswered};
use super::{
    Finished, Outcome, PlanContext, RecordError, Rejected, Scope, SinkContext, SinkKind, SinkPlan,
    SinkWriter, field_text,
};
use crate::config::{Check, RetryConfig, Variables};
use crate::pipeline::retry::{RunStats, gateway_call};
use crate::products::{ProductError, m3};
use ionflow_runtime::{Connection, GatewayRequest, Method};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct M3BulkSinkConfig {
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

impl SinkKind for M3BulkSinkConfig {
    fn literal_keys(&self) -> &'static [&'static str] {
        &["program", "transaction"]
    }

    fn check(&self, check: &mut Check<'_, '_>) {
        check.connection(&self.connection);
        check.range(
            "batch_size",
            self.batch_size.into(),
            10_000,
            " (M3's cap per bulk request)",
        );
    }

    fn plan(&self, cx: &mut PlanContext<'_>) -> Box<dyn SinkPlan> {
        Box::new(BulkPlan {
            connection: self.connection.clone(),
            program: self.program.clone(),
            transaction: self.transaction.clone(),
            cono: self.cono.clone(),
            fields: self.fields.as_ref().map(|f| cx.parts("fields", f)),
            batch_size: self.batch_size as usize,
            retry: self.retry,
        })
    }
}

#[derive(Debug, Clone)]
pub struct BulkPlan {
    connection: String,
    program: String,
    transaction: String,
    cono: Option<String>,
    fields: Option<Vec<(String, Part)>>,
    batch_size: usize,
    retry: RetryConfig,
}

impl SinkPlan for BulkPlan {
    fn expand(&self, vars: &Variables) -> Result<Box<dyn SinkPlan>, String> {
        let mut plan = self.clone();
        plan.cono = self.cono.as_ref().map(|c| vars.expand(c)).transpose()?;
        plan.fields = self
            .fields
            .as_ref()
            .map(|f| expand_parts(f, vars))
            .transpose()?;
        Ok(Box::new(plan))
    }

    /// One transaction of the bulk body, as `ionflow test` shows it.
    fn render(&self, record: &Value, scope: &Scope) -> Result<Value, RecordError> {
        Ok(self.render_transaction(record, scope)?)
    }

    fn open(&self, cx: &SinkContext<'_>) -> anyhow::Result<Box<dyn SinkWriter>> {
        Ok(Box::new(BulkWriter::new(
            self.clone(),
            cx.connection(&self.connection)?,
            cx.stats.clone(),
            cx.scope.clone(),
        )))
    }
}

impl BulkPlan {
    fn record_fields(&self, record: &Value, scope: &Scope) -> Result<Map<String, Value>, String> {
        match &self.fields {
            Some(fields) => fields
                .iter()
                .map(|(k, p)| Ok((k.clone(), Value::String(p.render(record, scope)?))))
                .collect(),
            None => Ok(record
                .as_object()
                .ok_or("the record is not a JSON object; reshape it with jq or list the fields")?
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(field_text(v))))
                .collect()),
        }
    }

    /// One transaction of the bulk body, as `ionflow test` shows it.
    fn render_transaction(&self, record: &Value, scope: &Scope) -> Result<Value, String> {
        Ok(json!({"transaction": self.transaction, "record": self.record_fields(record, scope)?}))
    }
}

pub struct BulkWriter {
    plan: BulkPlan,
    connection: Arc<Connection>,
    stats: Arc<RunStats>,
    scope: Arc<Scope>,
    /// The records of the batch being filled and their transactions.
    pending: Vec<(Value, Value)>,
}

impl BulkWriter {
    pub fn new(
        plan: BulkPlan,
        connection: Arc<Connection>,
        stats: Arc<RunStats>,
        scope: Arc<Scope>,
    ) -> Self {
        BulkWriter {
            pending: Vec::with_capacity(plan.batch_size),
            plan,
            connection,
            stats,
            scope,
        }
    }

    pub async fn write(&mut self, record: &Value, out: &mut Outcome) -> anyhow::Result<()> {
        match self.plan.render_transaction(record, &self.scope) {
            Ok(transaction) => self.pending.push((record.clone(), transaction)),
            Err(error) => out.reject(record, error),
        }
        if self.pending.len() >= self.plan.batch_size {
            self.flush(out).await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self, out: &mut Outcome) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        let mut body = json!({
            "program": self.plan.program,
            "transactions": batch.iter().map(|(_, t)| t).collect::<Vec<_>>(),
        });
        if let Some(cono) = &self.plan.cono {
            body["cono"] = Value::String(cono.clone());
        }
        let request = GatewayRequest {
            method: Method::Post,
            path: m3::BULK_PATH.into(),
            query: vec![],
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::to_vec(&body)?,
            timeout_ms: None,
        };
        let label = format!("M3 {} bulk {}", self.plan.program, self.plan.transaction);
        let reject_all =
            |out: &mut Outcome, batch: Vec<(Value, Value)>, error: &dyn Fn() -> RecordError| {
                out.rejected
                    .extend(batch.into_iter().map(|(record, _)| Rejected {
                        record,
                        error: error(),
                    }));
            };
        match gateway_call(
            &self.connection,
            request,
            &self.plan.retry,
            false,
            &self.stats,
        )
        .await
        {
            Ok((response, retries)) => {
                if retries > 0 {
                    out.records_retried += batch.len() as u64;
                }
                match m3::bulk_results(response.status, &response.body, &self.plan.program) {
                    Ok(results) if results.len() == batch.len() => {
                        for ((record, _), result) in batch.into_iter().zip(results) {
                            if let Err(e) = result {
                                out.rejected.push(Rejected {
                                    record,
                                    error: ProductError::from(e).into(),
                                });
                            }
                        }
                    }
                    Ok(results) => {
                        let message = format!(
                            "{label}: {} results for {} transactions; the outcome of each is \
                             unknown, check before sending them again",
                            results.len(),
                            batch.len()
                        );
                        reject_all(out, batch, &|| RecordError::Shape(message.clone()))
                    }
                    Err(e) => reject_all(out, batch, &|| ProductError::from(e.clone()).into()),
                }
            }
            Err(e) => match unanswered(e, &label, false) {
                Ok(error) => reject_all(out, batch, &|| error.clone()),
                Err(stop) => {
                    return Err(stop.context(format!(
                        "{label} via connection `{}`",
                        self.connection.name()
                    )));
                }
            },
        }
        Ok(())
    }
}

impl SinkWriter for BulkWriter {
    fn write<'a>(
        &'a mut self,
        record: &'a Value,
        out: &'a mut Outcome,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(BulkWriter::write(self, record, out))
    }

    fn finish<'a>(
        mut self: Box<Self>,
        out: &'a mut Outcome,
    ) -> BoxFuture<'a, anyhow::Result<Finished>> {
        Box::pin(async move {
            self.flush(out).await?;
            Ok(Finished::default())
        })
    }
}
