//! One connection: its credentials, its token cache and its business calls.

use std::cell::RefCell;
use std::rc::Rc;

use super::capabilities::{self as host, Exchange, Lease};
use super::exports::ionflow::gateway::{auth, gateway};
use super::ionflow::gateway::types;
use crate::error::ConnectorError;
use crate::ionapi::Credentials;
use crate::lint::{self, Severity};
use crate::oauth::{self, ClientAuth, Grant, TokenGrant, TokenSet};
use crate::response::{self, RequestSize};
use crate::secret::{Secret, mask};

const DEFAULT_RENEW_BEFORE_SECS: u32 = 300;
const DEFAULT_TIMEOUT_MS: u32 = 60_000;
/// The gateway's ceiling for any timeout policy.
const MAX_TIMEOUT_MS: u32 = 300_000;
const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 10 * 1024 * 1024;

pub struct Session {
    creds: Credentials,
    grant: Grant,
    client_auth: ClientAuth,
    renew_before_secs: u64,
    timeout_ms: u32,
    max_payload_bytes: u64,
    store_key: String,
    /// The last token set seen, so that most calls touch neither the store
    /// nor the network; shared, so that a call does not copy it.
    cached: RefCell<Option<Rc<TokenSet>>>,
    /// The last request target that passed the checks, so that a run of
    /// calls to one API path does not check and join it again per call.
    checked: RefCell<CheckedTargets>,
    saml_assertion: Option<Secret>,
    /// The authorization-code login in progress, if any.
    pending_login: RefCell<Option<PendingLogin>>,
}

/// Request targets that passed the checks (see `Session::checked_target`).
#[derive(Default)]
struct CheckedTargets {
    /// The last product path that passed, and the URL it joins to.
    path: Option<String>,
    base: String,
    /// Query parameter names that passed, at most [`Self::MAX_NAMES`].
    names: Vec<String>,
}

impl CheckedTargets {
    const MAX_NAMES: usize = 64;
}

struct PendingLogin {
    state: String,
    verifier: Secret,
    redirect_uri: String,
}

/// A short digest of the file's secrets, part of the store key: a file with
/// other (or wrong) secrets for the same client never sees these tokens.
/// 32 bits of SHA-256 over high-entropy secrets reveal nothing usable.
fn credentials_fingerprint(creds: &Credentials) -> String {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    for secret in creds.secrets() {
        hash.update(secret.expose().as_bytes());
        hash.update([0u8]);
    }
    hash.finalize()
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `bytes` of randomness from the host's WASI random source, base64url-encoded.
fn random_string(bytes: usize) -> Result<String, ConnectorError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| ConnectorError::Unsupported(format!("no random source available: {e}")))?;
    Ok(oauth::base64url(&buf))
}

