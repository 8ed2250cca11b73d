//! Gateway-wide policy applied around the product handlers: which host an
//! endpoint answers on, bearer-token checks, request logging and the 404.
//!
//! Public shape followed: the ION API Gateway's own answers in front of every
//! product: RFC 6750 401s with `WWW-Authenticate: Bearer error="invalid_token"`
//! and a JSON 404 for paths it does not route. The `wrong_host` 404 is the
//! simulator's own (the real `pu` and `iu` are different hosts anyway).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::codec::clip;
use super::{SimState, lock};

const HOST_RULE: &str = "pu is for the OAuth endpoints, iu for business calls";

/// The two `.ionapi` hosts name the same socket; the Host header tells which
/// one the client built its URL from.
fn request_host(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
}

fn wrong_host(state: &SimState, received: Option<&str>, served_on: &str, kind: &str) -> Response {
    state.counters.update(|c| c.wrong_host += 1);
    let message = format!(
        "{HOST_RULE}: this is {kind}, served on {served_on}, but the request came to Host {}",
        clip(received.unwrap_or("(none)"), 100)
    );
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "wrong_host", "error_description": message })),
    )
        .into_response()
}

/// Admits only requests addressed to the `pu` host (`localhost:PORT`).
pub(crate) async fn auth_host_only(
    State(state): State<Arc<SimState>>,
    request: Request,
    next: Next,
) -> Response {
    match request_host(&request) {
        Some(host) if host.eq_ignore_ascii_case(&state.auth_host()) => next.run(request).await,
        other => wrong_host(&state, other, &state.pu(), "an OAuth endpoint"),
    }
}

/// Admits only requests addressed to the `iu` host (`127.0.0.1:PORT`).
pub(crate) async fn business_host_only(
    State(state): State<Arc<SimState>>,
    request: Request,
    next: Next,
) -> Response {
    match request_host(&request) {
        Some(host) if host.eq_ignore_ascii_case(&state.api_host()) => next.run(request).await,
        other => wrong_host(&state, other, &state.iu(), "a business endpoint"),
    }
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, &'static str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Err("No bearer token in the Authorization header"),
        (Some(_), Some(_)) => return Err("More than one Authorization header"),
        (Some(value), None) => value,
    };
    let text = value
        .to_str()
        .map_err(|_| "The Authorization header is not valid ASCII")?;
    let (scheme, token) = text
        .split_once(' ')
        .ok_or("The Authorization header is not a Bearer credential")?;
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return Err("The Authorization header is not a Bearer credential");
    }
    let token = token.trim_start_matches(' ');
    if token.is_empty() || token.contains(|c: char| c.is_ascii_whitespace()) {
        return Err("The bearer token is malformed");
    }
    Ok(token)
}

/// RFC 6750 section 3: a 401 names the problem in `WWW-Authenticate`.
fn unauthorized(description: &'static str) -> Response {
    let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{description}\"");
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": "invalid_token", "error_description": description })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The largest body a body-matching fault reads.
const MAX_INSPECTED_BODY: usize = 64 << 20;

/// Every business call needs a live access token; accepted calls are counted.
pub(crate) async fn require_bearer(
    State(state): State<Arc<SimState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let verdict = bearer_token(request.headers()).and_then(|token| {
        if state
            .reject_tokens
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err("The token issuer is not trusted by this gateway (simulated fault)");
        }
        let status = lock(&state.tokens).check_access(token, Instant::now());
        status.problem().map_or(Ok(()), Err)
    });
    match verdict {
        Ok(()) => {
            // Inside the tenant's nested router the URI has lost its prefix.
            let path = match request.extensions().get::<OriginalUri>() {
                Some(OriginalUri(original)) => original.path(),
                None => request.uri().path(),
            };
            state.counters.count_api_call(path);
            let _answering = state.counters.call_started();
            // The quota is the gateway's own policy: it answers before the product.
            let over_quota = lock(&state.quota)
                .as_mut()
                .and_then(|quota| quota.check(Instant::now()));
            if let Some(retry_after_secs) = over_quota.or_else(|| take_throttle(&state)) {
                state.counters.update(|c| c.rate_limited += 1);
                return throttled(retry_after_secs);
            }
            let product_path = path
                .trim_start_matches('/')
                .split_once('/')
                .map_or("", |(_, rest)| rest)
                .to_owned();
            let reads_body = lock(&state.faults).reads_body(&product_path);
            let fault = if reads_body {
                // A fault that picks its call by body: read the body (the
                // simulator's own bound) and hand it on unchanged.
                let (parts, body) = request.into_parts();
                let Ok(bytes) = axum::body::to_bytes(body, MAX_INSPECTED_BODY).await else {
                    return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                        .into_response();
                };
                let fault = lock(&state.faults).take_with_body(&product_path, &bytes);
                request = Request::from_parts(parts, axum::body::Body::from(bytes));
                fault
            } else {
                lock(&state.faults).take(&product_path)
            };
            let mut delay = std::time::Duration::from_millis(state.config.slow_ms);
            if let Some(fault) = fault {
                state.counters.update(|c| {
                    c.faults_injected += 1;
                    if fault.status == Some(429) {
                        c.rate_limited += 1;
                    }
                });
                match fault.inject() {
                    super::faults::Injected::Answer(response) => {
                        tokio::time::sleep(std::time::Duration::from_millis(fault.delay_ms)).await;
                        return response;
                    }
                    super::faults::Injected::Delay(extra) => delay += extra,
                }
            }
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            next.run(request).await
        }
        Err(problem) => {
            state.counters.update(|c| c.unauthorized += 1);
            unauthorized(problem)
        }
    }
}

