//! `kind = "ion_message"`: one ION message per record
//! (`IONSERVICES/api/ion/messaging/service/v2/message`).

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::request::{Body, BuildBody, BuiltBody, GatewayPlan, Part, RequestPlan};
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
    /// Template for ION's `messageId`, e.g. `{{ record.id }}`; ION assigns
    /// one when absent (or when it renders empty).
    pub message_id: Option<String>,
    /// `message` (default): `v2/message`, the document inside a JSON body.
    /// `multipart`: `v2/multipartMessage`, a `ParameterRequest` part and a
    /// `MessagePayload` part, for large or non-JSON documents.
    #[serde(default)]
    pub request: IonRequest,
    /// `none` (default): the document is text, sent as it is. `base64`:
    /// the document renders as base64 text (such as a `data_lake` source's
    /// `payload_base64`) and is sent with encoding BASE64.
    #[serde(default)]
    pub encoding: IonEncoding,
    /// The document's character set.
    #[serde(default = "default_character_set")]
    pub character_set: String,
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

fn default_character_set() -> String {
    "UTF-8".into()
}

/// Which ION Messaging endpoint a record goes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IonRequest {
    #[default]
    Message,
    Multipart,
}

/// How the document is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IonEncoding {
    #[default]
    None,
    Base64,
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
                encoding: match self.encoding {
                    IonEncoding::None => ion::Encoding::None,
                    IonEncoding::Base64 => ion::Encoding::Base64,
                },
                character_set: self.character_set.clone(),
            },
            document: self.document.as_ref().map(|d| cx.template("document", d)),
            message_id: self.message_id.as_ref().map(|m| cx.part("message_id", m)),
            request: self.request,
        };
        let plan = RequestPlan {
            method: HttpMethod::Post,
            target: Part::Fixed(
                match self.request {
                    IonRequest::Message => ion::MESSAGE_PATH,
                    IonRequest::Multipart => ion::MULTIPART_PATH,
                }
                .into(),
            ),
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
    message_id: Option<Part>,
    request: IonRequest,
}

impl Message {
    /// The record's document and message id.
    fn parts(&self, record: &Value, scope: &Scope) -> Result<(String, Option<String>), String> {
        let document = match &self.document {
            Some(name) => scope.render(name, record)?,
            None => serde_json::to_string(record).map_err(|e| e.to_string())?,
        };
        self.message.check_document(&document)?;
        let message_id = self
            .message_id
            .as_ref()
            .map(|p| {
                p.render(record, scope)
                    .map_err(|e| format!("message_id: {e}"))
            })
            .transpose()?;
        Ok((document, message_id))
    }
}

impl BuildBody for Message {
    fn build(&self, record: &Value, scope: &Scope) -> Result<BuiltBody, String> {
        let (document, message_id) = self.parts(record, scope)?;
        match self.request {
            IonRequest::Message => {
                serde_json::to_vec(&self.message.body(message_id.as_deref(), &document))
                    .map(BuiltBody::from)
                    .map_err(|e| e.to_string())
            }
            IonRequest::Multipart => {
                let multipart = self
                    .message
                    .multipart(message_id.as_deref(), document.as_bytes());
                Ok(BuiltBody {
                    bytes: multipart.body,
                    content_type: Some(multipart.content_type),
                })
            }
        }
    }

    /// A multipart body's boundary is random: `ionflow test` shows its two
    /// parts instead, which a test can compare.
    fn preview(&self, record: &Value, scope: &Scope) -> Result<Value, String> {
        let (document, message_id) = self.parts(record, scope)?;
        Ok(match self.request {
            IonRequest::Message => self.message.body(message_id.as_deref(), &document),
            IonRequest::Multipart => json!({
                "ParameterRequest": self.message.parameter_request(message_id.as_deref()),
                "MessagePayload": document,
            }),
        })
    }

    fn expand(&self, vars: &Variables) -> Result<Arc<dyn BuildBody>, String> {
        Ok(Arc::new(Message {
            message: ion::Message {
                document_name: vars.expand(&self.message.document_name)?,
                from_logical_id: vars.expand(&self.message.from_logical_id)?,
                to_logical_id: vars.expand(&self.message.to_logical_id)?,
                encoding: self.message.encoding,
                character_set: self.message.character_set.clone(),
            },
            document: self.document.clone(),
            message_id: self
                .message_id
                .as_ref()
                .map(|p| p.expand(vars))
                .transpose()
                .map_err(|e| format!("message_id: {e}"))?,
            request: self.request,
        }))
    }
}