impl Session {
    fn open(ionapi_json: &str, options: &auth::Options) -> Result<Session, ConnectorError> {
        let creds = Credentials::parse(ionapi_json)
            .map_err(|e| ConnectorError::InvalidCredentialsFile(e.message))?;
        let grant = match (options.grant, &creds.service_account) {
            (Some(auth::Grant::AuthorizationCode), _) => Grant::AuthorizationCode,
            (Some(auth::Grant::SamlBearer), _) => {
                if options.saml_assertion.as_deref().is_none_or(str::is_empty) {
                    return Err(ConnectorError::InvalidOptions(
                        "the saml-bearer grant needs a SAML assertion; pass the assertion the \
                         Ming.le portal issued for the signed-in user"
                            .into(),
                    ));
                }
                Grant::SamlBearer
            }
            (None | Some(auth::Grant::BackendService), Some(_)) => Grant::BackendService,
            (Some(auth::Grant::ClientCredentials), _) => Grant::ClientCredentials,
            (None, None) => {
                return Err(ConnectorError::InvalidOptions(
                    "this .ionapi file has no `saak`/`sask`, so it is not a Backend Service file; \
                     download the file of a Backend Service authorized app, or choose the \
                     client-credentials grant explicitly"
                        .into(),
                ));
            }
            (Some(auth::Grant::BackendService), None) => {
                return Err(ConnectorError::InvalidCredentialsFile(
                    "the backend-service grant needs the fields `saak` and `sask`; enable \
                     \"Create Service Account\" on the authorized app and download the file again"
                        .into(),
                ));
            }
        };
        let timeout_ms = options.request_timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Err(ConnectorError::InvalidOptions(format!(
                "request timeout must be between 1 ms and {MAX_TIMEOUT_MS} ms (the gateway's 5-minute ceiling)"
            )));
        }
        let store_key = format!(
            "{}/{}/{}/{}",
            creds.tenant,
            creds.client_id,
            grant.name(),
            credentials_fingerprint(&creds)
        );
        Ok(Session {
            grant,
            client_auth: match options.client_auth {
                Some(auth::ClientAuth::Basic) => ClientAuth::Basic,
                None | Some(auth::ClientAuth::Form) => ClientAuth::Form,
            },
            renew_before_secs: options
                .renew_before_secs
                .unwrap_or(DEFAULT_RENEW_BEFORE_SECS)
                .into(),
            timeout_ms,
            max_payload_bytes: options
                .max_payload_bytes
                .unwrap_or(DEFAULT_MAX_PAYLOAD_BYTES),
            store_key,
            cached: RefCell::new(None),
            checked: RefCell::new(CheckedTargets::default()),
            saml_assertion: options.saml_assertion.clone().map(Secret::new),
            pending_login: RefCell::new(None),
            creds,
        })
    }

    /// A lease outlives a slow token request with margin, and a waiter gives
    /// up only after the holder's request could have timed out.
    fn lease(&self) -> Result<Lease<'_>, ConnectorError> {
        Lease::acquire(
            &self.store_key,
            self.timeout_ms.saturating_add(10_000),
            self.timeout_ms.saturating_mul(2).saturating_add(5_000),
        )
    }

    fn load(&self) -> Result<(Option<TokenSet>, u64), ConnectorError> {
        let Some(entry) = host::load(&self.store_key)? else {
            return Ok((None, 0));
        };
        match serde_json::from_str::<TokenSet>(&entry.value) {
            Ok(set) => Ok((Some(set), entry.version)),
            Err(_) => {
                // An unreadable entry must not wedge the connection: a new grant replaces it.
                host::warn("ignoring an unreadable token-store entry; a new token will replace it");
                Ok((None, entry.version))
            }
        }
    }

    fn save(&self, version: u64, set: Option<&TokenSet>) -> Result<(), ConnectorError> {
        let json = set
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| ConnectorError::TokenStore(format!("could not encode tokens: {e}")))?;
        if host::save(&self.store_key, version, json.as_deref())?.is_none() {
            host::warn(
                "the token store entry changed while this instance held the lease \
                 (the lease may have expired); keeping the newer entry",
            );
        }
        *self.cached.borrow_mut() = set.cloned().map(Rc::new);
        Ok(())
    }

    /// A usable token: from memory, else from the store, else from the token
    /// endpoint under the store's lease so that concurrent callers cause one request.
    fn current_token(&self) -> Result<(Rc<TokenSet>, bool), ConnectorError> {
        let now = host::now_unix();
        if let Some(set) = self.cached.borrow().as_ref()
            && set.usable_at(now, self.renew_before_secs)
        {
            return Ok((set.clone(), true));
        }
        if let (Some(set), _) = self.load()?
            && set.usable_at(now, self.renew_before_secs)
        {
            let set = Rc::new(set);
            *self.cached.borrow_mut() = Some(set.clone());
            return Ok((set, true));
        }
        let _lease = self.lease()?;
        // Whoever held the lease before us may have just stored a fresh token.
        let (stored, version) = self.load()?;
        if let Some(set) = stored.as_ref()
            && set.usable_at(host::now_unix(), self.renew_before_secs)
        {
            let set = Rc::new(set.clone());
            *self.cached.borrow_mut() = Some(set.clone());
            return Ok((set, true));
        }
        let fresh = self.obtain(stored.as_ref())?;
        self.save(version, Some(&fresh))?;
        Ok((Rc::new(fresh), false))
    }

    /// Spends the held refresh token if there is one, else runs the connection's grant.
    fn obtain(&self, stored: Option<&TokenSet>) -> Result<TokenSet, ConnectorError> {
        if let Some(refresh_token) = stored.and_then(|s| s.refresh_token.as_ref()) {
            match self.request_token(&TokenGrant::Refresh(refresh_token)) {
                Ok(set) => return Ok(set),
                Err(ConnectorError::InvalidGrant(detail))
                    if self.grant == Grant::AuthorizationCode =>
                {
                    return Err(ConnectorError::InvalidGrant(format!(
                        "{detail}. This connection was authorized by a user: log in again \
                         (with ionflow: `ionflow login CONNECTION`)"
                    )));
                }
                Err(ConnectorError::InvalidGrant(_)) => host::warn(&format!(
                    "the stored refresh token was refused (rotated, revoked or idle too long); \
                     starting a new {} grant",
                    self.grant.name()
                )),
                Err(e) => return Err(e),
            }
        }
        match self.grant {
            Grant::BackendService => {
                let sa = self.creds.service_account.as_ref().ok_or_else(|| {
                    ConnectorError::InvalidCredentialsFile("`saak` and `sask` are missing".into())
                })?;
                self.request_token(&TokenGrant::BackendService(sa))
            }
            Grant::ClientCredentials => self.request_token(&TokenGrant::ClientCredentials),
            Grant::SamlBearer => {
                let assertion = self.saml_assertion.as_ref().ok_or_else(|| {
                    ConnectorError::InvalidOptions("no SAML assertion was given".into())
                })?;
                self.request_token(&TokenGrant::SamlBearer(assertion))
            }
            Grant::AuthorizationCode => Err(ConnectorError::InvalidGrant(
                "no refresh token is stored for this connection, which a user must authorize: \
                 log in first (with ionflow: `ionflow login CONNECTION`)"
                    .into(),
            )),
        }
    }

    fn request_token(&self, grant: &TokenGrant) -> Result<TokenSet, ConnectorError> {
        let post = oauth::token_request(&self.creds, grant, self.client_auth);
        host::info(&format!(
            "requesting a token (grant_type={}) from {}",
            grant.grant_type(),
            post.url
        ));
        let response = host::send(Exchange {
            method: types::Method::Post,
            url: &post.url,
            what: &post.url,
            headers: post.headers,
            body: post.body.into_bytes(),
            timeout_ms: self.timeout_ms,
        })?;
        let set = oauth::parse_token_response(
            &self.creds,
            response.status,
            &response.headers,
            &response.body,
            self.grant,
            grant,
            host::now_unix(),
        )?;
        host::debug(&format!(
            "token issued: expires in {} s, refresh token {}",
            set.expires_at.saturating_sub(host::now_unix()),
            if set.refresh_token.is_some() {
                "held"
            } else {
                "not issued"
            }
        ));
        Ok(set)
    }

    /// Marks `used` as dead in the store unless someone already replaced it.
    fn drop_access_token(&self, used: &Secret) -> Result<(), ConnectorError> {
        *self.cached.borrow_mut() = None;
        let _lease = self.lease()?;
        let (stored, version) = self.load()?;
        if let Some(set) = stored
            && set.access_token == *used
        {
            self.save(version, Some(&set.without_access_token()))?;
        }
        Ok(())
    }

    fn token_info(&self, set: &TokenSet, cached: bool) -> auth::TokenInfo {
        auth::TokenInfo {
            access_token: set.access_token.expose().to_owned(),
            token_type: set.token_type.clone(),
            expires_in_secs: set
                .expires_at
                .saturating_sub(host::now_unix())
                .min(u32::MAX.into()) as u32,
            scope: set.scope.clone(),
            has_refresh_token: set.refresh_token.is_some(),
            grant: wit_grant(self.grant),
            cached,
        }
    }

    /// `{iu}/{ti}/path` once `path` and the query's parameter names pass
    /// [`check_request_target`]. The checks depend on nothing but these
    /// strings, so what passed once is remembered (the last path, a bounded
    /// set of names) and not checked again.
    fn checked_target(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<String, ConnectorError> {
        let mut checked = self.checked.borrow_mut();
        let known_names = query
            .iter()
            .all(|(name, _)| checked.names.iter().any(|known| known == name));
        if known_names && checked.path.as_deref() == Some(path) {
            return Ok(checked.base.clone());
        }
        check_request_target(path, query)?;
        if checked.path.as_deref() != Some(path) {
            checked.base = self.creds.api_url(path);
            checked.path = Some(path.to_owned());
        }
        for (name, _) in query {
            if !checked.names.iter().any(|known| known == name) {
                if checked.names.len() == CheckedTargets::MAX_NAMES {
                    checked.names.clear();
                }
                checked.names.push(name.clone());
            }
        }
        Ok(checked.base.clone())
    }

    pub fn call(&self, request: gateway::Request) -> Result<gateway::Response, ConnectorError> {
        let path = request.path.trim();
        let base = self.checked_target(path, &request.query)?;
        if request
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            return Err(ConnectorError::InvalidRequest(
                "the Authorization header is set by the connector; remove it from the request"
                    .into(),
            ));
        }
        let size = RequestSize {
            body_bytes: request.body.len() as u64,
            limit_bytes: self.max_payload_bytes,
        };
        if size.body_bytes > size.limit_bytes {
            return Err(ConnectorError::PayloadTooLarge {
                size_bytes: size.body_bytes,
                limit_bytes: size.limit_bytes,
            });
        }
        let timeout_ms = request
            .timeout_ms
            .unwrap_or(self.timeout_ms)
            .clamp(1, MAX_TIMEOUT_MS);
        // The request is built once and only its Authorization header changes
        // on a retry: the body and headers are not copied per attempt. Errors
        // name the URL without its query (`what`).
        let base_len = base.len();
        let url = crate::url::with_query(base, &request.query);
        let mut headers = request.headers;
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
        {
            headers.push(("accept".into(), "application/json".into()));
        }
        let authorization = headers.len();
        headers.push(("authorization".into(), String::new()));
        let mut outgoing = host::OutgoingRequest {
            method: request.method,
            url,
            headers,
            body: request.body,
            timeout_ms,
        };

        let mut renewed = false;
        loop {
            let (token, _) = self.current_token()?;
            let access_token = token.access_token.expose();
            let bearer = &mut outgoing.headers[authorization].1;
            bearer.clear();
            bearer.reserve(7 + access_token.len());
            bearer.push_str("Bearer ");
            bearer.push_str(access_token);
            let response = host::send_request(&outgoing, &outgoing.url[..base_len])?;
            if response.status == 401 {
                let reason = response::bearer_error(&response.headers)
                    .unwrap_or_else(|| "no reason given".into());
                if !renewed {
                    host::info(&format!(
                        "{path}: 401 ({reason}); renewing the access token and retrying once"
                    ));
                    self.drop_access_token(&token.access_token)?;
                    renewed = true;
                    continue;
                }
                return Err(ConnectorError::Unauthorized(format!(
                    "{path}: the gateway refused a renewed token too ({reason}). Check that `pu` \
                     and `iu` in the .ionapi file belong to the same tenant, that the authorized \
                     app is active, and that the service account's IFS user is enabled"
                )));
            }
            // Only error statuses need checking; the check reads the clock
            // (a host call) and lists the secrets to mask.
            if response.status >= 400 {
                // A page that echoes the request shows the bearer token too.
                let mut secrets = self.creds.secrets();
                secrets.push(&token.access_token);
                response::check_business_status(
                    response.status,
                    &response.headers,
                    &response.body,
                    path,
                    size,
                    &secrets,
                    host::now_unix(),
                )?;
            }
            return Ok(gateway::Response {
                status: response.status,
                headers: response.headers,
                body: response.body,
            });
        }
    }
}

