//! Findings about a `.ionapi` file beyond "it parses": what `ionflow inspect`
//! reports. Pure, so that every rule is tested natively.

use crate::ionapi::{Credentials, IonapiError};
use crate::url::{self, Origin};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Warning,
    Error,
}

/// One finding; the message names the field and the fix, never a value
/// of a secret field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub field: Option<&'static str>,
    pub message: String,
}

impl Finding {
    fn warning(field: &'static str, message: impl Into<String>) -> Self {
        Finding {
            severity: Severity::Warning,
            field: Some(field),
            message: message.into(),
        }
    }
}

impl From<IonapiError> for Finding {
    fn from(e: IonapiError) -> Self {
        // Messages about the whole file continue "invalid .ionapi file: ...".
        let message = match e.field {
            Some(_) => e.message,
            None => format!("the file {}", e.message),
        };
        Finding {
            severity: Severity::Error,
            field: e.field,
            message,
        }
    }
}

/// Parses the file and lists what deserves attention. A file that does not
/// parse yields its one error finding and no credentials.
pub fn lint(json: &str) -> (Option<Credentials>, Vec<Finding>) {
    match Credentials::parse(json) {
        Err(e) => (None, vec![e.into()]),
        Ok(creds) => {
            let findings = findings(&creds);
            (Some(creds), findings)
        }
    }
}

fn findings(c: &Credentials) -> Vec<Finding> {
    let mut out = Vec::new();
    for (field, target) in [
        ("pu", Some(c.portal_url.as_str())),
        ("iu", Some(c.ion_api_url.as_str())),
        ("ot", Some(c.token_path.as_str())),
        ("oa", c.authorization_path.as_deref()),
        ("or", c.revocation_path.as_deref()),
    ] {
        if let Some(origin) = target.and_then(absolute_origin)
            && !origin.https
        {
            out.push(Finding::warning(
                field,
                format!(
                    "uses http://, accepted only because {} is a loopback host (as with the \
                     simulator); a file for a real tenant must use https://",
                    origin.host
                ),
            ));
        }
    }
    let allowed = c.allowed_hosts();
    for (field, target) in [
        ("ot", Some(c.token_path.as_str())),
        ("oa", c.authorization_path.as_deref()),
        ("or", c.revocation_path.as_deref()),
    ] {
        if let Some(origin) = target.and_then(absolute_origin)
            && !allowed.contains(&origin.host)
        {
            out.push(Finding::warning(
                field,
                format!(
                    "points at {}, which is neither the `pu` nor the `iu` host; the sandbox lets \
                     the connector reach only those two, so requests there will be refused. Make \
                     it a path below `pu`",
                    origin.host
                ),
            ));
        }
    }
    if c.service_account.is_none() {
        out.push(Finding::warning(
            "saak",
            "the fields `saak` and `sask` are missing, so the backend-service grant (Infor's grant \
             for unattended integrations) is not possible; only client-credentials remains. Enable \
             \"Create Service Account\" on the authorized app and download the file again",
        ));
    }
    if c.revocation_path.is_none() {
        out.push(Finding::warning(
            "or",
            "is missing, so tokens cannot be revoked at the end of a session; download the file again",
        ));
    }
    if let Some(problem) = portal_in_place_of_ion_api(c) {
        out.push(Finding::warning("iu", problem));
    }
    if looks_like_ion_api(&c.portal_url) {
        out.push(Finding::warning(
            "pu",
            "looks like an ION API URL (a `mingle-ionapi` host); `pu` must be the portal (SSO) \
             URL that serves the token endpoint, such as https://mingle-sso.<region>.inforcloudsuite.com:443/<tenant>/as/",
        ));
    }
    if let Some(other) = portal_tenant(&c.portal_url).filter(|t| !t.eq_ignore_ascii_case(&c.tenant))
    {
        out.push(Finding::warning(
            "pu",
            format!(
                "names the tenant `{other}` (before `/as/`) while `ti` is `{}`; the fields come \
                 from two different files. Download the file of one tenant again",
                c.tenant
            ),
        ));
    }
    if ends_with_segment(&c.ion_api_url, &c.tenant) {
        out.push(Finding::warning(
            "iu",
            format!(
                "ends with the tenant `{}`; ionflow appends `ti` to `iu` itself, so every URL would \
                 carry the tenant twice. Set `iu` to the bare ION API URL",
                c.tenant
            ),
        ));
    }
    out
}

