//! Data Lake payload lists (`/IONSERVICES/datalakeapi/v1/payloads/list`):
//! the documents received through ION Messaging, as Data Lake indexes them.
//!
//! Query: `filter` (the simulator understands `dl_document_name eq 'NAME'`),
//! `sort` (`dl_document_indexed_date:asc|desc`), `page` from 1, `records` per
//! page.
//!
//! Public shape followed: the Data Lake API v1 `payloads/list` query
//! parameters and `dl_*` field names as Infor documents them; the answer's
//! layout (`fields`, `records`, `page`, `totalRecords`) is the simulator's
//! own reading of the public descriptions.

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::codec::{Params, clip};
use super::{SimState, lock};

const MAX_RECORDS: usize = 10_000;

fn bad(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"message": message}))).into_response()
}

fn parse_filter(text: &str) -> Result<Option<String>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let rest = text
        .strip_prefix("dl_document_name")
        .map(str::trim_start)
        .and_then(|r| r.strip_prefix("eq"))
        .map(str::trim)
        .ok_or_else(|| {
            format!(
                "Filter {} is not supported: use dl_document_name eq 'NAME'",
                clip(text, 60)
            )
        })?;
    let name = rest
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .ok_or("The document name must be quoted with '")?;
    Ok(Some(name.to_owned()))
}

/// `GET .../payloads/list?filter=&sort=&page=&records=`
pub(crate) async fn list(
    State(state): State<Arc<SimState>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match Params::parse(query.as_deref().unwrap_or("").as_bytes()) {
        Ok(p) => p,
        Err(e) => return bad(format!("Malformed query string: {e}")),
    };
    let wanted = match parse_filter(params.get("filter").unwrap_or("")) {
        Ok(w) => w,
        Err(e) => return bad(e),
    };
    let descending = match params.get("sort").map(str::trim) {
        None | Some("") | Some("dl_document_indexed_date:asc") => false,
        Some("dl_document_indexed_date:desc") => true,
        Some(other) => return bad(format!("Sort {} is not supported", clip(other, 60))),
    };
    let page: usize = match params.get("page").unwrap_or("1").parse() {
        Ok(p) if p >= 1 => p,
        _ => return bad("page counts from 1".into()),
    };
    let per_page: usize = match params.get("records").unwrap_or("100").parse() {
        Ok(r) if (1..=MAX_RECORDS).contains(&r) => r,
        _ => return bad(format!("records must be between 1 and {MAX_RECORDS}")),
    };
    let messages = lock(&state.messages).list();
    let mut matching: Vec<_> = messages
        .into_iter()
        .filter(|m| {
            wanted
                .as_ref()
                .is_none_or(|w| m.document_name.as_deref() == Some(w))
        })
        .collect();
    if descending {
        matching.reverse();
    }
    let total = matching.len();
    let records: Vec<_> = matching
        .into_iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(|m| {
            json!({
                "dl_id": m.id,
                "dl_document_name": m.document_name,
                "dl_from_logical_id": m.from_logical_id,
                "dl_document_indexed_date": m.received_at,
                "dl_document_date": m.received_at,
            })
        })
        .collect();
    Json(json!({
        "fields": ["dl_id", "dl_document_name", "dl_from_logical_id", "dl_document_indexed_date", "dl_document_date"],
        "records": records,
        "page": page,
        "totalRecords": total,
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert_eq!(parse_filter("").unwrap(), None);
        assert_eq!(
            parse_filter("dl_document_name eq 'ItemExport'")
                .unwrap()
                .as_deref(),
            Some("ItemExport")
        );
        assert!(parse_filter("dl_id eq 'x'").is_err());
        assert!(parse_filter("dl_document_name eq ItemExport").is_err());
    }
}
