//! Several `ionflow serve` workers on one PostgreSQL store: each tick runs
//! once, a refresh token is spent once, and a dead worker's lease passes on.
//! Each worker gets a state folder of its own, as on separate machines, so
//! only the database keeps them apart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ionflow::store::{PostgresStorage, Storage, StoreSetting};
use ionflow_runtime::{Runtime, default_options};

use crate::postgres::{TestDb, report, test_database};
use crate::support::{
    assert_no_secret, daemon_timing, example_project, ionflow, issued_tokens, run, sigterm,
    sim_post, simulator, users_me, workdir,
};

/// A pipeline reading the catalogue into `NAME.jsonl`, on a connection that
/// keeps its grant (`revoke_on_exit = false`), so workers share one token.
fn pipeline(dir: &Path, name: &str, ionapi: &Path, schedule: &str, top: &str, page_size: u32) {
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            r#"schedule = "{schedule}"
{top}

[connections.m3]
ionapi_file = "{}"
revoke_on_exit = false
rate_limit = {{ requests = 1000000, window_secs = 1 }}

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
}

fn worker(pipelines: &Path, id: &str, db: &TestDb, lease_secs: &str) -> tokio::process::Child {
    let state = pipelines.parent().unwrap().join(format!("state-{id}"));
    ionflow()
        .arg("serve")
        .arg(pipelines)
        .args(["--log-format", "json", "--lease-secs", lease_secs])
        .env("IONFLOW_STORE", &db.url)
        .env("IONFLOW_WORKER_ID", id)
        .env("IONFLOW_STATE_DIR", state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

async fn stop(child: tokio::process::Child) -> String {
    sigterm(child.id().unwrap()).await;
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    stderr
}

/// The worker holding the running tick's lease, and its attempt (none
/// before the first worker has created the tables).
async fn holder(client: &tokio_postgres::Client) -> Option<(String, i32)> {
    client
        .query_opt(
            "SELECT worker, attempts FROM ionflow_runs WHERE state = 'running'",
            &[],
        )
        .await
        .ok()
        .flatten()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1)))
}

fn events(stderr: &str, name: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["fields"]["event"] == name)
        .map(|e| e["fields"].clone())
        .collect()
}

