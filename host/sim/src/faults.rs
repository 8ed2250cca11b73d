//! Fault injection and the gateway's quota policy, for resilience tests and
//! for developers who want to see their pipeline under a bad day.
//!
//! Faults apply to business calls that passed the token check, in the order
//! they were added; each fires `count` times on paths that start with its
//! prefix (below `{iu}/{ti}/`). A fault for `"endpoint": "revocation"`
//! applies to the revocation endpoint (`{pu}{or}`) instead: a status or a
//! dropped connection revokes nothing, a delay revokes at once and answers
//! late (a client that gives up first cannot tell what happened).
//!
//! Public shape followed: the gateway's throttling answer (429 with
//! `Retry-After`) from its quota policy; the other faults (an error status,
//! a delay, a connection cut mid-answer) are what a struggling backend behind
//! the gateway does, and the `/__sim/faults` API that sets them is the
//! simulator's own.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

/// Which calls a fault answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Endpoint {
    /// Business calls below `{iu}/{ti}/`.
    #[default]
    Gateway,
    /// The OAuth revocation endpoint, `{pu}{or}`.
    Revocation,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fault {
    #[serde(default)]
    pub(crate) endpoint: Endpoint,
    /// Product path prefix below the tenant, e.g. `M3/m3api-rest`; all when absent.
    #[serde(default)]
    pub(crate) path_prefix: String,
    /// How many calls this fault answers.
    pub(crate) count: u32,
    /// Answer with this status (429 carries `Retry-After` when given).
    pub(crate) status: Option<u16>,
    pub(crate) retry_after_secs: Option<u32>,
    /// Wait this long before answering (or before passing the call on).
    #[serde(default)]
    pub(crate) delay_ms: u64,
    /// Start a 200 answer and cut the connection midway.
    #[serde(default)]
    pub(crate) drop_connection: bool,
    /// Only calls whose request body contains this text (one record's key,
    /// say), so that a test can slow down one call among concurrent ones.
    #[serde(default)]
    pub(crate) body_contains: Option<String>,
}

/// What a fault does to one call.
pub(crate) enum Injected {
    Answer(Response),
    /// Let the call through after a delay.
    Delay(Duration),
}

#[derive(Default)]
pub(crate) struct Faults {
    pending: VecDeque<Fault>,
}

impl Faults {
    pub(crate) fn add(&mut self, fault: Fault) {
        if fault.count > 0 {
            self.pending.push_back(fault);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }

    /// The first pending business-call fault for `path` (tenant already
    /// stripped), spent once.
    pub(crate) fn take(&mut self, path: &str) -> Option<Fault> {
        self.take_for(Endpoint::Gateway, path)
    }

    /// Whether a pending business-call fault for `path` looks into bodies:
    /// only then does the gateway read a body before passing it on.
    pub(crate) fn reads_body(&self, path: &str) -> bool {
        self.pending
            .iter()
            .any(|f| f.matches(Endpoint::Gateway, path) && f.body_contains.is_some())
    }

    /// [`Self::take`] for a call whose body is known.
    pub(crate) fn take_with_body(&mut self, path: &str, body: &[u8]) -> Option<Fault> {
        self.take_matching(Endpoint::Gateway, path, Some(body))
    }

    /// The first pending fault for `endpoint` and `path`, spent once.
    pub(crate) fn take_for(&mut self, endpoint: Endpoint, path: &str) -> Option<Fault> {
        self.take_matching(endpoint, path, None)
    }

    fn take_matching(
        &mut self,
        endpoint: Endpoint,
        path: &str,
        body: Option<&[u8]>,
    ) -> Option<Fault> {
        let index = self.pending.iter().position(|f| {
            f.matches(endpoint, path)
                && match (&f.body_contains, body) {
                    (None, _) => true,
                    (Some(text), Some(body)) => body
                        .windows(text.len().max(1))
                        .any(|w| w == text.as_bytes()),
                    (Some(_), None) => false,
                }
        })?;
        let fault = &mut self.pending[index];
        fault.count -= 1;
        let taken = fault.clone();
        if fault.count == 0 {
            self.pending.remove(index);
        }
        Some(taken)
    }
}

impl Fault {
    fn matches(&self, endpoint: Endpoint, path: &str) -> bool {
        self.endpoint == endpoint && path.starts_with(self.path_prefix.trim_start_matches('/'))
    }

