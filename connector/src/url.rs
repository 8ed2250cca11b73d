//! The little URL handling the connector needs: checking the base URLs of a
//! `.ionapi` file and joining paths onto them without `//` or lost segments.
//!
//! A full URL crate would add Unicode tables to the component for no gain:
//! every URL here is built from the file's own strings.

/// Scheme and host of an absolute `http(s)` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub https: bool,
    /// Lower-cased host without port or brackets.
    pub host: String,
}

impl Origin {
    pub fn is_loopback(&self) -> bool {
        matches!(self.host.as_str(), "localhost" | "127.0.0.1" | "::1")
            || self.host.starts_with("127.")
    }
}

/// Why a base URL is unusable, phrased to follow "field `x` ...".
pub fn parse_origin(url: &str) -> Result<Origin, String> {
    let (https, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
        (true, rest)
    } else if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
        (false, rest)
    } else {
        return Err("must be an absolute URL starting with https://".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not carry a user name or password".into());
    }
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        return Err("has no host name".into());
    }
    if rest.contains(['?', '#']) {
        return Err("must not contain a query (?) or fragment (#)".into());
    }
    let origin = Origin {
        https,
        host: host.to_ascii_lowercase(),
    };
    if !origin.https && !origin.is_loopback() {
        return Err(
            "uses http://, which would send credentials in clear text; use https:// \
             (http:// is accepted only for loopback, as with the simulator)"
                .into(),
        );
    }
    Ok(origin)
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// Joins URL pieces with exactly one `/` between them, keeping every segment:
/// `join(["https://h/T/as/", "/token.oauth2"])` is `https://h/T/as/token.oauth2`.
pub fn join<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for part in parts {
        if out.is_empty() {
            out.push_str(part.trim_end_matches('/'));
            continue;
        }
        let piece = part.trim_matches('/');
        if piece.is_empty() {
            continue;
        }
        out.push('/');
        out.push_str(piece);
    }
    out
}

/// How many layers of percent-encoding a path may carry. Real product paths
/// carry at most one (`%20`, `%27`); a gateway or a backend that decodes
/// again would turn `%252e` into `.`, so every layer up to this depth is
/// checked, and anything still encoded deeper is refused.
const MAX_ENCODING_DEPTH: usize = 3;

/// Characters that some servers fold into `.` (fullwidth, one-dot leader,
/// small full stop): a segment made of them is a dot segment too.
fn is_dot_like(c: char) -> bool {
    matches!(c, '.' | '\u{FF0E}' | '\u{2024}' | '\u{FE52}')
}

/// Decodes one layer of `%XX`. `None` when nothing was encoded; an error
/// when the decoded bytes are not UTF-8 (overlong `%C0%AE` dots and the like).
fn percent_decode_once(text: &str) -> Result<Option<String>, String> {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut changed = false;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi << 4 | lo);
            changed = true;
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if !changed {
        return Ok(None);
    }
    String::from_utf8(out)
        .map(Some)
        .map_err(|_| "has a percent-encoded sequence that is not UTF-8".to_owned())
}

/// `text` as sent and as each layer of percent-decoding would read it.
fn decoded_layers(text: &str) -> Result<Vec<String>, String> {
    let mut layers = vec![text.to_owned()];
    while let Some(decoded) = percent_decode_once(layers.last().map_or("", String::as_str))? {
        if layers.len() > MAX_ENCODING_DEPTH {
            return Err(format!(
                "is percent-encoded more than {MAX_ENCODING_DEPTH} times over"
            ));
        }
        layers.push(decoded);
    }
    Ok(layers)
}

/// A segment a server would read as "this folder" or "the parent folder",
/// or as nothing at all: `.`, `..`, `...`, `..;x` (Tomcat drops `;x`),
/// `. ` (Windows drops trailing blanks), ` `, fullwidth dots.
fn is_dot_or_blank_segment(segment: &str) -> bool {
    let name = segment.split(';').next().unwrap_or_default().trim();
    name.is_empty() || name.chars().all(is_dot_like)
}