async fn status_json(db: &TestDb) -> serde_json::Value {
    let result = run(ionflow()
        .args(["status", "--json"])
        .env("IONFLOW_STORE", &db.url))
    .await;
    assert_eq!(result.code, 0, "{}", result.stderr);
    serde_json::from_str(&result.stdout).unwrap()
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_run_each_tick_exactly_once() {
    let _timing = daemon_timing().await;
    let Some(db) = test_database("each_tick_once").await else {
        return;
    };
    let sim = simulator(20).await;
    let (dir, ionapi) = workdir(&sim);
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    for name in ["alpha", "beta"] {
        pipeline(&pipelines, name, &ionapi, "* * * * * *", "", 10);
    }
    // Three workers start together: migrations run once under the advisory lock.
    let workers: Vec<_> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| (*id, worker(&pipelines, id, &db, "2")))
        .collect();
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let status = status_json(&db).await;
    let mut logs = Vec::new();
    for (id, child) in workers {
        logs.push((id, stop(child).await));
    }

    let mut runs: Vec<(String, String, String)> = Vec::new();
    // The workers are stopped one after the other while the ticks go on, so
    // the signal can land while a worker's run is going: that run stops at a
    // page boundary and says so, after the worker said it is stopping. No
    // other run may fail.
    let mut interrupted = 0;
    for (id, log) in &logs {
        for e in events(log, "run_started") {
            assert_eq!(e["worker"], *id);
            assert_eq!(e["attempt"], 1, "no run was retried: {e}");
            runs.push((
                e["pipeline"].as_str().unwrap().to_owned(),
                e["tick"].as_str().unwrap().to_owned(),
                id.to_string(),
            ));
        }
        let stopping_at = log
            .lines()
            .position(|l| l.contains(r#""event":"shutting_down""#));
        for (line, failed) in log.lines().enumerate().filter(|(_, l)| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|e| e["fields"]["event"] == "run_failed")
        }) {
            assert!(
                failed.contains(r#""error_kind":"interrupted""#)
                    && stopping_at.is_some_and(|at| at < line),
                "only a run cut short by the stop may fail: {log}"
            );
            interrupted += 1;
        }
        assert_no_secret(log, &[db.password()], "a worker's log");
    }
    let mut ticks = runs.clone();
    ticks.sort();
    ticks.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    assert_eq!(ticks.len(), runs.len(), "a tick ran twice: {runs:?}");
    for name in ["alpha", "beta"] {
        let mut times: Vec<chrono::DateTime<chrono::Utc>> = runs
            .iter()
            .filter(|r| r.0 == name)
            .map(|r| r.1.parse().unwrap())
            .collect();
        times.sort();
        assert!(
            times.len() >= 4,
            "{name}: about five ticks in 5.5 s: {times:?}"
        );
        for pair in times.windows(2) {
            assert_eq!(
                (pair[1] - pair[0]).num_seconds(),
                1,
                "{name}: no tick skipped: {times:?}"
            );
        }
    }
    let workers_used: std::collections::BTreeSet<_> = runs.iter().map(|r| r.2.clone()).collect();
    assert!(
        workers_used.len() >= 2,
        "ticks spread over the workers: {runs:?}"
    );

    // The database agrees: one row per run, every one succeeded on attempt 1.
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE state = 'succeeded' AND attempts = 1)
             FROM ionflow_runs",
            &[],
        )
        .await
        .unwrap();
    let (rows, succeeded): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(rows as usize, runs.len());
    assert_eq!(succeeded as usize, runs.len() - interrupted);
    let migrations: i64 = client
        .query_one("SELECT count(*) FROM ionflow_schema_version", &[])
        .await
        .unwrap()
        .get(0);
    // 0001 (tokens, state, schedules), 0002 (grant holders), 0003 (rate budget).
    assert_eq!(migrations, 3, "each migration applied once");

    // One access token, obtained by one worker, served every run of all three.
    let counters = sim.counters();
    assert_eq!(counters.token_requests.password, 1, "{counters:?}");
    assert_eq!(counters.refresh_token_reuse, 0);
    let calls = counters.api_calls as usize;
    assert!(
        (runs.len() - interrupted) * 3 <= calls && calls <= runs.len() * 3,
        "3 pages per finished run: {calls} calls, {} runs, {interrupted} cut short",
        runs.len()
    );

    let listed: Vec<&str> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pipeline"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["alpha", "beta"], "{status}");
    for entry in status.as_array().unwrap() {
        assert!(entry["runs"].as_i64().unwrap() >= 3, "{status}");
        assert!(entry["next_run"].is_string(), "{status}");
        assert_eq!(entry["last_state"], "succeeded", "{status}");
    }
    report(&format!(
        "figures: {} ticks over 2 pipelines, {} runs ({interrupted} cut short by the stop), \
         1 run per tick, workers {:?}, password grants {}, refresh-token reuse {}",
        ticks.len(),
        runs.len(),
        workers_used,
        counters.token_requests.password,
        counters.refresh_token_reuse
    ));
    sim.shutdown().await;
    db.drop().await;
}