fn absolute_origin(value: &str) -> Option<Origin> {
    let lower = value.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        url::parse_origin(value).ok()
    } else {
        None
    }
}

/// `pu` is for Infor Federated Services only; business calls to it fail
/// with 404s that do not say why, so catch the mix-up before the first call.
fn portal_in_place_of_ion_api(c: &Credentials) -> Option<String> {
    let fix = "business calls go to the ION API URL (such as \
               https://mingle-ionapi.<region>.inforcloudsuite.com), not to the portal; copy `iu` \
               from a fresh download of the .ionapi file";
    if normalize(&c.ion_api_url) == normalize(&c.portal_url) {
        return Some(format!("is the same URL as `pu` (the portal URL): {fix}"));
    }
    let path = path_of(&c.ion_api_url).to_ascii_lowercase();
    let host = c.ion_api_origin.host.as_str();
    let portal_like =
        host.contains("mingle-sso") || path.split('/').any(|s| s == "as" || s == "inforintsts");
    portal_like.then(|| format!("looks like a portal (SSO) URL: {fix}"))
}

fn looks_like_ion_api(portal_url: &str) -> bool {
    absolute_origin(portal_url).is_some_and(|o| o.host.contains("mingle-ionapi"))
}

fn normalize(u: &str) -> String {
    u.trim_end_matches('/').to_ascii_lowercase()
}

/// The path part of an absolute URL (after the authority).
fn path_of(u: &str) -> &str {
    let rest = u.split_once("://").map_or(u, |(_, rest)| rest);
    rest.find('/').map_or("", |i| &rest[i..])
}

/// Cloud portal URLs read `https://host/TENANT/as/`: the segment before `as`.
fn portal_tenant(portal_url: &str) -> Option<&str> {
    let segments: Vec<&str> = path_of(portal_url)
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let at = segments.iter().position(|s| s.eq_ignore_ascii_case("as"))?;
    at.checked_sub(1).map(|i| segments[i])
}

