//! The OAuth 2.0 side of the gateway (reached through `pu`): the token
//! endpoint (RFC 6749), the revocation endpoint (RFC 7009), and the registry
//! of every token issued.
//!
//! Strictness is the point: form bodies must be properly encoded, HTTP Basic
//! credentials must be form-encoded before base64 (RFC 6749 section 2.3.1),
//! parameters may not repeat, and refresh tokens rotate on every use. A
//! client that passes here will not be surprised by the real gateway.
//!
//! Public shape followed: the gateway's token (`ot`) and revocation (`or`)
//! endpoints, which speak RFC 6749 (answers as in its sections 5.1 and 5.2)
//! and RFC 7009; tokens are opaque, 64 hex digits here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Serialize;

use super::codec::{BASE64_DECODER, Params, constant_time_eq, form_decode, random_token};
use super::{SimState, lock};

/// Granted when the request names no scope.
const DEFAULT_SCOPE: &str = "openid profile";
/// Stands in for "never" when a configured lifetime overflows the clock.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 86_400);

#[derive(Debug)]
struct AccessEntry {
    expires_at: Instant,
    revoked: bool,
    /// The refresh-token family it was issued with, if any.
    family: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefreshState {
    Current,
    Rotated,
    Revoked,
}

#[derive(Debug)]
struct RefreshEntry {
    family: u64,
    scope: String,
    state: RefreshState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccessStatus {
    Valid,
    Unknown,
    Expired,
    Revoked,
}

impl AccessStatus {
    pub(crate) fn problem(self) -> Option<&'static str> {
        match self {
            AccessStatus::Valid => None,
            AccessStatus::Unknown => Some("The access token is not recognised"),
            AccessStatus::Expired => Some("The access token expired"),
            AccessStatus::Revoked => Some("The access token was revoked"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshFailure {
    Unknown,
    /// Presented again after it had been exchanged: a sign of a client that
    /// keeps its first refresh token, or of a stolen one.
    Reused,
    Revoked,
}

#[derive(Clone)]
pub(crate) struct Issued {
    pub(crate) access_token: String,
    pub(crate) refresh_token: Option<String>,
    pub(crate) expires_in: u64,
    pub(crate) scope: String,
}

// Tokens must never reach a log through a stray `{:?}`, even the simulator's.
impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "*****"),
            )
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Every token issued so far, in issue order (`GET /__sim/tokens`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IssuedTokens {
    pub(crate) access_tokens: Vec<String>,
    pub(crate) refresh_tokens: Vec<String>,
}

pub(crate) struct TokenRegistry {
    ttl_secs: u64,
    issue_refresh_tokens: bool,
    access: HashMap<String, AccessEntry>,
    refresh: HashMap<String, RefreshEntry>,
    issued_access: Vec<String>,
    issued_refresh: Vec<String>,
    next_family: u64,
}

impl TokenRegistry {
    pub(crate) fn new(ttl_secs: u64, issue_refresh_tokens: bool) -> Self {
        TokenRegistry {
            ttl_secs,
            issue_refresh_tokens,
            access: HashMap::new(),
            refresh: HashMap::new(),
            issued_access: Vec::new(),
            issued_refresh: Vec::new(),
            next_family: 0,
        }
    }

    fn new_access(&mut self, family: Option<u64>, now: Instant) -> String {
        let token = random_token();
        let lifetime = Duration::from_secs(self.ttl_secs);
        let expires_at = now
            .checked_add(lifetime)
            .or_else(|| now.checked_add(FAR_FUTURE))
            .unwrap_or(now);
        self.access.insert(
            token.clone(),
            AccessEntry {
                expires_at,
                revoked: false,
                family,
            },
        );
        self.issued_access.push(token.clone());
        token
    }

    fn new_refresh(&mut self, family: u64, scope: String) -> String {
        let token = random_token();
        self.refresh.insert(
            token.clone(),
            RefreshEntry {
                family,
                scope,
                state: RefreshState::Current,
            },
        );
        self.issued_refresh.push(token.clone());
        token
    }

    /// Issues an access token, plus the first refresh token of a new family
    /// when the grant allows one and the app is configured to issue them.
    pub(crate) fn issue(&mut self, scope: String, with_refresh: bool, now: Instant) -> Issued {
        let family = (with_refresh && self.issue_refresh_tokens).then(|| {
            self.next_family += 1;
            self.next_family
        });
        let access_token = self.new_access(family, now);
        let refresh_token = family.map(|f| self.new_refresh(f, scope.clone()));
        Issued {
            access_token,
            refresh_token,
            expires_in: self.ttl_secs,
            scope,
        }
    }

    /// Exchanges a current refresh token for a new access token and a new
    /// refresh token of the same family; the presented one is spent.
    pub(crate) fn refresh(
        &mut self,
        presented: &str,
        now: Instant,
    ) -> Result<Issued, RefreshFailure> {
        let entry = self
            .refresh
            .get_mut(presented)
            .ok_or(RefreshFailure::Unknown)?;
        match entry.state {
            RefreshState::Current => entry.state = RefreshState::Rotated,
            RefreshState::Rotated => return Err(RefreshFailure::Reused),
            RefreshState::Revoked => return Err(RefreshFailure::Revoked),
        }
        let (family, scope) = (entry.family, entry.scope.clone());
        let access_token = self.new_access(Some(family), now);
        let refresh_token = self.new_refresh(family, scope.clone());
        Ok(Issued {
            access_token,
            refresh_token: Some(refresh_token),
            expires_in: self.ttl_secs,
            scope,
        })
    }

    pub(crate) fn check_access(&self, token: &str, now: Instant) -> AccessStatus {
        match self.access.get(token) {
            None => AccessStatus::Unknown,
            Some(entry) if entry.revoked => AccessStatus::Revoked,
            Some(entry) if now >= entry.expires_at => AccessStatus::Expired,
            Some(_) => AccessStatus::Valid,
        }
    }

    /// Revokes an access token, or a refresh token together with its whole
    /// family and every access token issued from it (RFC 7009 section 2.1).
    /// Returns whether the token was known.
    pub(crate) fn revoke(&mut self, token: &str) -> bool {
        if let Some(entry) = self.access.get_mut(token) {
            entry.revoked = true;
            return true;
        }
        let Some(family) = self.refresh.get(token).map(|e| e.family) else {
            return false;
        };
        for entry in self.refresh.values_mut().filter(|e| e.family == family) {
            entry.state = RefreshState::Revoked;
        }
        for entry in self
            .access
            .values_mut()
            .filter(|e| e.family == Some(family))
        {
            entry.revoked = true;
        }
        true
    }

    /// Revokes every access and refresh token, as an administrator who
    /// withdraws a user's grants does; returns how many were still usable.
    pub(crate) fn revoke_all(&mut self) -> usize {
        let mut revoked = 0;
        for entry in self.access.values_mut().filter(|e| !e.revoked) {
            entry.revoked = true;
            revoked += 1;
        }
        for entry in self
            .refresh
            .values_mut()
            .filter(|e| e.state == RefreshState::Current)
        {
            entry.state = RefreshState::Revoked;
            revoked += 1;
        }
        revoked
    }

    /// Makes every access token expired as of `now`; returns how many were
    /// still live.
    pub(crate) fn expire_all(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        for entry in self.access.values_mut() {
            if now < entry.expires_at {
                entry.expires_at = now;
                expired += 1;
            }
        }
        expired
    }

    pub(crate) fn issued(&self) -> IssuedTokens {
        IssuedTokens {
            access_tokens: self.issued_access.clone(),
            refresh_tokens: self.issued_refresh.clone(),
        }
    }
}

/// An RFC 6749 section 5.2 error response. Descriptions never quote what
/// the client sent, so secrets cannot bounce back into client logs.
#[derive(Debug)]
pub(crate) struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: String,
    basic_challenge: bool,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            code,
            description: description.into(),
            basic_challenge: false,
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    /// The client tried HTTP Basic, so the 401 must carry a Basic challenge.
    fn invalid_basic_client(description: impl Into<String>) -> Self {
        OAuthError {
            basic_challenge: true,
            ..Self::invalid_client(description)
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            error: self.code,
            error_description: &self.description,
        });
        let mut response = (self.status, no_store_headers(), body).into_response();
        if self.basic_challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ION API Gateway simulator\""),
            );
        }
        response
    }
}