/// Every business call stays below `{iu}/{ti}/`: the path and the query
/// parameter names are checked before a URL is built from them, so a
/// refused request is never sent, with or without the tenant's token.
fn check_request_target(path: &str, query: &[(String, String)]) -> Result<(), ConnectorError> {
    use crate::url::{check_product_path, check_query_name, quoted};
    check_product_path(path).map_err(|why| {
        ConnectorError::InvalidRequest(format!(
            "the request path {} {why}. A gateway path must stay below {{iu}}/{{ti}}/: write the \
             product path itself, with `/` between its segments and no `.` or `..` segment in any \
             spelling, such as M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm",
            quoted(path)
        ))
    })?;
    for (name, _) in query {
        check_query_name(name).map_err(|why| {
            ConnectorError::InvalidRequest(format!(
                "the query parameter name {} (path {}) {why}",
                quoted(name),
                quoted(path)
            ))
        })?;
    }
    Ok(())
}

/// `auth.inspect`: the lint findings plus the description `open` would give.
pub fn inspect(ionapi_json: &str) -> auth::Inspection {
    let (creds, found) = lint::lint(ionapi_json);
    let mut findings: Vec<auth::Finding> = found
        .into_iter()
        .map(|f| auth::Finding {
            severity: match f.severity {
                Severity::Warning => auth::Severity::Warning,
                Severity::Error => auth::Severity::Error,
            },
            field: f.field.map(str::to_owned),
            message: f.message,
        })
        .collect();
    let info = creds.and_then(|creds| {
        let options = auth::Options {
            // A file without saak/sask can still describe itself.
            grant: creds
                .service_account
                .is_none()
                .then_some(auth::Grant::ClientCredentials),
            client_auth: None,
            renew_before_secs: None,
            request_timeout_ms: None,
            max_payload_bytes: None,
            saml_assertion: None,
        };
        match Session::open(ionapi_json, &options) {
            Ok(session) => Some(auth::GuestConnection::describe(&session)),
            Err(e) => {
                findings.push(auth::Finding {
                    severity: auth::Severity::Error,
                    field: None,
                    message: e.to_string(),
                });
                None
            }
        }
    });
    auth::Inspection { info, findings }
}

