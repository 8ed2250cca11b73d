//! Which API suites the authorized app may call. The gateway routes by the
//! first path segment after the tenant (`M3`, `CSI`, `IONSERVICES`,
//! `DATAFABRIC`, ...); an app without a scope for a suite gets 403 on every
//! path below it, even with a perfectly valid token.
//!
//! Public shape followed: the gateway's 403 for a suite the authorized app
//! is not entitled to, with RFC 6750's `insufficient_scope` challenge.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::SimState;

/// Denies the calls to suites listed in `SimConfig::unscoped_suites`. Runs
/// after the bearer check, as the gateway does: 401 before 403.
pub(crate) async fn require_scope(
    State(state): State<Arc<SimState>>,
    request: Request,
    next: Next,
) -> Response {
    // Inside the tenant's nested router the path starts at the suite.
    let suite = request
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let denied = state
        .config
        .unscoped_suites
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&suite));
    if !denied {
        return next.run(request).await;
    }
    state.counters.update(|c| c.forbidden += 1);
    let description = format!(
        "The authorized app has no scope for the {suite} API suite; \
         add it to the app in API Gateway > Authorized Apps"
    );
    let mut response = (
        StatusCode::FORBIDDEN,
        Json(json!({ "error": "insufficient_scope", "error_description": description })),
    )
        .into_response();
    // RFC 6750 section 3.1: the challenge names the error on 403 too.
    if let Ok(value) = HeaderValue::from_str(&format!(
        "Bearer error=\"insufficient_scope\", error_description=\"{description}\", scope=\"{suite}\""
    )) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
