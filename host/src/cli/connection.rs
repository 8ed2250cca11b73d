//! Commands about one connection: `ionflow whoami`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::{Exit, new_runtime};
use crate::runtime::{GatewayRequest, Method, default_options};

#[derive(Debug, Args)]
pub struct ConnectionArgs {
    /// Path to a .ionapi file
    ionapi: PathBuf,
}

pub async fn whoami(args: ConnectionArgs) -> anyhow::Result<Exit> {
    let json = std::fs::read_to_string(&args.ionapi)
        .with_context(|| format!("cannot read {}", args.ionapi.display()))?;
    let runtime = new_runtime()?;
    let label = args.ionapi.display().to_string();
    let connection = runtime
        .open(&label, &json, default_options())
        .await
        .with_context(|| label.clone())?;
    let response = connection
        .call(GatewayRequest {
            method: Method::Get,
            path: "ifsservice/usermgt/v2/users/me".into(),
            query: vec![],
            headers: vec![],
            body: vec![],
            timeout_ms: None,
        })
        .await
        .context("GET ifsservice/usermgt/v2/users/me")?;
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
