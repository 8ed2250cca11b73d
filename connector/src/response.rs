//! What the gateway's status codes and headers mean for a business call.

use crate::error::ConnectorError;
use crate::secret::{Secret, scrub};

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// `Retry-After` as seconds from `now`: either delta-seconds or an HTTP date.
pub fn retry_after_secs(headers: &[(String, String)], now: u64) -> Option<u32> {
    let value = header(headers, "retry-after")?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs.min(u32::MAX as u64) as u32);
    }
    let at = parse_http_date(value)?;
    Some(at.saturating_sub(now).min(u32::MAX as u64) as u32)
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form RFC 9110
/// requires senders to produce, as Unix seconds.
pub fn parse_http_date(value: &str) -> Option<u64> {
    let rest = value.split_once(", ")?.1;
    let mut parts = rest.split_whitespace();
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let m: u64 = hms.next()?.parse().ok()?;
    let s: u64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || day == 0 || day > 31 || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day as i64);
    u64::try_from(days)
        .ok()
        .map(|d| d * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A short, secret-free excerpt of a response body for an error message.
pub fn body_excerpt(body: &[u8], secrets: &[&Secret]) -> String {
    const MAX: usize = 300;
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    // Scrubbed before it is cut, so that a secret straddling the cut does
    // not leave its first half behind: the window holds any secret that
    // starts inside the excerpt whole.
    let longest = secrets
        .iter()
        .map(|s| s.expose().len() * 6)
        .max()
        .unwrap_or(0);
    let window: String = text.chars().take(MAX + longest).collect();
    let scrubbed = scrub(&window, secrets.iter().copied());
    let mut cut: String = scrubbed.chars().take(MAX).collect();
    if text.chars().count() > MAX {
        cut.push_str("...");
    }
    cut
}

/// The `error_description` (or `error`) of a `WWW-Authenticate: Bearer ...` header.
pub fn bearer_error(headers: &[(String, String)]) -> Option<String> {
    ["error_description", "error"]
        .into_iter()
        .find_map(|name| bearer_param(headers, name))
}

/// One `name="value"` attribute of a `WWW-Authenticate: Bearer ...` header.
fn bearer_param(headers: &[(String, String)], name: &str) -> Option<String> {
    let value = header(headers, "www-authenticate")?;
    let key = format!("{name}=\"");
    // `error=` must not match inside `error_description=`.
    let start = value
        .match_indices(&key)
        .find(|(i, _)| *i == 0 || matches!(value.as_bytes()[i - 1], b' ' | b','))?
        .0;
    let rest = &value[start + key.len()..];
    rest.split('"')
        .next()
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// What a 403 says about the missing scope or role: the bearer challenge's
/// description and `scope` when the gateway sent one, else the JSON body's
/// description, else an excerpt of the body.
fn forbidden_reason(headers: &[(String, String)], body: &[u8], secrets: &[&Secret]) -> String {
    let code_and_text = |code: Option<String>, text: Option<String>| match (code, text) {
        (Some(code), Some(text)) => Some(format!("{code}: {text}")),
        (code, text) => text.or(code),
    };
    let said = code_and_text(
        bearer_param(headers, "error"),
        bearer_param(headers, "error_description"),
    )
    .or_else(|| {
        let json: serde_json::Value = serde_json::from_slice(body).ok()?;
        let field = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| json.get(*k)?.as_str().map(str::to_owned))
        };
        code_and_text(
            field(&["error"]),
            field(&["error_description", "message", "Message"]),
        )
    });
    let said = match said {
        Some(text) => scrub(&text, secrets.iter().copied()),
        None => body_excerpt(body, secrets),
    };
    match bearer_param(headers, "scope") {
        Some(scope) => format!(
            "{said} (required scope: {})",
            scrub(&scope, secrets.iter().copied())
        ),
        None => said,
    }
}

/// The size of the request body and the limit it was checked against, for a 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSize {
    pub body_bytes: u64,
    pub limit_bytes: u64,
}

