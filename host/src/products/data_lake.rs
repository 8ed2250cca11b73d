//! ION Data Lake (`IONSERVICES/datalakeapi/v1`): the list of stored
//! payloads, paged with `page` (from 1) and `records` (the page size).

use serde_json::Value;

/// The payload list below `{iu}/{ti}/`.
pub const LIST_PATH: &str = "IONSERVICES/datalakeapi/v1/payloads/list";

/// An answer of the Data Lake API that is not a page of descriptors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Data Lake payloads/list{0}")]
pub struct DataLakeError(pub String);

/// The payload descriptors of one list page.
pub fn list_page(status: u16, body: &[u8]) -> Result<Vec<Value>, DataLakeError> {
    if !(200..300).contains(&status) {
        return Err(DataLakeError(format!(
            " answered HTTP {status}: {}",
            super::excerpt(body)
        )));
    }
    let mut document: Value = serde_json::from_slice(body)
        .map_err(|e| DataLakeError(format!(": the answer is not JSON ({e})")))?;
    match document.get_mut("records").map(Value::take) {
        Some(Value::Array(records)) => Ok(records),
        _ => Err(DataLakeError(": the answer has no `records` array".into())),
    }
}
