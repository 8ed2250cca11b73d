//! `ionflow run` and `ionflow validate` on pipeline files, against the simulator.

use std::collections::BTreeSet;

use crate::support::{ionflow, items_pipeline, read_jsonl, run, simulator, workdir};

#[tokio::test]
async fn paging_by_key_returns_each_record_once_whatever_the_page_size() {
    let sim = simulator(100).await;
    let (dir, ionapi) = workdir(&sim);
    // 25 divides the total (the last page is full), 7 does not, 1 is the edge.
    for (round, page_size) in [25, 7, 1, 1000].into_iter().enumerate() {
        let pipeline = items_pipeline(dir.path(), &ionapi, page_size);
        let result = run(ionflow().arg("run").arg(&pipeline).arg("--json")).await;
        assert_eq!(
            result.code,
            0,
            "page_size {page_size}: {}",
            result.all_output()
        );
        let summary: serde_json::Value = serde_json::from_str(result.stdout.trim()).unwrap();
        assert_eq!(summary["records_in"], 100, "page_size {page_size}");
        assert_eq!(summary["records_out"], 100);
        assert_eq!(summary["records_failed"], 0);
        // The first run's grant is kept and serves the next runs.
        assert_eq!(
            summary["token_requests"],
            u64::from(round == 0),
            "a token for the first run only"
        );

        let records = read_jsonl(&dir.path().join("out.jsonl"));
        let items: BTreeSet<String> = records
            .iter()
            .map(|r| r["item"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            items.len(),
            100,
            "page_size {page_size}: no record lost or repeated"
        );
        assert_eq!(records.len(), 100);
    }
    let counters = sim.counters();
    assert_eq!(
        counters.token_requests.password, 1,
        "one backend-service grant, kept between runs"
    );
    assert_eq!(counters.wrong_host, 0, "auth on pu, business calls on iu");
    assert_eq!(counters.unauthorized, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn validate_points_at_the_line_and_key() {
    let sim = simulator(10).await;
    let (dir, ionapi) = workdir(&sim);
    let good = items_pipeline(dir.path(), &ionapi, 5);
    let result = run(ionflow().arg("validate").arg(&good)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(result.stdout.starts_with("ok: "), "{}", result.stdout);

    let text = std::fs::read_to_string(&good).unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, text.replace("page_size", "page_sise")).unwrap();
    let result = run(ionflow().arg("validate").arg(&good).arg(&bad)).await;
    assert_eq!(result.code, 2, "{}", result.all_output());
    assert!(
        result.stdout.contains("ok: "),
        "the good file is still checked"
    );
    let line = text
        .lines()
        .position(|l| l.starts_with("page_size"))
        .unwrap()
        + 1;
    let expected = format!("bad.toml:{line}:1: unknown field `page_sise`");
    assert!(
        result.stderr.contains(&expected),
        "want {expected} in {}",
        result.stderr
    );
    assert_eq!(sim.counters().api_calls, 0, "validate makes no API call");
    assert_eq!(sim.counters().token_requests.password, 0);

    let bad_jq = dir.path().join("bad-jq.toml");
    std::fs::write(&bad_jq, text.replace("{item: .ITNO", "{item: .ITNO |")).unwrap();
    let result = run(ionflow().arg("validate").arg(&bad_jq)).await;
    assert_eq!(result.code, 2);
    assert!(
        result.stderr.contains("transforms[0].filter"),
        "{}",
        result.stderr
    );
    sim.shutdown().await;
}
