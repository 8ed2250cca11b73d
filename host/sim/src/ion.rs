//! ION Messaging (`/IONSERVICES/api/ion/messaging/service/v2`): documents
//! sent as a JSON message (`message`) or as a multipart message
//! (`multipartMessage`), checked as ION checks them and kept, so that the
//! Data Lake (`datalake.rs`) can list them and serve their bytes.
//!
//! Public shape followed: the ION API messaging service v2 as public
//! clients call it. `message` takes `{documentName, fromLogicalId,
//! toLogicalId?, messageId?, document: {value, encoding: NONE|BASE64,
//! characterSet}}`; `multipartMessage` takes a `ParameterRequest` JSON part
//! (`documentName`, `fromLogicalId`, `toLogicalId` defaulting to
//! `lid://default`, `encoding`, `characterSet`) and a `MessagePayload` part.
//! Both answer 201 with `status` and `messageId`. A refused body gets a
//! 400 with the Spring-style error body (`timestamp`, `status`, `error`,
//! `message`, `path`) of a Java service behind the gateway; its wording
//! is the simulator's own. The `/__sim/messages` list is the simulator's own.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::codec::clip;
use super::{SimState, lock, multipart};

/// Older messages are dropped beyond this many, or beyond
/// `MESSAGE_LOG_BYTES` of documents, so a long run cannot exhaust memory.
pub(crate) const MESSAGE_LOG_CAPACITY: usize = 10_000;
const MESSAGE_LOG_BYTES: usize = 256 * 1024 * 1024;

/// Which endpoint a document came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Endpoint {
    Message,
    MultipartMessage,
    /// Put in the Data Lake through `/__sim/datalake`.
    Control,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReceivedMessage {
    /// ION's message id: the client's `messageId`, or one assigned here.
    pub(crate) id: String,
    /// The Data Lake object id the document is stored under.
    pub(crate) dl_id: String,
    pub(crate) received_at: String,
    pub(crate) endpoint: Endpoint,
    pub(crate) content_type: Option<String>,
    pub(crate) document_name: String,
    pub(crate) from_logical_id: String,
    pub(crate) to_logical_id: String,
    /// `NONE` or `BASE64`, as the message declared it.
    pub(crate) encoding: String,
    /// The document (decoded when it came base64-encoded): parsed when it
    /// is JSON, otherwise its text (lossy UTF-8).
    pub(crate) body: Value,
    /// The document's bytes, decoded, as the Data Lake serves them.
    #[serde(skip)]
    pub(crate) bytes: Arc<Vec<u8>>,
}

#[derive(Debug, Default)]
pub(crate) struct MessageLog {
    messages: VecDeque<ReceivedMessage>,
    bytes: usize,
    received: u64,
}

/// A checked document, ready to keep.
pub(crate) struct Document {
    pub(crate) endpoint: Endpoint,
    pub(crate) content_type: Option<String>,
    pub(crate) document_name: String,
    pub(crate) from_logical_id: String,
    pub(crate) to_logical_id: String,
    pub(crate) message_id: Option<String>,
    pub(crate) encoding: String,
    pub(crate) bytes: Vec<u8>,
}

impl MessageLog {
    /// Keeps `document`; returns its message id and Data Lake id.
    pub(crate) fn push(&mut self, document: Document) -> (String, String) {
        self.received += 1;
        let id = document
            .message_id
            .clone()
            .unwrap_or_else(|| format!("00000000-0000-4000-8000-{:012x}", self.received));
        let body = serde_json::from_slice::<Value>(&document.bytes).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&document.bytes).into_owned())
        });
        self.bytes += document.bytes.len();
        let dl_id = format!("1-{:032x}", self.received);
        self.messages.push_back(ReceivedMessage {
            id: id.clone(),
            dl_id: dl_id.clone(),
            // `2026-03-14T09:26:53.007Z`: always milliseconds, always `Z`.
            received_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            endpoint: document.endpoint,
            content_type: document.content_type,
            document_name: document.document_name,
            from_logical_id: document.from_logical_id,
            to_logical_id: document.to_logical_id,
            encoding: document.encoding,
            body,
            bytes: Arc::new(document.bytes),
        });
        while self.messages.len() > MESSAGE_LOG_CAPACITY
            || (self.bytes > MESSAGE_LOG_BYTES && self.messages.len() > 1)
        {
            if let Some(old) = self.messages.pop_front() {
                self.bytes -= old.bytes.len();
            }
        }
        (id, dl_id)
    }

    pub(crate) fn list(&self) -> Vec<ReceivedMessage> {
        self.messages.iter().cloned().collect()
    }

    /// `f` of every kept message, oldest first, without copying them.
    pub(crate) fn map<T>(&self, f: impl Fn(&ReceivedMessage) -> T) -> Vec<T> {
        self.messages.iter().map(f).collect()
    }

    pub(crate) fn find(&self, dl_id: &str) -> Option<ReceivedMessage> {
        self.messages.iter().find(|m| m.dl_id == dl_id).cloned()
    }
}

