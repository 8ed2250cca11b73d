//! M3 MI programs over REST (`m3api-rest/v2/execute`).

use serde_json::Value;

/// The path of an MI transaction below `{iu}/{ti}/`.
pub fn execute_path(program: &str, transaction: &str) -> String {
    format!("M3/m3api-rest/v2/execute/{program}/{transaction}")
}

/// The bulk path: several transactions of one program in one POST.
pub const BULK_PATH: &str = "M3/m3api-rest/v2/execute";

/// M3 reports transaction errors inside the body, sometimes with HTTP 200:
/// a client must read `nrOfFailedTransactions` and `errorMessage`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("M3 {transaction}: {message}")]
pub struct M3Error {
    pub transaction: String,
    pub message: String,
}

/// The records of the first (for a single transaction, the only) result.
pub fn records(status: u16, body: &[u8], transaction: &str) -> Result<Vec<Value>, M3Error> {
    let fail = |message: String| M3Error {
        transaction: transaction.to_owned(),
        message,
    };
    let mut envelope: Value = serde_json::from_slice(body).map_err(|e| {
        fail(format!(
            "HTTP {status} with a body that is not JSON ({e}); is the path an M3 REST v2 endpoint?"
        ))
    })?;
    let results = envelope
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| fail(format!("HTTP {status} without a `results` array")))?;
    let failed = envelope
        .get("nrOfFailedTransactions")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let first = results.first();
    let error_message = first.and_then(transaction_error);
    if failed > 0 || error_message.is_some() || !(200..300).contains(&status) {
        return Err(fail(
            error_message.unwrap_or_else(|| "transaction failed".to_owned()),
        ));
    }
    // Moved out of the parsed envelope, not copied: a page is hundreds of
    // records of a dozen strings each (BENCHMARKS.md, P6).
    Ok(
        match envelope
            .get_mut("results")
            .and_then(|r| r.get_mut(0))
            .and_then(|r| r.get_mut("records"))
            .map(Value::take)
        {
            Some(Value::Array(records)) => records,
            _ => Vec::new(),
        },
    )
}

/// A result's `errorMessage` with its `errorField` and `errorCode`, the
/// same for one transaction and for each of a bulk request's:
/// `Item number X does not exist (field ITNO) [WIT0103]`.
fn transaction_error(result: &Value) -> Option<String> {
    let text = |key: &str| {
        result
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty())
    };
    let mut message = text("errorMessage")?.to_owned();
    if let Some(field) = text("errorField") {
        message.push_str(&format!(" (field {field})"));
    }
    if let Some(code) = text("errorCode") {
        message.push_str(&format!(" [{code}]"));
    }
    Some(message)
}

/// Per-transaction outcomes of a bulk answer, in request order. A
/// terminated bulk request fails as a whole.
pub fn bulk_results(
    status: u16,
    body: &[u8],
    program: &str,
) -> Result<Vec<Result<(), M3Error>>, M3Error> {
    let fail = |message: String| M3Error {
        transaction: program.to_owned(),
        message,
    };
    let envelope: Value = serde_json::from_slice(body).map_err(|e| {
        fail(format!(
            "bulk request: HTTP {status} with a body that is not JSON ({e})"
        ))
    })?;
    if envelope.get("wasTerminated").and_then(Value::as_bool) == Some(true) {
        let reason = envelope
            .get("terminationReason")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Err(fail(format!("bulk request terminated: {reason}")));
    }
    let results = envelope
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            fail(format!(
                "bulk request: HTTP {status} without a `results` array"
            ))
        })?;
    Ok(results
        .iter()
        .map(|r| {
            let transaction = r
                .get("transaction")
                .and_then(Value::as_str)
                .unwrap_or(program);
            match transaction_error(r) {
                Some(message) => Err(M3Error {
                    transaction: transaction.to_owned(),
                    message,
                }),
                None => Ok(()),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_records_and_errors() {
        let ok = br#"{"results":[{"transaction":"LstItmByItm","records":[{"ITNO":"A"}]}],"wasTerminated":false,"nrOfSuccessfullTransactions":1,"nrOfFailedTransactions":0}"#;
        assert_eq!(records(200, ok, "LstItmByItm").unwrap().len(), 1);
        let failed = br#"{"results":[{"transaction":"GetItmBasic","errorMessage":"Item number X does not exist","errorField":"ITNO","errorCode":"WIT0103","records":[]}],"nrOfFailedTransactions":1}"#;
        let e = records(400, failed, "GetItmBasic").unwrap_err();
        assert_eq!(
            e.to_string(),
            "M3 GetItmBasic: Item number X does not exist (field ITNO) [WIT0103]"
        );
        let e = records(200, b"<html>", "X").unwrap_err();
        assert!(e.message.contains("not JSON"));
    }

    #[test]
    fn bulk_errors_keep_field_and_code_like_single_ones() {
        let body = br#"{"results":[{"transaction":"AddItmBasic","records":[]},{"transaction":"AddItmBasic","errorMessage":"Item number W-2 already exists","errorField":"ITNO","errorCode":"WITNO04"}],"wasTerminated":false,"nrOfSuccessfullTransactions":1,"nrOfFailedTransactions":1}"#;
        let results = bulk_results(200, body, "MMS200MI").unwrap();
        assert!(results[0].is_ok());
        assert_eq!(
            results[1].as_ref().unwrap_err().to_string(),
            "M3 AddItmBasic: Item number W-2 already exists (field ITNO) [WITNO04]"
        );
    }
}
