//! Data Lake (`/IONSERVICES/datalakeapi/v1/payloads`): the documents
//! received through ION Messaging (and those put in with `/__sim/datalake`)
//! as Data Lake objects: their descriptors (`list`) and their bytes
//! (`streambyid`).
//!
//! `list` takes `filter` (conditions `FIELD OP 'VALUE'` joined by `and`,
//! OP one of `eq ne gt ge lt le`, on the `dl_*` fields and `event_date`),
//! `sort` (`FIELD:asc|desc`), `page` from 1 and `records` (the page size,
//! 1 to 10,000).
//!
//! Public shape followed: the Data Lake API v1 as public clients read it.
//! `payloads/list` answers the descriptors in a `fields` array of objects
//! (`dl_id`, `dl_document_name`, `dl_from_logical_id`, `event_date`,
//! `dl_document_date`, `dl_document_indexed_date`, `dl_instance_count`,
//! `dl_size`) with `page` and `records` (the page size, a number) next to
//! it; the totals' names (`totalRecords`, `totalPages`) are the simulator's
//! reading. `payloads/streambyid?datalakeId=` answers the stored document
//! as `application/octet-stream`. Errors use the Spring-style body of
//! `ion.rs`.

use std::cmp::Ordering;
use std::sync::Arc;

use axum::Json;
use axum::extract::{OriginalUri, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::codec::{Params, clip};
use super::ion::{ReceivedMessage, service_error};
use super::{SimState, lock};

const MAX_RECORDS: usize = 10_000;
/// Conditions in one filter: a hostile filter is refused early.
const MAX_CONDITIONS: usize = 16;

/// The fields a filter or sort may name.
const FIELDS: &[&str] = &[
    "dl_id",
    "dl_document_name",
    "dl_from_logical_id",
    "event_date",
    "dl_document_date",
    "dl_document_indexed_date",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    field: String,
    op: Op,
    value: String,
}

impl Condition {
    fn holds(&self, descriptor: &Value) -> bool {
        let actual = descriptor
            .get(&self.field)
            .and_then(Value::as_str)
            .unwrap_or("");
        let order = actual.cmp(self.value.as_str());
        match self.op {
            Op::Eq => order == Ordering::Equal,
            Op::Ne => order != Ordering::Equal,
            Op::Gt => order == Ordering::Greater,
            Op::Ge => order != Ordering::Less,
            Op::Lt => order == Ordering::Less,
            Op::Le => order != Ordering::Greater,
        }
    }
}

fn field(name: &str) -> Result<String, String> {
    FIELDS
        .iter()
        .find(|f| **f == name)
        .map(|f| (*f).to_owned())
        .ok_or_else(|| {
            format!(
                "Field {} is not supported; use one of {}",
                clip(name, 40),
                FIELDS.join(", ")
            )
        })
}

fn parse_filter(text: &str) -> Result<Vec<Condition>, String> {
    let mut conditions = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if conditions.len() == MAX_CONDITIONS {
            return Err(format!(
                "A filter takes at most {MAX_CONDITIONS} conditions"
            ));
        }
        let (name, after) = rest
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("Filter {} is incomplete", clip(text, 60)))?;
        let after = after.trim_start();
        let (op, after) = after
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("Filter {} is incomplete", clip(text, 60)))?;
        let op = match op {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            other => return Err(format!("Operator {} is not supported", clip(other, 20))),
        };
        let after = after
            .trim_start()
            .strip_prefix('\'')
            .ok_or("A filter value must be quoted with '")?;
        let (value, after) = after
            .split_once('\'')
            .ok_or("A filter value must be quoted with '")?;
        conditions.push(Condition {
            field: field(name)?,
            op,
            value: value.to_owned(),
        });
        rest = after.trim_start();
        if !rest.is_empty() {
            rest = rest
                .strip_prefix("and")
                .filter(|r| r.starts_with(char::is_whitespace))
                .ok_or_else(|| format!("Conditions are joined with and: {}", clip(rest, 40)))?
                .trim_start();
        }
    }
    Ok(conditions)
}

fn parse_sort(text: &str) -> Result<Option<(String, bool)>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let (name, direction) = text.split_once(':').unwrap_or((text, "asc"));
    let descending = match direction.trim() {
        "asc" => false,
        "desc" => true,
        other => {
            return Err(format!(
                "Sort direction {} is not asc or desc",
                clip(other, 20)
            ));
        }
    };
    Ok(Some((field(name.trim())?, descending)))
}

