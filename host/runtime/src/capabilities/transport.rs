//! The `transport` capability: one HTTP exchange through a shared reqwest client.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};

use super::super::bindings::ionflow::gateway::transport::{
    IncomingResponse, OutgoingRequest, TransportError,
};
use super::super::bindings::ionflow::gateway::types::Method;
use super::super::limits::{ConnectionStats, DEFAULT_MAX_RESPONSE_BYTES};

/// One connection pool for every connector instance. Redirects are not
/// followed (a redirect could carry the Bearer token to another host) and no
/// cookies are kept.
#[derive(Clone)]
pub struct HttpTransport {
    /// Built at the first exchange: a process that never calls the gateway
    /// does not load the system's root certificates.
    client: crate::tls::LazyClient,
    /// Answers larger than this are refused while they stream in, with or
    /// without a Content-Length: a runaway response must not exhaust the
    /// host's memory.
    max_response_bytes: u64,
}

impl Default for HttpTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpTransport {
    /// Cannot fail: the client itself is built, and may fail, at the first exchange.
    pub fn new() -> Self {
        let client = crate::tls::LazyClient::new(|builder| {
            builder
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("ionflow/", env!("CARGO_PKG_VERSION")))
                .pool_idle_timeout(Duration::from_secs(60))
        });
        HttpTransport {
            client,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// The same pool with another response cap.
    pub fn with_max_response_bytes(mut self, bytes: u64) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// The client, built at its first use.
    pub fn client(&self) -> Result<&reqwest::Client, crate::tls::ClientBuildError> {
        self.client.get()
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
        if let Some(why) = rewritten_by_parsing(&url_text) {
            stats.record_refusal();
            tracing::warn!(connection, "refused a connector request whose path {why}");
            return Err(TransportError::Refused(format!(
                "its path {why}, which would move it elsewhere on the host; \
                 a gateway path must stay below {{iu}}/{{ti}}/"
            )));
        }
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
                "{host} is not one of the hosts named in the .ionapi file ({}). The connector may \
                 reach only the hosts of `pu` and `iu`: make `ot`, `oa` and `or` paths below `pu` \
                 (or URLs on its host)",
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
        let client = self
            .client
            .get()
            .map_err(|e| TransportError::Other(e.to_string()))?;
        let response = client.execute(outgoing).await.map_err(classify)?;
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
        let body = read_capped(response, self.max_response_bytes)
            .await
            .map_err(|e| match e {
                CappedError::Read(e) => classify(e),
                CappedError::TooLarge(message) => {
                    stats.record_oversized();
                    TransportError::Other(message)
                }
            })?;
        Ok(IncomingResponse {
            status,
            headers,
            body,
        })
    }
}

/// Why a body was not read to its end.
pub enum CappedError {
    Read(reqwest::Error),
    /// The body is larger than the cap: the message names the limit.
    TooLarge(String),
}

/// Reads a response body chunk by chunk and stops at `cap` bytes, whether
/// the server announced a Content-Length or streams a chunked body: memory
/// never holds more than the cap (and one chunk) of any answer.
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: u64,
) -> Result<Vec<u8>, CappedError> {
    let too_large = |seen: &str| {
        CappedError::TooLarge(format!(
            "the response body {seen} exceeds the limit of {cap} bytes ({} MiB) and was not \
             read further; ask for less data per call (smaller pages) or raise the limit with \
             IONFLOW_MAX_RESPONSE_BYTES",
            cap / (1024 * 1024)
        ))
    };
    if let Some(len) = response.content_length().filter(|len| *len > cap) {
        return Err(too_large(&format!("of {len} bytes (Content-Length)")));
    }
    // Room for what was announced, but never a cap's worth up front.
    let announced = response.content_length().unwrap_or(0).min(cap).min(1 << 20);
    let mut body = Vec::with_capacity(announced as usize);
    while let Some(chunk) = response.chunk().await.map_err(CappedError::Read)? {
        if body.len() as u64 + chunk.len() as u64 > cap {
            return Err(too_large("received so far"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Why the URL parser would not send `url` to the path it spells: a `.` or
/// `..` segment (also as `%2e`, or split by `\`, which the parser reads as
/// `/`) is resolved away, and tabs and line breaks are dropped. The
/// connector refuses such paths already; this holds for any component.
fn rewritten_by_parsing(url: &str) -> Option<&'static str> {
    if url.chars().any(char::is_control) {
        return Some("contains a control character");
    }
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme
        .find(['/', '\\'])
        .map_or("", |start| &after_scheme[start..]);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let dot_segment = path.split(['/', '\\']).any(is_dot_segment);
    dot_segment.then_some("has a `.` or `..` segment")
}

/// Whether `segment` is `.` or `..`, each dot also spelled `%2e` or `%2E`.
/// Checked without allocating: it runs on every request.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"%2e") {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
        if dots > 2 {
            return false;
        }
    }
    dots > 0
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

#[cfg(test)]
mod tests {
    use super::rewritten_by_parsing;

    #[test]
    fn urls_the_parser_would_rewrite_are_found() {
        for url in [
            "https://h/T/M3/../other",
            "https://h/T/M3/%2E%2e/other",
            "https://h/T/M3/.%2E/other",
            "https://h/T/./x",
            "https://h/T/M3\\..\\other",
            "https://h/T/M3/.\t./other",
            "https://h/T/..",
        ] {
            assert!(rewritten_by_parsing(url).is_some(), "{url}");
        }
        for url in [
            "https://h/T/M3/.../x",
            "https://h/T/M3/%2e%2e%2e/x",
            "https://h/T/M3/.x/x",
            "https://h/T/M3/%2f/x",
            "https://h/T/M3//x",
            "https://h/T/M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm?ITNO=..",
            "https://h/T/M3/file.json",
            "https://h:443/T/as/token.oauth2",
            "https://h",
        ] {
            assert_eq!(rewritten_by_parsing(url), None, "{url}");
        }
    }
}
