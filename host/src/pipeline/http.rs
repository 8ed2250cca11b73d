//! Plain HTTP(S) calls for `http` sources and sinks: outside the gateway,
//! so no token, and `http://` only towards this machine.

use std::time::Duration;

use anyhow::Context as _;

use super::retry::{RunStats, Unavailable, backoff};
use crate::config::RetryConfig;
use crate::metrics::RetryReason;
use ionflow_runtime::capabilities::transport::{CappedError, read_capped};

/// The client of plain HTTP sources and sinks, with the cap on what one
/// answer may hold: the same as the connector's transport, so no body read
/// by ionflow grows past it, Content-Length or not.
#[derive(Clone)]
pub struct HttpClient {
    /// Built at the first call: most pipelines have no plain-HTTP source or
    /// sink and should not load the system's root certificates for one.
    client: ionflow_runtime::tls::LazyClient,
    max_response_bytes: u64,
}

impl HttpClient {
    /// Cannot fail: the client itself is built, and may fail, at the first call.
    pub fn new(max_response_bytes: u64) -> Self {
        let client = ionflow_runtime::tls::LazyClient::new(|builder| {
            builder.user_agent(concat!("ionflow/", env!("CARGO_PKG_VERSION")))
        });
        HttpClient {
            client,
            max_response_bytes,
        }
    }
}

pub struct HttpRequest {
    pub method: reqwest::Method,
    pub url: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Option<(String, Vec<u8>)>,
    pub timeout: Duration,
}

pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Cleartext HTTP would expose headers (often credentials) on the network.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = parsed.host_str().unwrap_or("");
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "`{url}` uses http:// to a remote host; use https://"
                ))
            }
        }
        other => Err(format!(
            "`{url}`: scheme {other} is not supported; use https://"
        )),
    }
}

/// The first bytes of a body, for error messages.
pub use crate::products::excerpt;

fn retryable_status(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// Sends the request, again after 429/5xx or a network error as the policy
/// and idempotency allow. Returns the response and the number of retries;
/// a 429/5xx or network error that stands at the end is an [`Unavailable`].
pub async fn send(
    http: &HttpClient,
    request: &HttpRequest,
    policy: &RetryConfig,
    idempotent: bool,
    stats: &RunStats,
) -> anyhow::Result<(HttpResponse, u32)> {
    let mut attempt = 0;
    let what = || format!("{} {}", request.method, request.url);
    loop {
        let mut url = reqwest::Url::parse(&request.url)
            .with_context(|| format!("`{}` is not a URL", request.url))?;
        if !request.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&request.query);
        }
        let mut builder = http
            .client
            .get()?
            .request(request.method.clone(), url)
            .timeout(request.timeout);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some((content_type, body)) = &request.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body.clone());
        }
        stats
            .http_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sent = std::time::Instant::now();
        let outcome = builder.send().await;
        // One line per call at debug level, without query, headers or body.
        let host = reqwest::Url::parse(&request.url)
            .ok()
            .map(|u| format!("{}{}", u.host_str().unwrap_or_default(), u.path()))
            .unwrap_or_default();
        match &outcome {
            Ok(response) => tracing::debug!(
                "{} {host} -> {} in {} ms",
                request.method,
                response.status().as_u16(),
                sent.elapsed().as_millis()
            ),
            Err(_) => tracing::debug!(
                "{} {host} -> failed in {} ms",
                request.method,
                sent.elapsed().as_millis()
            ),
        }
        let (may_repeat, retry_after, failure, why) = match outcome {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u32>().ok());
                let body = read_capped(response, http.max_response_bytes)
                    .await
                    .map_err(|e| {
                        let what = format!("{} {}", request.method, request.url);
                        match e {
                            CappedError::Read(e) => {
                                anyhow::Error::new(e).context(format!("{what}: reading the answer"))
                            }
                            CappedError::TooLarge(message) => anyhow::anyhow!("{what}: {message}"),
                        }
                    })?;
                if !retryable_status(status) {
                    return Ok((HttpResponse { status, body }, attempt));
                }
                (
                    status == 429 || idempotent,
                    retry_after,
                    Unavailable::status(what(), status, &body, attempt + 1),
                    if status == 429 {
                        RetryReason::RateLimited
                    } else {
                        RetryReason::ServerError
                    },
                )
            }
            // A refused connection never reached the server.
            Err(e) => (
                idempotent || e.is_connect(),
                None,
                Unavailable {
                    what: what(),
                    status: None,
                    cause: error_chain(&e),
                    attempts: attempt + 1,
                    reached: !e.is_connect(),
                },
                RetryReason::Network,
            ),
        };
        if !may_repeat || attempt >= policy.max_retries {
            return Err(failure.into());
        }
        tokio::time::sleep(backoff(policy, attempt, retry_after)).await;
        stats.retried();
        // Plain HTTP(S) calls have no connection name of their own.
        crate::metrics::metrics().retried("http", why);
        attempt += 1;
    }
}

/// reqwest's error and its causes on one line (`error sending request: ...: Connection refused`).
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
    use super::*;

    #[test]
    fn cleartext_only_to_loopback() {
        assert!(check_url("https://example.com/x").is_ok());
        assert!(check_url("http://127.0.0.1:8080/x").is_ok());
        assert!(check_url("http://localhost/x").is_ok());
        assert!(
            check_url("http://example.com/x")
                .unwrap_err()
                .contains("https")
        );
        assert!(check_url("ftp://example.com/x").is_err());
        assert!(check_url("not a url").is_err());
    }
}
