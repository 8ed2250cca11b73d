//! `ionflow inspect`: what a connection's `.ionapi` file holds and what is
//! wrong with it, secrets masked, without any network call.

use clap::Args;
use serde_json::json;

use super::Exit;
use super::connection::{ConnectionArgs, grant_name};
use super::new_runtime;
use super::output::outln;
use crate::credentials::{IonapiSource, hygiene};
use ionflow_runtime::{ConnectionInfo, Severity};

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Print the description and findings as JSON
    #[arg(long)]
    json: bool,
}

struct Finding {
    level: &'static str,
    field: Option<String>,
    message: String,
}

pub async fn inspect(args: InspectArgs) -> anyhow::Result<Exit> {
    let resolved = args.connection.resolve()?;
    let runtime = new_runtime().await?;
    let inspection = runtime
        .inspect(&resolved.label, resolved.ionapi_json.expose())
        .await?;
    let mut findings: Vec<Finding> = inspection
        .findings
        .into_iter()
        .map(|f| Finding {
            level: match f.severity {
                Severity::Warning => "warning",
                Severity::Error => "error",
            },
            field: f.field,
            message: f.message,
        })
        .collect();
    if let IonapiSource::File(path) = &resolved.source {
        for found in hygiene::check(path) {
            findings.push(Finding {
                level: if found.is_warning() {
                    "warning"
                } else {
                    "note"
                },
                field: None,
                message: found.message(path),
            });
        }
    }
    // A pipeline's connection may choose its grant: describe the connection
    // as the pipeline would open it (opening makes no network call).
    let mut info = inspection.info;
    if info.is_some() && resolved.options.grant.is_some() {
        match runtime
            .open(
                &resolved.label,
                resolved.ionapi_json.expose(),
                resolved.options,
            )
            .await
        {
            Ok(connection) => info = Some(connection.info().clone()),
            Err(e) => findings.push(Finding {
                level: "error",
                field: None,
                message: format!("with the pipeline's settings: {e}"),
            }),
        }
    }
    let failed = findings.iter().any(|f| f.level == "error");
    if args.json {
        let out = json!({
            "connection": resolved.label,
            "source": resolved.source.to_string(),
            "info": info.as_ref().map(info_json),
            "findings": findings.iter().map(|f| json!({
                "level": f.level, "field": f.field, "message": f.message,
            })).collect::<Vec<_>>(),
        });
        outln!("{out}");
    } else {
        outln!("{:<24}{}", "connection", resolved.label);
        outln!("{:<24}{}", "read from", resolved.source);
        if let Some(info) = &info {
            print_info(info);
        }
        for f in &findings {
            // Parse errors already name their field; lint findings do not.
            match &f.field {
                Some(field) if !f.message.contains(&format!("`{field}`")) => {
                    outln!("{}: `{field}` {}", f.level, f.message)
                }
                _ => outln!("{}: {}", f.level, f.message),
            }
        }
    }
    Ok(if failed { Exit::Config } else { Exit::Success })
}

fn grants(info: &ConnectionInfo) -> Vec<&'static str> {
    info.grants.iter().map(|g| grant_name(*g)).collect()
}

fn print_info(info: &ConnectionInfo) {
    let row = |label: &str, value: &str| outln!("{label:<24}{value}");
    let none = "(not in the file)";
    row("tenant (ti)", &info.tenant);
    row(
        "application (cn)",
        info.application.as_deref().unwrap_or(none),
    );
    row("client id (ci)", &info.client_id);
    row("client secret (cs)", &info.client_secret);
    row(
        "service account (saak)",
        info.service_account_key.as_deref().unwrap_or(none),
    );
    row(
        "service secret (sask)",
        info.service_account_secret.as_deref().unwrap_or(none),
    );
    row("portal URL (pu)", &info.portal_url);
    row("ION API URL (iu)", &info.ion_api_url);
    row("token URL", &info.token_url);
    row(
        "authorization URL",
        info.authorization_url.as_deref().unwrap_or(none),
    );
    row(
        "revocation URL",
        info.revocation_url.as_deref().unwrap_or(none),
    );
    row(
        "format version (v)",
        info.version.as_deref().unwrap_or(none),
    );
    row("grants allowed", &grants(info).join(", "));
    row("grant used", grant_name(info.grant));
}

fn info_json(info: &ConnectionInfo) -> serde_json::Value {
    json!({
        "tenant": info.tenant,
        "application": info.application,
        "client_id": info.client_id,
        "client_secret": info.client_secret,
        "service_account_key": info.service_account_key,
        "service_account_secret": info.service_account_secret,
        "portal_url": info.portal_url,
        "ion_api_url": info.ion_api_url,
        "token_url": info.token_url,
        "authorization_url": info.authorization_url,
        "revocation_url": info.revocation_url,
        "version": info.version,
        "grants": grants(info),
        "grant": grant_name(info.grant),
    })
}
