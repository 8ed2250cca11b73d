//! `[connections.NAME]`: how a pipeline reaches one tenant. Credentials
//! come from a `.ionapi` file or an environment variable, never from the
//! pipeline itself.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::problems::Problems;

/// A connection to one tenant. Credentials come from a `.ionapi` file or an
/// environment variable holding its JSON, never from the pipeline itself.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Path to the `.ionapi` file, relative to the pipeline file. Use
    /// `${env.INFOR_ENV}` to pick one file per environment.
    pub ionapi_file: Option<String>,
    /// Name of an environment variable that holds the `.ionapi` JSON.
    pub ionapi_env: Option<String>,
    /// `backend_service` (default when the file has saak/sask) or `client_credentials`.
    pub grant: Option<GrantName>,
    /// `form` (default) or `basic`.
    pub client_auth: Option<ClientAuthName>,
    /// Per-request timeout; default 60, at most 300 (the gateway's ceiling).
    pub timeout_secs: Option<u32>,
    /// Request bodies larger than this are refused before sending; default
    /// 10 MB (10485760), the gateway's limit for buffered endpoints.
    pub max_payload_bytes: Option<u64>,
    /// For `grant = "saml_bearer"`: a file holding the SAML assertion (XML).
    pub saml_assertion_file: Option<String>,
    /// For `grant = "saml_bearer"`: an environment variable holding it.
    pub saml_assertion_env: Option<String>,
    /// Revoke the grant when the process that used it ends, if no other
    /// live process holds it. Unset: `ionflow run` keeps the grant in the
    /// token store for the next run (a `saml_bearer` grant, a user's
    /// session, is revoked), `ionflow serve` revokes it at shutdown.
    /// `false` always keeps it (serve refreshes it every
    /// `keepalive_interval_secs`). Never for `authorization_code`, whose
    /// grant a user gave once and must survive runs.
    pub revoke_on_exit: Option<bool>,
    /// The endpoint policy to stay under; default 1,000 calls per 60 s,
    /// the gateway's default quota.
    pub rate_limit: Option<RateLimitConfig>,
    /// For grants kept across runs: how often `ionflow serve` refreshes them
    /// so they never reach Infor's 30-day idle cut-off. Default 25 days.
    pub keepalive_interval_secs: Option<u64>,
    /// A connector component (`.wasm`) implementing `ionflow:gateway/connector`,
    /// relative to the pipeline file; the connector built into ionflow when absent.
    pub connector: Option<String>,
}

impl ConnectionConfig {
    pub fn keepalive_interval_secs(&self) -> u64 {
        self.keepalive_interval_secs
            .unwrap_or(25 * 24 * 3600)
            .max(1)
    }

    /// Whether a process that ends revokes this connection's grant when it
    /// is its last holder: a daemon (`serve`) by default; a one-shot run
    /// (`run`, `whoami`, ...) only when asked, since the next run of a cron
    /// job would need a new grant, except a SAML bearer grant, which is the
    /// signed-in user's session and must not outlive it; a user's login
    /// (`authorization_code`) never.
    pub fn revokes_on_exit(&self, daemon: bool) -> bool {
        self.grant != Some(GrantName::AuthorizationCode)
            && self
                .revoke_on_exit
                .unwrap_or(daemon || self.grant == Some(GrantName::SamlBearer))
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantName {
    BackendService,
    ClientCredentials,
    AuthorizationCode,
    SamlBearer,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthName {
    Form,
    Basic,
}

/// A client-side limit matching the gateway's quota and spike-arrest policy.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Calls allowed per window.
    pub requests: u32,
    /// The window, in seconds.
    pub window_secs: u32,
    /// Space calls evenly (window / requests apart) instead of allowing bursts.
    #[serde(default)]
    pub smoothing: bool,
}

/// The parts of a pipeline file that say how to open its connections:
/// what `credentials` reads for a `PIPELINE.toml#NAME` argument. Other keys
/// are left to the pipeline's own parse.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConnectionsTable {
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(default)]
    pub connections: BTreeMap<String, ConnectionConfig>,
}

/// Checks what the types cannot, for every connection.
pub fn check_connections(
    connections: &BTreeMap<String, ConnectionConfig>,
    problems: &mut Problems<'_>,
) {
    for (name, conn) in connections {
        let table = format!("connections.{name}");
        if conn.ionapi_file.is_some() == conn.ionapi_env.is_some() {
            problems.add(
                &table,
                None,
                "set exactly one of ionapi_file (a path) or ionapi_env (an environment \
                     variable holding the .ionapi JSON)",
            );
        }
        let saml_sources =
            conn.saml_assertion_file.is_some() as u8 + conn.saml_assertion_env.is_some() as u8;
        match (conn.grant == Some(GrantName::SamlBearer), saml_sources) {
                (true, 1) | (false, 0) => {}
                (true, _) => problems.add(
                    &table,
                    Some("grant"),
                    "grant = \"saml_bearer\" needs exactly one of saml_assertion_file or \
                     saml_assertion_env",
                ),
                (false, _) => problems.add(
                    &table,
                    None,
                    "saml_assertion_file and saml_assertion_env are only used with grant = \"saml_bearer\"",
                ),
            }
        if let Some(limit) = &conn.rate_limit
            && (limit.requests == 0 || limit.window_secs == 0)
        {
            problems.add(
                &format!("{table}.rate_limit"),
                None,
                "requests and window_secs must both be at least 1",
            );
        }
        if conn.max_payload_bytes == Some(0) {
            problems.add(
                &table,
                Some("max_payload_bytes"),
                "must be at least 1; leave it out for the gateway's 10 MB limit",
            );
        }
        if conn.grant == Some(GrantName::AuthorizationCode) && conn.revoke_on_exit == Some(true) {
            problems.add(
                &table,
                Some("revoke_on_exit"),
                "a user's login (grant = \"authorization_code\") is never revoked when a run \
                 ends, or every run would need a new login; remove revoke_on_exit and end the \
                 login with `ionflow logout` instead",
            );
        }
        if conn.timeout_secs.is_some_and(|t| t == 0 || t > 300) {
            problems.add(
                &table,
                Some("timeout_secs"),
                "must be between 1 and 300 (the gateway's 5-minute ceiling)",
            );
        }
    }
}
