//! `kind = "ion_message"`: one ION message per record
//! (`IONSERVICES/api/ion/messaging/service/v2/message`).

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::request::{Body, BuildBody, GatewayPlan, Part, RequestPlan};
use super::{Delivery, PlanContext, Scope, SinkKind, SinkPlan};
use crate::config::{Check, HttpMethod, RetryConfig, Variables, default_concurrency};
use crate::products::{Answer, ion};

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IonMessageSinkConfig {
    pub connection: String,
    /// ION document name, e.g. `SyncItemMaster` or a custom `ItemExport`.
    pub document_name: String,
    /// The sender, e.g. `lid://infor.ims.ionflow`.
    pub from_logical_id: String,
    #[serde(default = "default_to_logical_id")]
    pub to_logical_id: String,
    /// Document template; the record as JSON when absent.
    pub document: Option<String>,
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

fn default_to_logical_id() -> String {
    "lid://default".into()
}

impl SinkKind for IonMessageSinkConfig {
    fn check(&self, check: &mut Check<'_, '_>) {
        check.connection(&self.connection);
        if !self.from_logical_id.starts_with("lid://") {
            check.add(
                Some("from_logical_id"),
                "a logical id starts with lid://, e.g. lid://infor.ims.ionflow",
            );
        }
        if !self.to_logical_id.starts_with("lid://") {
            check.add(
                Some("to_logical_id"),
                "a logical id starts with lid://, e.g. lid://default",
            );
        }
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
        let message = Message {
            message: ion::Message {
                document_name: self.document_name.clone(),
                from_logical_id: self.from_logical_id.clone(),
                to_logical_id: self.to_logical_id.clone(),
            },
            document: self.document.as_ref().map(|d| cx.template("document", d)),
        };
        let plan = RequestPlan {
            method: HttpMethod::Post,
            target: Part::Fixed(ion::MESSAGE_PATH.into()),
            query: vec![],
            query_from_record: false,
            headers: vec![],
            body: Body::Built(Arc::new(message)),
            content_type: "application/json".into(),
            answer: Answer::Status {
                label: format!("ION message {}", self.document_name),
            },
            idempotent: false,
            label: format!("ION message {}", self.document_name),
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

/// The message around each record's document: the `document` template,
/// or the record as JSON.
struct Message {
    message: ion::Message,
    document: Option<String>,
}

impl BuildBody for Message {
    fn build(&self, record: &Value, scope: &Scope) -> Result<Vec<u8>, String> {
        let document = match &self.document {
            Some(name) => scope.render(name, record)?,
            None => serde_json::to_string(record).map_err(|e| e.to_string())?,
        };
        serde_json::to_vec(&self.message.body(document)).map_err(|e| e.to_string())
    }

    fn expand(&self, vars: &Variables) -> Result<Arc<dyn BuildBody>, String> {
        Ok(Arc::new(Message {
            message: ion::Message {
                document_name: vars.expand(&self.message.document_name)?,
                from_logical_id: vars.expand(&self.message.from_logical_id)?,
                to_logical_id: vars.expand(&self.message.to_logical_id)?,
            },
            document: self.document.clone(),
        }))
    }
}
