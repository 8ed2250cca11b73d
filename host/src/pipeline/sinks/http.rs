//! `kind = "http"`: one plain HTTP(S) request per record, outside the gateway.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::request::{Body, HttpPlan, RequestPlan};
use super::{Delivery, PlanContext, SinkKind, SinkPlan};
use crate::config::{
    Check, HttpMethod, RetryConfig, default_concurrency, default_content_type,
    default_http_timeout_secs,
};
use crate::products::Answer;

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// URL template, e.g. `https://example.com/items/{{ record.item }}`.
    pub url: String,
    #[serde(default)]
    pub method: HttpMethod,
    /// Header values; put secrets in `${env.NAME}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body template; the record as JSON when absent.
    pub body: Option<String>,
    #[serde(default = "default_content_type")]
    pub content_type: String,
    #[serde(default = "default_http_timeout_secs")]
    pub timeout_secs: u64,
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

impl SinkKind for HttpSinkConfig {
    fn check(&self, check: &mut Check<'_, '_>) {
        check.header_secrets(&self.headers);
        check.url("url", &self.url);
        check.delivery(self.concurrency, self.order_key.as_deref());
    }

    fn delivery(&self) -> Option<Delivery<'_>> {
        Some(Delivery {
            connection: None,
            concurrency: self.concurrency,
            order_key: self.order_key.as_deref(),
        })
    }

    fn plan(&self, cx: &mut PlanContext<'_>) -> Box<dyn SinkPlan> {
        let plan = RequestPlan {
            method: self.method,
            target: cx.part("url", &self.url),
            query: vec![],
            query_from_record: false,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            body: Body::from_template(self.body.as_deref(), self.method, cx),
            content_type: self.content_type.clone(),
            answer: Answer::Status {
                label: self.url.clone(),
            },
            idempotent: matches!(
                self.method,
                HttpMethod::Put | HttpMethod::Delete | HttpMethod::Get
            ),
            label: self.url.clone(),
            concurrency: self.concurrency,
            order_key: self.order_key.as_ref().map(|k| cx.part("order_key", k)),
        };
        Box::new(HttpPlan {
            plan,
            timeout: Duration::from_secs(self.timeout_secs),
            retry: self.retry,
        })
    }
}
