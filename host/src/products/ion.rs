//! ION Messaging (`IONSERVICES/api/ion/messaging/service/v2`): sending a
//! business document to ION.

use serde_json::{Value, json};

/// The JSON message endpoint below `{iu}/{ti}/`.
pub const MESSAGE_PATH: &str = "IONSERVICES/api/ion/messaging/service/v2/message";

/// Who sends which document to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub document_name: String,
    pub from_logical_id: String,
    pub to_logical_id: String,
}

impl Message {
    /// The JSON body that carries `document` (text) in this message.
    pub fn body(&self, document: String) -> Value {
        json!({
            "documentName": self.document_name,
            "fromLogicalId": self.from_logical_id,
            "toLogicalId": self.to_logical_id,
            "encoding": "NONE",
            "characterSet": "UTF-8",
            "messagePayload": document,
        })
    }
}
