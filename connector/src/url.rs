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
        assert_eq!(with_query("https://h/T/p".into(), &two), "https://h/T/p?maxrecs=501&ITNO=A%2F1");
        assert_eq!(with_query("https://h/T/p".into(), &[]), "https://h/T/p");
    }
}