/// Why `path`, a product path to be joined below `{iu}/{ti}/`, could reach
/// anything outside that prefix: a dot segment in any spelling (`..`,
/// `%2e%2E`, `%252e`, `.\u{FF0E}`), a backslash (`\`, `%5c`) that servers
/// read as `/`, an empty or blank segment that collapses (`//`, `/%20/`),
/// an absolute URL (`https://...`, `//host`), or a control character that
/// URL parsers drop. Phrased to follow "the path `...` ". Checked before
/// any URL is built, so a refused path is never sent anywhere.
pub fn check_product_path(path: &str) -> Result<(), String> {
    if path.contains(['?', '#']) {
        return Err(
            "contains `?` or `#`; pass query parameters separately, not in the path".into(),
        );
    }
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let scheme_like = first.split_once(':').is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    if path.contains("://") || path.starts_with("//") || scheme_like {
        return Err("is an absolute URL".into());
    }
    // One leading and one trailing slash are how people write paths; the
    // join drops them. Anything else between slashes must be a real name.
    let inner = path.strip_prefix('/').unwrap_or(path);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    for (depth, layer) in decoded_layers(inner)?.iter().enumerate() {
        let encoded = if depth == 0 { "" } else { " once decoded" };
        if layer.chars().any(char::is_control) {
            return Err(format!("contains a control character{encoded}"));
        }
        if layer.contains('\\') {
            return Err(format!(
                "contains a backslash{encoded}, which servers read as `/`"
            ));
        }
        // `{iu}/{ti}` itself is inside the tenant.
        if !inner.is_empty() && layer.split('/').any(is_dot_or_blank_segment) {
            return Err(format!("has a `.`, `..` or empty segment{encoded}"));
        }
    }
    Ok(())
}

/// Why a query parameter name is unusable. Names and values are
/// form-encoded on the way out, so neither can change the path; a name
/// that looks like a path (`../x`, `%2e%2e`, `a/b`) or holds control
/// characters is still refused, as no API names its parameters that way.
pub fn check_query_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("is empty".into());
    }
    for (depth, layer) in decoded_layers(name)?.iter().enumerate() {
        let encoded = if depth == 0 { "" } else { " once decoded" };
        if layer.chars().any(char::is_control) {
            return Err(format!("contains a control character{encoded}"));
        }
        if layer.contains(['/', '\\', '?', '#']) || is_dot_or_blank_segment(layer) {
            return Err(format!(
                "looks like a path{encoded} (`/`, `\\`, `?`, `#` or a dot segment); \
                 use the API's parameter name"
            ));
        }
    }
    Ok(())
}