/// Three workers serving one pipeline every second keep one grant between
/// runs, and only the last of them to stop revokes it: with
/// `revoke_on_exit` unset, a worker revokes at shutdown the grants it holds
/// last, never one another worker still holds.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_keep_one_grant_and_the_last_to_stop_revokes_it() {
    let _timing = daemon_timing().await;
    let Some(db) = test_database("last_revokes").await else {
        return;
    };
    let sim = simulator(20).await;
    let (dir, ionapi) = workdir(&sim);
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    pipeline(&pipelines, "every_second", &ionapi, "* * * * * *", "", 10);
    let file = pipelines.join("every_second.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("revoke_on_exit = false\n", "")).unwrap();
    let workers: Vec<_> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| (*id, worker(&pipelines, id, &db, "2")))
        .collect();
    let client = db.client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let succeeded: i64 = client
            .query_one(
                "SELECT count(*) FROM ionflow_runs WHERE state = 'succeeded'",
                &[],
            )
            .await
            .map_or(0, |r| r.get(0));
        if succeeded >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "five runs did not end in 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let holders: i64 = client
        .query_one("SELECT count(*) FROM ionflow_grant_holders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(holders, 3, "each worker holds the grant");

    let mut logs = Vec::new();
    let mut revocations = Vec::new();
    for (id, child) in workers {
        logs.push((id, stop(child).await));
        revocations.push(sim.counters().revocations);
    }
    assert_eq!(
        revocations,
        [0, 0, 1],
        "revoked once, when the last worker stopped"
    );
    let revoked_by: Vec<&str> = logs
        .iter()
        .filter(|(_, log)| !events(log, "grant_revoked").is_empty())
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(revoked_by, ["w3"]);
    let runs: usize = logs
        .iter()
        .map(|(_, log)| events(log, "run_finished").len())
        .sum();
    assert!(runs >= 5, "{runs} runs");
    for (_, log) in &logs {
        assert_no_secret(log, &[db.password()], "a worker's log");
    }
    let counters = sim.counters();
    assert_eq!(counters.token_requests.password, 1, "{counters:?}");
    assert_eq!(counters.unauthorized, 0, "{counters:?}");
    assert_eq!(counters.refresh_token_reuse, 0, "{counters:?}");
    for table in ["ionflow_tokens", "ionflow_grant_holders"] {
        let rows: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 0, "{table} is empty after the last worker");
    }
    report(&format!(
        "figures: 3 workers, a pipeline every second: {runs} runs, {} password grant, \
         revocations after each stop {revocations:?}",
        counters.token_requests.password
    ));
    sim.shutdown().await;
    db.drop().await;
}

