//! Hooks for a host that watches its connections: every HTTP exchange a
//! connector makes, with what it was for and how it ended, and the time a
//! business call waited for the rate limit. The `ionflow` daemon turns them
//! into Prometheus metrics; an embedder may ignore them.
//!
//! Nothing passed here carries a secret: the product is the first path
//! segment below the tenant, the grant is the `grant_type` of a token
//! request, never a body, header or query string.

use std::time::Duration;

/// What an HTTP exchange of the connector was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind<'a> {
    /// A request to the token endpoint, with its `grant_type` (one of a
    /// fixed set; anything else is `"other"`).
    Token { grant: &'static str },
    /// A business call below `{iu}/{ti}/`, with its product (`M3`, `CSI`,
    /// `IONSERVICES`, ...: the first path segment, at most 40 characters).
    Business { product: &'a str },
    /// Anything else the connector sends (revocation, user info).
    Other,
}

/// One HTTP exchange, reported when it ends.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    pub connection: &'a str,
    pub kind: ExchangeKind<'a>,
    /// The HTTP status; `None` when no answer came (timeout, connection error).
    pub status: Option<u16>,
    pub elapsed: Duration,
}

/// Receives what connections do. Calls are made on the connection's task
/// and must not block.
pub trait Observer: Send + Sync + 'static {
    /// An exchange is about to be sent (for an in-flight gauge).
    fn exchange_started(&self, _connection: &str) {}
    /// An exchange ended (answered or not).
    fn exchange_ended(&self, _exchange: &Exchange<'_>) {}
    /// A business call waited this long for the connection's rate limit.
    fn rate_limit_waited(&self, _connection: &str, _waited: Duration) {}
}

/// The grant of a token request, from its form body: only `grant_type` is
/// read, and only known values are returned.
pub(crate) fn grant_of(body: &[u8]) -> &'static str {
    let body = String::from_utf8_lossy(body);
    let value = body
        .split('&')
        .find_map(|pair| pair.strip_prefix("grant_type="))
        .unwrap_or_default();
    match value {
        "password" => "password",
        "client_credentials" => "client_credentials",
        "refresh_token" => "refresh_token",
        "authorization_code" => "authorization_code",
        v if v.contains("saml2-bearer") => "saml_bearer",
        _ => "other",
    }
}

/// The product of a business URL path below the ION API URL's own path
/// (`/TENANT/M3/m3api-rest/...` with base `/TENANT` gives `M3`).
pub(crate) fn product_of<'a>(path: &'a str, base_path: &str) -> &'a str {
    let rest = path
        .strip_prefix(base_path.trim_end_matches('/'))
        .unwrap_or(path)
        .trim_start_matches('/');
    let segment = rest.split('/').next().unwrap_or_default();
    let clean = segment.len() <= 40
        && !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if clean { segment } else { "other" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_grant_type_is_read_and_mapped_to_a_fixed_set() {
        assert_eq!(
            grant_of(b"grant_type=password&username=u&password=SECRET"),
            "password"
        );
        assert_eq!(
            grant_of(b"client_id=x&grant_type=refresh_token"),
            "refresh_token"
        );
        assert_eq!(
            grant_of(b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Asaml2-bearer"),
            "saml_bearer"
        );
        assert_eq!(grant_of(b"grant_type=SECRET-LOOKING"), "other");
        assert_eq!(grant_of(b"\xff\xfe"), "other");
    }

    #[test]
    fn the_product_is_the_first_segment_below_the_tenant() {
        assert_eq!(
            product_of("/ACME_TST/M3/m3api-rest/v2/x", "/ACME_TST"),
            "M3"
        );
        assert_eq!(
            product_of("/ACME_TST/CSI/IDORequestService", "/ACME_TST/"),
            "CSI"
        );
        assert_eq!(product_of("/T/", "/T"), "other");
        assert_eq!(product_of(&format!("/T/{}", "x".repeat(41)), "/T"), "other");
        assert_eq!(product_of("/T/a%20b/c", "/T"), "other");
    }
}