/// A Spring-style error body, as a Java service behind the gateway answers.
pub(crate) fn service_error(status: StatusCode, path: &str, message: String) -> Response {
    (
        status,
        Json(json!({
            "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            "status": status.as_u16(),
            "error": status.canonical_reason().unwrap_or(""),
            "message": message,
            "path": path,
        })),
    )
        .into_response()
}

fn text<'a>(object: &'a Value, key: &str) -> Result<Option<&'a str>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

fn required<'a>(object: &'a Value, key: &str) -> Result<&'a str, String> {
    text(object, key)?
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| format!("{key} is required"))
}

fn logical_id(object: &Value, key: &str, default: Option<&str>) -> Result<String, String> {
    let value = match (text(object, key)?, default) {
        (Some(v), _) => v,
        (None, Some(d)) => d,
        (None, None) => return Err(format!("{key} is required")),
    };
    if !value.starts_with("lid://") {
        return Err(format!(
            "{key} {} is not a logical id (lid://...)",
            clip(value, 60)
        ));
    }
    Ok(value.to_owned())
}

/// `NONE` leaves the bytes as they are; `BASE64` decodes them.
fn decode(encoding: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
    match encoding {
        "NONE" => Ok(bytes.to_vec()),
        "BASE64" => {
            let text: Vec<u8> = bytes
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| format!("the document is declared BASE64 but is not ({e})"))
        }
        other => Err(format!(
            "encoding {} is not supported: use NONE or BASE64",
            clip(other, 30)
        )),
    }
}

fn character_set(object: &Value) -> Result<(), String> {
    match text(object, "characterSet")? {
        None => Ok(()),
        Some(set) if set.eq_ignore_ascii_case("UTF-8") || set.eq_ignore_ascii_case("UTF8") => {
            Ok(())
        }
        Some(other) => Err(format!(
            "characterSet {} is not supported by this simulator: use UTF-8",
            clip(other, 30)
        )),
    }
}

/// Checks a `v2/message` body.
fn json_message(content_type: Option<String>, body: &[u8]) -> Result<Document, String> {
    if !content_type
        .as_deref()
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/json"))
    {
        return Err("Content-Type must be application/json".into());
    }
    let message: Value = serde_json::from_slice(body)
        .map_err(|e| format!("JSON parse error: {}", clip(&e.to_string(), 100)))?;
    if !message.is_object() {
        return Err("The message must be a JSON object".into());
    }
    let document_name = required(&message, "documentName")?.to_owned();
    let from_logical_id = logical_id(&message, "fromLogicalId", None)?;
    let to_logical_id = logical_id(&message, "toLogicalId", Some("lid://default"))?;
    let message_id = text(&message, "messageId")?.map(str::to_owned);
    let document = match message.get("document") {
        Some(document @ Value::Object(_)) => document,
        Some(_) => return Err("document must be an object {value, encoding, characterSet}".into()),
        // The old shape put the document in `messagePayload`: a field
        // the service does not know, so the document is simply missing.
        None => return Err("document is required".into()),
    };
    let value = required(document, "value")?;
    let encoding = text(document, "encoding")?.unwrap_or("NONE").to_owned();
    character_set(document)?;
    let bytes = decode(&encoding, value.as_bytes())?;
    Ok(Document {
        endpoint: Endpoint::Message,
        content_type,
        document_name,
        from_logical_id,
        to_logical_id,
        message_id,
        encoding,
        bytes,
    })
}

