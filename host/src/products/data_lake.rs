//! ION Data Lake (`IONSERVICES/datalakeapi/v1`): the list of stored objects
//! (`payloads/list`, paged with `page` from 1 and `records`, the page size)
//! and one object's bytes (`payloads/streambyid?datalakeId=`).
//!
//! The list answers the object descriptors in a `fields` array (`dl_id`,
//! `dl_document_name`, `event_date`, `dl_size`, ...) with paging values
//! beside it (`page`, `records`, totals under names that vary); only
//! `fields`, `page` and `records` are read, anything else is tolerated.

use serde_json::Value;

/// The payload list below `{iu}/{ti}/`.
pub const LIST_PATH: &str = "IONSERVICES/datalakeapi/v1/payloads/list";

/// One stored object's bytes below `{iu}/{ti}/`, with `datalakeId=<dl_id>`.
pub const STREAM_PATH: &str = "IONSERVICES/datalakeapi/v1/payloads/streambyid";

/// An answer of the Data Lake API that is not what was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Data Lake {0}")]
pub struct DataLakeError(pub String);

/// One page of the list.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    /// The object descriptors, in the order listed.
    pub descriptors: Vec<Value>,
    /// The page number the answer says it is, when it says.
    pub page: Option<u64>,
    /// The page size the answer says it used (`records`), when it says.
    pub page_size: Option<u64>,
}

/// A paging value as a number, whether it came as one or as digits.
fn number(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads one `payloads/list` answer.
pub fn list_page(status: u16, body: &[u8]) -> Result<ListPage, DataLakeError> {
    if !(200..300).contains(&status) {
        return Err(DataLakeError(format!(
            "payloads/list answered HTTP {status}: {}",
            super::excerpt(body)
        )));
    }
    let mut document: Value = serde_json::from_slice(body)
        .map_err(|e| DataLakeError(format!("payloads/list: the answer is not JSON ({e})")))?;
    let page = number(document.get("page"));
    let page_size = number(document.get("records"));
    let descriptors = match document.get_mut("fields").map(Value::take) {
        Some(Value::Array(fields)) => fields,
        Some(Value::Null) | None => {
            let keys = document
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            return Err(DataLakeError(format!(
                "payloads/list: the answer has no `fields` array of object descriptors \
                 (its keys: {keys}); is the path the Data Lake API v1?"
            )));
        }
        Some(other) => {
            return Err(DataLakeError(format!(
                "payloads/list: `fields` is not an array but {}",
                super::excerpt(other.to_string().as_bytes())
            )));
        }
    };
    if let Some(bad) = descriptors.iter().find(|d| !d.is_object()) {
        return Err(DataLakeError(format!(
            "payloads/list: `fields` holds {} where an object descriptor belongs",
            super::excerpt(bad.to_string().as_bytes())
        )));
    }
    Ok(ListPage {
        descriptors,
        page,
        page_size,
    })
}

/// The `dl_id` of a descriptor, which `streambyid` takes.
pub fn object_id(descriptor: &Value) -> Result<&str, DataLakeError> {
    descriptor
        .get("dl_id")
        .and_then(Value::as_str)
        .filter(|id| !id.trim().is_empty())
        .ok_or_else(|| {
            DataLakeError(format!(
                "payloads/list: a descriptor has no `dl_id`: {}",
                super::excerpt(descriptor.to_string().as_bytes())
            ))
        })
}

/// The size a descriptor declares (`dl_size`), when it declares one.
pub fn declared_size(descriptor: &Value) -> Option<u64> {
    number(descriptor.get("dl_size"))
}

/// Checks a `streambyid` answer; the body is the object's bytes.
pub fn stream(status: u16, body: &[u8], id: &str) -> Result<(), DataLakeError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let hint = if status == 404 {
        " (the object is gone: purged or archived since it was listed)"
    } else {
        ""
    };
    Err(DataLakeError(format!(
        "payloads/streambyid for {id} answered HTTP {status}{hint}: {}",
        super::excerpt(body)
    )))
}

/// What a stored object holds, read from its bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// One JSON document.
    Json(Value),
    /// JSON Lines (a Data Lake object of several instances): one value each.
    JsonLines(Vec<Value>),
    /// Anything else: XML, CSV, binary.
    Other,
}

/// Recognises JSON and JSON Lines; everything else is `Other`.
pub fn content(bytes: &[u8]) -> Content {
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        return Content::Json(value);
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Content::Other;
    };
    let lines: Option<Vec<Value>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).ok())
        .collect();
    match lines {
        Some(values) if values.len() > 1 => Content::JsonLines(values),
        _ => Content::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_fields_array_is_read_with_its_paging_values_and_extra_keys_are_tolerated() {
        let body = json!({
            "fields": [{"dl_id": "1-a", "dl_document_name": "SyncItemMaster", "dl_size": 807}],
            "page": 2,
            "records": "100",
            "totalRecords": 101,
            "somethingNew": {"x": 1},
        });
        let page = list_page(200, body.to_string().as_bytes()).unwrap();
        assert_eq!(page.descriptors.len(), 1);
        assert_eq!((page.page, page.page_size), (Some(2), Some(100)));
        assert_eq!(object_id(&page.descriptors[0]).unwrap(), "1-a");
        assert_eq!(declared_size(&page.descriptors[0]), Some(807));
    }

    #[test]
    fn other_shapes_are_refused_with_what_came() {
        let e = list_page(200, br#"{"records":[{"dl_id":"x"}]}"#).unwrap_err();
        assert!(
            e.0.contains("no `fields` array") && e.0.contains("records"),
            "{e}"
        );
        let e = list_page(200, br#"{"fields":["dl_id","dl_document_name"]}"#).unwrap_err();
        assert!(e.0.contains("where an object descriptor belongs"), "{e}");
        assert!(list_page(503, b"busy").unwrap_err().0.contains("HTTP 503"));
        assert!(object_id(&json!({"dl_document_name": "x"})).is_err());
        assert!(stream(404, b"", "1-a").unwrap_err().0.contains("purged"));
    }

    #[test]
    fn contents_are_told_apart() {
        assert_eq!(content(br#"{"a":1}"#), Content::Json(json!({"a": 1})));
        assert_eq!(
            content(b"{\"a\":1}\n{\"a\":2}\n"),
            Content::JsonLines(vec![json!({"a": 1}), json!({"a": 2})])
        );
        assert_eq!(content(b"<SyncItemMaster/>"), Content::Other);
        assert_eq!(content(&[0xff, 0x00, 0x12]), Content::Other);
    }
}
