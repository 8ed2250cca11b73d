//! Token and revocation requests to Infor Federated Services, and what their
//! answers mean. Pure functions: the I/O happens in the component glue.

use crate::error::ConnectorError;
use crate::ionapi::{Credentials, ServiceAccount};
use crate::response::{body_excerpt, retry_after_secs};
use crate::secret::{Secret, scrub};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// How the client proves who it is to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// `client_id`/`client_secret` in the form, as Infor's own samples do.
    #[default]
    Form,
    /// HTTP Basic over the form-encoded id and secret (RFC 6749 2.3.1).
    Basic,
}

/// The grant a connection uses to get its first token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Grant {
    BackendService,
    ClientCredentials,
    AuthorizationCode,
    SamlBearer,
}

impl Grant {
    pub fn name(self) -> &'static str {
        match self {
            Grant::BackendService => "backend-service",
            Grant::ClientCredentials => "client-credentials",
            Grant::AuthorizationCode => "authorization-code",
            Grant::SamlBearer => "saml-bearer",
        }
    }
}

pub const SAML2_BEARER: &str = "urn:ietf:params:oauth:grant-type:saml2-bearer";

/// What a token request spends.
pub enum TokenGrant<'a> {
    BackendService(&'a ServiceAccount),
    ClientCredentials,
    Refresh(&'a Secret),
    AuthorizationCode {
        code: &'a Secret,
        verifier: &'a Secret,
        redirect_uri: &'a str,
    },
    /// The raw assertion XML; encoded on the way out.
    SamlBearer(&'a Secret),
}

impl TokenGrant<'_> {
    pub fn grant_type(&self) -> &'static str {
        match self {
            TokenGrant::BackendService(_) => "password",
            TokenGrant::ClientCredentials => "client_credentials",
            TokenGrant::Refresh(_) => "refresh_token",
            TokenGrant::AuthorizationCode { .. } => "authorization_code",
            TokenGrant::SamlBearer(_) => SAML2_BEARER,
        }
    }
}

/// Base64url without padding, as PKCE and the SAML bearer profile require.
pub fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The S256 code challenge of a PKCE verifier (RFC 7636 4.2).
pub fn pkce_challenge(verifier: &Secret) -> String {
    use sha2::Digest as _;
    base64url(&sha2::Sha256::digest(verifier.expose().as_bytes()))
}

/// `{pu}{oa}` with the query of an authorization request.
pub fn authorization_url(
    creds: &Credentials,
    response_type: &str,
    redirect_uri: &str,
    state: &str,
    scope: Option<&str>,
    code_challenge: Option<&str>,
) -> Result<String, ConnectorError> {
    let base = creds.authorization_url().ok_or_else(|| {
        ConnectorError::InvalidCredentialsFile(
            "field `oa` (authorization endpoint path) is missing; it is needed to log in a user: \
             download the .ionapi file of a web or native authorized app"
                .into(),
        )
    })?;
    let mut query = vec![
        ("response_type".to_string(), response_type.to_string()),
        ("client_id".to_string(), creds.client_id.clone()),
        ("redirect_uri".to_string(), redirect_uri.to_string()),
        ("state".to_string(), state.to_string()),
    ];
    if let Some(scope) = scope.or(creds.scopes.as_deref()) {
        query.push(("scope".into(), scope.into()));
    }
    if let Some(challenge) = code_challenge {
        query.push(("code_challenge".into(), challenge.into()));
        query.push(("code_challenge_method".into(), "S256".into()));
    }
    Ok(crate::url::with_query(base, &query))
}