/// Spends one of the 429s a test asked for through `/__sim/throttle`.
fn take_throttle(state: &SimState) -> Option<u32> {
    let mut throttle = lock(&state.throttle);
    if throttle.remaining == 0 {
        return None;
    }
    throttle.remaining -= 1;
    Some(throttle.retry_after_secs)
}

/// The gateway's quota or spike-arrest answer: 429 with `Retry-After`.
fn throttled(retry_after_secs: u32) -> Response {
    super::faults::too_many_requests(retry_after_secs)
}

/// Logs method, path, status and latency only: query strings, headers and
/// bodies can carry secrets and are never logged. Counts every request and
/// those whose path, read the way a lenient server would, leaves the tenant.
pub(crate) async fn log_requests(
    State(state): State<Arc<SimState>>,
    request: Request,
    next: Next,
) -> Response {
    let outside = !request.uri().path().starts_with("/__sim/")
        && !within_tenant(request.uri().path(), &state.config.tenant);
    state.counters.update(|c| {
        c.requests += 1;
        if outside {
            c.outside_tenant += 1;
        }
    });
    let method = request.method().clone();
    let path = clip(request.uri().path(), 200);
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        target: "ionflow::sim",
        %method,
        path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

/// Whether `path` stays below `/{tenant}/` once a lenient server has read
/// it: percent-decoded as often as it decodes (up to four times), `\` taken
/// for `/`, and `.` and `..` segments resolved. Routing never sees a path
/// this way; it only tells tests whether a client's request escaped.
pub(crate) fn within_tenant(path: &str, tenant: &str) -> bool {
    let mut text = path.to_owned();
    for _ in 0..4 {
        let decoded: Vec<u8> = percent_decode(&text);
        let decoded = String::from_utf8_lossy(&decoded).into_owned();
        if decoded == text {
            break;
        }
        text = decoded;
    }
    let mut resolved: Vec<&str> = Vec::new();
    for segment in text.split(['/', '\\']) {
        match segment.trim() {
            "" | "." => {}
            ".." => {
                resolved.pop();
            }
            _ => resolved.push(segment),
        }
    }
    resolved.first() == Some(&tenant)
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

pub(crate) async fn not_found(request: Request) -> Response {
    let description = format!(
        "No API matches {} {}",
        request.method(),
        clip(request.uri().path(), 200)
    );
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "not_found", "error_description": description })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(header::AUTHORIZATION, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn escapes_from_the_tenant_are_recognised() {
        for inside in [
            "/ACME_TST/M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm",
            "/ACME_TST/as/token.oauth2",
            "/ACME_TST/M3/a/../b",
        ] {
            assert!(within_tenant(inside, "ACME_TST"), "{inside}");
        }
        for outside in [
            "/other",
            "/",
            "/ACME_TST/M3/../../other",
            "/ACME_TST/M3/%2e%2e/%2E%2E/other",
            "/ACME_TST/M3\\..\\..\\other",
            "/ACME_TST/M3/..%2f..%2fother",
            "/ACME_TST/M3/%252e%252e/%252e%252e/other",
            "/OTHER_TENANT/M3",
        ] {
            assert!(!within_tenant(outside, "ACME_TST"), "{outside}");
        }
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(&headers(&["Bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&["bearer  abc"])), Ok("abc"));
        for bad in [
            &["Basic abc"][..],
            &["Bearer"],
            &["Bearer "],
            &["Bearer a b"],
            &["Bearer a", "Bearer b"],
            &[],
        ] {
            assert!(bearer_token(&headers(bad)).is_err(), "{bad:?}");
        }
    }
}
