//! Data Fabric Compass SQL jobs (`/DATAFABRIC/compass/v2/jobs/`): submit SQL
//! as `text/plain`, poll `{id}/status/`, page `{id}/result/?offset=&limit=`.
//!
//! The simulator understands `SELECT * | col, ... FROM MITMAS` over the shared
//! catalogue with M3's item columns, optionally `WHERE LMDT > 'YYYYMMDD'`
//! (or `>=`). A job reports RUNNING on its first status poll and FINISHED
//! afterwards; SQL it cannot run fails at status time, as real Compass
//! reports query errors there rather than on submit.
//!
//! Public shape followed: the Data Fabric Compass API v2 job cycle (`jobs/`
//! answering 202 with `queryId` and `status`, `status/` going RUNNING then
//! FINISHED or FAILED, `result/` as a JSON array of rows); only the SQL is
//! cut down.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::codec::{Params, clip};
use super::{SimState, lock, read};

/// Rows per result page, at most (Compass's documented ceiling).
const MAX_PAGE_ROWS: usize = 100_000;
/// Jobs kept; older ones are forgotten, like expired results.
const MAX_JOBS: usize = 1000;

const COLUMNS: &[&str] = &["ITNO", "ITDS", "STAT", "ITTY", "UNMS", "LMDT"];

#[derive(Debug, Clone)]
struct Query {
    columns: Vec<&'static str>,
    /// Rows with LMDT greater than (or equal, when `inclusive`) this YYYYMMDD.
    changed_after: Option<(String, bool)>,
}

#[derive(Debug)]
pub(crate) struct Job {
    query: Result<Query, String>,
    polls: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Jobs {
    jobs: BTreeMap<u64, Job>,
    next: u64,
}

fn parse_sql(sql: &str) -> Result<Query, String> {
    let words: Vec<&str> = sql.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let from = upper
        .iter()
        .position(|w| w == "FROM")
        .ok_or("Syntax error: FROM expected")?;
    if upper.first().map(String::as_str) != Some("SELECT") || from < 2 {
        return Err("Syntax error: SELECT <columns> FROM <table> expected".into());
    }
    let table = upper
        .get(from + 1)
        .ok_or("Syntax error: table name expected")?;
    if table.trim_end_matches(';') != "MITMAS" {
        return Err(format!("Table {} not found", clip(table, 40)));
    }
    let list = words[1..from].join(" ");
    let columns = if list.trim() == "*" {
        COLUMNS.to_vec()
    } else {
        list.split(',')
            .map(|c| {
                let c = c.trim().to_ascii_uppercase();
                COLUMNS
                    .iter()
                    .find(|k| **k == c)
                    .copied()
                    .ok_or_else(|| format!("Column {} not found in MITMAS", clip(&c, 40)))
            })
            .collect::<Result<_, _>>()?
    };
    let rest = &words[from + 2..];
    let changed_after = match rest {
        [] | [";"] => None,
        [w, col, op, value] | [w, col, op, value, ";"]
            if w.eq_ignore_ascii_case("WHERE") && col.eq_ignore_ascii_case("LMDT") =>
        {
            let value = value.trim_end_matches(';').trim_matches('\'');
            if value.len() != 8 || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err("LMDT must be compared with 'YYYYMMDD'".into());
            }
            match *op {
                ">" => Some((value.to_owned(), false)),
                ">=" => Some((value.to_owned(), true)),
                _ => return Err("The simulator supports LMDT > or >= only".into()),
            }
        }
        _ => return Err("The simulator supports only WHERE LMDT > 'YYYYMMDD'".into()),
    };
    Ok(Query {
        columns,
        changed_after,
    })
}

/// M3's `LMDT` as Compass shows it: `20260314`.
fn ymd(at: DateTime<Utc>) -> String {
    at.format("%Y%m%d").to_string()
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"message": format!("Query {} not found", clip(id, 40))})),
    )
        .into_response()
}

/// `POST .../jobs/` with the SQL as `text/plain`.
pub(crate) async fn submit(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_text = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/plain")
        });
    if !is_text {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Json(json!({"message": "Send the SQL statement as text/plain"})),
        )
            .into_response();
    }
    let sql = String::from_utf8_lossy(&body);
    let mut jobs = lock(&state.compass);
    jobs.next += 1;
    let id = jobs.next;
    if jobs.jobs.len() >= MAX_JOBS
        && let Some(oldest) = jobs.jobs.keys().next().copied()
    {
        jobs.jobs.remove(&oldest);
    }
    jobs.jobs.insert(
        id,
        Job {
            query: parse_sql(&sql),
            polls: 0,
        },
    );
    (
        StatusCode::ACCEPTED,
        Json(json!({"queryId": format!("sim-{id:08}"), "status": "RUNNING"})),
    )
        .into_response()
}

