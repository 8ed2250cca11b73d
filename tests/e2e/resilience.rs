//! Gateway policies and faults: the client-side limiter against a quota,
//! 429 storms, 503s, dropped connections and slow answers, and a write that
//! must not be sent twice.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::support::{items_pipeline, read_jsonl, run_json, sim_post, simulator, workdir};

/// The items pipeline with extra lines in its connection table.
fn items_with(dir: &Path, ionapi: &Path, page_size: u32, connection_extra: &str) -> PathBuf {
    let path = items_pipeline(dir, ionapi, page_size);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[source]", &format!("{connection_extra}\n\n[source]"));
    std::fs::write(&path, text).unwrap();
    path
}

fn unique_items(dir: &Path) -> (usize, BTreeSet<String>) {
    let records = read_jsonl(&dir.join("out.jsonl"));
    let items = records
        .iter()
        .map(|r| r["item"].as_str().unwrap().to_owned())
        .collect();
    (records.len(), items)
}

#[tokio::test]
async fn three_hundred_calls_under_a_quota_of_100_per_2s_meet_no_429() {
    let sim = simulator(300).await;
    let (dir, ionapi) = workdir(&sim);
    sim_post(&sim, "quota", json!({"requests": 100, "window_secs": 2})).await;
    // One record per call: 300 calls (plus the last, empty page).
    let pipeline = items_with(
        dir.path(),
        &ionapi,
        1,
        "rate_limit = { requests = 100, window_secs = 2 }",
    );
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let counters = sim.counters();
    assert!(counters.api_calls >= 300, "{counters:?}");
    assert_eq!(
        counters.rate_limited, 0,
        "the limiter kept the run under the quota"
    );
    assert_eq!(summary["retries"], 0, "{summary}");
    let (count, items) = unique_items(dir.path());
    assert_eq!((count, items.len()), (300, 300));
    // 300 calls at 100 per 2 s cannot take less than two full windows.
    assert!(
        summary["duration_ms"].as_u64().unwrap() >= 4000,
        "{summary}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_429_storm_with_retry_after_is_waited_out() {
    let sim = simulator(50).await;
    let (dir, ionapi) = workdir(&sim);
    sim_post(
        &sim,
        "faults",
        json!({"path_prefix": "M3/", "count": 4, "status": 429, "retry_after_secs": 1}),
    )
    .await;
    let pipeline = items_with(dir.path(), &ionapi, 10, "");
    let text = std::fs::read_to_string(&pipeline).unwrap().replace(
        "page_size = 10",
        "page_size = 10\nretry = { max_retries = 5, backoff_ms = 100 }",
    );
    std::fs::write(&pipeline, text).unwrap();
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["retries"], 4, "{summary}");
    assert!(
        summary["duration_ms"].as_u64().unwrap() >= 4000,
        "Retry-After honoured: {summary}"
    );
    assert_eq!(sim.counters().rate_limited, 4);
    let (count, items) = unique_items(dir.path());
    assert_eq!((count, items.len()), (50, 50));
    sim.shutdown().await;
}