/// The descriptor of a stored document, as `list` shows it.
fn descriptor(m: &ReceivedMessage) -> Value {
    let instances = std::str::from_utf8(&m.bytes)
        .ok()
        .filter(|_| serde_json::from_slice::<Value>(&m.bytes).is_err())
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .filter(|n| *n > 1)
        .unwrap_or(1);
    json!({
        "dl_id": m.dl_id,
        "dl_document_name": m.document_name,
        "dl_from_logical_id": m.from_logical_id,
        "event_date": m.received_at,
        "dl_document_date": m.received_at,
        "dl_document_indexed_date": m.received_at,
        "dl_instance_count": instances,
        "dl_size": m.bytes.len(),
    })
}

/// `GET .../payloads/list?filter=&sort=&page=&records=`
pub(crate) async fn list(
    State(state): State<Arc<SimState>>,
    OriginalUri(uri): OriginalUri,
    RawQuery(query): RawQuery,
) -> Response {
    let bad = |message: String| service_error(StatusCode::BAD_REQUEST, uri.path(), message);
    let params = match Params::parse(query.as_deref().unwrap_or("").as_bytes()) {
        Ok(p) => p,
        Err(e) => return bad(format!("Malformed query string: {e}")),
    };
    let conditions = match parse_filter(params.get("filter").unwrap_or("")) {
        Ok(c) => c,
        Err(e) => return bad(e),
    };
    let sort = match parse_sort(params.get("sort").unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return bad(e),
    };
    let page: usize = match params.get("page").unwrap_or("1").parse() {
        Ok(p) if p >= 1 => p,
        _ => return bad("page counts from 1".into()),
    };
    let per_page: usize = match params.get("records").unwrap_or("100").parse() {
        Ok(r) if (1..=MAX_RECORDS).contains(&r) => r,
        _ => return bad(format!("records must be between 1 and {MAX_RECORDS}")),
    };
    let mut matching: Vec<Value> = lock(&state.messages)
        .map(descriptor)
        .into_iter()
        .filter(|d| conditions.iter().all(|c| c.holds(d)))
        .collect();
    if let Some((field, descending)) = sort {
        // Stable: objects with equal keys keep the order they arrived in.
        matching.sort_by(|a, b| {
            let key = |d: &Value| {
                d.get(&field)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let order = key(a).cmp(&key(b));
            if descending { order.reverse() } else { order }
        });
    }
    let total = matching.len();
    let fields: Vec<Value> = matching
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .collect();
    Json(json!({
        "fields": fields,
        "page": page,
        "records": per_page,
        "totalRecords": total,
        "totalPages": total.div_ceil(per_page),
    }))
    .into_response()
}

/// `GET .../payloads/streambyid?datalakeId=`
pub(crate) async fn stream_by_id(
    State(state): State<Arc<SimState>>,
    OriginalUri(uri): OriginalUri,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match Params::parse(query.as_deref().unwrap_or("").as_bytes()) {
        Ok(p) => p,
        Err(e) => {
            return service_error(
                StatusCode::BAD_REQUEST,
                uri.path(),
                format!("Malformed query string: {e}"),
            );
        }
    };
    let Some(id) = params.get("datalakeId").filter(|id| !id.is_empty()) else {
        return service_error(
            StatusCode::BAD_REQUEST,
            uri.path(),
            "Required request parameter 'datalakeId' is not present".into(),
        );
    };
    let Some(found) = lock(&state.messages).find(id) else {
        return service_error(
            StatusCode::NOT_FOUND,
            uri.path(),
            format!("No object with datalakeId {}", clip(id, 60)),
        );
    };
    let mut response = (StatusCode::OK, found.bytes.as_ref().clone()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert_eq!(parse_filter("").unwrap(), vec![]);
        let c = parse_filter("dl_document_name eq 'ItemExport' and event_date ge '2026-01-01'")
            .unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].op, Op::Ge);
        assert!(c[1].holds(&json!({"event_date": "2026-02-01T00:00:00.000Z"})));
        assert!(!c[1].holds(&json!({"event_date": "2025-12-31T00:00:00.000Z"})));
        assert!(parse_filter("dl_nonsense eq 'x'").is_err());
        assert!(parse_filter("dl_document_name eq ItemExport").is_err());
        assert!(parse_filter("dl_document_name eq 'a' or dl_id eq 'b'").is_err());
        assert!(parse_filter(&"dl_id eq 'x' and ".repeat(20)).is_err());
        assert_eq!(
            parse_sort("event_date:desc").unwrap(),
            Some(("event_date".into(), true))
        );
        assert!(parse_sort("event_date:up").is_err());
    }
}