/// A value from a request, quoted for an error message as it was written:
/// only control characters are escaped, and long values are cut.
pub fn quoted(value: &str) -> String {
    const MAX: usize = 160;
    let mut shown = String::new();
    for c in value.chars().take(MAX) {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    if value.chars().count() > MAX {
        shown.push_str("...");
    }
    format!("`{shown}`")
}

/// Appends form-encoded query parameters, in place (no second string per call).
pub fn with_query(mut url: String, query: &[(String, String)]) -> String {
    if query.is_empty() {
        return url;
    }
    url.push('?');
    let start = url.len();
    let mut ser = form_urlencoded::Serializer::for_suffix(url, start);
    for (k, v) in query {
        ser.append_pair(k, v);
    }
    ser.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_never_doubles_or_drops_slashes() {
        let pu = "https://mingle-sso.eu1.inforcloudsuite.com:443/ACME_PRD/as/";
        assert_eq!(
            join([pu, "token.oauth2"]),
            "https://mingle-sso.eu1.inforcloudsuite.com:443/ACME_PRD/as/token.oauth2"
        );
        assert_eq!(
            join(["https://h/ACME/as", "/token.oauth2"]),
            "https://h/ACME/as/token.oauth2"
        );
        assert_eq!(
            join(["https://h/InforIntSTS/", "connect/token"]),
            "https://h/InforIntSTS/connect/token"
        );
        assert_eq!(
            join([
                "https://ion:7443/",
                "TENANT",
                "/M3/m3api-rest/v2/execute/X/Y"
            ]),
            "https://ion:7443/TENANT/M3/m3api-rest/v2/execute/X/Y"
        );
    }

    #[test]
    fn origins() {
        assert_eq!(
            parse_origin("https://Mingle-IONAPI.eu1.inforcloudsuite.com").unwrap(),
            Origin {
                https: true,
                host: "mingle-ionapi.eu1.inforcloudsuite.com".into()
            }
        );
        assert!(parse_origin("http://127.0.0.1:8080/T/as/").is_ok());
        assert!(parse_origin("http://[::1]:8080").is_ok());
        assert!(parse_origin("http://localhost:9/").is_ok());
        assert!(
            parse_origin("http://example.com/")
                .unwrap_err()
                .contains("https://")
        );
        assert!(parse_origin("mingle.example.com").is_err());
        assert!(parse_origin("https://").is_err());
        assert!(parse_origin("https://u:p@host/").is_err());
    }

    #[test]
    fn query_is_form_encoded() {
        let q = vec![("ITNO".to_string(), "A B&C#1+2".to_string())];
        assert_eq!(with_query("u".into(), &q), "u?ITNO=A+B%26C%231%2B2");
        let two = vec![
            ("maxrecs".to_string(), "501".to_string()),
            ("ITNO".to_string(), "A/1".to_string()),
        ];
        assert_eq!(
            with_query("https://h/T/p".into(), &two),
            "https://h/T/p?maxrecs=501&ITNO=A%2F1"
        );
        assert_eq!(with_query("https://h/T/p".into(), &[]), "https://h/T/p");
    }

    /// Every spelling of a way out of `{iu}/{ti}/` seen in the wild (path
    /// traversal lists, the issue's own reproductions) is refused.
    #[test]
    fn hostile_paths_are_refused() {
        let hostile = [
            "..",
            "../other",
            "M3/../../other",
            "M3/./x",
            "./M3",
            "M3/..",
            "M3/../",
            "M3\\..\\..\\other",
            "M3\\x",
            "M3/%2e%2e/%2e%2e/other3",
            "M3/%2E%2E/other",
            "M3/%2e%2E/other",
            "M3/.%2e/other",
            "M3/%2e./other",
            "M3/%2e/other",
            "M3/%252e%252e/other",
            "M3/%25252e%25252e/other",
            "M3/%2525252e%2525252e/other",
            "M3/..%2fother",
            "M3/..%2Fother",
            "M3/%2e%2e%2fother",
            "M3%2f..%2f..%2fother",
            "M3/..%5cother",
            "M3/%5c..%5cother",
            "M3/..%255cother",
            "M3/%c0%ae%c0%ae/other",
            "M3/%ef%bc%8e%ef%bc%8e/other",
            "M3/\u{FF0E}\u{FF0E}/other",
            "M3/..;/other",
            "M3/..;jsessionid=x/other",
            "M3/.. /other",
            "M3/.../other",
            "M3//other",
            "M3/%2f/other",
            "M3/%20/other",
            "M3/ /other",
            "M3/;/other",
            "M3/.\t./other",
            "M3/.%09./other",
            "M3/\n../other",
            "M3/%00/other",
            "//evil.example/x",
            "///x",
            "https://evil.example/x",
            "HTTP://evil.example/x",
            "http:/evil.example/x",
            "javascript:alert(1)",
            "M3/x?y=1",
            "M3/x#frag",
            "M3/x//",
        ];
        for path in hostile {
            let verdict = check_product_path(path);
            assert!(verdict.is_err(), "{path:?} was accepted");
        }
    }

    #[test]
    fn product_paths_pass() {
        for path in [
            "",
            "/",
            "M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm",
            "/M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm",
            "DATAFABRIC/compass/v2/jobs/",
            "DATAFABRIC/compass/v2/jobs/abc-123/result/",
            "CSI/IDORequestService/ido/load/SLItems",
            "LN/lnapi/odata/txsls.SalesOrders('SO%2F001')",
            "IONSERVICES/datalakeapi/v1/payloads/list",
            "ifsservice/usermgt/v2/users/me",
            "FIN/api/v1/accounts/1.2.3",
            "M3/file.json",
            "M3/.hidden-is-a-name",
            "M3/a%20b",
            "100%/x",
        ] {
            assert_eq!(check_product_path(path), Ok(()), "{path:?}");
        }
    }

    #[test]
    fn hostile_query_names_are_refused() {
        for name in [
            "",
            " ",
            "..",
            ".",
            "%2e%2e",
            "%252e%252e",
            "../x",
            "a/b",
            "a\\b",
            "a%2fb",
            "a?b",
            "a#b",
            "a\nb",
            "a%0Ab",
        ] {
            assert!(check_query_name(name).is_err(), "{name:?} was accepted");
        }
        for name in ["ITNO", "$filter", "maxrecs", "fields[]", "a.b", "dl_id"] {
            assert_eq!(check_query_name(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn quoted_values_are_escaped_and_cut() {
        assert_eq!(quoted("a\nb"), "`a\\nb`");
        assert_eq!(quoted("M3\\..\\x"), "`M3\\..\\x`");
        assert!(quoted(&"x".repeat(500)).ends_with("...`"));
    }
}
