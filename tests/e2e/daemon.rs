//! `ionflow serve`, `ionflow schedule` and the run lock.

use std::path::Path;
use std::time::Duration;

use crate::support::{
    daemon_timing, ionflow, items_pipeline, run, sigterm, simulator, without_rate_limit, workdir,
};

fn scheduled(dir: &Path, ionapi: &Path, page_size: u32, schedule: &str) {
    let file = items_pipeline(dir, ionapi, page_size);
    without_rate_limit(&file);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("schedule = \"{schedule}\"\n{text}")).unwrap();
}

fn events(stderr: &str, name: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["fields"]["event"] == name)
        .collect()
}

#[cfg(unix)]
#[tokio::test]
async fn a_seconds_schedule_fires_once_per_second_and_reports_status() {
    let _timing = daemon_timing().await;
    let sim = simulator(20).await;
    let (dir, ionapi) = workdir(&sim);
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    scheduled(&pipelines, &ionapi, 10, "* * * * * *");
    let status_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = ionflow()
        .arg("serve")
        .arg(&pipelines)
        .args(["--log-format", "json", "--status-addr"])
        .arg(format!("127.0.0.1:{status_port}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Until three runs have ended: on a loaded machine the daemon can take
    // a second or more to start, so a fixed wait made this test flaky.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let answer = ionflow_runtime::tls::client()
            .get(format!("http://127.0.0.1:{status_port}/status"))
            .send()
            .await;
        if let Ok(answer) = answer {
            let status: serde_json::Value = answer.json().await.unwrap();
            if status["pipelines"][0]["runs"].as_u64().unwrap_or(0) >= 3
                || std::time::Instant::now() > deadline
            {
                break status;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the status endpoint never answered"
        );
    };
    sigterm(child.id().unwrap()).await;
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");

    let started = events(&stderr, "run_started");
    let finished = events(&stderr, "run_finished");
    let ticks: Vec<chrono::DateTime<chrono::Utc>> = started
        .iter()
        .map(|e| e["fields"]["tick"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ticks.len() >= 3, "three runs, one per second: {ticks:?}");
    // Every second between the first run and the last was run or, when the
    // run before was still going (overlap = "skip", on a loaded machine),
    // skipped and said so; none ran twice.
    let skipped: Vec<chrono::DateTime<chrono::Utc>> = events(&stderr, "tick_skipped")
        .iter()
        .filter_map(|e| e["fields"]["tick"].as_str()?.parse().ok())
        .collect();
    for pair in ticks.windows(2) {
        let gap = (pair[1] - pair[0]).num_seconds();
        assert!(gap >= 1, "none twice: {ticks:?}");
        for s in 1..gap {
            let missing = pair[0] + chrono::Duration::seconds(s);
            assert!(
                skipped.contains(&missing),
                "the tick {missing} neither ran nor was skipped: ran {ticks:?}, skipped {skipped:?}"
            );
        }
    }
    // On a loaded machine the signal can land while a run is still going:
    // that run stops at a page boundary and says so.
    let interrupted = events(&stderr, "run_failed")
        .into_iter()
        .filter(|e| {
            e["fields"]["error"]
                .as_str()
                .is_some_and(|m| m.starts_with("interrupted"))
        })
        .count();
    assert!(interrupted <= 1, "only the last run can be cut short");
    assert_eq!(
        finished.len() + interrupted,
        started.len(),
        "every run finished, or stopped for the signal, before exit: {stderr}"
    );
    assert!(finished.iter().all(|e| e["fields"]["records_out"] == 20));
    // The worker holds the grant between runs (issue 15: it used to take a
    // grant per run and revoke it after each) and revokes it at shutdown.
    let counters = sim.counters();
    assert_eq!(
        counters.token_requests.password, 1,
        "one grant for every run: {counters:?}"
    );
    assert_eq!(counters.revocations, 1, "revoked once, at shutdown");

    let entry = &status["pipelines"][0];
    assert!(entry["runs"].as_u64().unwrap() >= 2, "{status}");
    assert!(entry["next_run"].is_string(), "{status}");
    assert_eq!(entry["last_summary"]["records_out"], 20, "{status}");
    sim.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_tick_during_a_run_is_skipped_and_sigterm_revokes() {
    // 200,000 calls of one record: a run lasts far longer than the test,
    // and ticks come every second.
    let sim = simulator(200_000).await;
    let (dir, ionapi) = workdir(&sim);
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    scheduled(&pipelines, &ionapi, 1, "* * * * * *");
    let child = ionflow()
        .arg("serve")
        .arg(&pipelines)
        .args(["--log-format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the first run is under way, let two more ticks pass.
    for _ in 0..500 {
        if sim.counters().api_calls > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    sigterm(child.id().unwrap()).await;
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(events(&stderr, "run_started").len(), 1, "{stderr}");
    assert!(!events(&stderr, "tick_skipped").is_empty(), "{stderr}");
    let failed = events(&stderr, "run_failed");
    assert_eq!(
        failed.len(),
        1,
        "the run was stopped by the signal: {stderr}"
    );
    assert!(
        failed[0]["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("interrupted")
    );
    assert_eq!(
        sim.counters().revocations,
        1,
        "the refresh token was revoked"
    );
    assert!(
        !dir.path().join("pipelines/out.jsonl").exists(),
        "no output from a stopped run"
    );
    sim.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_second_concurrent_run_of_a_pipeline_exits_with_lock_held() {
    let sim = simulator(50_000).await;
    let (dir, ionapi) = workdir(&sim);
    let pipeline = items_pipeline(dir.path(), &ionapi, 1);
    without_rate_limit(&pipeline);
    let first = ionflow()
        .arg("run")
        .arg(&pipeline)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if sim.counters().api_calls > 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = run(ionflow().arg("run").arg(&pipeline)).await;
    assert_eq!(second.code, 75, "{}", second.all_output());
    assert!(
        second.stderr.contains("another run of"),
        "{}",
        second.stderr
    );
    sigterm(first.id().unwrap()).await;
    let output = first.wait_with_output().await.unwrap();
    assert_eq!(output.status.code(), Some(130));
    sim.shutdown().await;
}

#[tokio::test]
async fn schedule_prints_fire_times_across_daylight_saving_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nightly.toml");
    let pipeline = |schedule: &str| {
        format!(
            "schedule = \"{schedule}\"\ntimezone = \"Europe/Stockholm\"\n\
             [source]\nkind = \"m3_list\"\nconnection = \"m3\"\nprogram = \"MMS200MI\"\n\
             transaction = \"LstItmByItm\"\nkey_field = \"ITNO\"\n\
             [connections.m3]\nionapi_env = \"UNUSED\"\n\
             [[sinks]]\nkind = \"file\"\npath = \"out.jsonl\"\n"
        )
    };
    std::fs::write(&file, pipeline("30 2 * * *")).unwrap();
    // Spring forward (29 March 2026): 02:30 does not exist; it runs at 03:00.
    let spring = run(ionflow().arg("schedule").arg(&file).args([
        "--count",
        "3",
        "--from",
        "2026-03-27T12:00:00Z",
    ]))
    .await;
    assert_eq!(spring.code, 0, "{}", spring.all_output());
    let lines: Vec<&str> = spring.stdout.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "2026-03-28 02:30:00 CET  2026-03-28T01:30:00Z",
            "2026-03-29 03:00:00 CEST  2026-03-29T01:00:00Z",
            "2026-03-30 02:30:00 CEST  2026-03-30T00:30:00Z",
        ]
    );
    // Fall back (25 October 2026): 02:30 happens twice; it runs once.
    let autumn = run(ionflow().arg("schedule").arg(&file).args([
        "--count",
        "3",
        "--from",
        "2026-10-24T12:00:00Z",
    ]))
    .await;
    let lines: Vec<&str> = autumn.stdout.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "2026-10-25 02:30:00 CEST  2026-10-25T00:30:00Z",
            "2026-10-26 02:30:00 CET  2026-10-26T01:30:00Z",
            "2026-10-27 02:30:00 CET  2026-10-27T01:30:00Z",
        ]
    );
    // A wrong field is a configuration error that points at it.
    std::fs::write(&file, pipeline("0 25 * * *")).unwrap();
    let wrong = run(ionflow().arg("validate").arg(&file)).await;
    assert_eq!(wrong.code, 2, "{}", wrong.all_output());
    assert!(
        wrong
            .stderr
            .contains("nightly.toml:1:15: schedule field 2 (hour) `25`"),
        "{}",
        wrong.stderr
    );
}

#[cfg(unix)]
#[tokio::test]
async fn status_on_the_file_store_shows_what_a_local_serve_ran() {
    let _timing = daemon_timing().await;
    let sim = simulator(20).await;
    let (dir, ionapi) = workdir(&sim);
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    scheduled(&pipelines, &ionapi, 10, "* * * * * *");
    let state = dir.path().join("state");
    let child = ionflow()
        .arg("serve")
        .arg(&pipelines)
        .env("IONFLOW_STATE_DIR", &state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = |json: bool| {
        let mut cmd = ionflow();
        cmd.arg("status").env("IONFLOW_STATE_DIR", &state);
        if json {
            cmd.arg("--json");
        }
        cmd
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let rows = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let result = run(&mut status(true)).await;
        assert_eq!(result.code, 0, "{}", result.all_output());
        let rows: serde_json::Value = serde_json::from_str(&result.stdout).unwrap();
        let ran = rows[0]["runs"].as_u64().unwrap_or(0);
        if ran >= 1 || std::time::Instant::now() > deadline {
            break rows;
        }
    };
    sigterm(child.id().unwrap()).await;
    eprintln!("ionflow status --json: {rows}");
    let row = &rows[0];
    assert_eq!(row["pipeline"], "items", "{rows}");
    assert_eq!(row["schedule"], "* * * * * *", "{rows}");
    assert!(row["runs"].as_u64().unwrap() >= 1, "{rows}");
    assert!(row["next_run"].is_string(), "{rows}");
    assert_eq!(row["last_state"], "succeeded", "{rows}");

    let text = run(&mut status(false)).await;
    assert!(text.stdout.contains("store: files in"), "{}", text.stdout);
    assert!(text.stdout.contains("items"), "{}", text.stdout);
    sim.shutdown().await;
}