/// Checks a `v2/multipartMessage` body.
fn multipart_message(content_type: Option<String>, body: &[u8]) -> Result<Document, String> {
    let boundary = multipart::boundary(content_type.as_deref().unwrap_or(""))?;
    let parts = multipart::parse(&boundary, body)?;
    let part = |name: &str| {
        parts
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("Required part '{name}' is not present"))
    };
    let parameters: Value =
        serde_json::from_slice(&part("ParameterRequest")?.body).map_err(|e| {
            format!(
                "ParameterRequest is not JSON: {}",
                clip(&e.to_string(), 100)
            )
        })?;
    if !parameters.is_object() {
        return Err("ParameterRequest must be a JSON object".into());
    }
    let document_name = required(&parameters, "documentName")?.to_owned();
    let from_logical_id = logical_id(&parameters, "fromLogicalId", None)?;
    let to_logical_id = logical_id(&parameters, "toLogicalId", Some("lid://default"))?;
    let message_id = text(&parameters, "messageId")?.map(str::to_owned);
    let encoding = text(&parameters, "encoding")?.unwrap_or("NONE").to_owned();
    character_set(&parameters)?;
    let payload = part("MessagePayload")?;
    if payload.body.is_empty() {
        return Err("MessagePayload is empty".into());
    }
    let bytes = decode(&encoding, &payload.body)?;
    Ok(Document {
        endpoint: Endpoint::MultipartMessage,
        content_type,
        document_name,
        from_logical_id,
        to_logical_id,
        message_id,
        encoding,
        bytes,
    })
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn accept(state: &SimState, path: &str, checked: Result<Document, String>) -> Response {
    match checked {
        Ok(document) => {
            let (id, _) = lock(&state.messages).push(document);
            state.counters.update(|c| c.messages_received += 1);
            (
                StatusCode::CREATED,
                Json(json!({ "status": "Accepted", "messageId": id })),
            )
                .into_response()
        }
        Err(message) => service_error(StatusCode::BAD_REQUEST, path, message),
    }
}

/// `POST /{ti}/IONSERVICES/api/ion/messaging/service/v2/message`
pub(crate) async fn send_message(
    State(state): State<Arc<SimState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let checked = json_message(content_type(&headers), &body);
    accept(&state, uri.path(), checked)
}

/// `POST /{ti}/IONSERVICES/api/ion/messaging/service/v2/multipartMessage`
pub(crate) async fn send_multipart_message(
    State(state): State<Arc<SimState>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let checked = multipart_message(content_type(&headers), &body);
    accept(&state, uri.path(), checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(bytes: &[u8]) -> Document {
        Document {
            endpoint: Endpoint::Control,
            content_type: None,
            document_name: "D".into(),
            from_logical_id: "lid://a".into(),
            to_logical_id: "lid://default".into(),
            message_id: None,
            encoding: "NONE".into(),
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn log_is_bounded_and_keeps_the_newest() {
        let mut log = MessageLog::default();
        for i in 0..MESSAGE_LOG_CAPACITY + 5 {
            log.push(doc(i.to_string().as_bytes()));
        }
        let all = log.list();
        assert_eq!(all.len(), MESSAGE_LOG_CAPACITY);
        assert_eq!(all[0].body, json!(5));
        assert_eq!(all.last().unwrap().body, json!(MESSAGE_LOG_CAPACITY + 4));
        assert_ne!(all[0].id, all[1].id);
        assert_ne!(all[0].dl_id, all[1].dl_id);
    }

    #[test]
    fn the_json_message_needs_its_document_object() {
        let json = Some("application/json".to_owned());
        let ok = json!({"documentName": "D", "fromLogicalId": "lid://a",
            "document": {"value": "PGEvPg==", "encoding": "BASE64", "characterSet": "UTF-8"}});
        let checked = json_message(json.clone(), ok.to_string().as_bytes()).unwrap();
        assert_eq!(checked.bytes, b"<a/>");
        assert_eq!(checked.to_logical_id, "lid://default");
        let old = json!({"documentName": "D", "fromLogicalId": "lid://a",
            "encoding": "NONE", "characterSet": "UTF-8", "messagePayload": "{}"});
        let refused = json_message(json.clone(), old.to_string().as_bytes());
        assert_eq!(refused.err().as_deref(), Some("document is required"));
        let bad_lid = json!({"documentName": "D", "fromLogicalId": "infor.a",
            "document": {"value": "x"}});
        assert!(json_message(json, bad_lid.to_string().as_bytes()).is_err());
        assert!(json_message(None, ok.to_string().as_bytes()).is_err());
    }
}
