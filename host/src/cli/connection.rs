//! Commands about one connection: `whoami`, `token` and `check-scope`. Each
//! takes a CONNECTION as [`crate::credentials::resolve`] reads it.

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use super::output::outln;
use super::{Exit, new_runtime, new_session, parse_vars};
use crate::credentials::{self, ResolvedConnection};
use crate::grants::{Grants, join_wait};
use crate::pipeline::Variables;
use crate::products::ifs;
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

/// A diagnostic session on one connection. Like a run, it holds the
/// connection's grant while it lasts and at its end releases it: revoked
/// only when `revoke_on_exit` asks for it and no other live process holds
/// it (a bare `.ionapi` file keeps its grant for the next run).
pub(super) struct Diagnostic {
    pub(super) connection: Connection,
    grants: Grants,
    _runtime: Runtime,
}

impl Diagnostic {
    /// Resolves and opens the connection and holds its grant; no network call happens yet.
    pub(super) async fn begin(args: &ConnectionArgs) -> anyhow::Result<Diagnostic> {
        let resolved = args.resolve()?;
        let (runtime, grants) = new_session().await?;
        let connection = runtime
            .open(
                &resolved.label,
                resolved.ionapi_json.expose(),
                resolved.options.clone(),
            )
            .await
            .with_context(|| format!("connection `{}` ({})", resolved.label, resolved.source))?;
        let wait = join_wait(resolved.options.request_timeout_ms.map(|ms| ms / 1000));
        grants
            .hold(&connection, resolved.revoke_on_exit, wait)
            .await
            .with_context(|| format!("connection `{}`: holding its grant", resolved.label))?;
        Ok(Diagnostic {
            connection,
            grants,
            _runtime: runtime,
        })
    }

    pub(super) async fn end(self) {
        let key = crate::grants::key(&self.connection);
        self.grants.release(key, Some(&self.connection)).await;
    }
}

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

#[derive(Debug, Args)]
pub struct WhoamiArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Print the user as JSON, with the answer of users/me as it came
    #[arg(long)]
    json: bool,
}

/// The user, display name, tenant and grant of a connection, in one line.
pub async fn whoami(args: WhoamiArgs) -> anyhow::Result<Exit> {
    let session = Diagnostic::begin(&args.connection).await?;
    let response = session
        .connection
        .call(get(ifs::USERS_ME_PATH, vec![]))
        .await;
    let info = session.connection.info().clone();
    session.end().await;
    let response = response.with_context(|| format!("GET {}", ifs::USERS_ME_PATH))?;
    let me = ifs::me(response.status, &response.body)?;
    let grant = grant_name(info.grant);
    if args.json {
        let out = json!({
            "user": me.user,
            "display_name": me.display_name,
            "tenant": info.tenant,
            "grant": grant,
            "users_me": me.raw,
        });
        outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let display = me
            .display_name
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        outln!(
            "{}{display}, tenant {}, grant {grant}",
            me.user,
            info.tenant
        );
    }
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
    // The token is for the user to use, so it is neither held nor revoked here.
    let resolved = args.connection.resolve()?;
    let connection = runtime
        .open(
            &resolved.label,
            resolved.ionapi_json.expose(),
            resolved.options,
        )
        .await
        .with_context(|| format!("connection `{}` ({})", resolved.label, resolved.source))?;
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
        outln!("{out}");
        return Ok(Exit::Success);
    }
    outln!("token type     {}", token.token_type);
    outln!("expires in     {} s", token.expires_in_secs);
    outln!(
        "scope          {}",
        token.scope.as_deref().unwrap_or("(none given)")
    );
    outln!(
        "refresh token  {}",
        if token.has_refresh_token {
            "issued"
        } else {
            "not issued"
        }
    );
    outln!("grant          {grant}");
    if args.show_token {
        outln!("access token   {}", token.token.expose());
    } else {
        outln!("access token   ***** (add --show-token to print it)");
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
    let session = Diagnostic::begin(&args.connection).await?;
    let results = probe(&session.connection, &args.paths).await;
    session.end().await;
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
        outln!("{}", serde_json::Value::Array(out));
    } else {
        for (path, verdict, status, detail) in results {
            let status = status.map_or_else(|| "no answer".to_owned(), |s| format!("HTTP {s}"));
            outln!("{:<9}  {path}  ({status})", verdict.name());
            if let Some(detail) = detail {
                outln!("           {detail}");
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
