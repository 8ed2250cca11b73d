//! `ionflow login`, `logout` and `keepalive`: the life of a stored grant.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Query, State};
use axum::response::Html;
use clap::{Args, ValueEnum};
use tokio::sync::mpsc;

use super::connection::{ConnectionArgs, grant_name};
use super::output::outln;
use super::{Exit, grants_of, new_runtime, open_storage, runtime_on};
use ionflow_runtime::capabilities::TokenStore;
use ionflow_runtime::{Connection, Grant, Runtime};

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The connection of a web or native authorized app (see `ionflow whoami --help`)
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Loopback port for the redirect (0 picks a free one); must match the
    /// redirect URI registered on the authorized app if it names a port
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Scopes to ask for (space-separated); the file's `sc` by default
    #[arg(long)]
    scope: Option<String>,
    /// How long to wait for the browser to come back
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

#[derive(Debug, Args)]
pub struct StoredGrantArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// The grant whose tokens to act on; by default the pipeline's, else
    /// backend-service when the file has saak/sask, else authorization-code
    #[arg(long, value_enum)]
    grant: Option<GrantArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GrantArg {
    BackendService,
    ClientCredentials,
    AuthorizationCode,
}

/// Resolves the CONNECTION and opens it with `grant`, or with the grant its
/// pipeline names, or with the one the connector says the file allows.
async fn open(
    runtime: &Runtime,
    args: &ConnectionArgs,
    grant: Option<Grant>,
) -> anyhow::Result<Connection> {
    let mut resolved = args.resolve()?;
    let chosen = match grant.or(resolved.options.grant) {
        Some(chosen) => chosen,
        // The connector knows which grants the file's fields allow: a
        // stored grant is the backend service's when the file has its
        // keys, else the one a user gives by logging in.
        None => {
            let inspection = runtime
                .inspect(&resolved.label, resolved.ionapi_json.expose())
                .await?;
            let backend = inspection.info.is_some_and(|info| {
                info.grants
                    .iter()
                    .any(|g| matches!(g, Grant::BackendService))
            });
            if backend {
                Grant::BackendService
            } else {
                Grant::AuthorizationCode
            }
        }
    };
    resolved.options.grant = Some(chosen);
    runtime
        .open(
            &resolved.label,
            resolved.ionapi_json.expose(),
            resolved.options,
        )
        .await
        .with_context(|| format!("connection `{}` ({})", resolved.label, resolved.source))
}

fn grant_arg(grant: Option<GrantArg>) -> Option<Grant> {
    grant.map(|g| match g {
        GrantArg::BackendService => Grant::BackendService,
        GrantArg::ClientCredentials => Grant::ClientCredentials,
        GrantArg::AuthorizationCode => Grant::AuthorizationCode,
    })
}

/// What the browser brings back to the loopback redirect.
#[derive(Debug, serde::Deserialize)]
struct Redirect {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

pub async fn login(args: LoginArgs, quiet: bool) -> anyhow::Result<Exit> {
    let runtime = new_runtime().await?;
    let connection = open(&runtime, &args.connection, Some(Grant::AuthorizationCode)).await?;
    // RFC 8252: a loopback redirect on a port of our choosing.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("could not listen on 127.0.0.1:{}", args.port))?;
    let redirect_uri = format!(
        "http://127.0.0.1:{}/callback",
        listener.local_addr()?.port()
    );
    let start = connection
        .begin_authorization(redirect_uri, args.scope.clone())
        .await?;

    let (sender, mut received) = mpsc::channel::<Redirect>(1);
    let app = axum::Router::new()
        .route("/callback", axum::routing::get(callback))
        .with_state(sender);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    eprintln!(
        "Open this URL in a browser and log in:\n\n  {}\n",
        start.url
    );
    if !quiet {
        eprintln!(
            "Waiting for the redirect (up to {} s)...",
            args.timeout_secs
        );
    }
    let redirect = tokio::time::timeout(Duration::from_secs(args.timeout_secs), received.recv())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no redirect arrived within {} s; run ionflow login again",
                args.timeout_secs
            )
        })?
        .ok_or_else(|| anyhow::anyhow!("the redirect listener stopped"))?;
    server.abort();

    if let Some(error) = redirect.error {
        anyhow::bail!(
            "the login was refused: {error}{}",
            redirect
                .error_description
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
    }
    let (Some(code), Some(state)) = (redirect.code, redirect.state) else {
        anyhow::bail!("the redirect carried no code and state");
    };
    let info = connection.complete_authorization(code, state).await?;
    outln!(
        "logged in: token expires in {} s; refresh token {}",
        info.expires_in_secs,
        if info.has_refresh_token {
            "stored"
        } else {
            "not issued: runs will need a new login when the token expires"
        }
    );
    Ok(Exit::Success)
}

