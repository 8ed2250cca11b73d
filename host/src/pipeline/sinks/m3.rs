//! `kind = "m3"`: one M3 MI transaction per record (`m3api-rest/v2/execute/{PROGRAM}/{TRANSACTION}`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::request::{Body, GatewayPlan, Part, RequestPlan};
use super::{Delivery, PlanContext, SinkKind, SinkPlan};
use crate::config::{Check, HttpMethod, RetryConfig, default_concurrency};
use crate::products::{Answer, m3};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct M3SinkConfig {
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

impl SinkKind for M3SinkConfig {
    fn check(&self, check: &mut Check<'_, '_>) {
        check.connection(&self.connection);
        check.delivery(self.concurrency, self.order_key.as_deref());
    }

    fn delivery(&self) -> Option<Delivery<'_>> {
        Some(Delivery {
            connection: Some(&self.connection),
            concurrency: self.concurrency,
            order_key: self.order_key.as_deref(),
        })
    }

    fn plan(&self, cx: &mut PlanContext<'_>) -> Box<dyn SinkPlan> {
        let mut query = self
            .fields
            .as_ref()
            .map(|f| cx.parts("fields", f))
            .unwrap_or_default();
        if let Some(cono) = &self.cono {
            query.push(("cono".into(), cx.part("cono", cono)));
        }
        let plan = RequestPlan {
            method: HttpMethod::Get,
            target: Part::Fixed(m3::execute_path(&self.program, &self.transaction)),
            query,
            query_from_record: self.fields.is_none(),
            headers: vec![],
            body: Body::None,
            content_type: String::new(),
            answer: Answer::M3 {
                transaction: self.transaction.clone(),
            },
            // M3 writes are not idempotent: an Add sent twice adds twice or fails.
            idempotent: false,
            label: format!("M3 {}/{}", self.program, self.transaction),
            concurrency: self.concurrency,
            order_key: self.order_key.as_ref().map(|k| cx.part("order_key", k)),
        };
        Box::new(GatewayPlan {
            connection: self.connection.clone(),
            plan,
            retry: self.retry,
        })
    }
}
