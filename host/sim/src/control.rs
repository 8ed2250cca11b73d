//! The simulator's own control API under `/__sim`, for tests and developers.
//! It needs no token and answers on both hosts, but only to loopback peers.
//!
//! Public shape followed: none. The real gateway has no such API, so client
//! code must never depend on it; only tests and developers call it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::counters::Counters;
use super::ion::ReceivedMessage;
use super::oauth::IssuedTokens;
use super::{SimState, lock};

pub(crate) fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/counters", get(counters))
        .route("/tokens", get(tokens))
        .route("/expire-tokens", post(expire_tokens))
        .route("/revoke-tokens", post(revoke_tokens))
        .route("/messages", get(messages))
        .route("/reset-counters", post(reset_counters))
        .route("/reject-tokens", post(reject_tokens))
        .route("/saml-assertion", get(super::login::issue_assertion))
        .route("/throttle", post(throttle))
        .route("/faults", post(add_fault).delete(clear_faults))
        .route(
            "/token-faults",
            post(add_token_fault).delete(clear_token_faults),
        )
        .route("/datalake", post(add_datalake_object))
        .route("/quota", post(set_quota))
        .route_layer(middleware::from_fn(loopback_only))
}

/// The listener is bound to 127.0.0.1 already; this guards against a future
/// change of bind address exposing token lists to the network.
async fn loopback_only(request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    match peer {
        Some(ip) if !ip.is_loopback() => (
            StatusCode::FORBIDDEN,
            Json(json!({ "error": "forbidden", "error_description": "The control API is loopback-only" })),
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

async fn counters(State(state): State<Arc<SimState>>) -> Json<Counters> {
    Json(state.counters.snapshot())
}

async fn tokens(State(state): State<Arc<SimState>>) -> Json<IssuedTokens> {
    Json(lock(&state.tokens).issued())
}

async fn expire_tokens(State(state): State<Arc<SimState>>) -> Json<serde_json::Value> {
    let expired = lock(&state.tokens).expire_all(Instant::now());
    Json(json!({ "expired": expired }))
}

async fn revoke_tokens(State(state): State<Arc<SimState>>) -> Json<serde_json::Value> {
    let revoked = lock(&state.tokens).revoke_all();
    Json(json!({ "revoked": revoked }))
}

async fn messages(State(state): State<Arc<SimState>>) -> Json<Vec<ReceivedMessage>> {
    Json(lock(&state.messages).list())
}

/// The next `count` authenticated business calls answer 429 (as the
/// gateway's quota policy would), with `Retry-After: retry_after_secs`.
#[derive(Debug, Default, Clone, Copy, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Throttle {
    #[serde(rename = "count")]
    pub(crate) remaining: u32,
    #[serde(default)]
    pub(crate) retry_after_secs: u32,
}

async fn throttle(State(state): State<Arc<SimState>>, Json(request): Json<Throttle>) -> StatusCode {
    *lock(&state.throttle) = request;
    StatusCode::NO_CONTENT
}

async fn reset_counters(State(state): State<Arc<SimState>>) -> StatusCode {
    state.counters.reset();
    StatusCode::NO_CONTENT
}

/// `POST /__sim/reject-tokens` with `{"enabled": bool}`: while enabled, every
/// business call gets 401 as if the gateway distrusted the token issuer.
async fn reject_tokens(
    State(state): State<Arc<SimState>>,
    Json(body): Json<serde_json::Value>,
) -> Response {
    let Some(enabled) = body.get("enabled").and_then(serde_json::Value::as_bool) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "send {\"enabled\": true|false}" })),
        )
            .into_response();
    };
    state
        .reject_tokens
        .store(enabled, std::sync::atomic::Ordering::SeqCst);
    Json(json!({ "reject_tokens": enabled })).into_response()
}

/// `POST /__sim/faults` with a fault (see `faults::Fault`): the next `count`
/// business calls under `path_prefix` (or revocations, with `"endpoint":
/// "revocation"`) get `status`, a delay, or a dropped connection.
async fn add_fault(
    State(state): State<Arc<SimState>>,
    Json(fault): Json<super::faults::Fault>,
) -> StatusCode {
    lock(&state.faults).add(fault);
    StatusCode::NO_CONTENT
}

/// `POST /__sim/token-faults` with a fault (its `path_prefix` is ignored):
/// the next `count` token requests are delayed, answered with `status`, or
/// cut, as an identity service that is slow or down would.
async fn add_token_fault(
    State(state): State<Arc<SimState>>,
    Json(fault): Json<super::faults::Fault>,
) -> StatusCode {
    lock(&state.token_faults).add(super::faults::Fault {
        path_prefix: String::new(),
        ..fault
    });
    StatusCode::NO_CONTENT
}

/// `DELETE /__sim/token-faults`: the token endpoint answers normally again.
async fn clear_token_faults(State(state): State<Arc<SimState>>) -> StatusCode {
    lock(&state.token_faults).clear();
    StatusCode::NO_CONTENT
}

/// An object put straight into the Data Lake, as if ION had received it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewObject {
    document_name: String,
    #[serde(default = "default_from")]
    from_logical_id: String,
    /// The bytes, base64-encoded (binary objects)...
    content_base64: Option<String>,
    /// ...or as text.
    content: Option<String>,
}

fn default_from() -> String {
    "lid://infor.sim.datalake".into()
}

/// `POST /__sim/datalake` with `{document_name, from_logical_id?,
/// content | content_base64}`: answers `{dl_id}`.
async fn add_datalake_object(
    State(state): State<Arc<SimState>>,
    Json(object): Json<NewObject>,
) -> Response {
    use base64::Engine as _;
    let bytes = match (object.content, object.content_base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(b64)) => match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(bytes) => bytes,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": e.to_string()})),
                )
                    .into_response();
            }
        },
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "send exactly one of content and content_base64"})),
            )
                .into_response();
        }
    };
    let (_, dl_id) = lock(&state.messages).push(super::ion::Document {
        endpoint: super::ion::Endpoint::Control,
        content_type: None,
        document_name: object.document_name,
        from_logical_id: object.from_logical_id,
        to_logical_id: "lid://default".into(),
        message_id: None,
        encoding: "NONE".into(),
        bytes,
    });
    Json(json!({ "dl_id": dl_id })).into_response()
}

/// `DELETE /__sim/faults`: forget every pending fault.
async fn clear_faults(State(state): State<Arc<SimState>>) -> StatusCode {
    lock(&state.faults).clear();
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaRequest {
    /// 0 turns the quota off.
    requests: u32,
    window_secs: u64,
}

/// `POST /__sim/quota` `{"requests": N, "window_secs": S}`: the gateway's quota policy.
async fn set_quota(
    State(state): State<Arc<SimState>>,
    Json(request): Json<QuotaRequest>,
) -> StatusCode {
    *lock(&state.quota) = (request.requests > 0).then(|| {
        super::faults::Quota::new(
            request.requests,
            std::time::Duration::from_secs(request.window_secs.max(1)),
        )
    });
    StatusCode::NO_CONTENT
}
