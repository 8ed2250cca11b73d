//! The ownership of a grant on the file store, with real `ionflow run`
//! processes: concurrent runs share one grant and none revokes it under
//! another, a revocation that fails leaves no token behind, and a killed
//! process stops holding. (Workers on PostgreSQL: `workers.rs`.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::postgres::report;
use crate::support::{
    assert_no_secret, file_secrets, ionflow, issued_tokens, run, sim_post, simulator, workdir,
};

/// `NAME.toml`: every catalogue item into `NAME.jsonl`, through one
/// connection to `ionapi` with `connection_extra` among its keys.
fn items(dir: &Path, name: &str, ionapi: &Path, page_size: u32, connection_extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[connections.m3]
ionapi_file = "{}"
rate_limit = {{ requests = 1000000, window_secs = 1 }}
{connection_extra}

[source]
kind = "m3_list"
connection = "m3"
program = "MMS200MI"
transaction = "LstItmByItm"
key_field = "ITNO"
page_size = {page_size}

[[sinks]]
kind = "file"
path = "{name}.jsonl"
"#,
            ionapi.display()
        ),
    )
    .unwrap();
    path
}

fn run_in(state: &Path, pipeline: &Path) -> tokio::process::Command {
    let mut cmd = ionflow();
    cmd.arg("run").arg(pipeline).env("IONFLOW_STATE_DIR", state);
    cmd
}

/// The token-store entries (one file per grant) under `state`.
fn stored_grants(state: &Path) -> usize {
    std::fs::read_dir(state.join("tokens")).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .count()
    })
}

