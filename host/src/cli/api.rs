//! `ionflow api METHOD PATH CONNECTION`: one authenticated gateway call,
//! the answer printed as JSON, like `gh api`, for trying an endpoint before
//! writing a pipeline around it.

use std::io::Read as _;

use anyhow::Context as _;
use clap::Args;

use super::Exit;
use super::connection::{ConnectionArgs, Diagnostic};
use super::output::outln;
use ionflow_runtime::{GatewayRequest, Method};

#[derive(Debug, Args)]
pub struct ApiArgs {
    /// GET, POST, PUT, PATCH or DELETE
    method: String,
    /// A path below {iu}/{ti}/, e.g. M3/m3api-rest/v2/execute/MMS200MI/GetItmBasic
    /// (a ?query is allowed)
    path: String,
    #[command(flatten)]
    connection: ConnectionArgs,
    /// A query parameter (repeatable)
    #[arg(long = "query", value_name = "NAME=VALUE")]
    query: Vec<String>,
    /// A request header (repeatable)
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// The request body: text, or @FILE to read it from a file (@- reads stdin)
    #[arg(long, value_name = "BODY|@FILE")]
    data: Option<String>,
    /// The body's content type
    #[arg(long, default_value = "application/json")]
    content_type: String,
    /// Print the body as it came, not re-indented
    #[arg(long)]
    raw: bool,
}

fn pairs(given: &[String], what: &str) -> anyhow::Result<Vec<(String, String)>> {
    given
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow::anyhow!("--{what} {pair}: write NAME=VALUE"))
        })
        .collect()
}

fn method(name: &str) -> anyhow::Result<Method> {
    Ok(match name.to_ascii_uppercase().as_str() {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        other => anyhow::bail!(crate::pipeline::ConfigError::new(
            std::path::Path::new("METHOD"),
            format!("`{other}` is not a method; use GET, POST, PUT, PATCH or DELETE")
        )),
    })
}

/// The body of `--data`: text as given, or a file's (or stdin's) bytes.
fn body(data: Option<&str>) -> anyhow::Result<Vec<u8>> {
    match data {
        None => Ok(Vec::new()),
        Some("@-") => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading the body from stdin")?;
            Ok(bytes)
        }
        Some(path) if path.starts_with('@') => std::fs::read(&path[1..])
            .with_context(|| format!("--data {path}: cannot read the file")),
        Some(text) => Ok(text.as_bytes().to_vec()),
    }
}

pub async fn api(args: ApiArgs) -> anyhow::Result<Exit> {
    let method = method(&args.method)?;
    let (path, inline_query) = match args.path.split_once('?') {
        Some((path, query)) => (path, query),
        None => (args.path.as_str(), ""),
    };
    let mut query: Vec<(String, String)> = form_urlencoded::parse(inline_query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    query.extend(pairs(&args.query, "query")?);
    let mut headers = pairs(&args.headers, "header")?;
    let body = body(args.data.as_deref())?;
    if !body.is_empty() {
        headers.push(("Content-Type".into(), args.content_type.clone()));
    }
    let session = Diagnostic::begin(&args.connection).await?;
    let request = GatewayRequest {
        method,
        path: path.trim_start_matches('/').to_owned(),
        query,
        headers,
        body,
        timeout_ms: None,
    };
    let outcome = session.connection.call(request).await;
    session.end().await;
    let response =
        outcome.with_context(|| format!("{} {path}", args.method.to_ascii_uppercase()))?;
    let text = String::from_utf8_lossy(&response.body);
    match serde_json::from_slice::<serde_json::Value>(&response.body) {
        Ok(json) if !args.raw => outln!("{}", serde_json::to_string_pretty(&json)?),
        _ => outln!("{text}"),
    }
    Ok(match response.status {
        200..=299 => Exit::Success,
        status => {
            eprintln!("error: HTTP {status}");
            match status {
                401 | 403 => Exit::Auth,
                429 | 500..=599 => Exit::Unavailable,
                _ => Exit::Failure,
            }
        }
    })
}
