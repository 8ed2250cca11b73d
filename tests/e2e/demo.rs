//! `ionflow demo`: the README's first command.

use std::collections::BTreeSet;

use crate::support::{ionflow, read_jsonl, run};

#[tokio::test]
async fn demo_writes_every_item_of_the_catalogue_once() {
    let out = tempfile::tempdir().unwrap();
    let result = run(ionflow()
        .args(["demo", "--items", "1234", "--out"])
        .arg(out.path()))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(
        result
            .stdout
            .contains("1234 records in, 1234 out, 0 failed"),
        "{}",
        result.stdout
    );
    assert!(
        result.stdout.contains("1 token requests"),
        "{}",
        result.stdout
    );

    let records = read_jsonl(&out.path().join("m3-items.jsonl"));
    assert_eq!(records.len(), 1234);
    let items: BTreeSet<&str> = records
        .iter()
        .map(|r| r["item"].as_str().unwrap())
        .collect();
    assert_eq!(items.len(), 1234, "no duplicates across pages");
    assert_eq!(records[0]["item"], "ITM000001");
    assert_eq!(records[1233]["item"], "ITM001234");
    for key in ["description", "type", "unit", "active"] {
        assert!(
            records[0].get(key).is_some(),
            "{key} missing in {}",
            records[0]
        );
    }
    assert!(
        !out.path().join("m3-items.jsonl.partial").exists(),
        "the partial file is renamed into place"
    );
}