/// 32 processes at once, each running its own pipeline file on one
/// `.ionapi` file; returns how many exited 0, and every output.
async fn thirty_two_runs(dir: &Path, ionapi: &Path, connection_extra: &str) -> (usize, String) {
    let state = dir.join("state");
    let pipelines: Vec<PathBuf> = (0..32)
        .map(|i| items(dir, &format!("p{i:02}"), ionapi, 10, connection_extra))
        .collect();
    let runs = futures::future::join_all(
        pipelines
            .iter()
            .map(|p| async { run(&mut run_in(&state, p)).await }),
    )
    .await;
    let succeeded = runs.iter().filter(|r| r.code == 0).count();
    let failures: Vec<String> = runs
        .iter()
        .filter(|r| r.code != 0)
        .map(|r| format!("exit {}: {}", r.code, r.stderr))
        .collect();
    assert!(
        failures.is_empty(),
        "{} runs failed: {failures:#?}",
        failures.len()
    );
    let output = runs
        .iter()
        .map(|r| r.all_output())
        .collect::<Vec<_>>()
        .join("\n");
    (succeeded, output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_runs_share_one_grant_and_keep_it_for_the_next() {
    let sim = simulator(20).await;
    let (dir, ionapi) = workdir(&sim);
    let (succeeded, output) = thirty_two_runs(dir.path(), &ionapi, "").await;
    let counters = sim.counters();
    assert_eq!(succeeded, 32);
    assert_eq!(counters.token_requests.password, 1, "{counters:?}");
    assert_eq!(counters.token_requests.refresh_token, 0, "{counters:?}");
    assert_eq!(
        counters.revocations, 0,
        "a run keeps the grant for the next one by default"
    );
    assert_eq!(counters.unauthorized, 0, "no call met a revoked token");
    assert_eq!(stored_grants(&dir.path().join("state")), 1);

    // The next run, as cron starts it, reuses the kept grant.
    let next = run(&mut run_in(
        &dir.path().join("state"),
        &dir.path().join("p00.toml"),
    ))
    .await;
    assert_eq!(next.code, 0, "{}", next.all_output());
    assert_eq!(sim.counters().token_requests.password, 1);

    let mut secrets = file_secrets(&ionapi);
    secrets.extend(issued_tokens(&sim).await);
    assert_no_secret(&output, &secrets, "the runs' output");
    report(&format!(
        "figures: 32 concurrent runs on one .ionapi file (file store): {succeeded} exit 0, \
         {} password grant, {} revocations, {} answered 401; a 33rd run reused the grant",
        counters.token_requests.password, counters.revocations, counters.unauthorized
    ));
    sim.shutdown().await;
}

/// With `revoke_on_exit = true`, each run asks for the grant to end with
/// it: only the last holder does so, and never under a running process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_runs_that_revoke_on_exit_never_revoke_under_each_other() {
    let sim = simulator(20).await;
    let (dir, ionapi) = workdir(&sim);
    // Slow first answers, so that the runs overlap as cron jobs that start
    // together do; a run that starts after all others ended needs a new grant.
    sim_post(
        &sim,
        "faults",
        json!({"path_prefix": "M3/", "count": 32, "delay_ms": 2000}),
    )
    .await;
    let (succeeded, _) = thirty_two_runs(dir.path(), &ionapi, "revoke_on_exit = true").await;
    let counters = sim.counters();
    assert_eq!(succeeded, 32);
    assert_eq!(
        counters.unauthorized, 0,
        "no run met a token revoked under it: {counters:?}"
    );
    assert_eq!(counters.refresh_token_reuse, 0, "{counters:?}");
    assert!(counters.token_requests.password >= 1);
    assert_eq!(
        counters.revocations, counters.token_requests.password,
        "each grant revoked once, by its last holder: {counters:?}"
    );
    assert_eq!(stored_grants(&dir.path().join("state")), 0);
    report(&format!(
        "figures: 32 concurrent runs with revoke_on_exit = true: {succeeded} exit 0, {} \
         password grants, {} revocations, {} answered 401",
        counters.token_requests.password, counters.revocations, counters.unauthorized
    ));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_revocation_that_fails_leaves_no_token_the_next_run_trusts() {
    let sim = simulator(20).await;
    let (dir, ionapi) = workdir(&sim);
    let state = dir.path().join("state");
    let pipeline = items(
        dir.path(),
        "items",
        &ionapi,
        10,
        "revoke_on_exit = true\ntimeout_secs = 1",
    );
    let mut outputs = Vec::new();
    // A revocation the endpoint carries out after the client gave up
    // (timeout), then one it refuses (503).
    let faults = [
        json!({"endpoint": "revocation", "count": 1, "delay_ms": 2500}),
        json!({"endpoint": "revocation", "count": 1, "status": 503}),
    ];
    for (round, fault) in faults.into_iter().enumerate() {
        let revoked_before = sim.counters().revocations;
        sim_post(&sim, "faults", fault).await;
        let result = run(&mut run_in(&state, &pipeline)).await;
        assert_eq!(result.code, 0, "round {round}: {}", result.all_output());
        assert!(
            result.stderr.contains("could not revoke the grant")
                && result.stderr.contains("stored tokens are deleted"),
            "round {round}: {}",
            result.stderr
        );
        assert_eq!(stored_grants(&state), 0, "round {round}: nothing stored");
        outputs.push(result.all_output());
        if round == 0 {
            // The late revocation lands: the token the store held is dead.
            for _ in 0..100 {
                if sim.counters().revocations > revoked_before {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(sim.counters().revocations, revoked_before + 1);
        }
        // The next run starts from a new grant instead of a token in doubt.
        let next = run(&mut run_in(&state, &pipeline)).await;
        assert_eq!(next.code, 0, "round {round}: {}", next.all_output());
        let counters = sim.counters();
        assert_eq!(
            counters.unauthorized, 0,
            "round {round}: no call with a revoked token: {counters:?}"
        );
        assert_eq!(counters.refresh_token_reuse, 0, "{counters:?}");
        outputs.push(next.all_output());
    }
    let counters = sim.counters();
    assert_eq!(counters.faults_injected, 2);
    assert_eq!(counters.token_requests.password, 4, "{counters:?}");
    let mut secrets = file_secrets(&ionapi);
    secrets.extend(issued_tokens(&sim).await);
    assert_no_secret(&outputs.join("\n"), &secrets, "the runs' output");
    sim.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_killed_process_stops_holding_its_grant() {
    let sim = simulator(200_000).await;
    let (dir, ionapi) = workdir(&sim);
    let state = dir.path().join("state");
    // One record per call: this run lasts far longer than the test.
    let slow = items(dir.path(), "slow", &ionapi, 1, "revoke_on_exit = true");
    let quick = {
        let quick = items(dir.path(), "quick", &ionapi, 100, "revoke_on_exit = true");
        let text = std::fs::read_to_string(&quick).unwrap();
        std::fs::write(
            &quick,
            text.replace("[source]", "[source]\nmax_records = 100"),
        )
        .unwrap();
        quick
    };
    let mut holder = run_in(&state, &slow)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if sim.counters().api_calls > 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sim.counters().api_calls > 5, "the slow run got under way");

    // While the slow run lives, the quick one is not the last holder.
    let result = run(&mut run_in(&state, &quick)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(sim.counters().revocations, 0, "{}", result.stderr);
    assert_eq!(stored_grants(&state), 1);
    let calls = sim.counters().api_calls;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        sim.counters().api_calls > calls,
        "the slow run goes on with the grant"
    );

    // SIGKILL: no goodbye. Its hold goes with the process.
    holder.start_kill().unwrap();
    holder.wait().await.unwrap();
    let result = run(&mut run_in(&state, &quick)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let counters = sim.counters();
    assert_eq!(
        counters.revocations, 1,
        "the quick run was the last holder: {}",
        result.stderr
    );
    assert_eq!(counters.token_requests.password, 1, "{counters:?}");
    assert_eq!(counters.unauthorized, 0, "{counters:?}");
    assert_eq!(stored_grants(&state), 0);
    sim.shutdown().await;
}
