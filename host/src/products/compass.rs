//! Data Fabric Compass SQL jobs (`DATAFABRIC/compass/v2/jobs/`): submit the
//! SQL, poll the job's status, then page through its result.

use serde_json::Value;

pub const JOBS_PATH: &str = "DATAFABRIC/compass/v2/jobs/";

pub fn status_path(query_id: &str) -> String {
    format!("{JOBS_PATH}{query_id}/status/")
}

pub fn result_path(query_id: &str) -> String {
    format!("{JOBS_PATH}{query_id}/result/")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Compass: {0}")]
pub struct CompassError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    Running,
    Finished,
    Failed(String),
}

fn json(status: u16, body: &[u8], what: &str) -> Result<Value, CompassError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        CompassError(format!(
            "{what}: HTTP {status} with a body that is not JSON ({e})"
        ))
    })?;
    if !(200..300).contains(&status) {
        let message = ["message", "error", "detail"]
            .iter()
            .find_map(|k| value.get(k).and_then(Value::as_str))
            .unwrap_or("no message");
        return Err(CompassError(format!("{what}: HTTP {status}: {message}")));
    }
    Ok(value)
}

/// The `queryId` of a submitted job.
pub fn submitted(status: u16, body: &[u8]) -> Result<String, CompassError> {
    json(status, body, "submitting the query")?
        .get("queryId")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| CompassError("submitting the query: no queryId in the answer".into()))
}

pub fn job_status(status: u16, body: &[u8]) -> Result<JobStatus, CompassError> {
    let value = json(status, body, "job status")?;
    let state = value.get("status").and_then(Value::as_str).unwrap_or("");
    Ok(match state.to_ascii_uppercase().as_str() {
        "FINISHED" | "COMPLETED" => JobStatus::Finished,
        "RUNNING" | "QUEUED" | "SUBMITTED" | "INPROGRESS" => JobStatus::Running,
        "FAILED" | "CANCELLED" | "CANCELED" | "ERROR" => JobStatus::Failed(
            value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or(state)
                .to_owned(),
        ),
        other => {
            return Err(CompassError(format!(
                "job status `{other}` is not one ionflow knows"
            )));
        }
    })
}

/// Rows of a result page: a JSON array, or JSON Lines.
pub fn result_rows(status: u16, body: &[u8]) -> Result<Vec<Value>, CompassError> {
    if !(200..300).contains(&status) {
        return json(status, body, "result page").map(|_| Vec::new());
    }
    let text =
        std::str::from_utf8(body).map_err(|_| CompassError("result page is not UTF-8".into()))?;
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(text)
            .map_err(|e| CompassError(format!("result page is not a JSON array ({e})")));
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .map_err(|e| CompassError(format!("result row is not JSON ({e})")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_and_rows() {
        assert_eq!(
            submitted(202, br#"{"queryId":"q1","status":"RUNNING"}"#).unwrap(),
            "q1"
        );
        assert_eq!(
            job_status(200, br#"{"status":"FINISHED"}"#).unwrap(),
            JobStatus::Finished
        );
        assert_eq!(
            job_status(200, br#"{"status":"FAILED","message":"Table X not found"}"#).unwrap(),
            JobStatus::Failed("Table X not found".into())
        );
        assert_eq!(result_rows(200, b"[{\"a\":1}]").unwrap().len(), 1);
        assert_eq!(
            result_rows(200, b"{\"a\":1}\n{\"a\":2}\n").unwrap().len(),
            2
        );
        assert!(
            result_rows(404, br#"{"message":"no such job"}"#)
                .unwrap_err()
                .0
                .contains("no such job")
        );
    }
}
