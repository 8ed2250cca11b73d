//! User-facing grants: the authorization endpoint (code with PKCE, and the
//! deprecated implicit flow) and the SAML bearer assertions that a simulated
//! Ming.le portal issues.
//!
//! No one types a password into a simulator: the authorization endpoint
//! consents at once and redirects, so a test (or a developer's browser)
//! completes a login by following one redirect.
//!
//! Public shape followed: the gateway's authorization endpoint (`oa`) as RFC
//! 6749 sections 4.1 and 4.2 define it, with PKCE S256 (RFC 7636), and SAML
//! 2.0 assertions for RFC 7522's bearer grant. The portal that hands them out
//! (`/__sim/saml-assertion`) stands in for Ming.le and is the simulator's own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::codec::{BASE64URL_DECODER, Params, constant_time_eq, form_encode, random_token};
use super::{SimState, lock};

/// Codes are single-use and short-lived, as at a real authorization server.
const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// Ming.le's assertions are meant to be exchanged at once.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(300);

struct PendingCode {
    challenge: String,
    redirect_uri: String,
    scope: String,
    expires_at: Instant,
}

#[derive(Default)]
pub(crate) struct LoginRegistry {
    codes: HashMap<String, PendingCode>,
    /// Assertion ids the simulated portal issued, with their expiry.
    assertions: HashMap<String, Instant>,
}

/// Why a code exchange failed, as an OAuth `invalid_grant` description.
pub(crate) fn redeem_code(
    state: &SimState,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
    now: Instant,
) -> Result<String, &'static str> {
    let pending = lock(&state.logins)
        .codes
        .remove(code)
        .ok_or("The authorization code is unknown or was already used")?;
    if pending.expires_at <= now {
        return Err("The authorization code expired");
    }
    if pending.redirect_uri != redirect_uri {
        return Err("redirect_uri differs from the one in the authorization request");
    }
    // RFC 7636 S256: BASE64URL(SHA256(verifier)), unpadded.
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if !constant_time_eq(challenge.as_bytes(), pending.challenge.as_bytes()) {
        return Err("The PKCE code_verifier does not match the code_challenge");
    }
    Ok(pending.scope)
}

/// Checks a base64url SAML assertion against the ones the portal issued.
pub(crate) fn check_assertion(
    state: &SimState,
    encoded: &str,
    now: Instant,
) -> Result<(), &'static str> {
    let xml = BASE64URL_DECODER
        .decode(encoded)
        .map_err(|_| "The assertion is not base64url-encoded")?;
    let xml = String::from_utf8(xml).map_err(|_| "The assertion is not UTF-8 XML")?;
    if !xml.contains("Assertion") {
        return Err("The assertion is not a SAML 2.0 Assertion");
    }
    let id = xml
        .split("ID=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .ok_or("The assertion has no ID")?;
    match lock(&state.logins).assertions.get(id) {
        Some(expires_at) if *expires_at > now => Ok(()),
        Some(_) => Err("The assertion expired"),
        None => Err("The assertion was not issued by a trusted identity provider"),
    }
}

/// Only loopback redirects (RFC 8252, any port) and the simulator itself.
fn redirect_allowed(uri: &str) -> bool {
    ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
        .iter()
        .any(|prefix| uri.starts_with(prefix))
}

fn bad_request(description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": "invalid_request", "error_description": description })),
    )
        .into_response()
}

/// `GET {pu}{oa}`: consents at once and redirects back to the client.
pub(crate) async fn authorize(
    State(state): State<Arc<SimState>>,
    RawQuery(query): RawQuery,
) -> Response {
    let Ok(params) = Params::parse(query.unwrap_or_default().as_bytes()) else {
        return bad_request("The query string is not form-urlencoded");
    };
    let get = |name: &str| params.get(name).filter(|v| !v.is_empty());
    // Errors about the client or redirect are shown, never redirected (RFC 6749 4.1.2.1).
    if get("client_id") != Some(state.credentials.client_id.as_str()) {
        return bad_request("client_id is missing or unknown");
    }
    let Some(redirect_uri) = get("redirect_uri").filter(|r| redirect_allowed(r)) else {
        return bad_request("redirect_uri is missing or not a registered (loopback) redirect URI");
    };
    let Some(client_state) = get("state") else {
        return bad_request("state is missing; clients must send one to bind the redirect");
    };
    let scope = get("scope").unwrap_or("openid profile").to_owned();
    let location = match get("response_type") {
        Some("code") => {
            if get("code_challenge_method") != Some("S256") || get("code_challenge").is_none() {
                return bad_request(
                    "PKCE is required: send code_challenge with code_challenge_method=S256",
                );
            }
            let code = random_token();
            lock(&state.logins).codes.insert(
                code.clone(),
                PendingCode {
                    challenge: get("code_challenge").unwrap_or_default().to_owned(),
                    redirect_uri: redirect_uri.to_owned(),
                    scope,
                    expires_at: Instant::now() + CODE_LIFETIME,
                },
            );
            format!(
                "{redirect_uri}{}code={}&state={}",
                if redirect_uri.contains('?') { '&' } else { '?' },
                form_encode(&code),
                form_encode(client_state)
            )
        }
        Some("token") => {
            let issued = lock(&state.tokens).issue(scope, false, Instant::now());
            state.counters.update(|c| c.token_requests.implicit += 1);
            format!(
                "{redirect_uri}#access_token={}&token_type=Bearer&expires_in={}&state={}",
                issued.access_token,
                issued.expires_in,
                form_encode(client_state)
            )
        }
        _ => return bad_request("response_type must be code (or the deprecated token)"),
    };
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

/// `GET /__sim/saml-assertion`: what Ming.le would hand an embedded app.
pub(crate) async fn issue_assertion(State(state): State<Arc<SimState>>) -> Response {
    let id = format!("_{}", random_token());
    lock(&state.logins)
        .assertions
        .insert(id.clone(), Instant::now() + ASSERTION_LIFETIME);
    let xml = format!(
        r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0"><saml:Issuer>https://mingle-portal.sim/{tenant}</saml:Issuer><saml:Subject><saml:NameID>svc_ionflow@acme.example</saml:NameID></saml:Subject></saml:Assertion>"#,
        tenant = state.config.tenant
    );
    ([(header::CONTENT_TYPE, "application/xml")], xml).into_response()
}
