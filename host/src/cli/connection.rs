//! Commands about one connection: `whoami`, `token` and `check-scope`. Each
//! takes a CONNECTION as [`crate::credentials::resolve`] reads it.

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use super::{Exit, new_runtime, parse_vars};
use crate::credentials::{self, ResolvedConnection};
use crate::pipeline::Variables;
use ionflow_runtime::{Connection, ErrorKind, GatewayRequest, Grant, Method, Runtime};

#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// A .ionapi file, env:NAME (a variable holding its JSON), or
    /// PIPELINE.toml#NAME (a pipeline's [connections.NAME]; #NAME may be
    /// left out when the pipeline has one connection)
    #[arg(value_name = "CONNECTION")]
    pub connection: String,
    /// Set a variable for ${env.NAME} in a pipeline, overriding the environment (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
}

impl ConnectionArgs {
    pub fn resolve(&self) -> anyhow::Result<ResolvedConnection> {
        let vars = Variables::new(parse_vars(&self.vars)?);
        Ok(credentials::resolve(&self.connection, &vars)?)
    }
}

/// Ends a diagnostic session like a run ends: the refresh token is revoked
/// unless the connection keeps its grant (a user's login, `revoke_on_exit = false`).
pub async fn end_session(connection: &Connection, revoke: bool) {
    if revoke
        && connection.info().grant != Grant::AuthorizationCode
        && let Err(e) = connection.revoke().await
    {
        tracing::warn!(connection = %connection.name(), "could not revoke the refresh token: {e}");
    }
}

/// Resolves and opens the connection; no network call happens yet. Also
/// says whether the session should end with a revocation.
pub async fn open(args: &ConnectionArgs, runtime: &Runtime) -> anyhow::Result<(Connection, bool)> {
    let resolved = args.resolve()?;
    let revoke = resolved.revoke_on_exit;
    runtime
        .open(
            &resolved.label,
            resolved.ionapi_json.expose(),
            resolved.options,
        )
        .await
        .with_context(|| format!("connection `{}` ({})", resolved.label, resolved.source))
        .map(|connection| (connection, revoke))
}

const USERS_ME: &str = "ifsservice/usermgt/v2/users/me";

fn get(path: &str, query: Vec<(String, String)>) -> GatewayRequest {
    GatewayRequest {
        method: Method::Get,
        path: path.to_owned(),
        query,
        headers: vec![],
        body: vec![],
        timeout_ms: None,
    }
}

pub async fn whoami(args: ConnectionArgs) -> anyhow::Result<Exit> {
    let runtime = new_runtime().await?;
    let (connection, revoke) = open(&args, &runtime).await?;
    let response = connection.call(get(USERS_ME, vec![])).await;
    end_session(&connection, revoke).await;
    let response = response.with_context(|| format!("GET {USERS_ME}"))?;
    let body: serde_json::Value = serde_json::from_slice(&response.body).with_context(|| {
        format!(
            "users/me answered HTTP {} with a body that is not JSON",
            response.status
        )
    })?;
    if !(200..300).contains(&response.status) {
        anyhow::bail!("users/me answered HTTP {}: {body}", response.status);
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(Exit::Success)
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Also print the access token itself (it grants access until it expires)
    #[arg(long)]
    show_token: bool,
    /// Print the metadata as JSON
    #[arg(long)]
    json: bool,
}

/// Token metadata; the token itself only on explicit request.
pub async fn token(args: TokenArgs) -> anyhow::Result<Exit> {
    let runtime = new_runtime().await?;
    // The token is for the user to use, so it is not revoked here.
    let (connection, _) = open(&args.connection, &runtime).await?;
    let token = connection.token().await.context("requesting a token")?;
    let grant = grant_name(token.grant);
    if args.json {
        let mut out = json!({
            "token_type": token.token_type,
            "expires_in_secs": token.expires_in_secs,
            "scope": token.scope,
            "refresh_token_issued": token.has_refresh_token,
            "grant": grant,
            "cached": token.cached,
        });
        if args.show_token {
            out["access_token"] = json!(token.token.expose());
        }
        println!("{out}");
        return Ok(Exit::Success);
    }
    println!("token type     {}", token.token_type);
    println!("expires in     {} s", token.expires_in_secs);
    println!(
        "scope          {}",
        token.scope.as_deref().unwrap_or("(none given)")
    );
    println!(
        "refresh token  {}",
        if token.has_refresh_token {
            "issued"
        } else {
            "not issued"
        }
    );
    println!("grant          {grant}");
    if args.show_token {
        println!("access token   {}", token.token.expose());
    } else {
        println!("access token   ***** (add --show-token to print it)");
    }
    Ok(Exit::Success)
}

pub fn grant_name(grant: Grant) -> &'static str {
    match grant {
        Grant::BackendService => "backend-service",
        Grant::ClientCredentials => "client-credentials",
        Grant::AuthorizationCode => "authorization-code",
        Grant::SamlBearer => "saml-bearer",
    }
}