/// Turns the statuses that a caller cannot act on as data into errors.
/// 401 is handled by the caller, which renews the token once first. Every
/// status below 400 is data, so a caller may skip the check for those.
pub fn check_business_status(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    path: &str,
    request: RequestSize,
    secrets: &[&Secret],
    now: u64,
) -> Result<(), ConnectorError> {
    match status {
        403 => Err(ConnectorError::Forbidden(format!(
            "{path}: {}. Add the API's scope to the authorized app in Infor OS > API Gateway, \
             give the service account's IFS user the product role it needs, then download the \
             .ionapi file again (scopes are fixed at download time)",
            forbidden_reason(headers, body, secrets)
        ))),
        413 => Err(ConnectorError::PayloadTooLarge {
            size_bytes: request.body_bytes,
            limit_bytes: request.limit_bytes,
        }),
        429 => Err(ConnectorError::RateLimited {
            retry_after_secs: retry_after_secs(headers, now),
            message: format!(
                "{path}: the gateway's quota or spike-arrest policy refused the call; \
                 lower the request rate or ask the administrator to raise the quota"
            ),
        }),
        504 => Err(ConnectorError::GatewayTimeout(format!(
            "{path}: the product did not answer within the gateway's timeout (1 minute by default); \
             ask for smaller pages (maxrecs, recordCap, limit) or have the administrator extend the \
             endpoint's timeout policy (at most 5 minutes)"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(k: &str, v: &str) -> Vec<(String, String)> {
        vec![(k.to_string(), v.to_string())]
    }

    #[test]
    fn retry_after_in_both_forms() {
        assert_eq!(retry_after_secs(&h("Retry-After", "7"), 0), Some(7));
        // 1994-11-06T08:49:37Z is 784111777.
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            retry_after_secs(
                &h("retry-after", "Sun, 06 Nov 1994 08:49:47 GMT"),
                784_111_777
            ),
            Some(10)
        );
        assert_eq!(retry_after_secs(&h("retry-after", "soon"), 0), None);
        assert_eq!(retry_after_secs(&[], 0), None);
    }

    #[test]
    fn bearer_error_is_read() {
        let v = h(
            "WWW-Authenticate",
            "Bearer error=\"invalid_token\", error_description=\"The access token expired\"",
        );
        assert_eq!(
            bearer_error(&v).as_deref(),
            Some("The access token expired")
        );
    }

    #[test]
    fn statuses_map_to_errors() {
        let s = check_business_status(
            403,
            &[],
            b"scope missing",
            "M3/x",
            RequestSize::default(),
            &[],
            0,
        )
        .unwrap_err();
        assert!(matches!(s, ConnectorError::Forbidden(ref m) if m.contains("scope missing")));
        assert!(matches!(
            check_business_status(
                429,
                &h("Retry-After", "3"),
                b"",
                "p",
                RequestSize::default(),
                &[],
                0
            ),
            Err(ConnectorError::RateLimited {
                retry_after_secs: Some(3),
                ..
            })
        ));
        assert!(check_business_status(504, &[], b"", "p", RequestSize::default(), &[], 0).is_err());
        assert!(check_business_status(400, &[], b"", "p", RequestSize::default(), &[], 0).is_ok());
        assert!(check_business_status(200, &[], b"", "p", RequestSize::default(), &[], 0).is_ok());
    }

    #[test]
    fn no_status_below_400_is_an_error() {
        // Session::call skips the check below 400; this keeps that safe.
        for status in 100..400 {
            assert!(
                check_business_status(status, &[], b"", "p", RequestSize::default(), &[], 0)
                    .is_ok(),
                "{status}"
            );
        }
    }

    #[test]
    fn a_403_names_the_scope_the_gateway_asks_for() {
        let challenge = h(
            "WWW-Authenticate",
            "Bearer error=\"insufficient_scope\", error_description=\"No scope for DATAFABRIC\", scope=\"DATAFABRIC\"",
        );
        let reason = forbidden_reason(&challenge, b"{}", &[]);
        assert_eq!(
            reason,
            "insufficient_scope: No scope for DATAFABRIC (required scope: DATAFABRIC)"
        );
        let json_only = forbidden_reason(&[], br#"{"message":"User lacks role M3-API"}"#, &[]);
        assert_eq!(json_only, "User lacks role M3-API");
        assert_eq!(
            forbidden_reason(&[], b"<html>denied</html>", &[]),
            "<html>denied</html>"
        );
        assert_eq!(
            bearer_error(&h(
                "WWW-Authenticate",
                "Bearer error=\"insufficient_scope\""
            ))
            .as_deref(),
            Some("insufficient_scope")
        );
    }

    #[test]
    fn excerpts_are_short_and_scrubbed() {
        let secret = Secret::new("supersecretvalue");
        let body = format!("{}supersecretvalue", "x".repeat(10));
        assert_eq!(body_excerpt(body.as_bytes(), &[&secret]), "xxxxxxxxxx*****");
        assert!(body_excerpt(&[b'a'; 1000], &[]).len() < 310);
        // A secret across the cut leaves no first half behind.
        let straddling = format!("{}supersecretvalue", "x".repeat(295));
        let excerpt = body_excerpt(straddling.as_bytes(), &[&secret]);
        assert!(
            excerpt.contains("*****") && !excerpt.contains("super"),
            "{excerpt}"
        );
    }
}
