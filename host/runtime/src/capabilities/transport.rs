//! The `transport` capability: one HTTP exchange through a shared reqwest client.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};

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
        let client = crate::tls::client_builder()
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
        let OutgoingRequest {
            method,
            url: url_text,
            headers,
            body,
            timeout_ms,
        } = request;
        // The one parse of the URL: reqwest takes the parsed form as it is.
        let url = reqwest::Url::parse(&url_text)
            .map_err(|e| TransportError::Other(format!("invalid URL: {e}")))?;
        // The parser lower-cases host names; allowed hosts are lower case.
        let host = url.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if !allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
        {
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
        let method = match method {
            Method::Get => reqwest::Method::GET,
            Method::Head => reqwest::Method::HEAD,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        };
        // The request is assembled directly, moving the connector's header
        // values and body in rather than copying them through a builder.
        let mut outgoing = reqwest::Request::new(method, url);
        *outgoing.timeout_mut() = Some(Duration::from_millis(timeout_ms.max(1).into()));
        let map = outgoing.headers_mut();
        map.reserve(headers.len());
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| TransportError::Other(format!("invalid header name `{name}`")))?;
            // The value is not quoted: it may be a credential.
            let value = HeaderValue::try_from(value).map_err(|_| {
                TransportError::Other(format!("invalid value for the header `{name}`"))
            })?;
            map.append(name, value);
        }
        if !body.is_empty() {
            *outgoing.body_mut() = Some(body.into());
        }
        stats.record(&url_text);
        let response = self.client.execute(outgoing).await.map_err(classify)?;
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
            // No copy when the body arrived as one uniquely owned buffer.
            body: Vec::from(body),
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
