//! The `.ionapi` credentials file that Infor OS hands out for an authorized app.
//!
//! Every endpoint the connector uses is built from this file and nothing else,
//! so one binary serves every tenant, region and on-premises installation.

use crate::secret::Secret;
use crate::url::{self, Origin};
use serde_json::{Map, Value};

/// A problem with the file, naming the field and the fix and never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IonapiError {
    /// The offending key, when the problem is about one key.
    pub field: Option<&'static str>,
    pub message: String,
}

impl IonapiError {
    fn field(field: &'static str, problem: impl std::fmt::Display) -> Self {
        IonapiError {
            field: Some(field),
            message: format!("field `{field}` ({}) {problem}", describe(field)),
        }
    }

    fn whole(message: impl Into<String>) -> Self {
        IonapiError {
            field: None,
            message: message.into(),
        }
    }
}

/// What each key means, so an error about `ot` says "token endpoint path".
fn describe(field: &str) -> &'static str {
    match field {
        "ti" => "tenant id",
        "cn" => "application name",
        "ci" => "client id",
        "cs" => "client secret",
        "iu" => "ION API URL",
        "pu" => "portal URL",
        "oa" => "authorization endpoint path",
        "ot" => "token endpoint path",
        "or" => "revocation endpoint path",
        "saak" => "service account access key",
        "sask" => "service account secret key",
        "sc" => "scopes",
        "ru" => "redirect URI",
        "v" => "file format version",
        _ => "unknown field",
    }
}

/// A parsed, validated `.ionapi` file.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub tenant: String,
    pub application: Option<String>,
    pub client_id: String,
    pub client_secret: Secret,
    pub ion_api_url: String,
    pub portal_url: String,
    pub authorization_path: Option<String>,
    pub token_path: String,
    pub revocation_path: Option<String>,
    pub service_account: Option<ServiceAccount>,
    pub version: Option<String>,
    /// Scopes (`sc`) when the file lists them.
    pub scopes: Option<String>,
    /// The redirect URI registered for the app (`ru`), when the file has one.
    pub redirect_uri: Option<String>,
    pub portal_origin: Origin,
    pub ion_api_origin: Origin,
}

/// saak and sask: the resource-owner credentials of a Backend Service app.
#[derive(Debug, Clone)]
pub struct ServiceAccount {
    pub access_key: Secret,
    pub secret_key: Secret,
}

