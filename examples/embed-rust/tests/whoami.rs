//! The example host, as built, against the gateway simulator over loopback.

use ionflow_runtime::EMBEDDED_CONNECTOR;
use ionflow_sim::{SimConfig, Simulator};

#[tokio::test]
async fn the_example_host_asks_users_me_with_one_token_and_prints_no_secret() {
    let sim = Simulator::start(SimConfig { items: 10, ..SimConfig::default() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (component, ionapi) = (dir.path().join("ionflow-connector.wasm"), dir.path().join("sim.ionapi"));
    std::fs::write(&component, EMBEDDED_CONNECTOR).unwrap();
    sim.write_ionapi(&ionapi).unwrap();

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ionflow-embed-rust"))
        .arg(&component)
        .arg(&ionapi)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "whoami: svc_ionflow@acme.example (ACME_TST)");

    let counters = sim.counters();
    assert_eq!(counters.token_requests.password, 1, "one backend-service token request");
    assert_eq!(counters.api_calls, 1);
    assert_eq!(counters.revocations, 1, "the example revokes its grant on the way out");
    assert_eq!(counters.wrong_host, 0);

    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&ionapi).unwrap()).unwrap();
    let tokens: serde_json::Value = ionflow_runtime::tls::client()
        .get(format!("{}/__sim/tokens", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut secrets: Vec<String> = ["cs", "saak", "sask"].map(|k| file[k].as_str().unwrap().to_owned()).into();
    strings(&tokens, &mut secrets);
    assert!(secrets.len() > 3, "the simulator lists the tokens it issued");
    for (i, secret) in secrets.iter().enumerate() {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "secret #{i} appears in the output");
    }
    sim.shutdown().await;
}

/// Every token-like string (16 characters or more) in the simulator's listing.
fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) if s.len() >= 16 => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}
