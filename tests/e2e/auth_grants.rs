//! Every grant against the simulator: backend service (elsewhere: every
//! pipeline test), client credentials with HTTP Basic, authorization code
//! with PKCE through `ionflow login`, SAML bearer, and the implicit URL.

use std::path::Path;
use std::sync::Arc;

use ionflow_runtime::capabilities::MemoryTokenStore;
use ionflow_runtime::{ClientAuth, ConnectionOptions, Grant, Runtime, default_options};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{edit_ionapi, ionflow, items_pipeline, run, simulator, users_me, workdir};

#[tokio::test]
async fn client_credentials_with_http_basic_client_authentication() {
    let sim = simulator(10).await;
    let (_dir, ionapi) = workdir(&sim);
    let runtime = Runtime::new(Arc::new(MemoryTokenStore::new()), None).unwrap();
    let options = ConnectionOptions {
        grant: Some(Grant::ClientCredentials),
        client_auth: Some(ClientAuth::Basic),
        ..default_options()
    };
    let conn = runtime
        .open("cc", &std::fs::read_to_string(&ionapi).unwrap(), options)
        .await
        .unwrap();
    assert_eq!(conn.call(users_me()).await.unwrap().status, 200);
    let token = conn.token().await.unwrap();
    assert!(token.cached && !token.has_refresh_token);
    let counters = sim.counters();
    assert_eq!(counters.token_requests.client_credentials, 1);
    assert_eq!(counters.token_requests.password, 0);
    assert_eq!(
        counters.token_errors, 0,
        "Basic credentials were form-encoded right"
    );
    sim.shutdown().await;
}

/// A web-app style file: no service account.
fn web_app_file(ionapi: &Path) {
    edit_ionapi(ionapi, |json| {
        json.remove("saak");
        json.remove("sask");
    });
}

/// Runs `ionflow login`, plays the browser, and waits for the command.
pub async fn login(ionapi: &Path, state_dir: &Path) -> crate::support::Run {
    let mut child = ionflow()
        .arg("login")
        .arg(ionapi)
        .env("IONFLOW_STATE_DIR", state_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let url = loop {
        let line = stderr
            .next_line()
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("login printed no URL: {seen}"));
        seen.push_str(&line);
        if let Some(url) = line.trim().strip_prefix("http") {
            break format!("http{url}");
        }
    };
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    // The browser: the simulator consents and redirects to the loopback listener.
    let page = ionflow_runtime::tls::client()
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the callback page answered");
    let output = child.wait_with_output().await.unwrap();
    let mut rest = String::new();
    while let Ok(Some(line)) = stderr.next_line().await {
        rest.push_str(&line);
        rest.push('\n');
    }
    crate::support::Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: format!("{seen}\n{rest}"),
    }
}

pub fn user_pipeline(dir: &Path, ionapi: &Path, grant: &str, extra: &str) -> std::path::PathBuf {
    let path = items_pipeline(dir, ionapi, 50);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[source]",
        &format!("grant = \"{grant}\"\n{extra}\n\n[source]"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn authorization_code_with_pkce_login_then_runs_on_the_refresh_token() {
    let sim = simulator(60).await;
    let (dir, ionapi) = workdir(&sim);
    web_app_file(&ionapi);
    let state = dir.path().join("state");

    let result = login(&ionapi, &state).await;
    assert_eq!(result.code, 0, "{}", result.stdout);
    assert!(
        result.stdout.contains("refresh token stored"),
        "{}",
        result.stdout
    );
    let counters = sim.counters();
    assert_eq!(counters.token_requests.authorization_code, 1);
    assert_eq!(counters.token_errors, 0);

    // Two runs later, the login still carries: each renews through the
    // rotating refresh token, none needs the user again.
    let pipeline = user_pipeline(dir.path(), &ionapi, "authorization_code", "");
    for _ in 0..2 {
        sim_expire(&sim).await;
        let run = run(ionflow()
            .arg("run")
            .arg(&pipeline)
            .env("IONFLOW_STATE_DIR", &state))
        .await;
        assert_eq!(run.code, 0, "{}", run.all_output());
    }
    let counters = sim.counters();
    assert_eq!(counters.token_requests.refresh_token, 2);
    assert_eq!(counters.refresh_token_reuse, 0);
    assert_eq!(
        counters.revocations, 0,
        "a user's grant is kept across runs"
    );

    // Logging out revokes; the next run says to log in again.
    let out = run(ionflow()
        .arg("logout")
        .arg(&ionapi)
        .env("IONFLOW_STATE_DIR", &state))
    .await;
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert_eq!(sim.counters().revocations, 1);
    let after = run(ionflow()
        .arg("run")
        .arg(&pipeline)
        .env("IONFLOW_STATE_DIR", &state))
    .await;
    assert_eq!(after.code, 3, "{}", after.all_output());
    assert!(after.stderr.contains("ionflow login"), "{}", after.stderr);
    sim.shutdown().await;
}

async fn sim_expire(sim: &ionflow_sim::Simulator) {
    crate::support::sim_post(sim, "expire-tokens", serde_json::json!({})).await;
}

#[tokio::test]
async fn saml_bearer_with_a_portal_assertion() {
    let sim = simulator(20).await;
    let (dir, ionapi) = workdir(&sim);
    let assertion = ionflow_runtime::tls::client()
        .get(format!("{}/__sim/saml-assertion", sim.base_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(dir.path().join("assertion.xml"), &assertion).unwrap();
    let pipeline = user_pipeline(
        dir.path(),
        &ionapi,
        "saml_bearer",
        "saml_assertion_file = \"assertion.xml\"",
    );
    let result = run(ionflow().arg("run").arg(&pipeline).arg("-vvv")).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(sim.counters().token_requests.saml_bearer, 1);
    assert!(
        !result.all_output().contains("Assertion"),
        "the assertion is never logged"
    );

    // An assertion the portal did not issue is an authentication error.
    std::fs::write(
        dir.path().join("assertion.xml"),
        assertion.replace("ID=\"_", "ID=\"_forged"),
    )
    .unwrap();
    let result = run(ionflow().arg("run").arg(&pipeline)).await;
    assert_eq!(result.code, 3, "{}", result.all_output());
    assert!(
        result.stderr.contains("SAML assertion was refused"),
        "{}",
        result.stderr
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn implicit_grant_url_is_built_from_the_file() {
    let sim = simulator(5).await;
    let (_dir, ionapi) = workdir(&sim);
    web_app_file(&ionapi);
    let runtime = Runtime::new(Arc::new(MemoryTokenStore::new()), None).unwrap();
    let options = ConnectionOptions {
        grant: Some(Grant::AuthorizationCode),
        ..default_options()
    };
    let conn = runtime
        .open("spa", &std::fs::read_to_string(&ionapi).unwrap(), options)
        .await
        .unwrap();
    let url = conn
        .implicit_authorization_url("http://127.0.0.1:9/spa".into(), "xyz".into(), None)
        .await
        .unwrap();
    assert!(
        url.contains("/as/authorization.oauth2?response_type=token&"),
        "{url}"
    );
    let response = ionflow_runtime::tls::client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();
    let location = response.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("http://127.0.0.1:9/spa#access_token="),
        "{location}"
    );
    assert!(location.ends_with("&state=xyz"), "{location}");
    sim.shutdown().await;
}
