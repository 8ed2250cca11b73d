//! Sinks against the simulator or a loopback HTTP server: M3 bulk, IDO
//! update, a gateway path, plain HTTP, and a 429 on a write.

use std::sync::{Arc, Mutex};

use axum::routing::post;
use serde_json::{Value, json};

use crate::support::{read_jsonl, run_json, sim_post, simulator, workdir};

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn items_csv(dir: &std::path::Path, rows: &str) {
    std::fs::write(dir.join("items.csv"), format!("item,name,unit\n{rows}")).unwrap();
}

#[tokio::test]
async fn m3_bulk_maps_each_result_to_its_record() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    items_csv(
        dir.path(),
        "B-1,One,EA\nITM000002,Exists,EA\nB-2,Two,KG\nB-3,Three,XX\nB-4,Four,EA\n",
    );
    let pipeline = write(
        dir.path(),
        "bulk.toml",
        &format!(
            r#"
[connections.m3]
ionapi_file = "{}"
[source]
kind = "file"
path = "items.csv"
format = "csv"
[[sinks]]
kind = "m3_bulk"
connection = "m3"
program = "MMS200MI"
transaction = "AddItmBasic"
batch_size = 2
fields = {{ ITNO = "{{{{ record.item }}}}", ITDS = "{{{{ record.name }}}}", UNMS = "{{{{ record.unit }}}}" }}
[dead_letter]
path = "dead.jsonl"
"#,
            ionapi.display()
        ),
    );
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 4, "{}", result.all_output());
    assert_eq!(summary["records_failed"], 2, "{summary}");
    let dead = read_jsonl(&dir.path().join("dead.jsonl"));
    let failed: Vec<&str> = dead
        .iter()
        .map(|d| d["record"]["item"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["ITM000002", "B-3"]);
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    let bulk_calls = sim
        .counters()
        .calls_by_path
        .iter()
        .filter(|(k, _)| k.ends_with("/v2/execute"))
        .map(|(_, v)| *v)
        .sum::<u64>();
    assert_eq!(bulk_calls, 3, "5 records in batches of 2");
    sim.shutdown().await;
}

#[tokio::test]
async fn ido_update_inserts_and_updates_and_reads_success_false() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    items_csv(dir.path(), "IDO-1,Inserted,EA\nITM000001,Clash,EA\n");
    let pipeline = write(
        dir.path(),
        "ido.toml",
        &format!(
            r#"
[connections.csi]
ionapi_file = "{}"
[source]
kind = "file"
path = "items.csv"
format = "csv"
[[sinks]]
kind = "ido_update"
connection = "csi"
ido = "SLItems"
mongoose_config = "ACME"
action = "insert"
properties = {{ Item = "{{{{ record.item }}}}", Description = "{{{{ record.name }}}}", UM = "{{{{ record.unit }}}}" }}
[dead_letter]
path = "dead.jsonl"
"#,
            ionapi.display()
        ),
    );
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 4, "{}", result.all_output());
    assert_eq!(summary["records_failed"], 1);
    let dead = read_jsonl(&dir.path().join("dead.jsonl"));
    assert_eq!(
        dead[0]["error"],
        "IDO SLItems: Item ITM000001 already exists"
    );

    // Update: the description of an existing item, read back through the IDO.
    items_csv(dir.path(), "ITM000001,Renamed,EA\n");
    std::fs::write(
        &pipeline,
        std::fs::read_to_string(&pipeline)
            .unwrap()
            .replace("\"insert\"", "\"update\""),
    )
    .unwrap();
    let (result, _) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let read = write(
        dir.path(),
        "read.toml",
        &format!(
            r#"
[connections.csi]
ionapi_file = "{}"
[source]
kind = "ido"
connection = "csi"
ido = "SLItems"
mongoose_config = "ACME"
properties = ["Item", "Description"]
filter = "Item = 'ITM000001' OR Item = 'IDO-1'"
[[sinks]]
kind = "file"
path = "read.jsonl"
"#,
            ionapi.display()
        ),
    );
    let (result, _) = run_json(&read).await;
    assert_eq!(
        result.code,
        1,
        "the simulator has no OR: {}",
        result.all_output()
    );
    std::fs::write(
        &read,
        std::fs::read_to_string(&read).unwrap().replace(
            "Item = 'ITM000001' OR Item = 'IDO-1'",
            "Item >= 'ITM000001' AND Item <= 'ITM000001'",
        ),
    )
    .unwrap();
    let (result, _) = run_json(&read).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(
        read_jsonl(&dir.path().join("read.jsonl"))[0]["Description"],
        "Renamed"
    );
    sim.shutdown().await;
}