fn wit_grant(grant: Grant) -> auth::Grant {
    match grant {
        Grant::BackendService => auth::Grant::BackendService,
        Grant::ClientCredentials => auth::Grant::ClientCredentials,
        Grant::AuthorizationCode => auth::Grant::AuthorizationCode,
        Grant::SamlBearer => auth::Grant::SamlBearer,
    }
}

impl auth::GuestConnection for Session {
    fn open(ionapi_json: String, options: auth::Options) -> Result<auth::Connection, types::Error> {
        Ok(auth::Connection::new(Session::open(
            &ionapi_json,
            &options,
        )?))
    }

    fn describe(&self) -> auth::ConnectionInfo {
        let c = &self.creds;
        let mut grants = vec![];
        if c.service_account.is_some() {
            grants.push(auth::Grant::BackendService);
        }
        grants.push(auth::Grant::ClientCredentials);
        if c.authorization_path.is_some() {
            grants.push(auth::Grant::AuthorizationCode);
        }
        // Whether the tenant trusts a Ming.le assertion is not in the file.
        grants.push(auth::Grant::SamlBearer);
        auth::ConnectionInfo {
            tenant: c.tenant.clone(),
            application: c.application.clone(),
            client_id: c.client_id.clone(),
            client_secret: c.client_secret.masked(),
            service_account_key: c
                .service_account
                .as_ref()
                .map(|sa| mask(sa.access_key.expose())),
            service_account_secret: c.service_account.as_ref().map(|sa| sa.secret_key.masked()),
            portal_url: c.portal_url.clone(),
            ion_api_url: c.ion_api_url.clone(),
            token_url: c.token_url(),
            authorization_url: c.authorization_url(),
            revocation_url: c.revocation_url(),
            version: c.version.clone(),
            grants,
            grant: wit_grant(self.grant),
            store_key: self.store_key.clone(),
            redirect_uri: c.redirect_uri.clone(),
        }
    }

