//! The `ion_message` sink against the simulator serving the public shapes
//! (field notes, "ION Messaging"): the JSON `v2/message` body with the
//! document under `document: {value, encoding, characterSet}` and an
//! optional `messageId`, and `v2/multipartMessage` with a `ParameterRequest`
//! part and a `MessagePayload` part, plain or base64; round trips through
//! the Data Lake prove the bytes arrive unchanged.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{ionflow, read_jsonl, run, run_json, sim_get, simulator, workdir};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Records of `records.jsonl` sent as ION messages named `document_name`,
/// with `sink_extra`.
fn send(
    dir: &Path,
    ionapi: &Path,
    records: &[Value],
    document_name: &str,
    sink_extra: &str,
) -> PathBuf {
    let lines: Vec<String> = records.iter().map(Value::to_string).collect();
    write(dir, "records.jsonl", &(lines.join("\n") + "\n"));
    write(
        dir,
        "send.toml",
        &format!(
            r#"
[connections.ion]
ionapi_file = "{}"
[source]
kind = "file"
path = "records.jsonl"
[[sinks]]
kind = "ion_message"
connection = "ion"
document_name = "{document_name}"
from_logical_id = "lid://infor.ims.ionflow"
{sink_extra}
[dead_letter]
path = "dead.jsonl"
"#,
            ionapi.display()
        ),
    )
}

#[tokio::test]
async fn json_messages_carry_the_document_and_the_message_id() {
    let sim = simulator(1).await;
    let (dir, ionapi) = workdir(&sim);
    let records = [
        json!({"id": "m-1", "ItemID": "A1"}),
        json!({"id": "m-2", "ItemID": "B2"}),
    ];
    let path = send(
        dir.path(),
        &ionapi,
        &records,
        "SyncItemMaster",
        "message_id = \"{{ record.id }}\"",
    );
    let (result, summary) = run_json(&path).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_failed"], 0);
    let messages = sim_get(&sim, "messages").await;
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), 2);
    for (message, record) in messages.iter().zip(&records) {
        assert_eq!(message["endpoint"], "message");
        assert_eq!(message["id"], record["id"], "messageId from the template");
        assert_eq!(message["document_name"], "SyncItemMaster");
        assert_eq!(message["from_logical_id"], "lid://infor.ims.ionflow");
        assert_eq!(message["to_logical_id"], "lid://default");
        assert_eq!(message["encoding"], "NONE");
        assert_eq!(&message["body"], record, "the record as the document");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn multipart_messages_carry_xml_and_base64_documents_unchanged() {
    let sim = simulator(1).await;
    let (dir, ionapi) = workdir(&sim);
    let records = [json!({"item": "A1", "name": "Bolt & \"nut\""})];
    let path = send(
        dir.path(),
        &ionapi,
        &records,
        "SyncItemMaster",
        "request = \"multipart\"\n\
         document = \"<SyncItemMaster><ItemID>{{ record.item }}</ItemID><Name>{{ record.name }}</Name></SyncItemMaster>\"",
    );
    let (result, _) = run_json(&path).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let messages = sim_get(&sim, "messages").await;
    assert_eq!(messages[0]["endpoint"], "multipartMessage");
    assert_eq!(
        messages[0]["content_type"]
            .as_str()
            .unwrap()
            .split(';')
            .next(),
        Some("multipart/form-data")
    );
    assert_eq!(
        messages[0]["body"],
        "<SyncItemMaster><ItemID>A1</ItemID><Name>Bolt & \"nut\"</Name></SyncItemMaster>",
        "templates do not escape: the document is sent as rendered"
    );

    // Binary bytes, base64 in the record, sent with encoding BASE64: ION
    // decodes them, and the Data Lake serves exactly the original bytes.
    let original: Vec<u8> = (0..=255u8).rev().collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&original);
    for request in ["message", "multipart"] {
        let path = send(
            dir.path(),
            &ionapi,
            &[json!({"blob": encoded})],
            &format!("Blob{request}"),
            &format!(
                "request = \"{request}\"\nencoding = \"base64\"\ndocument = \"{{{{ record.blob }}}}\""
            ),
        );
        let (result, _) = run_json(&path).await;
        assert_eq!(result.code, 0, "{request}: {}", result.all_output());
        let back = write(
            dir.path(),
            "back.toml",
            &format!(
                r#"
[connections.dl]
ionapi_file = "{}"
[source]
kind = "data_lake"
connection = "dl"
filter = "dl_document_name eq 'Blob{request}'"
payloads = "base64"
[[sinks]]
kind = "file"
path = "back.jsonl"
"#,
                ionapi.display()
            ),
        );
        let (result, _) = run_json(&back).await;
        assert_eq!(result.code, 0, "{request}: {}", result.all_output());
        let objects = read_jsonl(&dir.path().join("back.jsonl"));
        assert_eq!(objects.len(), 1, "{request}");
        assert_eq!(
            objects[0]["payload_base64"], encoded,
            "{request}: the bytes came back unchanged"
        );
    }

    // A document that is not base64 is refused before anything is sent.
    let path = send(
        dir.path(),
        &ionapi,
        &[json!({"blob": "not base64!"})],
        "SyncItemMaster",
        "encoding = \"base64\"\ndocument = \"{{ record.blob }}\"",
    );
    let before = sim.counters().api_calls;
    let (result, summary) = run_json(&path).await;
    assert_eq!(result.code, 4, "{}", result.all_output());
    assert_eq!(summary["records_failed"], 1);
    assert_eq!(sim.counters().api_calls, before, "nothing was sent");
    let dead = read_jsonl(&dir.path().join("dead.jsonl"));
    assert!(
        dead.last().unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("declared base64"),
        "{dead:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn ionflow_test_shows_both_parts_of_a_multipart_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "t.toml",
        r#"
[connections.ion]
ionapi_file = "missing.ionapi"
[source]
kind = "file"
path = "none.jsonl"
[[sinks]]
kind = "ion_message"
connection = "ion"
document_name = "Process.PurchaseOrder"
from_logical_id = "lid://infor.ims.ionflow"
request = "multipart"
message_id = "po-{{ record.po }}"
document = "<PO>{{ record.po }}</PO>"
[[tests]]
name = "two parts"
input = [{ po = "7" }]
[[tests.requests]]
sink = 0
expect = [{ method = "POST", path = "IONSERVICES/api/ion/messaging/service/v2/multipartMessage", body = { MessagePayload = "<PO>7</PO>", ParameterRequest = { documentName = "Process.PurchaseOrder", fromLogicalId = "lid://infor.ims.ionflow", toLogicalId = "lid://default", messageId = "po-7", encoding = "NONE", characterSet = "UTF-8" } } }]
"#,
    );
    let result = run(ionflow().arg("test").arg(&path)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(
        result.stdout.contains("1 passed, 0 failed"),
        "{}",
        result.stdout
    );
}
