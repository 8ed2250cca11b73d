//! Record mode's forwarding (`ionflow sim --record DIR --upstream ...`):
//! every business call a client makes with this simulator's token goes on
//! to a real tenant through an [`Upstream`], its answer comes back to the
//! client, and the recorder (`fixtures::record`) keeps it as fixtures.
//!
//! The simulator never sees the upstream's credentials or tokens: the
//! [`Upstream`] (the `ionflow` CLI's connector connection) authenticates
//! its calls itself. Only a few request headers go on (content type,
//! accept, `X-Infor-*`): the client's Authorization and cookies stay here.

use std::sync::{Arc, Mutex};

use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use serde_json::json;

use super::fixtures::record::{Call, Recorder};
use super::{BODY_LIMIT, SimState, lock};

/// A call for the upstream: below its `{iu}/{ti}/`.
#[derive(Debug, Clone)]
pub struct Forward {
    pub method: String,
    /// The product path as the client sent it (still percent-encoded).
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What the upstream's product answered (any status it lets through).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A call the upstream refused or could not make (the gateway's 401, 403,
/// 413, 429, 504, a transport failure): passed to the client with this
/// status, never recorded.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub status: u16,
    /// Free of secrets: it reaches the client and the log.
    pub message: String,
    pub retry_after_secs: Option<u32>,
}

/// The tenant record mode forwards to.
pub trait Upstream: Send + Sync {
    /// Its `iu` and tenant id, which recorded answers must not carry.
    fn base_url(&self) -> String;
    fn tenant(&self) -> String;
    /// One authenticated call; the answer's body is already size-capped.
    fn call(&self, request: Forward) -> BoxFuture<'_, Result<Answer, Refusal>>;
}

pub(crate) struct Recording {
    pub(crate) upstream: Arc<dyn Upstream>,
    pub(crate) recorder: Arc<Mutex<Recorder>>,
}

/// Request headers the product may need; everything else (Authorization,
/// Cookie, Host, forwarding headers) stays with this simulator.
fn forwarded(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(name.as_str(), "content-type" | "accept" | "accept-language")
        || name.starts_with("x-infor-")
}

/// Answer headers the client may need.
fn returned(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "content-type" | "content-disposition" | "retry-after"
    )
}

fn refusal(status: u16, message: &str, retry_after_secs: Option<u32>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (
        status,
        axum::Json(json!({"error": "upstream", "error_description": message})),
    )
        .into_response();
    if let Some(secs) = retry_after_secs
        && let Ok(value) = HeaderValue::from_str(&secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Any business path in record mode: forwarded, answered, recorded.
pub(crate) async fn forward(State(state): State<Arc<SimState>>, request: Request) -> Response {
    let Some(recording) = &state.recording else {
        return super::gateway::not_found(request).await;
    };
    let uri = match request.extensions().get::<OriginalUri>() {
        Some(OriginalUri(original)) => original.clone(),
        None => request.uri().clone(),
    };
    let prefix = format!("/{}/", state.config.tenant);
    let path = uri
        .path()
        .strip_prefix(&prefix)
        .unwrap_or(uri.path())
        .to_owned();
    let query: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let method = request.method().as_str().to_owned();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .filter(|(name, _)| forwarded(name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let Ok(body) = axum::body::to_bytes(request.into_body(), BODY_LIMIT).await else {
        return refusal(
            413,
            "the request body is larger than the gateway's 10 MB",
            None,
        );
    };
    let call = Forward {
        method,
        path,
        query,
        headers,
        body: body.to_vec(),
    };
    let answer = match recording.upstream.call(call.clone()).await {
        Ok(answer) => answer,
        Err(refused) => {
            tracing::info!(
                target: "ionflow::sim",
                path = %super::codec::clip(&call.path, 200),
                status = refused.status,
                "the upstream refused a call; passed on, not recorded"
            );
            return refusal(refused.status, &refused.message, refused.retry_after_secs);
        }
    };
    // Recorded before the client has its answer, so that a client that saw
    // an answer can count on its fixture being on disk.
    let recorder = recording.recorder.clone();
    let status = answer.status;
    let answer_body = answer.body.clone();
    let recorded = tokio::task::spawn_blocking(move || {
        let mut recorder = lock(&recorder);
        let touched = recorder.observe(
            &Call {
                method: &call.method,
                path: &call.path,
                query: &call.query,
                body: &call.body,
            },
            status,
            &answer_body,
        );
        let result = super::fixtures::write::save(&recorder, &touched);
        (result, recorder.take_full())
    })
    .await;
    match recorded {
        Ok((Ok(_), full)) => {
            for what in full {
                tracing::warn!(
                    target: "ionflow::sim",
                    "{what} holds as many records as a fixture may ({}); further ones are passed on, not recorded",
                    super::fixtures::record::LIMITS
                );
            }
        }
        Ok((Err(error), _)) => {
            tracing::warn!(target: "ionflow::sim", "recording failed: {error:#}")
        }
        Err(error) => tracing::warn!(target: "ionflow::sim", "recording failed: {error}"),
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, answer.body).into_response();
    for (name, value) in answer.headers.iter().filter(|(n, _)| returned(n)) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_product_headers_go_on_and_come_back() {
        for name in ["Content-Type", "accept", "X-Infor-MongooseConfig"] {
            assert!(forwarded(name), "{name}");
        }
        for name in [
            "Authorization",
            "Cookie",
            "Host",
            "X-Forwarded-For",
            "Proxy-Authorization",
        ] {
            assert!(!forwarded(name), "{name}");
        }
        assert!(returned("Retry-After"));
        for name in ["Set-Cookie", "WWW-Authenticate", "Authorization"] {
            assert!(!returned(name), "{name}");
        }
    }
}