#[derive(Debug, Args)]
pub struct CheckScopeArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Product paths below {iu}/{ti}/, e.g. M3/m3api-rest/v2/execute/MMS200MI/GetItmBasic?ITNO=A1
    #[arg(value_name = "PATH", required = true)]
    paths: Vec<String>,
    /// Print the verdicts as JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allowed,
    Forbidden,
    Other,
}

impl Verdict {
    fn name(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Forbidden => "forbidden",
            Verdict::Other => "other",
        }
    }
}

/// One GET per path: 2xx is allowed, 403 forbidden (with the fix), anything
/// else is reported as it came. Failures that say nothing about the path
/// (credentials refused, a broken file) stop the command.
pub async fn check_scope(args: CheckScopeArgs) -> anyhow::Result<Exit> {
    let runtime = new_runtime().await?;
    let (connection, revoke) = open(&args.connection, &runtime).await?;
    let results = probe(&connection, &args.paths).await;
    end_session(&connection, revoke).await;
    let results = results?;
    print_results(&results, args.json);
    let worst = results.iter().map(|r| r.1);
    Ok(if worst.clone().any(|v| v == Verdict::Forbidden) {
        Exit::Auth
    } else if worst.into_iter().any(|v| v == Verdict::Other) {
        Exit::Failure
    } else {
        Exit::Success
    })
}

type Probe<'a> = (&'a str, Verdict, Option<u16>, Option<String>);

async fn probe<'a>(connection: &Connection, paths: &'a [String]) -> anyhow::Result<Vec<Probe<'a>>> {
    let mut results = Vec::new();
    for raw in paths {
        let (path, query) = split_path(raw);
        let outcome = connection.call(get(&path, query)).await;
        let (verdict, status, detail) = match outcome {
            Ok(r) if (200..300).contains(&r.status) => (Verdict::Allowed, Some(r.status), None),
            Ok(r) => (Verdict::Other, Some(r.status), Some(excerpt(&r.body))),
            Err(e) => match e.kind() {
                ErrorKind::Forbidden => (Verdict::Forbidden, Some(403), Some(e.to_string())),
                ErrorKind::Unavailable | ErrorKind::Failed => {
                    (Verdict::Other, None, Some(e.to_string()))
                }
                ErrorKind::Authentication | ErrorKind::Configuration | ErrorKind::Sandbox => {
                    return Err(anyhow::Error::new(e).context(format!("GET {path}")));
                }
            },
        };
        results.push((raw.as_str(), verdict, status, detail));
    }
    Ok(results)
}

fn print_results(results: &[Probe<'_>], json: bool) {
    if json {
        let out: Vec<_> = results
            .iter()
            .map(|(path, verdict, status, detail)| {
                json!({ "path": path, "verdict": verdict.name(), "status": status, "detail": detail })
            })
            .collect();
        println!("{}", serde_json::Value::Array(out));
    } else {
        for (path, verdict, status, detail) in results {
            let status = status.map_or_else(|| "no answer".to_owned(), |s| format!("HTTP {s}"));
            println!("{:<9}  {path}  ({status})", verdict.name());
            if let Some(detail) = detail {
                println!("           {detail}");
            }
        }
    }
}

/// `PATH?A=1&B=2` into the path and its decoded query pairs; the connector
/// takes them apart so that it can encode each value itself.
fn split_path(raw: &str) -> (String, Vec<(String, String)>) {
    let raw = raw.trim().trim_start_matches('/');
    match raw.split_once('?') {
        None => (raw.to_owned(), vec![]),
        Some((path, query)) => {
            let pairs = reqwest::Url::parse(&format!("http://x/?{query}"))
                .map(|u| u.query_pairs().into_owned().collect())
                .unwrap_or_default();
            (path.to_owned(), pairs)
        }
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut cut: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        cut.push_str("...");
    }
    if cut.is_empty() {
        "(empty body)".into()
    } else {
        cut
    }
}