/// A process killed with SIGKILL leaves its holder row behind; the row
/// lapses after `lease_secs` by the database's clock, and from then on the
/// process is not counted.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_processs_hold_lapses_after_its_lease() {
    let Some(db) = test_database("hold_lapses").await else {
        return;
    };
    let sim = simulator(200_000).await;
    let (dir, ionapi) = workdir(&sim);
    let config = dir.path().join("ionflow.toml");
    std::fs::write(&config, "lease_secs = 2\n").unwrap();
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    for (name, page_size) in [("slow", 1), ("quick", 10)] {
        pipeline(&pipelines, name, &ionapi, "0 0 1 1 *", "", page_size);
        let file = pipelines.join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&file)
            .unwrap()
            .replace("revoke_on_exit = false", "revoke_on_exit = true")
            .replace("[source]", "[source]\nmax_records = 100000");
        std::fs::write(&file, text).unwrap();
    }
    let quick = pipelines.join("quick.toml");
    std::fs::write(
        &quick,
        std::fs::read_to_string(&quick)
            .unwrap()
            .replace("max_records = 100000", "max_records = 20"),
    )
    .unwrap();
    let run_on = |pipeline: &Path, machine: &str| {
        let mut cmd = ionflow();
        cmd.arg("run")
            .arg(pipeline)
            .env("IONFLOW_STORE", &db.url)
            .env("IONFLOW_CONFIG", &config)
            .env("IONFLOW_STATE_DIR", dir.path().join(machine));
        cmd
    };
    let mut holder = run_on(&pipelines.join("slow.toml"), "machine-a")
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
    let result = run(&mut run_on(&quick, "machine-b")).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(
        sim.counters().revocations,
        0,
        "the slow run still holds the grant: {}",
        result.stderr
    );

    holder.start_kill().unwrap();
    holder.wait().await.unwrap();
    let killed = Instant::now();
    let client = db.client().await;
    let lapsed = loop {
        let live: i64 = client
            .query_one(
                "SELECT count(*) FROM ionflow_grant_holders WHERE expires_at > now()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if live == 0 {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the hold never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let result = run(&mut run_on(&quick, "machine-b")).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let counters = sim.counters();
    assert_eq!(counters.revocations, 1, "{}", result.stderr);
    assert_eq!(counters.token_requests.password, 1, "{counters:?}");
    assert_eq!(counters.unauthorized, 0, "{counters:?}");
    let rows: i64 = client
        .query_one("SELECT count(*) FROM ionflow_tokens", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    report(&format!(
        "figures: the hold of a killed process lapsed {:.2} s after SIGKILL (lease_secs = 2); \
         the next run then revoked as the last holder",
        lapsed.as_secs_f64()
    ));
    sim.shutdown().await;
    db.drop().await;
}

/// Three workers, each with a pool of connector instances on its own
/// database session; every round the simulator expires the access token and
/// twelve calls at once meet the 401. Exactly one of them spends the refresh
/// token; the rest read the rotated set.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_rotations_under_contention_never_reuse_a_refresh_token() {
    let Some(db) = test_database("twenty_rotations").await else {
        return;
    };
    let sim = simulator(10).await;
    let (_dir, ionapi) = workdir(&sim);
    let json = std::fs::read_to_string(&ionapi).unwrap();
    let StoreSetting::Postgres(url) = StoreSetting::parse(&db.url, "test").unwrap() else {
        unreachable!()
    };
    let mut pools = Vec::new();
    for w in 0..3 {
        let storage = PostgresStorage::connect(&url, &format!("w{w}"))
            .await
            .unwrap();
        let runtime = Runtime::new(storage.tokens(), None).unwrap();
        pools.push(Arc::new(
            runtime
                .open_pool(&format!("w{w}"), &json, default_options(), 4)
                .await
                .unwrap(),
        ));
    }
    let round = |pools: &Vec<Arc<ionflow_runtime::Connection>>| {
        let calls: Vec<_> = (0..12)
            .map(|i| {
                let conn = pools[i % 3].clone();
                tokio::spawn(async move { conn.call(users_me()).await.map(|r| r.status) })
            })
            .collect();
        async move {
            for call in futures::future::join_all(calls).await {
                assert_eq!(call.unwrap().unwrap(), 200);
            }
        }
    };
    round(&pools).await;
    for _ in 0..20 {
        sim_post(&sim, "expire-tokens", serde_json::json!({})).await;
        round(&pools).await;
    }
    let counters = sim.counters();
    assert_eq!(counters.token_requests.password, 1, "{counters:?}");
    assert_eq!(counters.token_requests.refresh_token, 20, "{counters:?}");
    assert_eq!(counters.refresh_token_reuse, 0, "{counters:?}");
    assert_eq!(counters.token_errors, 0, "{counters:?}");
    report(&format!(
        "figures: 20 rounds x 12 concurrent calls on 3 workers: {} refreshes, reuse {}, \
         {} calls answered 401 before the renewal",
        counters.token_requests.refresh_token, counters.refresh_token_reuse, counters.unauthorized
    ));
    sim.shutdown().await;
    db.drop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_lease_passes_to_another_worker() {
    let _timing = daemon_timing().await;
    let Some(db) = test_database("lease_passes").await else {
        return;
    };
    // 200,000 pages of one record: the run outlasts the test.
    let sim = simulator(200_000).await;
    let (dir, ionapi) = workdir(&sim);
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    // One tick a minute, a few seconds from now, retried if its worker dies.
    let second = (chrono::Utc::now() + chrono::Duration::seconds(4)).format("%S");
    pipeline(
        &pipelines,
        "slow",
        &ionapi,
        &format!("{second} * * * * *"),
        "missed_runs = \"run_once\"",
        1,
    );
    let mut workers: Vec<_> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| (id.to_string(), Some(worker(&pipelines, id, &db, "2"))))
        .collect();
    let client = db.client().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        if let Some(found) = holder(&client).await {
            break found;
        }
        assert!(Instant::now() < deadline, "no worker claimed the tick");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(first.1, 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let status = status_json(&db).await;
    assert_eq!(status[0]["lease_holder"], first.0.as_str(), "{status}");
    // `ionflow run` on another machine (a CronJob) respects the lease too.
    let result = run(ionflow()
        .arg("run")
        .arg(pipelines.join("slow.toml"))
        .env("IONFLOW_STORE", &db.url)
        .env("IONFLOW_STATE_DIR", dir.path().join("state-cron")))
    .await;
    assert_eq!(result.code, 75, "{}", result.all_output());
    assert!(
        result.stderr.contains(&format!("(worker {})", first.0)),
        "{}",
        result.stderr
    );
    assert_no_secret(
        &result.all_output(),
        &[db.password()],
        "ionflow run's output",
    );

    // SIGKILL: no shutdown, no goodbye; the lease simply stops being renewed.
    let victim = workers.iter_mut().find(|(id, _)| *id == first.0).unwrap();
    let mut child = victim.1.take().unwrap();
    child.start_kill().unwrap();
    let killed = Instant::now();
    child.wait().await.unwrap();
    let deadline = killed + Duration::from_secs(15);
    let second_holder = loop {
        if let Some(found) = holder(&client).await
            && found.0 != first.0
        {
            break found;
        }
        assert!(Instant::now() < deadline, "nobody took the lease over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let handover = killed.elapsed();
    assert_eq!(second_holder.1, 2, "the retry is attempt 2");
    let status = status_json(&db).await;
    assert_eq!(
        status[0]["lease_holder"],
        second_holder.0.as_str(),
        "{status}"
    );

    let mut logs = Vec::new();
    for (id, child) in workers {
        if let Some(child) = child {
            logs.push((id, stop(child).await));
        }
    }
    let taken: Vec<_> = logs
        .iter()
        .flat_map(|(_, log)| events(log, "lease_taken_over"))
        .collect();
    assert_eq!(taken.len(), 1, "{logs:?}");
    assert_eq!(taken[0]["previous_worker"], first.0.as_str());
    let started: usize = logs
        .iter()
        .map(|(_, l)| events(l, "run_started").len())
        .sum();
    assert_eq!(started, 1, "only the retry started among the survivors");
    assert!(
        handover < Duration::from_secs(5),
        "a 2 s lease passes on within a lease and a look: {handover:?}"
    );
    report(&format!(
        "figures: lease of {} taken over by {} {:.2} s after SIGKILL (lease_secs = 2)",
        first.0,
        second_holder.0,
        handover.as_secs_f64()
    ));
    sim.shutdown().await;
    db.drop().await;
}

#[tokio::test]
async fn token_store_rows_are_compare_and_swap_and_leases_expire() {
    use ionflow_runtime::capabilities::token_store::StoreError;
    let Some(db) = test_database("token_rows").await else {
        return;
    };
    let StoreSetting::Postgres(url) = StoreSetting::parse(&db.url, "test").unwrap() else {
        unreachable!()
    };
    // Two workers: two sessions on one database.
    let a = PostgresStorage::connect(&url, "a").await.unwrap().tokens();
    let b = PostgresStorage::connect(&url, "b").await.unwrap().tokens();
    let v1 = a.save("k", 0, Some("one".into())).await.unwrap();
    assert!(matches!(
        b.save("k", 0, Some("two".into())).await,
        Err(StoreError::Conflict(Some(_)))
    ));
    let v2 = b.save("k", v1, Some("two".into())).await.unwrap();
    assert!(v2 > v1);
    assert_eq!(a.load("k").await.unwrap().unwrap().value, "two");
    assert!(matches!(
        a.save("k", v1, None).await,
        Err(StoreError::Conflict(_))
    ));
    b.save("k", v2, None).await.unwrap();
    assert!(a.load("k").await.unwrap().is_none());
    let v3 = a.save("k", 0, Some("three".into())).await.unwrap();
    assert!(v3 > v2, "versions never repeat across a delete");

    let lease = a.lock("k", 10_000, 100).await.unwrap();
    assert!(matches!(
        b.lock("k", 10_000, 80).await,
        Err(StoreError::LockTimeout)
    ));
    a.unlock("k", lease).await;
    let lease_b = b.lock("k", 300, 100).await.unwrap();
    // b "dies" holding the lease: a gets it once the ttl has passed.
    let waited = Instant::now();
    let lease_a = a.lock("k", 1_000, 2_000).await.unwrap();
    assert!(waited.elapsed() >= Duration::from_millis(200));
    assert_ne!(lease_a, lease_b);
    b.unlock("k", lease_b).await; // stale: ignored
    assert!(matches!(
        b.lock("k", 1_000, 50).await,
        Err(StoreError::LockTimeout)
    ));
    db.drop().await;
}

#[tokio::test]
async fn store_settings_that_cannot_work_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: exit 5 (unavailable), the password masked.
    let result = run(ionflow()
        .arg("status")
        .env("IONFLOW_STATE_DIR", dir.path())
        .env(
            "IONFLOW_STORE",
            "postgres://ionflow:hunter2-secret@127.0.0.1:1/ionflow",
        ))
    .await;
    assert_eq!(result.code, 5, "{}", result.stderr);
    assert!(
        result
            .stderr
            .contains("postgres://ionflow:****@127.0.0.1:1/ionflow"),
        "{}",
        result.stderr
    );
    assert!(
        result.stderr.contains("check that the server runs"),
        "{}",
        result.stderr
    );
    assert!(!result.all_output().contains("hunter2-secret"));

    let result = run(ionflow()
        .arg("status")
        .env("IONFLOW_STATE_DIR", dir.path())
        .env("IONFLOW_STORE", "redis://u:hunter2-secret@127.0.0.1/0"))
    .await;
    assert_eq!(result.code, 2, "{}", result.stderr);
    assert!(result.stderr.contains("IONFLOW_STORE"), "{}", result.stderr);
    assert!(!result.all_output().contains("hunter2-secret"));

    let config: PathBuf = dir.path().join("ionflow.toml");
    std::fs::write(&config, "store = \"files\"\nlease_seconds = 5\n").unwrap();
    let result = run(ionflow()
        .arg("status")
        .env("IONFLOW_STATE_DIR", dir.path())
        .env_remove("IONFLOW_STORE")
        .env("IONFLOW_CONFIG", &config))
    .await;
    assert_eq!(result.code, 2, "{}", result.stderr);
    assert!(
        result.stderr.contains("ionflow.toml") && result.stderr.contains("lease_seconds"),
        "{}",
        result.stderr
    );
}

#[tokio::test]
async fn watermarks_live_in_the_shared_store_for_every_worker() {
    let Some(db) = test_database("watermarks").await else {
        return;
    };
    let sim = simulator(250).await;
    let project = example_project(&sim, &["ido-items-to-jsonl"]);
    let pipeline = project.path().join("pipelines/ido-items-to-jsonl.toml");
    // Two machines: two state folders, one database.
    let run_on = |machine: &str| {
        let mut cmd = ionflow();
        cmd.arg("run")
            .arg(&pipeline)
            .arg("--json")
            .env("INFOR_ENV", "dev")
            .env("IONFLOW_STORE", &db.url)
            .env("IONFLOW_STATE_DIR", project.path().join(machine));
        cmd
    };
    // At trace level, with every log line: no token and no password shows.
    let first = run(run_on("machine-a").arg("-vvv")).await;
    assert_eq!(first.code, 0, "{}", first.all_output());
    let summary: serde_json::Value = serde_json::from_str(first.stdout.trim()).unwrap();
    assert_eq!(summary["records_in"], 250);
    assert!(
        summary["state_saved"]
            .as_str()
            .unwrap()
            .contains("PostgreSQL"),
        "{summary}"
    );
    let mut secrets = issued_tokens(&sim).await;
    secrets.push(db.password());
    assert_no_secret(&first.all_output(), &secrets, "the run's trace output");
    assert!(first.stderr.contains("TRACE"), "trace logging was on");
    assert!(
        !project.path().join("pipelines/.ionflow/state").exists(),
        "no state file beside the pipeline"
    );

    let second = run(&mut run_on("machine-b")).await;
    assert_eq!(second.code, 0, "{}", second.all_output());
    let summary: serde_json::Value = serde_json::from_str(second.stdout.trim()).unwrap();
    assert_eq!(
        summary["records_in"], 0,
        "machine b starts from a's watermark"
    );

    let client = db.client().await;
    let saved: String = client
        .query_one(
            "SELECT value FROM ionflow_pipeline_state WHERE key = 'ido-items-to-jsonl'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(saved.contains("\"since\""), "{saved}");
    sim.shutdown().await;
    db.drop().await;
}