/// Token responses must not be cached (RFC 6749 section 5.1).
fn no_store_headers() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

#[derive(Serialize)]
struct TokenBody {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

/// Reads the form body, refusing what RFC 6749 forbids: another media type,
/// parameters in the URL (where proxies log them), repeated parameters.
fn read_form(headers: &HeaderMap, uri: &Uri, body: &[u8]) -> Result<Params, OAuthError> {
    if uri.query().is_some_and(|q| !q.is_empty()) {
        return Err(OAuthError::invalid_request(
            "Parameters must be sent in the form body, never in the URL",
        ));
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(OAuthError::invalid_request(
            "The body must be application/x-www-form-urlencoded",
        ));
    }
    Params::parse(body)
        .map_err(|e| OAuthError::invalid_request(format!("Malformed form body: {e}")))
}

/// Decodes `Authorization: Basic`, whose id and secret RFC 6749 section
/// 2.3.1 requires to be form-encoded before base64. A client that skips that
/// step fails here as soon as its secret contains `+` or `%`.
pub(crate) fn decode_basic(value: &HeaderValue) -> Result<(String, String), &'static str> {
    let text = value
        .to_str()
        .map_err(|_| "The Authorization header is not valid ASCII")?;
    let (scheme, credentials) = text
        .split_once(' ')
        .ok_or("The Authorization header is not HTTP Basic")?;
    if !scheme.eq_ignore_ascii_case("Basic") {
        return Err("Client authentication in the Authorization header must use HTTP Basic");
    }
    let raw = BASE64_DECODER
        .decode(credentials.trim())
        .map_err(|_| "The Basic credentials are not valid base64")?;
    let colon = raw
        .iter()
        .position(|b| *b == b':')
        .ok_or("The Basic credentials lack the ':' separator")?;
    let id = form_decode(&raw[..colon])
        .map_err(|_| "The Basic client id is not form-urlencoded (RFC 6749 section 2.3.1)")?;
    let secret = form_decode(&raw[colon + 1..])
        .map_err(|_| "The Basic client secret is not form-urlencoded (RFC 6749 section 2.3.1)")?;
    Ok((id, secret))
}