    fn token(&self) -> Result<auth::TokenInfo, types::Error> {
        let (set, cached) = self.current_token()?;
        Ok(self.token_info(&set, cached))
    }

    fn refresh(&self) -> Result<auth::TokenInfo, types::Error> {
        let _lease = self.lease()?;
        let (stored, version) = self.load()?;
        let fresh = self.obtain(stored.as_ref())?;
        self.save(version, Some(&fresh))?;
        Ok(self.token_info(&fresh, false))
    }

    fn revoke(&self) -> Result<(), types::Error> {
        let _lease = self.lease()?;
        let (stored, version) = self.load()?;
        let Some(set) = stored else {
            *self.cached.borrow_mut() = None;
            return Ok(());
        };
        let (token, hint) = match &set.refresh_token {
            Some(refresh) => (refresh, "refresh_token"),
            None => (&set.access_token, "access_token"),
        };
        if !token.is_empty() {
            let post = oauth::revocation_request(&self.creds, token, hint, self.client_auth)?;
            host::info(&format!("revoking the {hint} at {}", post.url));
            let response = host::send(Exchange {
                method: types::Method::Post,
                url: &post.url,
                what: &post.url,
                headers: post.headers,
                body: post.body.into_bytes(),
                timeout_ms: self.timeout_ms,
            })?;
            if !(200..300).contains(&response.status) {
                let sent = oauth::sent_secrets(&self.creds, None, Some(token));
                let sent: Vec<&Secret> = sent.iter().collect();
                return Err(ConnectorError::Protocol(format!(
                    "revocation endpoint {} answered HTTP {}: {}",
                    post.url,
                    response.status,
                    response::body_excerpt(&response.body, &sent)
                ))
                .into());
            }
        }
        self.save(version, None)?;
        Ok(())
    }