#[tokio::test]
async fn reads_survive_503s_dropped_connections_and_slow_answers_without_loss() {
    let sim = simulator(120).await;
    let (dir, ionapi) = workdir(&sim);
    for fault in [
        json!({"path_prefix": "M3/", "count": 2, "status": 503}),
        json!({"path_prefix": "M3/", "count": 2, "drop_connection": true}),
        json!({"path_prefix": "M3/", "count": 2, "status": 502}),
        json!({"path_prefix": "M3/", "count": 3, "delay_ms": 300}),
    ] {
        sim_post(&sim, "faults", fault).await;
    }
    let pipeline = items_with(dir.path(), &ionapi, 10, "");
    let text = std::fs::read_to_string(&pipeline).unwrap().replace(
        "page_size = 10",
        "page_size = 10\nretry = { max_retries = 8, backoff_ms = 50 }",
    );
    std::fs::write(&pipeline, text).unwrap();
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(
        summary["retries"], 6,
        "503 x2, dropped x2, 502 x2: {summary}"
    );
    assert_eq!(sim.counters().faults_injected, 9);
    let (count, items) = unique_items(dir.path());
    assert_eq!(
        (count, items.len()),
        (120, 120),
        "no record lost or repeated"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_write_that_meets_a_503_is_dead_lettered_not_sent_again() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    std::fs::write(
        dir.path().join("items.csv"),
        "item,name\nW-1,One\nW-2,Two\nW-3,Three\n",
    )
    .unwrap();
    let pipeline = dir.path().join("write.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"
[connections.m3]
ionapi_file = "{}"
[source]
kind = "file"
path = "items.csv"
format = "csv"
[[sinks]]
kind = "m3"
connection = "m3"
program = "MMS200MI"
transaction = "AddItmBasic"
fields = {{ ITNO = "{{{{ record.item }}}}", ITDS = "{{{{ record.name }}}}", UNMS = "EA" }}
retry = {{ max_retries = 5, backoff_ms = 50 }}
[dead_letter]
path = "dead.jsonl"
"#,
            ionapi.display()
        ),
    )
    .unwrap();
    // The second write meets a 503: did M3 add the item or not? Unknown, so
    // it must not be sent again.
    sim_post(
        &sim,
        "faults",
        json!({"path_prefix": "M3/", "count": 1, "status": 503}),
    )
    .await;
    let before = sim.counters().api_calls;
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 4, "{}", result.all_output());
    assert_eq!(summary["records_failed"], 1, "{summary}");
    assert_eq!(summary["retries"], 0, "{summary}");
    assert_eq!(
        sim.counters().api_calls - before,
        3,
        "each write sent exactly once"
    );
    let dead = read_jsonl(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["record"]["item"], "W-1");
    let error = dead[0]["error"].as_str().unwrap();
    assert!(
        error.contains("HTTP 503 Service Unavailable")
            && error.ends_with("the outcome is unknown, check before sending it again"),
        "{error}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_403_names_the_missing_scope_and_the_fix_and_writes_nothing() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    let pipeline = dir.path().join("compass.toml");
    // The simulator's authorized app has no scope for IDM.
    std::fs::write(
        &pipeline,
        format!(
            r#"
[connections.dl]
ionapi_file = "{}"
[source]
kind = "gateway"
connection = "dl"
path = "IDM/api/items/search"
records_pointer = "/rows"
[[sinks]]
kind = "file"
path = "out.jsonl"
"#,
            ionapi.display()
        ),
    )
    .unwrap();
    let (result, _) = run_json(&pipeline).await;
    assert_eq!(result.code, 3, "{}", result.all_output());
    let output = result.all_output();
    for expected in [
        "insufficient_scope",
        "required scope: IDM",
        "authorized app",
        "IFS user",
        "download the .ionapi file again",
    ] {
        assert!(output.contains(expected), "{expected}: {output}");
    }
    assert!(!dir.path().join("out.jsonl").exists());
    assert_eq!(sim.counters().forbidden, 1, "a 403 is not retried");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_read_over_the_connections_timeout_is_abandoned_and_sent_again() {
    let sim = simulator(30).await;
    let (dir, ionapi) = workdir(&sim);
    sim_post(
        &sim,
        "faults",
        json!({"path_prefix": "M3/", "count": 1, "delay_ms": 2500}),
    )
    .await;
    let pipeline = items_with(dir.path(), &ionapi, 10, "timeout_secs = 1");
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["retries"], 1, "{summary}");
    let (count, items) = unique_items(dir.path());
    assert_eq!((count, items.len()), (30, 30));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_504_that_outlasts_the_retries_says_to_ask_for_smaller_pages() {
    let sim = simulator(30).await;
    let (dir, ionapi) = workdir(&sim);
    sim_post(
        &sim,
        "faults",
        json!({"path_prefix": "M3/", "count": 3, "status": 504}),
    )
    .await;
    let pipeline = items_with(dir.path(), &ionapi, 10, "");
    let text = std::fs::read_to_string(&pipeline).unwrap().replace(
        "page_size = 10",
        "page_size = 10\nretry = { max_retries = 2, backoff_ms = 20 }",
    );
    std::fs::write(&pipeline, text).unwrap();
    let (result, _) = run_json(&pipeline).await;
    assert_eq!(result.code, 5, "{}", result.all_output());
    let output = result.all_output();
    for expected in ["smaller pages", "timeout policy", "at most 5 minutes"] {
        assert!(output.contains(expected), "{expected}: {output}");
    }
    assert_eq!(sim.counters().faults_injected, 3, "sent three times in all");
    assert!(!dir.path().join("out.jsonl").exists(), "no partial output");
    sim.shutdown().await;
}