/// A form POST ready for the transport. Deliberately not `Debug`: the body
/// holds secrets.
pub struct FormPost {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The HTTP Basic credential of the client, `base64(id:secret)` over the
/// form-encoded id and secret (RFC 6749 2.3.1).
fn basic_credential(creds: &Credentials) -> Secret {
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!(
        "{}:{}",
        encode(&creds.client_id),
        encode(creds.client_secret.expose())
    );
    Secret::new(base64::engine::general_purpose::STANDARD.encode(pair))
}

/// Every secret value a token or revocation request of this connection
/// puts on the wire: the file's secrets, the client's Basic credential,
/// what the grant spends (refresh token, code, PKCE verifier, the SAML
/// assertion raw and as sent), and the token being revoked. Whatever the
/// endpoint answers is scrubbed of all of them, in every spelling, before
/// it reaches an error or a log: some servers echo the form they got.
pub fn sent_secrets(
    creds: &Credentials,
    spent: Option<&TokenGrant>,
    revoked: Option<&Secret>,
) -> Vec<Secret> {
    let mut sent: Vec<Secret> = creds.secrets().into_iter().cloned().collect();
    let basic = basic_credential(creds);
    let unpadded = basic.expose().trim_end_matches('=').to_owned();
    sent.push(Secret::new(unpadded));
    sent.push(basic);
    match spent {
        Some(TokenGrant::Refresh(token)) => sent.push((*token).clone()),
        Some(TokenGrant::AuthorizationCode { code, verifier, .. }) => {
            sent.push((*code).clone());
            sent.push((*verifier).clone());
        }
        Some(TokenGrant::SamlBearer(assertion)) => {
            sent.push(Secret::new(base64url(assertion.expose().as_bytes())));
            sent.push((*assertion).clone());
        }
        Some(TokenGrant::BackendService(_) | TokenGrant::ClientCredentials) | None => {}
    }
    sent.extend(revoked.cloned());
    sent
}

fn form_post(
    url: String,
    creds: &Credentials,
    client_auth: ClientAuth,
    fields: &[(&str, &str)],
) -> FormPost {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        form.append_pair(k, v);
    }
    let mut headers = vec![
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("accept".to_string(), "application/json".to_string()),
    ];
    match client_auth {
        ClientAuth::Form => {
            form.append_pair("client_id", &creds.client_id);
            form.append_pair("client_secret", creds.client_secret.expose());
        }
        ClientAuth::Basic => {
            let basic = basic_credential(creds);
            headers.push((
                "authorization".to_string(),
                format!("Basic {}", basic.expose()),
            ));
        }
    }
    FormPost {
        url,
        headers,
        body: form.finish(),
    }
}

pub fn token_request(creds: &Credentials, grant: &TokenGrant, client_auth: ClientAuth) -> FormPost {
    let mut fields = vec![("grant_type", grant.grant_type())];
    match grant {
        TokenGrant::BackendService(sa) => {
            fields.push(("username", sa.access_key.expose()));
            fields.push(("password", sa.secret_key.expose()));
        }
        TokenGrant::ClientCredentials => {}
        TokenGrant::Refresh(token) => fields.push(("refresh_token", token.expose())),
        TokenGrant::AuthorizationCode {
            code,
            verifier,
            redirect_uri,
        } => {
            fields.push(("code", code.expose()));
            fields.push(("redirect_uri", redirect_uri));
            fields.push(("code_verifier", verifier.expose()));
        }
        TokenGrant::SamlBearer(_) => {}
    }
    let encoded;
    if let TokenGrant::SamlBearer(assertion) = grant {
        encoded = base64url(assertion.expose().as_bytes());
        fields.push(("assertion", &encoded));
    }
    form_post(creds.token_url(), creds, client_auth, &fields)
}

/// RFC 7009 revocation; `hint` is `refresh_token` or `access_token`.
pub fn revocation_request(
    creds: &Credentials,
    token: &Secret,
    hint: &str,
    client_auth: ClientAuth,
) -> Result<FormPost, ConnectorError> {
    let url = creds.revocation_url().ok_or_else(|| {
        ConnectorError::Unsupported(
            "the .ionapi file has no `or` (revocation endpoint path) field; download it again to revoke tokens"
                .into(),
        )
    })?;
    Ok(form_post(
        url,
        creds,
        client_auth,
        &[("token", token.expose()), ("token_type_hint", hint)],
    ))
}

/// The tokens held for a connection: what the connector keeps in the host's
/// token store, as JSON.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenSet {
    pub access_token: Secret,
    pub token_type: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// Unix seconds; bounds the renewal margin of short-lived tokens.
    #[serde(default)]
    pub issued_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    pub grant: Grant,
}

impl TokenSet {
    /// Usable until `renew_before_secs` before expiry. A token that lives
    /// shorter than twice that margin is renewed at half its life instead,
    /// or it would never be reused at all.
    pub fn usable_at(&self, now: u64, renew_before_secs: u64) -> bool {
        let lifetime = self.expires_at.saturating_sub(self.issued_at);
        let margin = if self.issued_at > 0 {
            renew_before_secs.min(lifetime / 2)
        } else {
            renew_before_secs
        };
        !self.access_token.is_empty() && now + margin < self.expires_at
    }

