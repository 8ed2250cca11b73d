//! Parallel requests per sink (`concurrency = N`): bounded, each record sent
//! once, results in input order, an order key that keeps one item's changes
//! in sequence, and the connection's payload limit.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::{read_jsonl, run_json, sim_get, sim_post, simulator, workdir};

const MESSAGE_PATH: &str = "IONSERVICES/api/ion/messaging/service/v2/message";

/// A pipeline posting every line of `records.jsonl` as one ION message
/// through the generic `gateway` sink.
fn post_each_record(dir: &Path, ionapi: &Path, records: &[Value], sink_extra: &str) -> PathBuf {
    let lines: Vec<String> = records.iter().map(Value::to_string).collect();
    std::fs::write(dir.join("records.jsonl"), lines.join("\n") + "\n").unwrap();
    let path = dir.join("post.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[connections.ion]
ionapi_file = "{}"

[source]
kind = "file"
path = "records.jsonl"

[[sinks]]
kind = "gateway"
connection = "ion"
method = "POST"
path = "{MESSAGE_PATH}"
# ION's v2/message body, the record as its document.
body = '{{"documentName": "Seq", "fromLogicalId": "lid://infor.ims.test", "document": {{"value": {{{{ record | tojson | tojson }}}}, "encoding": "NONE", "characterSet": "UTF-8"}}}}'
{sink_extra}

[dead_letter]
path = "dead.jsonl"
"#,
            ionapi.display()
        ),
    )
    .unwrap();
    path
}

/// The `seq` of every message the simulator received, in arrival order.
async fn arrivals(sim: &ionflow_sim::Simulator) -> Vec<(String, u64)> {
    sim_get(sim, "messages")
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["body"]["key"].as_str().unwrap().to_owned(),
                m["body"]["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn eight_in_flight_send_each_record_once_and_dead_letter_in_input_order() {
    let sim = simulator(1).await;
    let (dir, ionapi) = workdir(&sim);
    let records: Vec<Value> = (0..120)
        .map(|i| json!({"key": format!("K{i}"), "seq": i}))
        .collect();
    // Every answer takes a while, so requests overlap; 4 of them are refused.
    sim_post(
        &sim,
        "faults",
        json!({"path_prefix": "IONSERVICES/", "count": 4, "status": 400}),
    )
    .await;
    sim_post(
        &sim,
        "faults",
        json!({"path_prefix": "IONSERVICES/", "count": 116, "delay_ms": 25}),
    )
    .await;
    let pipeline = post_each_record(dir.path(), &ionapi, &records, "concurrency = 8");
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 4, "{}", result.all_output());
    assert_eq!(summary["records_failed"], 4, "{summary}");

    let counters = sim.counters();
    eprintln!("peak requests in flight: {}", counters.max_in_flight);
    assert!(
        (2..=8).contains(&counters.max_in_flight),
        "requests overlapped, never more than 8: {counters:?}"
    );
    assert_eq!(counters.api_calls, 120, "each record sent exactly once");
    let mut delivered: Vec<u64> = arrivals(&sim).await.into_iter().map(|(_, s)| s).collect();
    let dead: Vec<u64> = read_jsonl(&dir.path().join("dead.jsonl"))
        .iter()
        .map(|d| d["record"]["seq"].as_u64().unwrap())
        .collect();
    assert!(
        dead.is_sorted(),
        "the dead letter follows input order: {dead:?}"
    );
    delivered.extend(&dead);
    delivered.sort();
    assert_eq!(
        delivered,
        (0..120).collect::<Vec<_>>(),
        "every record delivered or dead-lettered, none twice"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn an_order_key_keeps_each_items_changes_in_sequence() {
    // Three changes to A interleaved with other items; the very first
    // request is slow, so without an order key later ones overtake it.
    let records: Vec<Value> = ["A", "B", "A", "C", "A", "D", "E", "F"]
        .iter()
        .enumerate()
        .map(|(seq, key)| json!({"key": key, "seq": seq, "mark": format!("mark{seq}x")}))
        .collect();
    // The slow call is the first record's, whichever call reaches the
    // simulator first: the fault picks it by the mark in its body.
    let slow_first = json!({
        "path_prefix": "IONSERVICES/",
        "count": 1,
        "delay_ms": 400,
        "body_contains": "mark0x",
    });

    let sim = simulator(1).await;
    let (dir, ionapi) = workdir(&sim);
    sim_post(&sim, "faults", slow_first.clone()).await;
    let pipeline = post_each_record(dir.path(), &ionapi, &records, "concurrency = 4");
    let (result, _) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let unordered = arrivals(&sim).await;
    assert_ne!(
        unordered.first().map(|(_, seq)| *seq),
        Some(0),
        "without an order key the slow first request is overtaken: {unordered:?}"
    );
    sim.shutdown().await;

    let sim = simulator(1).await;
    let (dir, ionapi) = workdir(&sim);
    sim_post(&sim, "faults", slow_first).await;
    let pipeline = post_each_record(
        dir.path(),
        &ionapi,
        &records,
        "concurrency = 4\norder_key = \"{{ record.key }}\"",
    );
    let (result, _) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let ordered = arrivals(&sim).await;
    let a: Vec<u64> = ordered
        .iter()
        .filter(|(k, _)| k == "A")
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(
        a,
        [0, 2, 4],
        "A's changes arrive in input order: {ordered:?}"
    );
    assert_ne!(
        ordered.first().map(|(_, seq)| *seq),
        Some(0),
        "other items still overtake the slow request: {ordered:?}"
    );
    assert_eq!(ordered.len(), records.len());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_record_over_the_connections_payload_limit_is_dead_lettered_unsent() {
    let sim = simulator(1).await;
    let (dir, ionapi) = workdir(&sim);
    let records = vec![
        json!({"key": "small", "seq": 0}),
        json!({"key": "x".repeat(600), "seq": 1}),
        json!({"key": "small", "seq": 2}),
    ];
    let pipeline = post_each_record(dir.path(), &ionapi, &records, "");
    let text = std::fs::read_to_string(&pipeline)
        .unwrap()
        .replace("[source]", "max_payload_bytes = 512\n\n[source]");
    std::fs::write(&pipeline, text).unwrap();
    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 4, "{}", result.all_output());
    assert_eq!(summary["records_failed"], 1, "{summary}");
    assert_eq!(sim.counters().api_calls, 2, "the large record was not sent");
    let dead = read_jsonl(&dir.path().join("dead.jsonl"));
    assert_eq!(dead[0]["record"]["seq"], 1);
    let error = dead[0]["error"].as_str().unwrap();
    assert!(
        error.contains("exceeds the payload limit of 512 bytes"),
        "{error}"
    );
    sim.shutdown().await;
}