fn ends_with_segment(u: &str, segment: &str) -> bool {
    path_of(u)
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .is_some_and(|last| last.eq_ignore_ascii_case(segment))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOUD: &str = r#"{
        "ti": "ACME_PRD", "cn": "ionflow",
        "ci": "ACME_PRD~abc", "cs": "s3cr3t+/=value",
        "iu": "https://mingle-ionapi.eu1.inforcloudsuite.com",
        "pu": "https://mingle-sso.eu1.inforcloudsuite.com:443/ACME_PRD/as/",
        "oa": "authorization.oauth2", "ot": "token.oauth2", "or": "revoke_token.oauth2",
        "saak": "ACME_PRD#key+/=", "sask": "sask#&%+/=value"
    }"#;

    fn fields(json: &str) -> Vec<(Severity, Option<&'static str>)> {
        lint(json)
            .1
            .into_iter()
            .map(|f| (f.severity, f.field))
            .collect()
    }

    #[test]
    fn a_good_cloud_file_has_no_findings() {
        let (creds, findings) = lint(CLOUD);
        assert!(creds.is_some());
        assert_eq!(findings, vec![]);
    }

    #[test]
    fn loopback_http_is_a_warning_and_remote_http_an_error() {
        let json = CLOUD
            .replace(
                "https://mingle-ionapi.eu1.inforcloudsuite.com",
                "http://127.0.0.1:8080",
            )
            .replace(
                "https://mingle-sso.eu1.inforcloudsuite.com:443/ACME_PRD/as/",
                "http://localhost:8080/ACME_PRD/as/",
            );
        assert_eq!(
            fields(&json),
            vec![
                (Severity::Warning, Some("pu")),
                (Severity::Warning, Some("iu"))
            ]
        );
        let remote = CLOUD.replace(
            "https://mingle-ionapi.eu1.inforcloudsuite.com",
            "http://mingle-ionapi.eu1.inforcloudsuite.com",
        );
        let (creds, findings) = lint(&remote);
        assert!(creds.is_none());
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].severity, Severity::Error);
        assert_eq!(findings[0].field, Some("iu"));
    }

    #[test]
    fn missing_grant_and_revocation_fields_are_named() {
        let json = CLOUD
            .replace(
                r#""saak": "ACME_PRD#key+/=", "sask": "sask#&%+/=value""#,
                r#""x": 1"#,
            )
            .replace(r#", "or": "revoke_token.oauth2""#, "");
        assert_eq!(
            fields(&json),
            vec![
                (Severity::Warning, Some("saak")),
                (Severity::Warning, Some("or"))
            ]
        );
    }

    #[test]
    fn the_portal_url_in_place_of_the_ion_api_url_is_caught() {
        let same = CLOUD.replace(
            "https://mingle-ionapi.eu1.inforcloudsuite.com",
            "https://mingle-sso.eu1.inforcloudsuite.com:443/ACME_PRD/as/",
        );
        let (_, findings) = lint(&same);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].field, Some("iu"));
        assert!(findings[0].message.contains("same URL as `pu`"));

        let sso_host = CLOUD.replace(
            "https://mingle-ionapi.eu1.inforcloudsuite.com",
            "https://mingle-sso.eu1.inforcloudsuite.com",
        );
        assert_eq!(fields(&sso_host), vec![(Severity::Warning, Some("iu"))]);

        let swapped = CLOUD.replace(
            "https://mingle-sso.eu1.inforcloudsuite.com:443/ACME_PRD/as/",
            "https://mingle-ionapi.eu1.inforcloudsuite.com/ACME_PRD/",
        );
        assert!(fields(&swapped).contains(&(Severity::Warning, Some("pu"))));

        let doubled = CLOUD.replace(
            "https://mingle-ionapi.eu1.inforcloudsuite.com",
            "https://mingle-ionapi.eu1.inforcloudsuite.com/ACME_PRD/",
        );
        assert_eq!(fields(&doubled), vec![(Severity::Warning, Some("iu"))]);
    }

    #[test]
    fn a_portal_url_of_another_tenant_is_caught() {
        let json = CLOUD.replace("443/ACME_PRD/as/", "443/ACME_TST/as/");
        let (_, findings) = lint(&json);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].field, Some("pu"));
        assert!(findings[0].message.contains("`ACME_TST`"), "{findings:?}");
    }

    #[test]
    fn an_endpoint_on_a_third_host_is_named() {
        let json = CLOUD.replace(
            r#""ot": "token.oauth2""#,
            r#""ot": "https://sts.elsewhere.example/connect/token""#,
        );
        let (_, findings) = lint(&json);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].field, Some("ot"));
        assert!(findings[0].message.contains("sts.elsewhere.example"));
    }

    #[test]
    fn findings_never_quote_secret_values() {
        let json = CLOUD
            .replace(
                "https://mingle-ionapi.eu1.inforcloudsuite.com",
                "http://127.0.0.1:1",
            )
            .replace(r#", "or": "revoke_token.oauth2""#, "");
        for f in lint(&json).1 {
            for secret in ["s3cr3t+/=value", "ACME_PRD#key+/=", "sask#&%+/=value"] {
                assert!(!f.message.contains(secret), "{f:?}");
            }
        }
    }
}