impl Credentials {
    pub fn parse(json: &str) -> Result<Credentials, IonapiError> {
        let value: Value = serde_json::from_str(json).map_err(|e| {
            // serde_json syntax errors carry a position and never the input.
            IonapiError::whole(format!(
                "is not valid JSON ({e}); download the file again from Infor OS > API Gateway > Authorized Apps"
            ))
        })?;
        let Value::Object(map) = value else {
            return Err(IonapiError::whole(
                "must be a JSON object with the keys ti, ci, cs, iu, pu and ot",
            ));
        };
        let fields = Fields(&map);

        let tenant = fields.required("ti")?;
        if tenant.contains(['/', '?', '#']) || tenant.chars().any(char::is_whitespace) {
            return Err(IonapiError::field(
                "ti",
                "must be a bare tenant id such as ACME_PRD, without slashes or spaces",
            ));
        }
        let ion_api_url = fields.required("iu")?;
        let portal_url = fields.required("pu")?;
        let ion_api_origin =
            url::parse_origin(&ion_api_url).map_err(|p| IonapiError::field("iu", p))?;
        let portal_origin =
            url::parse_origin(&portal_url).map_err(|p| IonapiError::field("pu", p))?;

        let saak = fields.optional_secret("saak")?;
        let sask = fields.optional_secret("sask")?;
        let service_account = match (saak, sask) {
            (Some(access_key), Some(secret_key)) => Some(ServiceAccount {
                access_key,
                secret_key,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(IonapiError::field(
                    "sask",
                    "is missing while `saak` is present; a Backend Service file needs both: download it again",
                ));
            }
            (None, Some(_)) => {
                return Err(IonapiError::field(
                    "saak",
                    "is missing while `sask` is present; a Backend Service file needs both: download it again",
                ));
            }
        };

        Ok(Credentials {
            tenant,
            application: fields.optional("cn")?,
            client_id: fields.required("ci")?,
            client_secret: Secret::new(fields.required_secret("cs")?),
            ion_api_url,
            portal_url,
            authorization_path: fields.optional_path("oa")?,
            token_path: fields.required_path("ot")?,
            revocation_path: fields.optional_path("or")?,
            service_account,
            version: fields.optional_any("v"),
            scopes: fields.optional_scopes("sc")?,
            redirect_uri: fields.optional("ru")?,
            portal_origin,
            ion_api_origin,
        })
    }

    pub fn token_url(&self) -> String {
        endpoint(&self.portal_url, &self.token_path)
    }

    pub fn authorization_url(&self) -> Option<String> {
        self.authorization_path
            .as_deref()
            .map(|p| endpoint(&self.portal_url, p))
    }

    pub fn revocation_url(&self) -> Option<String> {
        self.revocation_path
            .as_deref()
            .map(|p| endpoint(&self.portal_url, p))
    }

    /// `{iu}/{ti}/{path}`: business calls never go to `pu`.
    pub fn api_url(&self, path: &str) -> String {
        url::join([self.ion_api_url.as_str(), self.tenant.as_str(), path])
    }

    /// Hosts the connector may talk to: the portal and the ION API host.
    pub fn allowed_hosts(&self) -> Vec<String> {
        let mut hosts = vec![self.portal_origin.host.clone()];
        if self.ion_api_origin.host != self.portal_origin.host {
            hosts.push(self.ion_api_origin.host.clone());
        }
        hosts
    }

    /// Every secret in the file, for scrubbing text that came off the network.
    pub fn secrets(&self) -> Vec<&Secret> {
        let mut all = vec![&self.client_secret];
        if let Some(sa) = &self.service_account {
            all.push(&sa.access_key);
            all.push(&sa.secret_key);
        }
        all
    }
}

/// An endpoint path may itself be absolute in some on-premises files.
fn endpoint(base: &str, path: &str) -> String {
    if path.starts_with("https://") || path.starts_with("http://") {
        path.to_owned()
    } else {
        url::join([base, path])
    }
}

struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn optional(&self, key: &'static str) -> Result<Option<String>, IonapiError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(other) => Err(IonapiError::field(
                key,
                format!("must be a string, found {}", kind(other)),
            )),
        }
    }

    fn required(&self, key: &'static str) -> Result<String, IonapiError> {
        self.optional(key)?.ok_or_else(|| {
            IonapiError::field(
                key,
                "is missing or empty; download the .ionapi file again from Infor OS > API Gateway > Authorized Apps",
            )
        })
    }

    /// Secrets are taken verbatim: surrounding spaces could be part of them.
    fn optional_secret(&self, key: &'static str) -> Result<Option<Secret>, IonapiError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(Secret::new(s.clone()))),
            Some(other) => Err(IonapiError::field(
                key,
                format!("must be a string, found {}", kind(other)),
            )),
        }
    }

    fn required_secret(&self, key: &'static str) -> Result<String, IonapiError> {
        match self.optional_secret(key)? {
            Some(s) => Ok(s.expose().to_owned()),
            None => Err(IonapiError::field(
                key,
                "is missing or empty; download the .ionapi file again from Infor OS > API Gateway > Authorized Apps",
            )),
        }
    }

    fn optional_path(&self, key: &'static str) -> Result<Option<String>, IonapiError> {
        let Some(path) = self.optional(key)? else {
            return Ok(None);
        };
        if path.contains(['?', '#']) || path.chars().any(char::is_whitespace) {
            return Err(IonapiError::field(
                key,
                "must be a plain path such as token.oauth2, without spaces, ? or #",
            ));
        }
        if path.starts_with("http://") || path.starts_with("https://") {
            url::parse_origin(&path).map_err(|p| IonapiError::field(key, p))?;
        }
        Ok(Some(path))
    }

    fn required_path(&self, key: &'static str) -> Result<String, IonapiError> {
        self.optional_path(key)?.ok_or_else(|| {
            IonapiError::field(
                key,
                "is missing or empty; download the .ionapi file again from Infor OS > API Gateway > Authorized Apps",
            )
        })
    }

    /// Scopes appear as one space-separated string or as a list.
    fn optional_scopes(&self, key: &'static str) -> Result<Option<String>, IonapiError> {
        match self.0.get(key) {
            Some(Value::Array(items)) => {
                let scopes: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
                let scopes = scopes.ok_or_else(|| {
                    IonapiError::field(key, "must be a string or a list of strings")
                })?;
                Ok(Some(scopes.join(" ")).filter(|s| !s.is_empty()))
            }
            _ => self.optional(key),
        }
    }

    /// `v` appears both as "1.0" and as a number in the wild.
    fn optional_any(&self, key: &'static str) -> Option<String> {
        match self.0.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOUD: &str = r#"{
        "ti": "ACME_PRD", "cn": "ionflow", "dt": "12",
        "ci": "ACME_PRD~abc", "cs": "s3cr3t+/=value",
        "iu": "https://mingle-ionapi.eu1.inforcloudsuite.com",
        "pu": "https://mingle-sso.eu1.inforcloudsuite.com:443/ACME_PRD/as/",
        "oa": "authorization.oauth2", "ot": "token.oauth2", "or": "revoke_token.oauth2",
        "ev": "U123", "v": "1.0",
        "saak": "ACME_PRD#key+/=", "sask": "sask#&%+/=value",
        "something_new": {"nested": true}
    }"#;

    #[test]
    fn parses_a_cloud_file_and_builds_urls_from_it() {
        let c = Credentials::parse(CLOUD).unwrap();
        assert_eq!(c.tenant, "ACME_PRD");
        assert_eq!(
            c.token_url(),
            "https://mingle-sso.eu1.inforcloudsuite.com:443/ACME_PRD/as/token.oauth2"
        );
        assert_eq!(
            c.revocation_url().unwrap(),
            "https://mingle-sso.eu1.inforcloudsuite.com:443/ACME_PRD/as/revoke_token.oauth2"
        );
        assert_eq!(
            c.api_url("/M3/m3api-rest/v2/execute/MMS200MI/GetItmBasic"),
            "https://mingle-ionapi.eu1.inforcloudsuite.com/ACME_PRD/M3/m3api-rest/v2/execute/MMS200MI/GetItmBasic"
        );
        assert_eq!(
            c.allowed_hosts(),
            vec![
                "mingle-sso.eu1.inforcloudsuite.com".to_string(),
                "mingle-ionapi.eu1.inforcloudsuite.com".to_string()
            ]
        );
        assert!(c.service_account.is_some());
    }

    #[test]
    fn on_premises_paths_work_too() {
        let json = CLOUD
            .replace(
                "https://mingle-sso.eu1.inforcloudsuite.com:443/ACME_PRD/as/",
                "https://infor.local/InforIntSTS/",
            )
            .replace("\"token.oauth2\"", "\"connect/token\"");
        let c = Credentials::parse(&json).unwrap();
        assert_eq!(
            c.token_url(),
            "https://infor.local/InforIntSTS/connect/token"
        );
    }

    fn err(json: &str) -> IonapiError {
        Credentials::parse(json).unwrap_err()
    }

    #[test]
    fn each_missing_required_field_is_named() {
        for key in ["ti", "ci", "cs", "iu", "pu", "ot"] {
            let mut v: Value = serde_json::from_str(CLOUD).unwrap();
            v.as_object_mut().unwrap().remove(key);
            let e = err(&v.to_string());
            assert_eq!(e.field, Some(key), "{e}");
            assert!(e.message.contains("is missing"), "{e}");
        }
    }

    #[test]
    fn wrong_types_and_bad_urls_are_named_without_values() {
        let e = err(&CLOUD.replace("\"s3cr3t+/=value\"", "12345"));
        assert_eq!(e.field, Some("cs"));
        assert!(e.message.contains("found a number"));
        assert!(!e.message.contains("12345"));

        let e = err(&CLOUD.replace(
            "https://mingle-ionapi.eu1.inforcloudsuite.com",
            "http://mingle-ionapi.example.com",
        ));
        assert_eq!(e.field, Some("iu"));
        assert!(e.message.contains("https://"));

        let e = err(&CLOUD.replace("\"sask\": \"sask#&%+/=value\",", ""));
        assert_eq!(e.field, Some("sask"));
    }

    #[test]
    fn syntax_errors_give_a_position_and_no_content() {
        let e = err("{\"ti\": \"ACME\", \"cs\": \"topsecret\" \"ci\": 1}");
        assert_eq!(e.field, None);
        assert!(e.message.contains("line 1 column"), "{e}");
        assert!(!e.message.contains("topsecret"));
        assert!(err("[1,2]").message.contains("JSON object"));
    }

    #[test]
    fn debug_output_masks_secrets() {
        let c = Credentials::parse(CLOUD).unwrap();
        let debug = format!("{c:?}");
        for secret in ["s3cr3t+/=value", "ACME_PRD#key+/=", "sask#&%+/=value"] {
            assert!(!debug.contains(secret), "{secret} leaked in {debug}");
        }
    }
}
