//! `kind = "gateway"`: one request per record on any gateway path below
//! `{iu}/{ti}/`, its answer read by the envelope the pipeline names.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::request::{Body, GatewayPlan, RequestPlan};
use super::{Delivery, PlanContext, SinkKind, SinkPlan};
use crate::config::{Check, HttpMethod, RetryConfig, default_concurrency, default_content_type};
use crate::products::Answer;

/// How a gateway sink reads the product's answer.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Envelope {
    /// Only the HTTP status counts.
    #[default]
    Status,
    /// M3 REST: `nrOfFailedTransactions` and `errorMessage`.
    M3,
    /// Mongoose IDO: `Success` and `Message`.
    Ido,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewaySinkConfig {
    pub connection: String,
    #[serde(default)]
    pub method: HttpMethod,
    /// Path template below `{iu}/{ti}/`.
    pub path: String,
    /// Query parameter templates.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body template; the record as JSON when absent.
    pub body: Option<String>,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    #[serde(default)]
    pub envelope: Envelope,
    /// Whether a call that timed out may be sent again (only if the endpoint is idempotent).
    #[serde(default)]
    pub idempotent: bool,
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

impl GatewaySinkConfig {
    /// How the answer is read. M3 and IDO paths end with the transaction
    /// or the IDO, which their envelopes name in errors.
    fn answer(&self) -> Answer {
        let last_segment = self
            .path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(&self.path)
            .to_owned();
        match self.envelope {
            Envelope::Status => Answer::Status {
                label: self.path.clone(),
            },
            Envelope::M3 => Answer::M3 {
                transaction: last_segment,
            },
            Envelope::Ido => Answer::IdoUpdate { ido: last_segment },
        }
    }
}

impl SinkKind for GatewaySinkConfig {
    fn check(&self, check: &mut Check<'_, '_>) {
        check.header_secrets(&self.headers);
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
        let plan = RequestPlan {
            method: self.method,
            target: cx.part("path", &self.path),
            query: cx.parts("query", &self.query),
            query_from_record: false,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            body: Body::from_template(self.body.as_deref(), self.method, cx),
            content_type: self.content_type.clone(),
            answer: self.answer(),
            idempotent: self.idempotent,
            label: self.path.clone(),
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
