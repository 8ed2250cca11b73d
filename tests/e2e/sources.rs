//! Sources other than the examples': IDO errors, gateway paths, Compass,
//! Data Lake, plain HTTP with offset paging, files, and retries after 429.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Query;
use axum::routing::get;
use serde_json::json;

use crate::support::{ionflow, read_jsonl, run, run_json, sim_post, simulator, workdir};

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn ido_success_false_stops_the_run_with_the_message() {
    let sim = simulator(10).await;
    let (dir, ionapi) = workdir(&sim);
    let pipeline = write(
        dir.path(),
        "ido.toml",
        &format!(
            r#"
[connections.csi]
ionapi_file = "{}"
[source]
kind = "ido"
connection = "csi"
ido = "SLItems"
mongoose_config = "ACME"
properties = ["Item", "NoSuchProperty"]
[[sinks]]
kind = "file"
path = "out.jsonl"
"#,
            ionapi.display()
        ),
    );
    let (result, _) = run_json(&pipeline).await;
    assert_eq!(result.code, 1, "{}", result.all_output());
    assert!(
        result
            .stderr
            .contains("IDO SLItems: Property NoSuchProperty does not exist"),
        "{}",
        result.stderr
    );
    assert!(
        !dir.path().join("out.jsonl").exists(),
        "no output from a failed run"
    );
    assert!(
        !dir.path().join("out.jsonl.partial").exists(),
        "and no debris"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn gateway_path_with_a_records_pointer() {
    let sim = simulator(40).await;
    let (dir, ionapi) = workdir(&sim);
    let pipeline = write(
        dir.path(),
        "gw.toml",
        &format!(
            r#"
[connections.m3]
ionapi_file = "{}"
[source]
kind = "gateway"
connection = "m3"
path = "M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm"
query = {{ maxrecs = "25", returncols = "ITNO,ITDS" }}
records_pointer = "/results/0/records"
[[sinks]]
kind = "file"
path = "out.jsonl"
"#,
            ionapi.display()
        ),
    );
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_in"], 25);
    let records = read_jsonl(&dir.path().join("out.jsonl"));
    assert_eq!(
        records[0],
        json!({"ITNO": "ITM000001", "ITDS": records[0]["ITDS"]})
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn compass_query_is_submitted_polled_and_paged() {
    let sim = simulator(95).await;
    let (dir, ionapi) = workdir(&sim);
    let pipeline = write(
        dir.path(),
        "compass.toml",
        &format!(
            r#"
[connections.df]
ionapi_file = "{}"
[source]
kind = "compass"
connection = "df"
sql = "SELECT ITNO, STAT FROM MITMAS"
page_size = 40
poll_interval_ms = 10
[[sinks]]
kind = "file"
path = "out.jsonl"
"#,
            ionapi.display()
        ),
    );
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_in"], 95);
    let records = read_jsonl(&dir.path().join("out.jsonl"));
    assert_eq!(records[0].as_object().unwrap().len(), 2);
    let calls = sim.counters().calls_by_path;
    let count = |suffix: &str| {
        calls
            .iter()
            .filter(|(k, _)| k.ends_with(suffix))
            .map(|(_, v)| v)
            .sum::<u64>()
    };
    assert_eq!(count("/jobs"), 1, "{calls:?}");
    assert_eq!(count("/status"), 2, "RUNNING, then FINISHED");
    assert_eq!(count("/result"), 3, "40 + 40 + 15");

    std::fs::write(
        &pipeline,
        std::fs::read_to_string(&pipeline)
            .unwrap()
            .replace("MITMAS", "OOHEAD"),
    )
    .unwrap();
    let (result, _) = run_json(&pipeline).await;
    assert_eq!(result.code, 1);
    assert!(
        result.stderr.contains("Table OOHEAD not found"),
        "{}",
        result.stderr
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn data_lake_lists_payloads_page_by_page() {
    let sim = simulator(10).await;
    let (dir, ionapi) = workdir(&sim);
    let client = ionflow_runtime::tls::client();
    // Documents reach the Data Lake through ION; send some with ionflow first.
    let send = write(
        dir.path(),
        "send.toml",
        &format!(
            r#"
[connections.ion]
ionapi_file = "{}"
[source]
kind = "m3_list"
connection = "ion"
program = "MMS200MI"
transaction = "LstItmByItm"
key_field = "ITNO"
[[sinks]]
kind = "ion_message"
connection = "ion"
document_name = "ItemExport"
from_logical_id = "lid://infor.ims.ionflow"
"#,
            ionapi.display()
        ),
    );
    let (result, _) = run_json(&send).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let pipeline = write(
        dir.path(),
        "dl.toml",
        &format!(
            r#"
[connections.dl]
ionapi_file = "{}"
[source]
kind = "data_lake"
connection = "dl"
filter = "dl_document_name eq 'ItemExport'"
page_size = 4
[[sinks]]
kind = "file"
path = "payloads.jsonl"
"#,
            ionapi.display()
        ),
    );
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_in"], 10);
    let payloads = read_jsonl(&dir.path().join("payloads.jsonl"));
    assert!(
        payloads
            .iter()
            .all(|p| p["dl_document_name"] == "ItemExport")
    );
    drop(client);
    sim.shutdown().await;
}

/// A small JSON API on loopback, paged by `offset` and `limit`.
async fn paged_api(total: u64, hits: Arc<AtomicU64>) -> (String, tokio::task::JoinHandle<()>) {
    paged_api_with(total, hits, Arc::default(), 0).await
}

/// The same, answering after `delay_ms` and recording in `peak` the most
/// requests it was answering at once.
async fn paged_api_with(
    total: u64,
    hits: Arc<AtomicU64>,
    peak: Arc<AtomicU64>,
    delay_ms: u64,
) -> (String, tokio::task::JoinHandle<()>) {
    let current = Arc::new(AtomicU64::new(0));
    #[derive(serde::Deserialize)]
    struct Page {
        #[serde(default)]
        offset: u64,
        #[serde(default = "ten")]
        limit: u64,
    }
    fn ten() -> u64 {
        10
    }
    let app = axum::Router::new().route(
        "/items",
        get(move |Query(p): Query<Page>| {
            let (hits, current, peak) = (hits.clone(), current.clone(), peak.clone());
            async move {
                hits.fetch_add(1, Ordering::Relaxed);
                let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                current.fetch_sub(1, Ordering::SeqCst);
                let end = (p.offset + p.limit).min(total);
                let data: Vec<_> = (p.offset..end)
                    .map(|i| json!({"id": i, "ok": i % 2 == 0}))
                    .collect();
                axum::Json(json!({"data": data, "total": total}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/items", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, server)
}

#[tokio::test]
async fn http_source_pages_by_offset_and_extracts_with_jq() {
    let hits = Arc::new(AtomicU64::new(0));
    let (url, server) = paged_api(23, hits.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write(
        dir.path(),
        "http.toml",
        &format!(
            r#"
[source]
kind = "http"
url = "{url}"
records_jq = ".data[] | select(.ok)"
[[sinks]]
kind = "stdout"
"#
        ),
    );
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(
        summary["records_in"], 5,
        "one unpaged call, odd ids dropped by jq"
    );
    assert_eq!(hits.load(Ordering::Relaxed), 1);
    let lines: Vec<serde_json::Value> = result
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        5,
        "stdout holds the records, the summary goes to stderr"
    );

    std::fs::write(
        &pipeline,
        std::fs::read_to_string(&pipeline).unwrap().replace(
            "records_jq = \".data[] | select(.ok)\"",
            "records_pointer = \"/data\"\npaging = { page_size = 10 }",
        ),
    )
    .unwrap();
    hits.store(0, Ordering::Relaxed);
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_in"], 23);
    assert_eq!(hits.load(Ordering::Relaxed), 3, "10 + 10 + 3");
    server.abort();
}

#[tokio::test]
async fn json_array_and_jsonl_files_stream_to_files() {
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<_> = (0..2500)
        .map(|i| json!({"n": i, "tags": ["a", "b"]}))
        .collect();
    std::fs::write(
        dir.path().join("in.json"),
        serde_json::to_string(&records).unwrap(),
    )
    .unwrap();
    let pipeline = write(
        dir.path(),
        "files.toml",
        r#"
[source]
kind = "file"
path = "in.json"
format = "json"
max_records = 2001
[[transforms]]
kind = "jq"
filter = ".tags[] as $t | {n, tag: $t}"
[[sinks]]
kind = "file"
path = "out.jsonl"
[[sinks]]
kind = "file"
path = "out.csv"
format = "csv"
"#,
    );
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_in"], 2001);
    assert_eq!(summary["records_out"], 4002, "one record in, two out");
    assert_eq!(read_jsonl(&dir.path().join("out.jsonl")).len(), 4002);
    let csv = std::fs::read_to_string(dir.path().join("out.csv")).unwrap();
    assert!(csv.starts_with("n,tag\n0,a\n0,b\n"), "{}", &csv[..30]);
    assert_eq!(summary["api_calls"], 0, "file pipelines need no connection");
}

#[tokio::test]
async fn throttled_pages_are_retried_and_counted() {
    let sim = simulator(30).await;
    let (dir, ionapi) = workdir(&sim);
    let pipeline = crate::support::items_pipeline(dir.path(), &ionapi, 10);
    sim_post(&sim, "throttle", json!({"count": 2, "retry_after_secs": 0})).await;
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_in"], 30);
    assert_eq!(summary["retries"], 2, "{summary}");

    // Without retries a 429 stops the run with the "unavailable" exit code.
    std::fs::write(
        &pipeline,
        std::fs::read_to_string(&pipeline).unwrap().replace(
            "page_size = 10",
            "page_size = 10\nretry = { max_retries = 0 }",
        ),
    )
    .unwrap();
    sim_post(&sim, "throttle", json!({"count": 1, "retry_after_secs": 0})).await;
    let result = run(ionflow().arg("run").arg(&pipeline)).await;
    assert_eq!(result.code, 5, "{}", result.all_output());
    sim.shutdown().await;
}

#[tokio::test]
async fn failing_records_are_dead_lettered_and_hold_the_watermark_back() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"n\":1,\"a\":1}\n{\"n\":2,\"a\":\"x\"}\n{\"n\":3,\"a\":2,\"many\":true}\n",
    )
    .unwrap();
    let pipeline = write(
        dir.path(),
        "jq.toml",
        r#"
name = "jq-failures"
[source]
kind = "file"
path = "in.jsonl"
[state.watermarks.last]
field = "n"
initial = "0"
[[transforms]]
kind = "jq"
filter = "if .many then repeat(.) else {n, b: (.a + 1)} end"
timeout_ms = 50
[[sinks]]
kind = "file"
path = "out.jsonl"
[dead_letter]
path = "dead.jsonl"
"#,
    );
    let state = dir.path().join(".ionflow/state/jq-failures.json");
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 4, "{}", result.all_output());
    assert_eq!(summary["records_failed"], 2);
    assert_eq!(summary["state_saved"], serde_json::Value::Null);
    let dead = read_jsonl(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|d| d["stage"] == "transforms[0]"));
    assert!(
        dead[0]["error"].as_str().unwrap().starts_with("jq error"),
        "{}",
        dead[0]
    );
    assert!(
        dead[1]["error"]
            .as_str()
            .unwrap()
            .contains("time limit of 50 ms"),
        "{}",
        dead[1]
    );
    assert!(
        !state.exists(),
        "a run with failed records does not move the watermark"
    );

    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"n\":1,\"a\":1}\n{\"n\":7,\"a\":5}\n",
    )
    .unwrap();
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(summary["state_saved"].is_string(), "{summary}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved["watermarks"]["last"], "7");
}

#[tokio::test]
async fn offset_pages_fetched_four_ahead_come_out_in_order_without_gaps() {
    let (hits, peak) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (url, server) = paged_api_with(95, hits.clone(), peak.clone(), 30).await;
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write(
        dir.path(),
        "http.toml",
        &format!(
            r#"
[source]
kind = "http"
url = "{url}"
records_pointer = "/data"
paging = {{ page_size = 10, concurrency = 4 }}
[[sinks]]
kind = "file"
path = "out.jsonl"
"#
        ),
    );
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let ids: Vec<u64> = read_jsonl(&dir.path().join("out.jsonl"))
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (0..95).collect::<Vec<_>>(), "offset order, none twice");
    assert_eq!(summary["records_in"], 95);
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&peak),
        "pages overlapped, at most 4: {peak}"
    );
    // Ten pages hold the records; at most three more were asked for ahead
    // of the short last page and dropped.
    assert!((10..=13).contains(&hits.load(Ordering::Relaxed)));
    server.abort();
}