async fn callback(
    State(sender): State<mpsc::Sender<Redirect>>,
    Query(redirect): Query<Redirect>,
) -> Html<&'static str> {
    let _ = sender.send(redirect).await;
    Html(
        "<!doctype html><title>ionflow</title><p>ionflow received the login. You can close this window.</p>",
    )
}

/// A runtime on the configured store, and that store's tokens, so that a
/// command can say what was stored before it acted.
async fn runtime_and_tokens() -> anyhow::Result<(Runtime, Arc<dyn TokenStore>)> {
    let storage = open_storage().await?;
    let tokens = storage.tokens();
    Ok((runtime_on(tokens.clone())?, tokens))
}

/// Whether the token store holds an entry for the connection.
async fn stored(tokens: &dyn TokenStore, connection: &Connection) -> anyhow::Result<bool> {
    tokens
        .load(&connection.info().store_key)
        .await
        .map(|entry| entry.is_some())
        .map_err(|e| anyhow::anyhow!("the token store could not be read: {e:?}"))
}

/// Revokes the grant whoever else holds it: an operator's explicit end.
/// A revocation that fails still deletes the stored tokens, so that no
/// later run trusts tokens the gateway may already have revoked.
pub async fn logout(args: StoredGrantArgs) -> anyhow::Result<Exit> {
    let storage = open_storage().await?;
    let tokens = storage.tokens();
    let runtime = runtime_on(tokens.clone())?;
    let grants = grants_of(storage.as_ref());
    let connection = open(&runtime, &args.connection, grant_arg(args.grant)).await?;
    if !stored(tokens.as_ref(), &connection).await? {
        outln!(
            "nothing to log out: no tokens are stored for this connection ({} grant), so \
             nothing was revoked",
            grant_name(connection.info().grant)
        );
        return Ok(Exit::Success);
    }
    let before = connection.stats().requests();
    if let Err(e) = connection.revoke().await {
        grants
            .forget(crate::grants::key(&connection), connection.name())
            .await;
        return Err(anyhow::Error::new(e).context(
            "the revocation failed; the stored tokens were deleted anyway, and the grant \
             ends on its own when its refresh token expires",
        ));
    }
    if connection.stats().requests() > before {
        outln!(
            "logged out: the stored token was revoked at {} and the stored tokens forgotten",
            connection
                .info()
                .revocation_url
                .as_deref()
                .unwrap_or("the revocation endpoint")
        );
    } else {
        outln!("logged out: the stored entry held no token to revoke; it was forgotten");
    }
    Ok(Exit::Success)
}

pub async fn keepalive(args: StoredGrantArgs) -> anyhow::Result<Exit> {
    let (runtime, tokens) = runtime_and_tokens().await?;
    let connection = open(&runtime, &args.connection, grant_arg(args.grant)).await?;
    let had_grant = stored(tokens.as_ref(), &connection).await?;
    let before = connection.stats().token_requests();
    let info = connection.refresh().await?;
    let requests = connection.stats().token_requests() - before;
    if !info.has_refresh_token {
        anyhow::bail!(
            "no refresh token is held for this connection, so there is nothing to keep alive; \
             enable \"Issue Refresh Token\" on the authorized app"
        );
    }
    let grant = grant_name(info.grant);
    let what = match (had_grant, requests) {
        (false, _) => format!(
            "no grant was stored for this connection: a new {grant} grant was made and its \
             refresh token stored"
        ),
        (true, 0 | 1) => {
            "refreshed: the stored refresh token was spent and the new one stored".to_owned()
        }
        (true, _) => format!(
            "the stored refresh token was refused (rotated elsewhere, revoked or idle too long): \
             a new {grant} grant was made and its refresh token stored"
        ),
    };
    outln!(
        "{what}; the access token expires in {} s",
        info.expires_in_secs
    );
    Ok(Exit::Success)
}
