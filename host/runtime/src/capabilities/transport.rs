//! The `transport` capability: one HTTP exchange through a shared reqwest client.

use std::time::Duration;

use super::super::bindings::ionflow::gateway::transport::{
    IncomingResponse, OutgoingRequest, TransportError,
};
use super::super::bindings::ionflow::gateway::types::Method;
use super::super::limits::ConnectionStats;

/// Answers larger than this are refused rather than buffered: a runaway
/// response must not exhaust the host's memory.
const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;

/// One connection pool for every connector instance. Redirects are not
/// followed (a redirect could carry the Bearer token to another host) and no
/// cookies are kept.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    pub fn new() -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ionflow/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(HttpTransport { client })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub async fn send(
        &self,
        request: OutgoingRequest,
        allowed_hosts: &[String],
        connection: &str,
        stats: &ConnectionStats,
    ) -> Result<IncomingResponse, TransportError> {
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| TransportError::Other(format!("invalid URL: {e}")))?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if !allowed_hosts.iter().any(|allowed| allowed == host) {
            stats.record_refusal();
            tracing::warn!(
                connection,
                host,
                "refused a connector request to a host outside its .ionapi file"
            );
            return Err(TransportError::Refused(format!(
                "{host} is not one of the hosts named in the .ionapi file ({})",
                allowed_hosts.join(", ")
            )));
        }
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Head => reqwest::Method::HEAD,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self
            .client
            .request(method, url)
            .timeout(Duration::from_millis(request.timeout_ms.max(1).into()));
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if !request.body.is_empty() {
            builder = builder.body(request.body);
        }
        stats.record(request.url.as_str());
        let response = builder.send().await.map_err(classify)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        if response
            .content_length()
            .is_some_and(|len| len > MAX_RESPONSE_BYTES as u64)
        {
            return Err(TransportError::Other(format!(
                "response larger than {MAX_RESPONSE_BYTES} bytes refused"
            )));
        }
        let body = response.bytes().await.map_err(classify)?;
        if body.len() > MAX_RESPONSE_BYTES {
            return Err(TransportError::Other(format!(
                "response larger than {MAX_RESPONSE_BYTES} bytes refused"
            )));
        }
        Ok(IncomingResponse {
            status,
            headers,
            body: body.to_vec(),
        })
    }
}

/// reqwest's messages include the URL, which never carries a secret here
/// (credentials travel in bodies and headers only).
fn classify(e: reqwest::Error) -> TransportError {
    if e.is_timeout() {
        TransportError::Timeout
    } else if e.is_connect() {
        TransportError::Connect(error_chain(&e))
    } else {
        TransportError::Other(error_chain(&e))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
