//! Finding the records in a JSON document: a JSON pointer or a jq filter.

use serde_json::Value;

use super::transform::{JqFilter, JqLimits};

/// What `records_jq` may use on one response document: more than a record
/// transform, since it reads a whole page.
const RECORDS_JQ_LIMITS: JqLimits = JqLimits {
    time: std::time::Duration::from_secs(10),
    memory_mib: 1024,
};

pub enum RecordsAt {
    /// The document itself, or its elements when it is an array.
    Whole,
    Pointer(String),
    Jq(JqFilter),
}

impl RecordsAt {
    pub fn new(pointer: Option<&str>, jq: Option<&str>) -> Result<RecordsAt, String> {
        match (pointer, jq) {
            (Some(p), _) => Ok(RecordsAt::Pointer(p.to_owned())),
            (None, Some(code)) => JqFilter::compile(code)
                .map(RecordsAt::Jq)
                .map_err(|e| format!("records_jq: {e}")),
            (None, None) => Ok(RecordsAt::Whole),
        }
    }

    pub fn extract(&self, document: Value) -> Result<Vec<Value>, String> {
        let found = match self {
            RecordsAt::Whole => document,
            RecordsAt::Pointer(p) => {
                let mut document = document;
                match document.pointer_mut(p) {
                    Some(v) => v.take(),
                    None => {
                        return Err(format!(
                            "records_pointer {p} finds nothing in the response; check the path \
                             (the document's top-level keys: {})",
                            top_keys(&document)
                        ));
                    }
                }
            }
            RecordsAt::Jq(f) => {
                return f
                    .apply(document, RECORDS_JQ_LIMITS)
                    .map_err(|e| format!("records_jq: {e}"));
            }
        };
        Ok(match found {
            Value::Array(items) => items,
            Value::Null => Vec::new(),
            other => vec![other],
        })
    }
}

fn top_keys(document: &Value) -> String {
    match document {
        Value::Object(map) => map.keys().cloned().collect::<Vec<_>>().join(", "),
        Value::Array(_) => "none, it is an array".into(),
        _ => "none, it is a scalar".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointer_jq_and_whole() {
        let doc = json!({"data": {"items": [1, 2]}, "n": 2});
        let at = RecordsAt::new(Some("/data/items"), None).unwrap();
        assert_eq!(at.extract(doc.clone()).unwrap(), vec![json!(1), json!(2)]);
        let at = RecordsAt::new(None, Some(".data.items[] | . * 10")).unwrap();
        assert_eq!(at.extract(doc.clone()).unwrap(), vec![json!(10), json!(20)]);
        assert_eq!(
            RecordsAt::Whole.extract(json!([3])).unwrap(),
            vec![json!(3)]
        );
        let e = RecordsAt::new(Some("/nope"), None)
            .unwrap()
            .extract(doc)
            .unwrap_err();
        assert!(e.contains("data, n"), "{e}");
    }
}