fn job_id(text: &str) -> Option<u64> {
    text.strip_prefix("sim-")?.parse().ok()
}

/// `GET .../jobs/{id}/status/`
pub(crate) async fn status(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let mut jobs = lock(&state.compass);
    let Some(job) = job_id(&id).and_then(|n| jobs.jobs.get_mut(&n)) else {
        return not_found(&id);
    };
    job.polls += 1;
    let body = match (&job.query, job.polls) {
        (_, 1) => json!({"queryId": id, "status": "RUNNING"}),
        (Ok(_), _) => json!({"queryId": id, "status": "FINISHED"}),
        (Err(message), _) => json!({"queryId": id, "status": "FAILED", "message": message}),
    };
    Json(body).into_response()
}

/// `GET .../jobs/{id}/result/?offset=&limit=`: a JSON array of rows.
pub(crate) async fn result(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let query_of_job = {
        let jobs = lock(&state.compass);
        match job_id(&id).and_then(|n| jobs.jobs.get(&n)) {
            None => return not_found(&id),
            Some(Job { polls: 0..=1, .. }) => {
                return (
                    StatusCode::CONFLICT,
                    Json(json!({"message": "The query has not finished; poll its status first"})),
                )
                    .into_response();
            }
            Some(Job { query: Err(m), .. }) => {
                return (StatusCode::BAD_REQUEST, Json(json!({"message": m}))).into_response();
            }
            Some(Job { query: Ok(q), .. }) => q.clone(),
        }
    };
    let params = Params::parse(query.as_deref().unwrap_or("").as_bytes()).ok();
    let number = |name: &str, default: usize| {
        params
            .as_ref()
            .and_then(|p| p.get(name))
            .map_or(Ok(default), |v| {
                v.parse::<usize>().map_err(|_| name.to_owned())
            })
    };
    let (offset, limit) = match (number("offset", 0), number("limit", 1000)) {
        (Ok(o), Ok(l)) if l > 0 && l <= MAX_PAGE_ROWS => (o, l),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"message": format!("offset must be >= 0 and limit between 1 and {MAX_PAGE_ROWS}")})),
            )
                .into_response();
        }
    };
    let catalogue = read(&state.catalogue);
    let rows: Vec<Value> = catalogue
        .iter()
        .filter(|item| match &query_of_job.changed_after {
            None => true,
            Some((date, inclusive)) => {
                let lmdt = ymd(item.changed);
                if *inclusive {
                    lmdt >= *date
                } else {
                    lmdt > *date
                }
            }
        })
        .skip(offset)
        .take(limit)
        .map(|item| {
            let row: Map<String, Value> = query_of_job
                .columns
                .iter()
                .map(|c| {
                    let v = match *c {
                        "ITNO" => item.itno.clone(),
                        "ITDS" => item.itds.clone(),
                        "STAT" => item.stat.clone(),
                        "ITTY" => item.itty.clone(),
                        "UNMS" => item.unms.clone(),
                        _ => ymd(item.changed),
                    };
                    ((*c).to_owned(), Value::String(v))
                })
                .collect();
            Value::Object(row)
        })
        .collect();
    Json(rows).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_subset() {
        assert_eq!(
            parse_sql("SELECT * FROM MITMAS").unwrap().columns.len(),
            COLUMNS.len()
        );
        assert_eq!(
            parse_sql("select itno, itds from mitmas;").unwrap().columns,
            ["ITNO", "ITDS"]
        );
        let q = parse_sql("SELECT ITNO FROM MITMAS WHERE LMDT > '20260501'").unwrap();
        assert_eq!(q.changed_after, Some(("20260501".into(), false)));
        assert!(
            parse_sql("SELECT * FROM OOHEAD")
                .unwrap_err()
                .contains("OOHEAD")
        );
        assert!(parse_sql("SELECT NOPE FROM MITMAS").is_err());
        assert!(parse_sql("DELETE FROM MITMAS").is_err());
    }
}