    /// Keeps the refresh token but marks the access token as spent, so that
    /// the next caller renews it (after a 401, for example).
    pub fn without_access_token(&self) -> TokenSet {
        TokenSet {
            access_token: Secret::default(),
            expires_at: 0,
            ..self.clone()
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<Secret>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    scope: Option<String>,
    refresh_token: Option<Secret>,
}

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: Option<String>,
    error_description: Option<String>,
}

/// Infor's documented default when a response omits `expires_in`.
const DEFAULT_EXPIRES_IN_SECS: u64 = 7200;

/// Interprets the token endpoint's answer.
///
/// `previous_refresh` is kept when a refresh response carries no new refresh
/// token (rotation is the default on Infor OS, but not universal).
pub fn parse_token_response(
    creds: &Credentials,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    grant: Grant,
    spent: &TokenGrant,
    now: u64,
) -> Result<TokenSet, ConnectorError> {
    let sent = sent_secrets(creds, Some(spent), None);
    let secrets: Vec<&Secret> = sent.iter().collect();
    if status == 429 {
        return Err(ConnectorError::RateLimited {
            retry_after_secs: retry_after_secs(headers, now),
            message: "the token endpoint is rate limited; wait and retry".into(),
        });
    }
    if !(200..300).contains(&status) {
        let parsed: Option<OAuthErrorBody> = serde_json::from_slice(body).ok();
        let (code, description) = match parsed {
            Some(OAuthErrorBody {
                error: Some(code),
                error_description,
            }) => (code, error_description.unwrap_or_default()),
            _ => {
                return Err(ConnectorError::Transport(format!(
                    "token endpoint {} answered HTTP {status}: {}",
                    creds.token_url(),
                    body_excerpt(body, &secrets)
                )));
            }
        };
        let description = scrub(&description, secrets.iter().copied());
        // The code is the server's text too: an echo can land in it.
        let code = scrub(&code, secrets.iter().copied());
        let detail = if description.is_empty() {
            code.clone()
        } else {
            format!("{code}: {description}")
        };
        return Err(match code.as_str() {
            "invalid_grant" => ConnectorError::InvalidGrant(match spent {
                TokenGrant::BackendService(_) => format!(
                    "{detail}. The token endpoint refused the service account: check that `saak` and `sask` \
                     are the ones from the same .ionapi download and that the service account and its IFS user are active"
                ),
                TokenGrant::Refresh(_) => format!(
                    "{detail}. The refresh token was rotated, revoked or idle too long (over 30 days); \
                     a new grant is needed"
                ),
                TokenGrant::ClientCredentials => format!(
                    "{detail}. The authorized app does not allow client_credentials; use the backend-service grant"
                ),
                TokenGrant::AuthorizationCode { .. } => format!(
                    "{detail}. The authorization code was used already, expired, or was issued for another \
                     redirect URI or PKCE verifier; log in again"
                ),
                TokenGrant::SamlBearer(_) => format!(
                    "{detail}. The SAML assertion was refused: it may have expired (they live minutes) or \
                     come from an identity provider the tenant does not trust; obtain a fresh assertion"
                ),
            }),
            "invalid_client" | "unauthorized_client" => ConnectorError::InvalidClient(format!(
                "{detail}. Check `ci` and `cs` in the .ionapi file; if the authorized app was changed or \
                 recreated, download the file again"
            )),
            "unsupported_grant_type" => ConnectorError::InvalidClient(format!(
                "{detail}. The authorized app does not allow the {} grant; pick a grant its type supports",
                spent.grant_type()
            )),
            _ => ConnectorError::Protocol(format!(
                "token endpoint answered HTTP {status} with OAuth error {detail}"
            )),
        });
    }

    let response: TokenResponse = serde_json::from_slice(body).map_err(|e| {
        ConnectorError::Protocol(format!(
            "the token endpoint's answer is not a valid token response ({})",
            scrub(&e.to_string(), secrets.iter().copied())
        ))
    })?;
    let access_token = response
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ConnectorError::Protocol("the token endpoint's answer has no `access_token`".into())
        })?;
    let token_type = response.token_type.unwrap_or_else(|| "Bearer".into());
    if !token_type.eq_ignore_ascii_case("bearer") {
        return Err(ConnectorError::Protocol(format!(
            "the token endpoint issued a `{}` token; only Bearer tokens are supported",
            scrub(&token_type, secrets.iter().copied())
        )));
    }
    // Some servers send expires_in as a string.
    let expires_in = match response.expires_in {
        None => DEFAULT_EXPIRES_IN_SECS,
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(DEFAULT_EXPIRES_IN_SECS),
        Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(DEFAULT_EXPIRES_IN_SECS),
        Some(_) => DEFAULT_EXPIRES_IN_SECS,
    };
    let refresh_token = response
        .refresh_token
        .filter(|t| !t.is_empty())
        .or(match spent {
            TokenGrant::Refresh(previous) => Some((*previous).clone()),
            _ => None,
        });
    Ok(TokenSet {
        access_token,
        token_type,
        expires_at: now + expires_in,
        issued_at: now,
        scope: response.scope,
        refresh_token,
        grant,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials::parse(
            r#"{"ti":"T","ci":"T~id+1","cs":"cs/+=secret","iu":"https://ion.example",
                "pu":"https://sso.example/T/as/","ot":"token.oauth2","or":"revoke_token.oauth2",
                "saak":"T#ke y+/=","sask":"s#&%+/=ask"}"#,
        )
        .unwrap()
    }

    fn decode(body: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn backend_service_form_encodes_every_value() {
        let c = creds();
        let sa = c.service_account.clone().unwrap();
        let req = token_request(&c, &TokenGrant::BackendService(&sa), ClientAuth::Form);
        assert_eq!(req.url, "https://sso.example/T/as/token.oauth2");
        assert!(!req.body.contains('#') && !req.body.contains("&%"));
        assert_eq!(
            decode(&req.body),
            vec![
                ("grant_type".into(), "password".into()),
                ("username".into(), "T#ke y+/=".into()),
                ("password".into(), "s#&%+/=ask".into()),
                ("client_id".into(), "T~id+1".into()),
                ("client_secret".into(), "cs/+=secret".into()),
            ]
        );
    }

    #[test]
    fn pkce_challenge_is_unpadded_base64url_of_sha256() {
        // Expected value computed independently with Python's hashlib and base64.
        let verifier = Secret::new("dBjftJeZ4CVP-mJ92K9iUqygVtU5v9Yc4vWkdMTdS8o");
        assert_eq!(
            pkce_challenge(&verifier),
            "NZjtABdj_Sq6tUz8M9LCT_hZWeT_gUIH5V8lcQdAeMw"
        );
    }

    #[test]
    fn saml_assertion_is_base64url_encoded() {
        let c = creds();
        let assertion = Secret::new("<saml:Assertion>??>></saml:Assertion>");
        let req = token_request(&c, &TokenGrant::SamlBearer(&assertion), ClientAuth::Form);
        let fields = decode(&req.body);
        assert_eq!(fields[0], ("grant_type".into(), SAML2_BEARER.into()));
        let (_, encoded) = fields.iter().find(|(k, _)| k == "assertion").unwrap();
        assert!(!encoded.contains(['+', '/', '=']), "{encoded}");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .unwrap();
        assert_eq!(raw, assertion.expose().as_bytes());
    }

    #[test]
    fn authorization_urls_carry_pkce_and_state() {
        let c = Credentials::parse(
            r#"{"ti":"T","ci":"T~id","cs":"x","iu":"https://ion.example","pu":"https://sso.example/T/as/",
                "ot":"token.oauth2","oa":"authorization.oauth2"}"#,
        )
        .unwrap();
        let url =
            authorization_url(&c, "code", "http://127.0.0.1:9/cb", "st", None, Some("ch")).unwrap();
        assert_eq!(
            url,
            "https://sso.example/T/as/authorization.oauth2?response_type=code&client_id=T%7Eid&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&state=st&code_challenge=ch&code_challenge_method=S256"
        );
        assert!(
            authorization_url(&creds(), "code", "x", "s", None, None).is_err(),
            "no oa field"
        );
    }

    #[test]
    fn basic_auth_encodes_id_and_secret_first() {
        let c = creds();
        let req = token_request(&c, &TokenGrant::ClientCredentials, ClientAuth::Basic);
        let auth = &req
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(raw).unwrap(),
            "T%7Eid%2B1:cs%2F%2B%3Dsecret"
        );
        assert_eq!(
            decode(&req.body),
            vec![("grant_type".into(), "client_credentials".into())]
        );
    }

    #[test]
    fn responses_are_interpreted() {
        let c = creds();
        let ok = br#"{"access_token":"at","token_type":"Bearer","expires_in":"7200","refresh_token":"rt"}"#;
        let set = parse_token_response(
            &c,
            200,
            &[],
            ok,
            Grant::BackendService,
            &TokenGrant::ClientCredentials,
            100,
        )
        .unwrap();
        assert_eq!(set.expires_at, 7300);
        assert!(set.usable_at(100, 300));
        assert!(!set.usable_at(7000, 300));

        let short = br#"{"access_token":"at","expires_in":60}"#;
        let set = parse_token_response(
            &c,
            200,
            &[],
            short,
            Grant::BackendService,
            &TokenGrant::ClientCredentials,
            100,
        )
        .unwrap();
        assert!(set.usable_at(129, 300), "a 60 s token is reused for 30 s");
        assert!(!set.usable_at(130, 300));

        let previous = Secret::new("old-refresh");
        let no_rotation = br#"{"access_token":"at2","expires_in":10}"#;
        let set = parse_token_response(
            &c,
            200,
            &[],
            no_rotation,
            Grant::BackendService,
            &TokenGrant::Refresh(&previous),
            0,
        )
        .unwrap();
        assert_eq!(set.refresh_token, Some(previous));

        let bad = br#"{"error":"invalid_grant","error_description":"bad password s#&%+/=ask"}"#;
        let e = parse_token_response(
            &c,
            400,
            &[],
            bad,
            Grant::BackendService,
            &TokenGrant::ClientCredentials,
            0,
        )
        .unwrap_err();
        assert!(matches!(e, ConnectorError::InvalidGrant(_)));
        assert!(!e.to_string().contains("s#&%+/=ask"), "{e}");

        let garbled = b"<html>oops</html>";
        let e = parse_token_response(
            &c,
            200,
            &[],
            garbled,
            Grant::BackendService,
            &TokenGrant::ClientCredentials,
            0,
        )
        .unwrap_err();
        assert!(matches!(e, ConnectorError::Protocol(_)), "{e}");
        let e = parse_token_response(
            &c,
            200,
            &[],
            b"{}",
            Grant::BackendService,
            &TokenGrant::ClientCredentials,
            0,
        )
        .unwrap_err();
        assert!(e.to_string().contains("access_token"));
    }

    /// An endpoint that echoes the whole request (form body and the Basic
    /// header) in its error page, as HTML, as an OAuth error or in `error`
    /// itself: no secret the request carried comes back in any spelling.
    #[test]
    fn echoed_requests_leave_no_secret_in_errors() {
        let c = creds();
        let sa = c.service_account.clone().unwrap();
        let refresh = Secret::new("rt-#&+/= 0123456789");
        let assertion = Secret::new("<saml:Assertion ID=\"x\">signed</saml:Assertion>");
        let grants = [
            TokenGrant::BackendService(&sa),
            TokenGrant::Refresh(&refresh),
            TokenGrant::SamlBearer(&assertion),
        ];
        let mut secrets: Vec<String> = vec![
            "cs/+=secret".into(),
            "T#ke y+/=".into(),
            "s#&%+/=ask".into(),
            refresh.expose().into(),
            assertion.expose().into(),
        ];
        for grant in &grants {
            for auth in [ClientAuth::Form, ClientAuth::Basic] {
                let post = token_request(&c, grant, auth);
                let header = post
                    .headers
                    .iter()
                    .find(|(k, _)| k == "authorization")
                    .map_or("", |(_, v)| v.as_str());
                let echo = format!("{} {header}", post.body);
                for pair in form_urlencoded::parse(post.body.as_bytes()) {
                    if pair.0 != "grant_type" && pair.0 != "client_id" {
                        secrets.push(pair.1.into_owned());
                    }
                }
                if let Some(basic) = header.strip_prefix("Basic ") {
                    secrets.push(basic.to_owned());
                }
                let pages = [
                    (
                        400,
                        format!("<html><body>Bad request: {echo}</body></html>"),
                    ),
                    (
                        400,
                        serde_json::json!({"error": "invalid_request", "error_description": echo})
                            .to_string(),
                    ),
                    (401, serde_json::json!({"error": echo}).to_string()),
                    (
                        200,
                        serde_json::json!({"access_token": "a", "token_type": echo}).to_string(),
                    ),
                ];
                for (status, page) in pages {
                    let e = parse_token_response(
                        &c,
                        status,
                        &[],
                        page.as_bytes(),
                        Grant::BackendService,
                        grant,
                        0,
                    )
                    .unwrap_err()
                    .to_string();
                    assert!(e.contains("*****"), "the echo was seen: {e}");
                    for secret in &secrets {
                        for spelling in crate::secret::spellings(secret) {
                            assert!(!e.contains(&spelling), "{spelling} leaked: {e}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn token_set_debug_is_masked() {
        let set = TokenSet {
            access_token: Secret::new("very-secret-access"),
            token_type: "Bearer".into(),
            expires_at: 1,
            issued_at: 0,
            scope: None,
            refresh_token: Some(Secret::new("very-secret-refresh")),
            grant: Grant::BackendService,
        };
        let s = format!("{set:?}");
        assert!(!s.contains("very-secret"));
        let json = serde_json::to_string(&set).unwrap();
        assert!(
            json.contains("very-secret-refresh"),
            "the store must hold the value"
        );
    }
}