fn authenticate_client(
    state: &SimState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<(), OAuthError> {
    let expected = &state.credentials;
    let matches = |id: &str, secret: &str| {
        // Both comparisons always run, so timing does not reveal which failed.
        let id_ok = constant_time_eq(id.as_bytes(), expected.client_id.as_bytes());
        let secret_ok = constant_time_eq(secret.as_bytes(), expected.client_secret.as_bytes());
        id_ok & secret_ok
    };
    let mut authorizations = headers.get_all(header::AUTHORIZATION).iter();
    match (authorizations.next(), authorizations.next()) {
        (Some(_), Some(_)) => Err(OAuthError::invalid_request(
            "More than one Authorization header",
        )),
        (Some(value), None) => {
            if params.get("client_secret").is_some() {
                return Err(OAuthError::invalid_request(
                    "The client authenticated with both HTTP Basic and client_secret; use one method",
                ));
            }
            let (id, secret) = decode_basic(value).map_err(OAuthError::invalid_basic_client)?;
            if params.get("client_id").is_some_and(|body_id| body_id != id) {
                return Err(OAuthError::invalid_basic_client(
                    "client_id in the body differs from the HTTP Basic client id",
                ));
            }
            if matches(&id, &secret) {
                Ok(())
            } else {
                Err(OAuthError::invalid_basic_client(
                    "Client authentication failed",
                ))
            }
        }
        (None, _) => match (params.get("client_id"), params.get("client_secret")) {
            (Some(id), Some(secret)) if matches(id, secret) => Ok(()),
            (Some(_), Some(_)) => Err(OAuthError::invalid_client("Client authentication failed")),
            _ => Err(OAuthError::invalid_client(
                "Client authentication is missing: send client_id and client_secret, or HTTP Basic",
            )),
        },
    }
}

/// Validates an RFC 6749 section 3.3 scope, or supplies the default.
fn requested_scope(params: &Params) -> Result<String, OAuthError> {
    let Some(scope) = params.get("scope") else {
        return Ok(DEFAULT_SCOPE.to_owned());
    };
    let valid_token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
    };
    if scope.split(' ').all(valid_token) {
        Ok(scope.to_owned())
    } else {
        Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "The scope is malformed",
        ))
    }
}

fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str, OAuthError> {
    params
        .get(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::invalid_request(format!("The {name} parameter is missing")))
}

/// `grant_type=password`: the backend-service flow with the service account.
fn password_grant(state: &SimState, params: &Params, now: Instant) -> Result<Issued, OAuthError> {
    let username = required(params, "username")?;
    let password = required(params, "password")?;
    let expected = &state.credentials;
    let user_ok = constant_time_eq(username.as_bytes(), expected.saak.as_bytes());
    let password_ok = constant_time_eq(password.as_bytes(), expected.sask.as_bytes());
    if !(user_ok & password_ok) {
        return Err(OAuthError::invalid_grant(
            "The service account credentials are invalid",
        ));
    }
    let scope = requested_scope(params)?;
    Ok(lock(&state.tokens).issue(scope, true, now))
}

/// `grant_type=client_credentials`: no refresh token, as RFC 6749 section
/// 4.4.3 advises; the client simply asks again.
fn client_credentials_grant(
    state: &SimState,
    params: &Params,
    now: Instant,
) -> Result<Issued, OAuthError> {
    let scope = requested_scope(params)?;
    Ok(lock(&state.tokens).issue(scope, false, now))
}

/// `grant_type=refresh_token`, with rotation. A `scope` parameter is
/// accepted but cannot widen the original grant, so it is not consulted.
fn refresh_grant(state: &SimState, params: &Params, now: Instant) -> Result<Issued, OAuthError> {
    let presented = required(params, "refresh_token")?;
    requested_scope(params)?;
    let outcome = lock(&state.tokens).refresh(presented, now);
    outcome.map_err(|failure| match failure {
        RefreshFailure::Unknown => OAuthError::invalid_grant("The refresh token is not recognised"),
        RefreshFailure::Reused => {
            state.counters.update(|c| c.refresh_token_reuse += 1);
            OAuthError::invalid_grant(
                "The refresh token was already used; refresh tokens rotate, so keep the newest one",
            )
        }
        RefreshFailure::Revoked => OAuthError::invalid_grant("The refresh token was revoked"),
    })
}

const SAML2_BEARER: &str = "urn:ietf:params:oauth:grant-type:saml2-bearer";

/// `grant_type=authorization_code` with PKCE: the code is single-use.
fn authorization_code_grant(
    state: &SimState,
    params: &Params,
    now: Instant,
) -> Result<Issued, OAuthError> {
    let code = required(params, "code")?;
    let redirect_uri = required(params, "redirect_uri")?;
    let verifier = required(params, "code_verifier")?;
    let scope = super::login::redeem_code(state, code, redirect_uri, verifier, now)
        .map_err(OAuthError::invalid_grant)?;
    Ok(lock(&state.tokens).issue(scope, true, now))
}

