//! The token lifecycle: single flight, rotation through the token store,
//! recovery after a crash, revocation, and the second 401.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ionflow_runtime::capabilities::MemoryTokenStore;
use ionflow_runtime::{ConnectorError, Runtime, default_options};

use crate::auth_grants::user_pipeline;
use crate::support::{
    ionflow, issued_tokens, items_pipeline, run, sim_post, simulator, users_me, workdir,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_first_calls_cause_one_token_request() {
    let sim = simulator(10).await;
    let (_dir, ionapi) = workdir(&sim);
    let json = std::fs::read_to_string(&ionapi).unwrap();
    let runtime = Arc::new(Runtime::new(Arc::new(MemoryTokenStore::new()), None).unwrap());

    // Eight connector instances behind one connection...
    let pooled = Arc::new(
        runtime
            .open_pool("pool", &json, default_options(), 8)
            .await
            .unwrap(),
    );
    let calls = (0..64).map(|_| {
        let conn = pooled.clone();
        tokio::spawn(async move { conn.call(users_me()).await.map(|r| r.status) })
    });
    for call in futures::future::join_all(calls).await {
        assert_eq!(call.unwrap().unwrap(), 200);
    }
    assert_eq!(sim.counters().token_requests.password, 1);

    // ...and 64 separate connections on a second runtime's store: still one.
    let fresh = Arc::new(Runtime::new(Arc::new(MemoryTokenStore::new()), None).unwrap());
    let mut connections = Vec::new();
    for i in 0..64 {
        connections.push(Arc::new(
            fresh
                .open(&format!("c{i}"), &json, default_options())
                .await
                .unwrap(),
        ));
    }
    let calls = connections
        .iter()
        .cloned()
        .map(|conn| tokio::spawn(async move { conn.call(users_me()).await.map(|r| r.status) }));
    for call in futures::future::join_all(calls).await {
        assert_eq!(call.unwrap().unwrap(), 200);
    }
    let counters = sim.counters();
    assert_eq!(
        counters.token_requests.password, 2,
        "one per token store: {counters:?}"
    );
    assert_eq!(counters.unauthorized, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_second_401_is_an_error_that_says_what_to_check() {
    let sim = simulator(10).await;
    let (_dir, ionapi) = workdir(&sim);
    let runtime = Runtime::new(Arc::new(MemoryTokenStore::new()), None).unwrap();
    let conn = runtime
        .open(
            "sim",
            &std::fs::read_to_string(&ionapi).unwrap(),
            default_options(),
        )
        .await
        .unwrap();
    sim_post(&sim, "reject-tokens", serde_json::json!({"enabled": true})).await;
    let error = conn.call(users_me()).await.unwrap_err();
    assert!(matches!(error, ConnectorError::Gateway(_)));
    let message = error.to_string();
    assert!(message.contains("refused a renewed token"), "{message}");
    assert!(message.contains("`pu`"), "{message}");
    let counters = sim.counters();
    assert_eq!(counters.unauthorized, 2, "one retry, no more");
    assert_eq!(
        counters.token_requests.password + counters.token_requests.refresh_token,
        2
    );
    sim.shutdown().await;
}

/// The token-store file of the only connection in `state`.
fn store_file(state: &Path) -> PathBuf {
    let tokens = state.join("tokens");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&tokens)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.pop().unwrap()
}

fn stored_refresh_token(state: &Path) -> String {
    let entry: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(store_file(state)).unwrap()).unwrap();
    let tokens: serde_json::Value = serde_json::from_str(entry["value"].as_str().unwrap()).unwrap();
    tokens["refresh_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn three_rotations_then_a_crash_before_saving_is_recovered() {
    let sim = simulator(30).await;
    let (dir, ionapi) = workdir(&sim);
    let state = dir.path().join("state");
    let keepalive = || {
        let mut cmd = ionflow();
        cmd.arg("keepalive")
            .arg(&ionapi)
            .env("IONFLOW_STATE_DIR", &state);
        cmd
    };

    // First keepalive: a backend-service grant; then three rotations.
    for round in 0..4 {
        let result = run(&mut keepalive()).await;
        assert_eq!(result.code, 0, "round {round}: {}", result.all_output());
        let issued = issued_tokens_of(&sim).await;
        assert_eq!(
            stored_refresh_token(&state),
            *issued.last().unwrap(),
            "round {round}: the store holds the newest refresh token"
        );
    }
    let counters = sim.counters();
    assert_eq!(counters.token_requests.password, 1);
    assert_eq!(counters.token_requests.refresh_token, 3);
    assert_eq!(
        counters.refresh_token_reuse, 0,
        "a rotated token is never reused"
    );

    // A process that received a rotated token and died before saving it
    // leaves the previous entry behind: reproduce that state exactly.
    let before = std::fs::read(store_file(&state)).unwrap();
    assert_eq!(run(&mut keepalive()).await.code, 0);
    std::fs::write(store_file(&state), &before).unwrap();

    let pipeline = user_pipeline(
        dir.path(),
        &ionapi,
        "backend_service",
        "revoke_on_exit = false",
    );
    sim_post(&sim, "expire-tokens", serde_json::json!({})).await;
    let result = run(ionflow()
        .arg("run")
        .arg(&pipeline)
        .env("IONFLOW_STATE_DIR", &state))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(
        result
            .stderr
            .contains("starting a new backend-service grant"),
        "the recovery is announced: {}",
        result.stderr
    );
    let counters = sim.counters();
    assert_eq!(
        counters.refresh_token_reuse, 1,
        "the stale token was tried once"
    );
    assert_eq!(
        counters.token_requests.password, 2,
        "and replaced by a new grant"
    );
    sim.shutdown().await;
}

async fn issued_tokens_of(sim: &ionflow_sim::Simulator) -> Vec<String> {
    let body: serde_json::Value = ionflow_runtime::tls::client()
        .get(format!("{}/__sim/tokens", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["refresh_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

#[cfg(unix)]
#[tokio::test]
async fn killing_keepalive_at_any_moment_never_tears_the_store() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    let state = dir.path().join("state");
    let first = run(ionflow()
        .arg("keepalive")
        .arg(&ionapi)
        .env("IONFLOW_STATE_DIR", &state))
    .await;
    assert_eq!(first.code, 0, "{}", first.all_output());
    // Kill at spread-out moments of a run: start-up, token request, save.
    for delay_ms in [5u64, 20, 40, 60, 80, 100, 130, 170] {
        let mut child = ionflow()
            .arg("keepalive")
            .arg(&ionapi)
            .env("IONFLOW_STATE_DIR", &state)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let _ = child.start_kill();
        let _ = child.wait().await;
        let text = std::fs::read_to_string(store_file(&state)).unwrap();
        let entry: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("torn store after a kill at {delay_ms} ms: {e}"));
        assert!(entry["value"].is_string());
    }
    // Whatever was lost with a killed process, the next run recovers.
    let last = run(ionflow()
        .arg("keepalive")
        .arg(&ionapi)
        .env("IONFLOW_STATE_DIR", &state))
    .await;
    assert_eq!(last.code, 0, "{}", last.all_output());
    sim.shutdown().await;
}

/// By default a run keeps its grant in the token store, and the next run
/// (a cron job's next tick) uses it instead of asking for a new one.
#[tokio::test]
async fn by_default_a_run_keeps_its_grant_for_the_next_run() {
    let sim = simulator(40).await;
    let (dir, ionapi) = workdir(&sim);
    let pipeline = items_pipeline(dir.path(), &ionapi, 10);
    for round in 0..3 {
        let result = run(ionflow().arg("run").arg(&pipeline)).await;
        assert_eq!(result.code, 0, "round {round}: {}", result.all_output());
    }
    let counters = sim.counters();
    assert_eq!(counters.token_requests.password, 1, "{counters:?}");
    assert_eq!(counters.revocations, 0, "{counters:?}");
    assert_eq!(counters.unauthorized, 0, "{counters:?}");
    sim.shutdown().await;
}

/// With `revoke_on_exit = true` (changed from the default in issue 15: a
/// run now keeps its grant unless asked), the run that holds the grant
/// last revokes it at its end.
#[tokio::test]
async fn a_run_revokes_its_refresh_token_at_the_end() {
    let sim = simulator(40).await;
    let (dir, ionapi) = workdir(&sim);
    let pipeline = items_pipeline(dir.path(), &ionapi, 10);
    crate::support::revoking_on_exit(&pipeline);
    let result = run(ionflow().arg("run").arg(&pipeline)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(sim.counters().revocations, 1);

    // The revoked grant's access token no longer opens the gateway.
    let access = {
        let body: serde_json::Value = ionflow_runtime::tls::client()
            .get(format!("{}/__sim/tokens", sim.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["access_tokens"][0].as_str().unwrap().to_owned()
    };
    let status = ionflow_runtime::tls::client()
        .get(format!(
            "{}/{}/ifsservice/usermgt/v2/users/me",
            sim.base_url(),
            "ACME_TST"
        ))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    let _ = issued_tokens(&sim).await;
    sim.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_during_a_run_stops_it_and_revokes() {
    let sim = simulator(50_000).await;
    let (dir, ionapi) = workdir(&sim);
    // One record per call: 50,000 calls take seconds, long enough to interrupt.
    let pipeline = items_pipeline(dir.path(), &ionapi, 1);
    crate::support::without_rate_limit(&pipeline);
    // The grant ends with the run only when asked (the default keeps it).
    crate::support::revoking_on_exit(&pipeline);
    let child = ionflow()
        .arg("run")
        .arg(&pipeline)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    // Wait until the run is under way.
    for _ in 0..100 {
        if sim.counters().api_calls > 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crate::support::sigterm(pid).await;
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(
        sim.counters().revocations,
        1,
        "the grant ended with the run"
    );
    assert!(
        !dir.path().join("out.jsonl").exists() && !dir.path().join("out.jsonl.partial").exists(),
        "an interrupted run completes no output file"
    );
    sim.shutdown().await;
}