    pub(crate) fn inject(&self) -> Injected {
        if self.drop_connection {
            return Injected::Answer(dropped());
        }
        match self.status {
            Some(429) => Injected::Answer(too_many_requests(self.retry_after_secs.unwrap_or(1))),
            Some(status) => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                Injected::Answer(
                    (
                        status,
                        axum::Json(json!({ "error": "injected", "status": status.as_u16() })),
                    )
                        .into_response(),
                )
            }
            None => Injected::Delay(Duration::from_millis(self.delay_ms)),
        }
    }
}

/// The quota policy: at most `requests` calls in any `window`, counted in a
/// sliding window as a gateway that smooths its limits would.
pub(crate) struct Quota {
    requests: u32,
    window: Duration,
    seen: VecDeque<Instant>,
}

impl Quota {
    pub(crate) fn new(requests: u32, window: Duration) -> Self {
        Quota {
            requests,
            window,
            seen: VecDeque::new(),
        }
    }

    /// `Some(retry_after_secs)` when this call is over the quota.
    pub(crate) fn check(&mut self, now: Instant) -> Option<u32> {
        while self
            .seen
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.seen.pop_front();
        }
        if self.seen.len() as u32 >= self.requests {
            let oldest = *self.seen.front()?;
            let free_in = self.window.saturating_sub(now.duration_since(oldest));
            return Some(free_in.as_secs_f64().ceil().max(1.0) as u32);
        }
        self.seen.push_back(now);
        None
    }
}

pub(crate) fn too_many_requests(retry_after_secs: u32) -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({ "error": "too_many_requests", "error_description": "Quota exceeded" })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A 200 whose body breaks off: the client sees the connection drop mid-answer.
fn dropped() -> Response {
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"{\"results\":[")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection dropped (simulated fault)",
        )),
    ];
    let body = Body::from_stream(futures::stream::iter(chunks));
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // A declared length that the body never reaches makes the cut visible.
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("100000"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_is_a_sliding_window() {
        let mut quota = Quota::new(2, Duration::from_secs(2));
        let t0 = Instant::now();
        assert_eq!(quota.check(t0), None);
        assert_eq!(quota.check(t0 + Duration::from_millis(10)), None);
        assert_eq!(quota.check(t0 + Duration::from_millis(20)), Some(2));
        assert_eq!(quota.check(t0 + Duration::from_millis(2001)), None);
    }

    #[test]
    fn faults_fire_count_times_on_their_prefix() {
        let mut faults = Faults::default();
        faults.add(Fault {
            endpoint: Endpoint::Gateway,
            path_prefix: "M3/".into(),
            count: 2,
            status: Some(503),
            retry_after_secs: None,
            delay_ms: 0,
            drop_connection: false,
            body_contains: None,
        });
        assert!(faults.take("CSI/IDORequestService/x").is_none());
        assert!(faults.take("M3/m3api-rest/v2/execute/A/B").is_some());
        assert!(faults.take("M3/m3api-rest/v2/execute/A/B").is_some());
        assert!(faults.take("M3/m3api-rest/v2/execute/A/B").is_none());
    }

    #[test]
    fn a_body_fault_answers_only_the_call_whose_body_holds_its_text() {
        let mut faults = Faults::default();
        faults.add(
            serde_json::from_str(r#"{"count": 1, "delay_ms": 5, "body_contains": "\"seq\":0,"}"#)
                .unwrap(),
        );
        assert!(faults.reads_body("IONSERVICES/x"));
        assert!(faults.take("IONSERVICES/x").is_none(), "no body, no match");
        assert!(
            faults
                .take_with_body("IONSERVICES/x", br#"{"seq":10,"k":1}"#)
                .is_none()
        );
        assert!(
            faults
                .take_with_body("IONSERVICES/x", br#"{"seq":0,"k":1}"#)
                .is_some()
        );
        assert!(!faults.reads_body("IONSERVICES/x"), "spent");
    }

    #[test]
    fn revocation_faults_leave_business_calls_alone() {
        let mut faults = Faults::default();
        faults.add(
            serde_json::from_str(r#"{"endpoint": "revocation", "count": 1, "status": 503}"#)
                .unwrap(),
        );
        assert!(faults.take("M3/m3api-rest/v2/execute/A/B").is_none());
        assert!(faults.take_for(Endpoint::Revocation, "").is_some());
        assert!(faults.take_for(Endpoint::Revocation, "").is_none());
    }
}