    fn begin_authorization(
        &self,
        redirect_uri: String,
        scope: Option<String>,
    ) -> Result<auth::AuthorizationStart, types::Error> {
        let verifier = Secret::new(random_string(32)?);
        let state = random_string(16)?;
        let url = oauth::authorization_url(
            &self.creds,
            "code",
            &redirect_uri,
            &state,
            scope.as_deref(),
            Some(&oauth::pkce_challenge(&verifier)),
        )?;
        *self.pending_login.borrow_mut() = Some(PendingLogin {
            state: state.clone(),
            verifier,
            redirect_uri,
        });
        Ok(auth::AuthorizationStart { url, state })
    }

    fn complete_authorization(
        &self,
        code: String,
        state: String,
    ) -> Result<auth::TokenInfo, types::Error> {
        let pending = self.pending_login.borrow_mut().take().ok_or_else(|| {
            ConnectorError::InvalidOptions(
                "no login is in progress on this connection; call begin-authorization first".into(),
            )
        })?;
        if pending.state != state {
            return Err(ConnectorError::InvalidGrant(
                "the redirect's `state` does not match this login (a stale or forged redirect); \
                 start the login again"
                    .into(),
            )
            .into());
        }
        let code = Secret::new(code);
        let _lease = self.lease()?;
        let (_, version) = self.load()?;
        let fresh = self.request_token(&TokenGrant::AuthorizationCode {
            code: &code,
            verifier: &pending.verifier,
            redirect_uri: &pending.redirect_uri,
        })?;
        self.save(version, Some(&fresh))?;
        Ok(self.token_info(&fresh, false))
    }

    fn implicit_authorization_url(
        &self,
        redirect_uri: String,
        state: String,
        scope: Option<String>,
    ) -> Result<String, types::Error> {
        host::warn(
            "the implicit grant is deprecated: its tokens travel in the URL fragment and cannot be \
             refreshed; prefer the authorization-code grant with PKCE",
        );
        Ok(oauth::authorization_url(
            &self.creds,
            "token",
            &redirect_uri,
            &state,
            scope.as_deref(),
            None,
        )?)
    }
}
