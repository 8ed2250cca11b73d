//! The example pipelines in `pipelines/`, unchanged, validated, unit-tested
//! and run against the simulator.

use std::collections::BTreeSet;

use crate::support::{
    example_project, examples_dir, ionflow, read_jsonl, run, run_json, sim_get, simulator,
};

const EXAMPLES: &[&str] = &[
    "m3-items-to-csv",
    "ido-items-to-jsonl",
    "csv-to-m3-items",
    "m3-items-to-ion",
];

#[tokio::test]
async fn every_example_validates_and_passes_its_tests() {
    let sim = simulator(10).await;
    let project = example_project(&sim, EXAMPLES);
    let files: Vec<_> = EXAMPLES
        .iter()
        .map(|n| project.path().join(format!("pipelines/{n}.toml")))
        .collect();
    let result = run(ionflow()
        .arg("validate")
        .args(&files)
        .env("INFOR_ENV", "dev"))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(result.stdout.matches("ok: ").count(), EXAMPLES.len());

    let result = run(ionflow().arg("test").args(&files)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(
        result
            .stdout
            .contains(&format!("{} passed, 0 failed", EXAMPLES.len())),
        "{}",
        result.stdout
    );
    assert_eq!(
        sim.counters().api_calls,
        0,
        "validate and test make no API call"
    );
    assert_eq!(sim.counters().token_requests.password, 0);
    assert!(examples_dir().join("data/new-items.csv").exists());
    sim.shutdown().await;
}

#[tokio::test]
async fn m3_items_to_csv_writes_active_items_with_a_header() {
    let sim = simulator(120).await;
    let project = example_project(&sim, &["m3-items-to-csv"]);
    let (result, summary) = run_json(&project.path().join("pipelines/m3-items-to-csv.toml")).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_in"], 120);
    let out = std::fs::read_to_string(project.path().join("out/m3-items.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(out.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["item", "name", "type", "unit", "gross_weight_kg"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len() as u64, summary["records_out"].as_u64().unwrap());
    assert!(
        rows.len() > 10 && rows.len() < 120,
        "only active items: {}",
        rows.len()
    );
    assert!(rows.iter().all(|r| r[4].parse::<f64>().is_ok()));
    sim.shutdown().await;
}

#[tokio::test]
async fn ido_items_run_incrementally_from_their_watermark() {
    let sim = simulator(250).await;
    let project = example_project(&sim, &["ido-items-to-jsonl", "csv-to-m3-items"]);
    let pipeline = project.path().join("pipelines/ido-items-to-jsonl.toml");
    let state = project
        .path()
        .join("pipelines/.ionflow/state/ido-items-to-jsonl.json");

    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_in"], 250, "first run reads everything");
    assert_eq!(
        sim.counters().calls_by_path.values().sum::<u64>(),
        2,
        "200 + 50 by bookmark"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let first_mark = saved["watermarks"]["since"].as_str().unwrap().to_owned();
    let records = read_jsonl(&project.path().join("out/ido-items.jsonl"));
    let newest = records
        .iter()
        .map(|r| r["changed"].as_str().unwrap())
        .max()
        .unwrap();
    assert_eq!(first_mark, newest);

    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_in"], 0, "nothing changed since");

    // Two new items through M3; the IDO sees the same catalogue.
    std::fs::write(
        project.path().join("pipelines/data/new-items.csv"),
        "item,name,type,unit,gross_weight_kg\nNEW-1,Bolt,FIN,EA,0.1\nNEW-2,Nut,FIN,EA,0.05\n",
    )
    .unwrap();
    let (result, _) = run_json(&project.path().join("pipelines/csv-to-m3-items.toml")).await;
    assert_eq!(result.code, 0, "{}", result.all_output());

    let (result, summary) = run_json(&pipeline).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_in"], 2, "only the new items");
    let items: BTreeSet<String> = read_jsonl(&project.path().join("out/ido-items.jsonl"))
        .iter()
        .map(|r| r["item"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        items,
        BTreeSet::from(["NEW-1".to_owned(), "NEW-2".to_owned()])
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn csv_to_m3_sends_a_transaction_per_row_and_dead_letters_refusals() {
    let sim = simulator(20).await;
    let project = example_project(&sim, &["csv-to-m3-items"]);
    std::fs::write(
        project.path().join("pipelines/data/new-items.csv"),
        "item,name,type,unit,gross_weight_kg\n\
         NEW-1,Hex bolt,FIN,EA,0.021\n\
         ITM000001,Already there,FIN,EA,1\n\
         NEW-2,Strange unit,FIN,XX,1\n\
         ,,,,\n\
         NEW-3,\"Washer, M8\",FIN,PCS,0.003\n",
    )
    .unwrap();
    let (result, summary) = run_json(&project.path().join("pipelines/csv-to-m3-items.toml")).await;
    assert_eq!(
        result.code,
        4,
        "failed records give exit code 4: {}",
        result.all_output()
    );
    assert_eq!(summary["records_in"], 5);
    assert_eq!(summary["records_out"], 4, "the blank row is filtered out");
    assert_eq!(summary["records_failed"], 2);
    let dead = read_jsonl(&project.path().join("out/csv-to-m3-items.dead-letter.jsonl"));
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["record"]["item"], "ITM000001");
    assert_eq!(dead[0]["stage"], "sinks[0]");
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{}",
        dead[0]
    );
    assert_eq!(dead[1]["record"]["item"], "NEW-2");
    assert!(
        dead[1]["error"].as_str().unwrap().contains("XX"),
        "{}",
        dead[1]
    );
    assert_eq!(
        summary["dead_letter"]
            .as_str()
            .map(|p| p.ends_with("csv-to-m3-items.dead-letter.jsonl")),
        Some(true)
    );
    let calls = sim.counters().calls_by_path;
    let adds = calls
        .iter()
        .find(|(k, _)| k.ends_with("MMS200MI/AddItmBasic"))
        .map(|(_, v)| *v);
    assert_eq!(adds, Some(4), "{calls:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn m3_items_to_ion_sends_one_document_per_item() {
    let sim = simulator(30).await;
    let project = example_project(&sim, &["m3-items-to-ion"]);
    let (result, summary) = run_json(&project.path().join("pipelines/m3-items-to-ion.toml")).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_out"], 30);
    let messages = sim_get(&sim, "messages").await;
    let messages = messages.as_array().unwrap();
    assert_eq!(messages.len(), 30);
    let first = &messages[0];
    assert_eq!(first["endpoint"], "message");
    assert_eq!(first["document_name"], "ItemExport");
    assert_eq!(first["from_logical_id"], "lid://infor.ims.ionflow");
    assert_eq!(first["to_logical_id"], "lid://default");
    assert_eq!(first["encoding"], "NONE");
    // The document as ION received it in `document.value`.
    assert_eq!(first["body"]["ItemExport"]["ItemID"], "ITM000001");
    sim.shutdown().await;
}