/// A loopback endpoint that records what it receives and refuses `"bad"` ids.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/in/{id}",
        post(
            move |axum::extract::Path(id): axum::extract::Path<String>,
                  axum::Json(body): axum::Json<Value>| {
                let store = store.clone();
                async move {
                    if id == "bad" {
                        return (
                            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                            "id bad is refused",
                        );
                    }
                    store.lock().unwrap().push(json!({"id": id, "body": body}));
                    (axum::http::StatusCode::CREATED, "ok")
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, seen, server)
}

#[tokio::test]
async fn http_sink_renders_url_and_body_per_record() {
    let (url, seen, server) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"id\":\"a\",\"n\":1}\n{\"id\":\"bad\",\"n\":2}\n{\"id\":\"c\",\"n\":3}\n",
    )
    .unwrap();
    let pipeline = write(
        dir.path(),
        "http.toml",
        &format!(
            r#"
[source]
kind = "file"
path = "in.jsonl"
[[sinks]]
kind = "http"
url = "{url}/in/{{{{ record.id }}}}"
body = '{{"qty": {{{{ record.n }}}}, "source": "ionflow"}}'
[dead_letter]
path = "dead.jsonl"
"#
        ),
    );
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 4, "{}", result.all_output());
    assert_eq!(summary["records_failed"], 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            json!({"id": "a", "body": {"qty": 1, "source": "ionflow"}}),
            json!({"id": "c", "body": {"qty": 3, "source": "ionflow"}})
        ]
    );
    let dead = read_jsonl(&dir.path().join("dead.jsonl"));
    assert!(
        dead[0]["error"].as_str().unwrap().contains("HTTP 422"),
        "{}",
        dead[0]
    );
    server.abort();
}

#[tokio::test]
async fn gateway_sink_and_a_throttled_write() {
    let sim = simulator(3).await;
    let (dir, ionapi) = workdir(&sim);
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"item\":\"G-1\"}\n{\"item\":\"G-2\"}\n{\"item\":\"ITM000001\"}\n",
    )
    .unwrap();
    let pipeline = write(
        dir.path(),
        "gw.toml",
        &format!(
            r#"
[connections.m3]
ionapi_file = "{}"
[source]
kind = "file"
path = "in.jsonl"
[[sinks]]
kind = "gateway"
connection = "m3"
method = "GET"
path = "M3/m3api-rest/v2/execute/MMS200MI/AddItmBasic"
query = {{ ITNO = "{{{{ record.item }}}}", ITDS = "Added by a gateway sink" }}
envelope = "m3"
retry = {{ max_retries = 2, backoff_ms = 10 }}
[dead_letter]
path = "dead.jsonl"
"#,
            ionapi.display()
        ),
    );
    // A 429 was refused before M3 saw it, so even an Add may be sent again.
    sim_post(&sim, "throttle", json!({"count": 1, "retry_after_secs": 0})).await;
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 4, "{}", result.all_output());
    assert_eq!(summary["records_retried"], 1, "{summary}");
    assert_eq!(
        summary["records_failed"], 1,
        "ITM000001 exists, in an HTTP 200"
    );
    let dead = read_jsonl(&dir.path().join("dead.jsonl"));
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    sim.shutdown().await;
}

/// The `count` sink, added as one file and one registry line: it keeps no
/// record and reports how many reached it, in the summary and its JSON.
#[tokio::test]
async fn count_sink_reports_the_records_it_discards() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n{\"n\":4}\n",
    )
    .unwrap();
    let pipeline = dir.path().join("count.toml");
    std::fs::write(
        &pipeline,
        r#"
[source]
kind = "file"
path = "in.jsonl"

[[transforms]]
kind = "jq"
filter = 'select(.n % 2 == 0)'

[[sinks]]
kind = "count"
label = "even"
"#,
    )
    .unwrap();
    let result = crate::support::run(
        crate::support::ionflow()
            .arg("run")
            .arg(&pipeline)
            .arg("--json"),
    )
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let summary: serde_json::Value = serde_json::from_str(&result.stdout).unwrap();
    assert_eq!(summary["records_in"], 4);
    assert_eq!(summary["records_out"], 2);
    assert_eq!(summary["notes"][0], "even: 2 records counted");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "nothing is written beside the pipeline and its input"
    );
}
