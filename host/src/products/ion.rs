//! ION Messaging (`IONSERVICES/api/ion/messaging/service/v2`): sending a
//! business document to ION, as a JSON message (`v2/message`, the document
//! under `document: {value, encoding, characterSet}`) or as a multipart
//! message (`v2/multipartMessage`: a `ParameterRequest` JSON part and a
//! `MessagePayload` part), the form for large or non-JSON documents.

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// The JSON message endpoint below `{iu}/{ti}/`.
pub const MESSAGE_PATH: &str = "IONSERVICES/api/ion/messaging/service/v2/message";

/// The multipart message endpoint below `{iu}/{ti}/`.
pub const MULTIPART_PATH: &str = "IONSERVICES/api/ion/messaging/service/v2/multipartMessage";

/// How the document travels: as it is, or base64-encoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    None,
    Base64,
}

impl Encoding {
    /// The name ION expects in `encoding`.
    pub fn wire_name(self) -> &'static str {
        match self {
            Encoding::None => "NONE",
            Encoding::Base64 => "BASE64",
        }
    }
}

/// Who sends which document to whom, and how it is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub document_name: String,
    pub from_logical_id: String,
    pub to_logical_id: String,
    pub encoding: Encoding,
    pub character_set: String,
}

/// A `multipart/form-data` body and the content type that names its boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Multipart {
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Message {
    /// Checks that a document declared base64 is base64, so that ION is
    /// not sent something it will fail to decode.
    pub fn check_document(&self, document: &str) -> Result<(), String> {
        if self.encoding == Encoding::Base64 {
            base64::engine::general_purpose::STANDARD
                .decode(document.trim())
                .map_err(|e| {
                    format!(
                        "the document is declared base64 (encoding = \"base64\") but is not \
                         base64 ({e}); render base64 text, or use encoding = \"none\""
                    )
                })?;
        }
        Ok(())
    }

    /// The parameters every message carries; `messageId` only when given.
    fn parameters(&self, message_id: Option<&str>) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("documentName".into(), json!(self.document_name));
        out.insert("fromLogicalId".into(), json!(self.from_logical_id));
        out.insert("toLogicalId".into(), json!(self.to_logical_id));
        if let Some(id) = message_id.filter(|id| !id.is_empty()) {
            out.insert("messageId".into(), json!(id));
        }
        out
    }

    /// The `v2/message` body: the parameters and
    /// `document: {value, encoding, characterSet}`.
    pub fn body(&self, message_id: Option<&str>, document: &str) -> Value {
        let mut out = self.parameters(message_id);
        out.insert(
            "document".into(),
            json!({
                "value": document,
                "encoding": self.encoding.wire_name(),
                "characterSet": self.character_set,
            }),
        );
        Value::Object(out)
    }

    /// The `ParameterRequest` part of a multipart message.
    pub fn parameter_request(&self, message_id: Option<&str>) -> Value {
        let mut out = self.parameters(message_id);
        out.insert("encoding".into(), json!(self.encoding.wire_name()));
        out.insert("characterSet".into(), json!(self.character_set));
        Value::Object(out)
    }

    /// The `v2/multipartMessage` body: `ParameterRequest` (JSON) and
    /// `MessagePayload` (the document's bytes), under a random boundary.
    pub fn multipart(&self, message_id: Option<&str>, document: &[u8]) -> Multipart {
        let parameters = self.parameter_request(message_id).to_string();
        let payload_type = match self.encoding {
            Encoding::None => format!("text/plain; charset={}", self.character_set),
            Encoding::Base64 => "application/octet-stream".to_owned(),
        };
        let parts = [
            Part {
                name: "ParameterRequest",
                filename: None,
                content_type: "application/json",
                bytes: parameters.as_bytes(),
            },
            Part {
                name: "MessagePayload",
                filename: Some(&self.document_name),
                content_type: &payload_type,
                bytes: document,
            },
        ];
        let boundary = boundary_for(&parts);
        Multipart {
            content_type: format!("multipart/form-data; boundary={boundary}"),
            body: form_data(&boundary, &parts),
        }
    }
}

/// One part of a `multipart/form-data` body (RFC 7578).
struct Part<'a> {
    name: &'a str,
    filename: Option<&'a str>,
    content_type: &'a str,
    bytes: &'a [u8],
}

/// A boundary that occurs in no part: random, drawn again in the
/// (vanishingly unlikely) case that a part contains it.
fn boundary_for(parts: &[Part<'_>]) -> String {
    loop {
        let boundary = format!(
            "ionflow-{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..)
        );
        let delimiter = format!("--{boundary}");
        if !parts
            .iter()
            .any(|p| contains(p.bytes, delimiter.as_bytes()))
        {
            return boundary;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Parameter values in a part header are quoted strings: quotes and line
/// breaks would end the header early.
fn quoted(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '"' | '\r' | '\n' | '\\' => '_',
            c => c,
        })
        .collect()
}

fn form_data(boundary: &str, parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::with_capacity(parts.iter().map(|p| p.bytes.len() + 200).sum());
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let filename = part
            .filename
            .map(|f| format!("; filename=\"{}\"", quoted(f)))
            .unwrap_or_default();
        body.extend_from_slice(
            format!(
                "Content-Disposition: form-data; name=\"{}\"{filename}\r\nContent-Type: {}\r\n\r\n",
                quoted(part.name),
                part.content_type
            )
            .as_bytes(),
        );
        body.extend_from_slice(part.bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(encoding: Encoding) -> Message {
        Message {
            document_name: "SyncItemMaster".into(),
            from_logical_id: "lid://infor.ims.ionflow".into(),
            to_logical_id: "lid://default".into(),
            encoding,
            character_set: "UTF-8".into(),
        }
    }

    #[test]
    fn the_json_body_carries_the_document_under_document() {
        let body = message(Encoding::None).body(Some("m-1"), "{\"a\":1}");
        assert_eq!(
            body,
            json!({
                "documentName": "SyncItemMaster",
                "fromLogicalId": "lid://infor.ims.ionflow",
                "toLogicalId": "lid://default",
                "messageId": "m-1",
                "document": {"value": "{\"a\":1}", "encoding": "NONE", "characterSet": "UTF-8"},
            })
        );
        assert!(body.get("messagePayload").is_none());
        assert!(
            message(Encoding::None)
                .body(None, "x")
                .get("messageId")
                .is_none()
        );
    }

    #[test]
    fn a_multipart_body_has_both_parts_under_a_boundary_it_does_not_contain() {
        let document = b"<SyncItemMaster>\r\n--not-the-boundary\r\n</SyncItemMaster>";
        let m = message(Encoding::None).multipart(None, document);
        let boundary = m
            .content_type
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap();
        let text = String::from_utf8(m.body.clone()).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
        assert_eq!(text.matches(&format!("--{boundary}")).count(), 3);
        assert!(text.contains("name=\"ParameterRequest\"\r\nContent-Type: application/json"));
        assert!(text.contains("\"encoding\":\"NONE\""));
        assert!(text.contains("name=\"MessagePayload\"; filename=\"SyncItemMaster\""));
        assert!(contains(&m.body, document));
        let other = message(Encoding::None).multipart(None, document);
        assert_ne!(m.content_type, other.content_type, "boundaries are random");
    }

    #[test]
    fn base64_documents_are_checked() {
        let m = message(Encoding::Base64);
        assert!(m.check_document("PGE+PC9hPg==").is_ok());
        assert!(
            m.check_document("not base64!")
                .unwrap_err()
                .contains("encoding")
        );
        assert!(message(Encoding::None).check_document("anything").is_ok());
    }
}
