//! ION Messaging (`/IONSERVICES/api/ion/messaging/service/v2/message`): the
//! simulator accepts any document and keeps recent ones for inspection.
//!
//! Public shape followed: the ION API messaging service v2 `message`
//! endpoint (201 with `status` and `messageId`); the `/__sim/messages` list
//! of what arrived is the simulator's own.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use super::{SimState, lock};

/// Older messages are dropped beyond this, so a long run cannot exhaust memory.
pub(crate) const MESSAGE_LOG_CAPACITY: usize = 10_000;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReceivedMessage {
    pub(crate) id: String,
    pub(crate) received_at: String,
    pub(crate) content_type: Option<String>,
    /// From the message parameters, when the body carried them.
    pub(crate) document_name: Option<String>,
    pub(crate) from_logical_id: Option<String>,
    /// The parsed document when it was JSON, otherwise its text (lossy UTF-8).
    pub(crate) body: Value,
}

#[derive(Debug, Default)]
pub(crate) struct MessageLog {
    messages: VecDeque<ReceivedMessage>,
    received: u64,
}

impl MessageLog {
    pub(crate) fn push(&mut self, content_type: Option<String>, body: Value) -> String {
        self.received += 1;
        let id = format!("00000000-0000-4000-8000-{:012x}", self.received);
        if self.messages.len() == MESSAGE_LOG_CAPACITY {
            self.messages.pop_front();
        }
        self.messages.push_back(ReceivedMessage {
            id: id.clone(),
            // `2026-03-14T09:26:53.007Z`: always milliseconds, always `Z`.
            received_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            content_type,
            document_name: text_field(&body, "documentName"),
            from_logical_id: text_field(&body, "fromLogicalId"),
            body,
        });
        id
    }

    pub(crate) fn list(&self) -> Vec<ReceivedMessage> {
        self.messages.iter().cloned().collect()
    }
}

fn text_field(body: &Value, name: &str) -> Option<String> {
    body.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// `POST /{ti}/IONSERVICES/api/ion/messaging/service/v2/message`
pub(crate) async fn send_message(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let parsed = serde_json::from_slice::<Value>(&body).ok();
    let document =
        parsed.unwrap_or_else(|| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let id = lock(&state.messages).push(content_type, document);
    state.counters.update(|c| c.messages_received += 1);
    (
        StatusCode::CREATED,
        Json(json!({ "status": "Accepted", "messageId": id })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_bounded_and_keeps_the_newest() {
        let mut log = MessageLog::default();
        for i in 0..MESSAGE_LOG_CAPACITY + 5 {
            log.push(None, json!(i));
        }
        let all = log.list();
        assert_eq!(all.len(), MESSAGE_LOG_CAPACITY);
        assert_eq!(all[0].body, json!(5));
        assert_eq!(all.last().unwrap().body, json!(MESSAGE_LOG_CAPACITY + 4));
        assert_ne!(all[0].id, all[1].id);
    }
}
