//! Bad `.ionapi` files and bad credentials: named errors, the right exit
//! code, and never a secret value in the message.

use crate::support::{
    assert_no_secret, file_secrets, ionflow, items_pipeline, run, simulator, workdir,
};

#[tokio::test]
async fn malformed_files_name_the_file_and_field() {
    let sim = simulator(10).await;
    let (dir, ionapi) = workdir(&sim);
    let secrets = file_secrets(&ionapi);
    let pipeline = items_pipeline(dir.path(), &ionapi, 5);
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ionapi).unwrap()).unwrap();

    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    let mut missing_ot = original.clone();
    missing_ot.as_object_mut().unwrap().remove("ot");
    cases.push(("missing ot", missing_ot.to_string(), "field `ot`"));
    let mut cs_number = original.clone();
    cs_number["cs"] = serde_json::json!(12345);
    cases.push(("cs as number", cs_number.to_string(), "field `cs`"));
    let mut http_iu = original.clone();
    http_iu["iu"] = serde_json::json!("http://ionapi.example.com");
    cases.push(("http iu", http_iu.to_string(), "field `iu`"));
    let mut lone_saak = original.clone();
    lone_saak.as_object_mut().unwrap().remove("sask");
    cases.push(("saak without sask", lone_saak.to_string(), "field `sask`"));
    let truncated = original.to_string();
    cases.push((
        "truncated JSON",
        truncated[..truncated.len() / 2].to_owned(),
        "not valid JSON",
    ));

    for (case, content, expected) in cases {
        std::fs::write(&ionapi, &content).unwrap();
        let result = run(ionflow().arg("run").arg(&pipeline)).await;
        assert_eq!(result.code, 2, "{case}: {}", result.all_output());
        assert!(
            result.stderr.contains(expected),
            "{case}: {}",
            result.stderr
        );
        assert!(
            result.stderr.contains(&ionapi.display().to_string()),
            "{case}: the error names the file: {}",
            result.stderr
        );
        assert_no_secret(&result.all_output(), &secrets, case);
    }
    assert_eq!(sim.counters().api_calls, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_service_account_secret_is_an_auth_error() {
    let sim = simulator(10).await;
    let (dir, ionapi) = workdir(&sim);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ionapi).unwrap()).unwrap();
    let wrong = "wrong#sask+/=&%value";
    json["sask"] = serde_json::json!(wrong);
    std::fs::write(&ionapi, json.to_string()).unwrap();
    let secrets = file_secrets(&ionapi);
    let pipeline = items_pipeline(dir.path(), &ionapi, 5);

    let result = run(ionflow().arg("run").arg(&pipeline).arg("-vv")).await;
    assert_eq!(result.code, 3, "{}", result.all_output());
    assert!(result.stderr.contains("invalid_grant"), "{}", result.stderr);
    assert!(
        result.stderr.contains("`saak` and `sask`"),
        "{}",
        result.stderr
    );
    assert_no_secret(&result.all_output(), &secrets, "output");
    assert!(
        !dir.path().join("out.jsonl").exists(),
        "no output claims success"
    );
    sim.shutdown().await;
}
