//! M3 transactions in bulk: `batch_size` records per POST to
//! `m3api-rest/v2/execute`, each transaction's outcome mapped back to its record.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::request::Part;
use super::{Outcome, Rejected, Scope, field_text};
use crate::pipeline::config::{M3BulkSink, RetryConfig};
use crate::pipeline::retry::{RunStats, gateway_call};
use crate::pipeline::template::Templates;
use crate::products::m3;
use crate::runtime::{Connection, ErrorKind, GatewayRequest, Method};

#[derive(Debug, Clone)]
pub struct BulkPlan {
    pub connection: String,
    program: String,
    transaction: String,
    cono: Option<String>,
    fields: Option<Vec<(String, Part)>>,
    batch_size: usize,
    retry: RetryConfig,
}

impl BulkPlan {
    pub fn compile(
        c: &M3BulkSink,
        prefix: &str,
        templates: &mut Templates,
        errors: &mut Vec<(String, String)>,
    ) -> Self {
        let fields = c.fields.as_ref().map(|fields| {
            fields
                .iter()
                .map(|(k, v)| {
                    if !v.contains("{{") && !v.contains("{%") {
                        return (k.clone(), Part::Fixed(v.clone()));
                    }
                    let name = format!("{prefix}.fields.{k}");
                    if let Err(e) = templates.add(&name, v) {
                        errors.push((format!("fields.{k}"), e));
                    }
                    (k.clone(), Part::Template(name))
                })
                .collect()
        });
        BulkPlan {
            connection: c.connection.clone(),
            program: c.program.clone(),
            transaction: c.transaction.clone(),
            cono: c.cono.clone(),
            fields,
            batch_size: c.batch_size as usize,
            retry: c.retry,
        }
    }

    fn record_fields(&self, record: &Value, scope: &Scope) -> Result<Map<String, Value>, String> {
        match &self.fields {
            Some(fields) => fields
                .iter()
                .map(|(k, p)| {
                    let v = match p {
                        Part::Fixed(s) => s.clone(),
                        Part::Template(name) => scope.render(name, record)?,
                    };
                    Ok((k.clone(), Value::String(v)))
                })
                .collect(),
            None => Ok(record
                .as_object()
                .ok_or("the record is not a JSON object; reshape it with jq or list the fields")?
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(field_text(v))))
                .collect()),
        }
    }

    /// The plan with `${...}` expanded in its fixed parts, for one run.
    pub fn expand(
        &self,
        vars: &crate::pipeline::interpolate::Variables,
    ) -> Result<BulkPlan, String> {
        let mut plan = self.clone();
        plan.cono = self.cono.as_ref().map(|c| vars.expand(c)).transpose()?;
        plan.fields = self
            .fields
            .as_ref()
            .map(|f| {
                f.iter()
                    .map(|(k, p)| p.expand(vars).map(|p| (k.clone(), p)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(plan)
    }

    /// One transaction of the bulk body, as `ionflow test` shows it.
    pub fn render_transaction(&self, record: &Value, scope: &Scope) -> Result<Value, String> {
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
            Err(error) => out.rejected.push(Rejected {
                record: record.clone(),
                error,
            }),
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
        let reject_all = |out: &mut Outcome, batch: Vec<(Value, Value)>, error: String| {
            out.rejected
                .extend(batch.into_iter().map(|(record, _)| Rejected {
                    record,
                    error: error.clone(),
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
                                    error: e.to_string(),
                                });
                            }
                        }
                    }
                    Ok(results) => reject_all(
                        out,
                        batch,
                        format!(
                            "{label}: {} results for {} transactions; the outcome of each is unknown",
                            results.len(),
                            self.plan.batch_size
                        ),
                    ),
                    Err(e) => reject_all(out, batch, e.to_string()),
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Failed) => reject_all(
                out,
                batch,
                format!("{label}: {e}; the outcome is unknown, check before sending again"),
            ),
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "{label} via connection `{}`",
                    self.connection.name()
                )));
            }
        }
        Ok(())
    }
}
