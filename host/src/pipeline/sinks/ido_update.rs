//! `kind = "ido_update"`: one Mongoose IDO change per record
//! (`CSI/IDORequestService/ido/update/{IDO}`).

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::request::{Body, BuildBody, BuiltBody, GatewayPlan, Part, RequestPlan, expand_parts};
use super::{Delivery, PlanContext, Scope, SinkKind, SinkPlan, field_text};
use crate::config::{Check, HttpMethod, RetryConfig, Variables, default_concurrency};
use crate::products::{Answer, ido};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdoUpdateSinkConfig {
    pub connection: String,
    pub ido: String,
    pub mongoose_config: String,
    #[serde(default)]
    pub action: ido::Action,
    /// Property values as templates; every top-level field when absent.
    pub properties: Option<BTreeMap<String, String>>,
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

impl SinkKind for IdoUpdateSinkConfig {
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
        let changes = Changes {
            ido: self.ido.clone(),
            action: self.action,
            properties: self.properties.as_ref().map(|p| cx.parts("properties", p)),
        };
        let plan = RequestPlan {
            method: HttpMethod::Post,
            target: Part::Fixed(ido::update_path(&self.ido)),
            query: vec![],
            query_from_record: false,
            headers: vec![(ido::CONFIG_HEADER.into(), self.mongoose_config.clone())],
            body: Body::Built(Arc::new(changes)),
            content_type: "application/json".into(),
            answer: Answer::IdoUpdate {
                ido: self.ido.clone(),
            },
            idempotent: self.action != ido::Action::Insert,
            label: format!("IDO {}", self.ido),
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

/// The `Changes` body: the listed properties, or every top-level field of
/// the record but `_ItemId`, which names the item to change.
struct Changes {
    ido: String,
    action: ido::Action,
    properties: Option<Vec<(String, Part)>>,
}

impl BuildBody for Changes {
    fn build(&self, record: &Value, scope: &Scope) -> Result<BuiltBody, String> {
        let props: Vec<(String, String)> = match &self.properties {
            Some(list) => list
                .iter()
                .map(|(k, p)| p.render(record, scope).map(|v| (k.clone(), v)))
                .collect::<Result<_, _>>()?,
            None => record
                .as_object()
                .ok_or("the record is not a JSON object; list the properties")?
                .iter()
                .filter(|(k, _)| *k != "_ItemId")
                .map(|(k, v)| (k.clone(), field_text(v)))
                .collect(),
        };
        let item_id = record.get("_ItemId").and_then(Value::as_str).unwrap_or("");
        serde_json::to_vec(&ido::update_body(&self.ido, self.action, item_id, &props))
            .map(BuiltBody::from)
            .map_err(|e| e.to_string())
    }

    fn expand(&self, vars: &Variables) -> Result<Arc<dyn BuildBody>, String> {
        Ok(Arc::new(Changes {
            ido: self.ido.clone(),
            action: self.action,
            properties: self
                .properties
                .as_ref()
                .map(|p| expand_parts(p, vars))
                .transpose()?,
        }))
    }
}