/// `grant_type=urn:ietf:params:oauth:grant-type:saml2-bearer` (RFC 7522).
fn saml_bearer_grant(
    state: &SimState,
    params: &Params,
    now: Instant,
) -> Result<Issued, OAuthError> {
    let assertion = required(params, "assertion")?;
    super::login::check_assertion(state, assertion, now).map_err(OAuthError::invalid_grant)?;
    let scope = requested_scope(params)?;
    Ok(lock(&state.tokens).issue(scope, false, now))
}

fn handle_token_request(
    state: &SimState,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
) -> Result<Issued, OAuthError> {
    let params = read_form(headers, uri, body)?;
    let grant_type = required(&params, "grant_type")?;
    state.counters.count_token_request(grant_type);
    authenticate_client(state, headers, &params)?;
    let now = Instant::now();
    match grant_type {
        "password" => password_grant(state, &params, now),
        "client_credentials" => client_credentials_grant(state, &params, now),
        "refresh_token" => refresh_grant(state, &params, now),
        "authorization_code" => authorization_code_grant(state, &params, now),
        SAML2_BEARER => saml_bearer_grant(state, &params, now),
        _ => Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "The grant type is not supported",
        )),
    }
}

/// `POST {pu}{ot}`
pub(crate) async fn token(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    // `/__sim/token-faults`: an identity service that is slow or down.
    let fault = lock(&state.token_faults).take("");
    if let Some(fault) = fault {
        state.counters.update(|c| c.faults_injected += 1);
        match fault.inject() {
            super::faults::Injected::Answer(response) => {
                tokio::time::sleep(std::time::Duration::from_millis(fault.delay_ms)).await;
                return response;
            }
            super::faults::Injected::Delay(delay) => tokio::time::sleep(delay).await,
        }
    }
    match handle_token_request(&state, &headers, &uri, &body) {
        Ok(issued) => {
            tracing::debug!(refresh = issued.refresh_token.is_some(), "token issued");
            let body = TokenBody {
                access_token: issued.access_token,
                token_type: "Bearer",
                expires_in: issued.expires_in,
                scope: issued.scope,
                refresh_token: issued.refresh_token,
            };
            (no_store_headers(), Json(body)).into_response()
        }
        Err(error) => {
            tracing::debug!(error = error.code, "token request refused");
            state.counters.update(|c| c.token_errors += 1);
            error.into_response()
        }
    }
}

fn handle_revocation(
    state: &SimState,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
) -> Result<(), OAuthError> {
    let params = read_form(headers, uri, body)?;
    authenticate_client(state, headers, &params)?;
    let token = required(&params, "token")?;
    // `token_type_hint` only speeds up a real server's lookup; RFC 7009
    // section 2.1 has the server search every type anyway, so it is ignored.
    let known = lock(&state.tokens).revoke(token);
    tracing::debug!(known, "revocation");
    state.counters.update(|c| c.revocations += 1);
    Ok(())
}

/// `POST {pu}{or}`: 200 whether or not the token was known (RFC 7009 section 2.2).
pub(crate) async fn revoke(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let fault = lock(&state.faults).take_for(super::faults::Endpoint::Revocation, "");
    let mut late = std::time::Duration::ZERO;
    if let Some(fault) = fault {
        state.counters.update(|c| c.faults_injected += 1);
        match fault.inject() {
            // Refused (or cut off) before anything was revoked.
            super::faults::Injected::Answer(response) => {
                tokio::time::sleep(std::time::Duration::from_millis(fault.delay_ms)).await;
                return response;
            }
            // Revoked at once, answered late: a client that gives up first
            // cannot tell whether the revocation happened.
            super::faults::Injected::Delay(delay) => late = delay,
        }
    }
    let outcome = handle_revocation(&state, &headers, &uri, &body);
    tokio::time::sleep(late).await;
    match outcome {
        Ok(()) => (StatusCode::OK, no_store_headers()).into_response(),
        Err(error) => {
            tracing::debug!(error = error.code, "revocation refused");
            error.into_response()
        }
    }
}

#[cfg(test)]
mod tests;
