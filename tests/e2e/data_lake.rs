//! The `data_lake` source against the simulator serving the public shapes
//! (field notes, "Data Lake list" and "Data Lake object"): descriptors read
//! from the `fields` array page by page (`page` from 1, `records` the page
//! size), `filter` and `sort` passed through, and each object's bytes
//! (`payloads/streambyid`) as JSON, base64 or a file, within a size bound.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{read_jsonl, run_json, sim_post, simulator, workdir};

const LIST: &str = "IONSERVICES/datalakeapi/v1/payloads/list";
const STREAM: &str = "IONSERVICES/datalakeapi/v1/payloads/streambyid";

/// Puts an object straight into the simulated Data Lake; returns its `dl_id`.
async fn put(sim: &ionflow_sim::Simulator, name: &str, bytes: &[u8]) -> String {
    let body = json!({
        "document_name": name,
        "content_base64": base64::engine::general_purpose::STANDARD.encode(bytes),
    });
    let answer: Value = ionflow_runtime::tls::client()
        .post(format!("{}/__sim/datalake", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["dl_id"].as_str().unwrap().to_owned()
}

fn pipeline(dir: &Path, ionapi: &Path, source_extra: &str) -> PathBuf {
    let path = dir.join("dl.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[connections.dl]
ionapi_file = "{}"
[source]
kind = "data_lake"
connection = "dl"
{source_extra}
[[sinks]]
kind = "file"
path = "out.jsonl"
"#,
            ionapi.display()
        ),
    )
    .unwrap();
    path
}

fn calls(sim: &ionflow_sim::Simulator, path: &str) -> u64 {
    sim.counters()
        .calls_by_path
        .iter()
        .filter(|(k, _)| k.ends_with(path))
        .map(|(_, v)| *v)
        .sum()
}

#[tokio::test]
async fn descriptors_come_from_fields_page_by_page_with_filter_and_sort_passed_through() {
    let sim = simulator(1).await;
    let (dir, ionapi) = workdir(&sim);
    let mut exports = Vec::new();
    for i in 0..7 {
        exports.push(put(&sim, "ItemExport", format!(r#"{{"n":{i}}}"#).as_bytes()).await);
        put(&sim, "Other", b"<Other/>").await;
    }
    let path = pipeline(
        dir.path(),
        &ionapi,
        "filter = \"dl_document_name eq 'ItemExport'\"\nsort = \"dl_id:desc\"\npage_size = 3",
    );
    let (result, summary) = run_json(&path).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_in"], 7, "{summary}");
    let records = read_jsonl(&dir.path().join("out.jsonl"));
    let ids: Vec<&str> = records
        .iter()
        .map(|r| r["dl_id"].as_str().unwrap())
        .collect();
    exports.reverse();
    assert_eq!(ids, exports, "filtered by name, sorted by dl_id descending");
    for key in [
        "dl_document_name",
        "event_date",
        "dl_size",
        "dl_instance_count",
    ] {
        assert!(!records[0][key].is_null(), "{key}: {}", records[0]);
    }
    assert_eq!(calls(&sim, LIST), 3, "3 + 3 + a short page of 1");
    assert_eq!(calls(&sim, STREAM), 0, "payloads = none fetches no object");

    // Six objects in pages of three: the third page is empty and ends it.
    let path = pipeline(
        dir.path(),
        &ionapi,
        "filter = \"dl_document_name eq 'Other'\"\npage_size = 3\nmax_records = 6",
    );
    sim_post(&sim, "reset-counters", json!({})).await;
    let (result, summary) = run_json(&path).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_in"], 6, "{summary}");
    assert_eq!(
        calls(&sim, LIST),
        2,
        "max_records stops before an empty page"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn an_empty_fields_array_ends_the_list() {
    let sim = simulator(1).await;
    let (dir, ionapi) = workdir(&sim);
    for _ in 0..4 {
        put(&sim, "Four", b"{}").await;
    }
    let path = pipeline(
        dir.path(),
        &ionapi,
        "filter = \"dl_document_name eq 'Four'\"\npage_size = 2",
    );
    let (result, summary) = run_json(&path).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_in"], 4);
    assert_eq!(calls(&sim, LIST), 3, "2 + 2 + an empty `fields`");
    sim.shutdown().await;
}

#[tokio::test]
async fn payloads_come_as_json_base64_or_files_and_are_bounded() {
    let sim = simulator(1).await;
    let (dir, ionapi) = workdir(&sim);
    let json_doc = br#"{"SyncItemMaster":{"ItemID":"A1"}}"#.to_vec();
    let lines = b"{\"n\":1}\n{\"n\":2}\n".to_vec();
    let xml = b"<SyncItemMaster><ItemID>A1</ItemID></SyncItemMaster>".to_vec();
    let binary: Vec<u8> = (0..=255u8).collect();
    let ids = [
        put(&sim, "P", &json_doc).await,
        put(&sim, "P", &lines).await,
        put(&sim, "P", &xml).await,
        put(&sim, "P", &binary).await,
    ];
    let decode = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };

    let path = pipeline(
        dir.path(),
        &ionapi,
        "filter = \"dl_document_name eq 'P'\"\npayloads = \"records\"",
    );
    let (result, _) = run_json(&path).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let records = read_jsonl(&dir.path().join("out.jsonl"));
    assert_eq!(records.len(), 4);
    assert_eq!(records[0]["dl_id"], ids[0].as_str());
    assert_eq!(records[0]["payload"]["SyncItemMaster"]["ItemID"], "A1");
    assert_eq!(records[1]["payload"], json!([{"n": 1}, {"n": 2}]));
    assert_eq!(decode(&records[2]["payload_base64"]), xml);
    assert_eq!(decode(&records[3]["payload_base64"]), binary);
    assert_eq!(records[3]["payload_bytes"], 256);
    assert_eq!(calls(&sim, STREAM), 4, "one streambyid per object");

    let path = pipeline(
        dir.path(),
        &ionapi,
        "filter = \"dl_document_name eq 'P'\"\npayloads = \"base64\"",
    );
    let (result, _) = run_json(&path).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let records = read_jsonl(&dir.path().join("out.jsonl"));
    let all: Vec<Vec<u8>> = records
        .iter()
        .map(|r| decode(&r["payload_base64"]))
        .collect();
    assert_eq!(
        all,
        [json_doc.clone(), lines.clone(), xml.clone(), binary.clone()]
    );

    let path = pipeline(
        dir.path(),
        &ionapi,
        "filter = \"dl_document_name eq 'P'\"\npayloads = \"folder\"\npayload_folder = \"objects\"",
    );
    let (result, _) = run_json(&path).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let records = read_jsonl(&dir.path().join("out.jsonl"));
    let extensions: Vec<String> = records
        .iter()
        .map(|r| {
            let path = PathBuf::from(r["payload_path"].as_str().unwrap());
            assert!(path.starts_with(dir.path().join("objects")), "{path:?}");
            path.extension().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    assert_eq!(extensions, ["json", "jsonl", "xml", "bin"]);
    let written = std::fs::read(records[3]["payload_path"].as_str().unwrap()).unwrap();
    assert_eq!(written, binary);

    // An object over the bound stops the run and names the key to raise.
    let path = pipeline(
        dir.path(),
        &ionapi,
        "filter = \"dl_document_name eq 'P'\"\npayloads = \"base64\"\npayload_max_bytes = 100",
    );
    sim_post(&sim, "reset-counters", json!({})).await;
    let (result, _) = run_json(&path).await;
    assert_eq!(result.code, 1, "{}", result.all_output());
    assert!(
        result.stderr.contains(&format!(
            "Data Lake object {} is 256 bytes, over source.payload_max_bytes = 100",
            ids[3]
        )),
        "{}",
        result.stderr
    );
    assert_eq!(
        calls(&sim, STREAM),
        3,
        "the declared dl_size refuses the object before it is fetched"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn payload_options_that_do_not_fit_are_configuration_errors() {
    let sim = simulator(1).await;
    let (dir, ionapi) = workdir(&sim);
    for (extra, expected) in [
        ("payloads = \"folder\"", "payload_folder"),
        (
            "payload_folder = \"x\"",
            "is used only with payloads = \"folder\"",
        ),
        (
            "payloads = \"base64\"\npayload_max_bytes = 999999999999",
            "payload_max_bytes",
        ),
        ("payloads = \"all\"", "unknown variant `all`"),
    ] {
        let path = pipeline(dir.path(), &ionapi, extra);
        let (result, _) = run_json(&path).await;
        assert_eq!(result.code, 2, "{extra}: {}", result.all_output());
        assert!(
            result.stderr.contains(expected),
            "{extra}: {}",
            result.stderr
        );
    }
    sim.shutdown().await;
}
