//! A gateway, product or endpoint that stays unavailable: every source and
//! sink ends with exit code 5 and a message that names the status and what
//! to do; a write that may have reached the product goes to the dead
//! letter as "the outcome is unknown", and only then; a token endpoint that
//! does not answer stops a run at once, nothing sent, nothing dead-lettered;
//! a 413 names the gateway's refusal and the size sent; bulk M3 dead letters
//! keep the M3 error code.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};

use crate::support::{read_jsonl, run_json, sim_post, simulator, workdir};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const RETRY: &str = "retry = { max_retries = 2, backoff_ms = 20 }";

/// A loopback endpoint that answers every request with `status`.
async fn always(status: u16) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || async move {
        (
            axum::http::StatusCode::from_u16(status).unwrap(),
            "<html>busy</html>",
        )
    });
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://127.0.0.1:{}", addr.port()), server)
}

#[tokio::test]
async fn every_source_that_meets_503_until_its_retries_are_spent_exits_5() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    let (url, server) = always(503).await;
    let sources = [
        (
            "M3/",
            "kind = \"m3_list\"\nprogram = \"MMS200MI\"\ntransaction = \"LstItmByItm\"\nkey_field = \"ITNO\"",
        ),
        (
            "CSI/",
            "kind = \"ido\"\nido = \"SLItems\"\nmongoose_config = \"ACME\"\nproperties = [\"Item\"]",
        ),
        ("IONSERVICES/datalakeapi", "kind = \"data_lake\""),
        ("DATAFABRIC/", "kind = \"compass\"\nsql = \"SELECT 1\""),
        (
            "IONSERVICES/",
            "kind = \"gateway\"\npath = \"IONSERVICES/datalakeapi/v1/payloads/list\"",
        ),
    ];
    for (prefix, source) in sources {
        sim_post(
            &sim,
            "faults",
            json!({"path_prefix": prefix, "count": 50, "status": 503}),
        )
        .await;
        let path = write(
            dir.path(),
            "read.toml",
            &format!(
                r#"
[connections.c]
ionapi_file = "{}"
[source]
connection = "c"
{source}
{RETRY}
[[sinks]]
kind = "file"
path = "out.jsonl"
"#,
                ionapi.display()
            ),
        );
        let (result, _) = run_json(&path).await;
        assert_eq!(result.code, 5, "{source}: {}", result.all_output());
        // Compass's submission starts a job, so it is not repeated.
        let sent = if source.contains("compass") {
            "sent once, not repeated"
        } else {
            "sent 3 times"
        };
        for expected in ["HTTP 503 Service Unavailable", sent, "run again later"] {
            assert!(
                result.stderr.contains(expected),
                "{source}: {expected}: {}",
                result.stderr
            );
        }
        assert!(!result.stderr.contains("without a"), "{}", result.stderr);
        ionflow_runtime::tls::client()
            .delete(format!("{}/__sim/faults", sim.base_url()))
            .send()
            .await
            .unwrap();
    }
    // A plain HTTP source: the same exit code and message.
    let path = write(
        dir.path(),
        "http.toml",
        &format!(
            "[source]\nkind = \"http\"\nurl = \"{url}/items\"\n{RETRY}\n[[sinks]]\nkind = \"file\"\npath = \"out.jsonl\"\n"
        ),
    );
    let (result, _) = run_json(&path).await;
    assert_eq!(result.code, 5, "{}", result.all_output());
    assert!(
        result
            .stderr
            .contains("HTTP 503 Service Unavailable: <html>busy</html> (sent 3 times)"),
        "{}",
        result.stderr
    );
    server.abort();
    sim.shutdown().await;
}

/// A pipeline writing the items of `items.csv` through `sink`.
fn writes(dir: &Path, ionapi: &Path, sink: &str) -> PathBuf {
    std::fs::write(
        dir.join("items.csv"),
        "item,name\nW-1,One\nW-2,Two\nW-3,Three\n",
    )
    .unwrap();
    write(
        dir,
        "write.toml",
        &format!(
            r#"
[connections.c]
ionapi_file = "{}"
timeout_secs = 1
[source]
kind = "file"
path = "items.csv"
format = "csv"
[[sinks]]
connection = "c"
{sink}
[dead_letter]
path = "dead.jsonl"
"#,
            ionapi.display()
        ),
    )
}

const M3_ADD: &str = "kind = \"m3\"\nprogram = \"MMS200MI\"\ntransaction = \"AddItmBasic\"\nfields = { ITNO = \"{{ record.item }}\", ITDS = \"{{ record.name }}\", UNMS = \"EA\" }";

#[tokio::test]
async fn a_write_that_may_have_reached_the_product_is_dead_lettered_as_outcome_unknown() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    let sinks = [
        ("M3/", M3_ADD.to_owned()),
        (
            "M3/",
            "kind = \"m3_bulk\"\nprogram = \"MMS200MI\"\ntransaction = \"AddItmBasic\"\nbatch_size = 1\nfields = { ITNO = \"{{ record.item }}\", ITDS = \"{{ record.name }}\", UNMS = \"EA\" }".to_owned(),
        ),
        (
            "IONSERVICES/",
            "kind = \"ion_message\"\ndocument_name = \"ItemExport\"\nfrom_logical_id = \"lid://infor.ims.ionflow\"".to_owned(),
        ),
        (
            "CSI/",
            "kind = \"ido_update\"\nido = \"SLItems\"\nmongoose_config = \"ACME\"\naction = \"insert\"\nproperties = { Item = \"{{ record.item }}\", Description = \"{{ record.name }}\", UM = \"EA\" }".to_owned(),
        ),
        (
            "IONSERVICES/",
            "kind = \"gateway\"\npath = \"IONSERVICES/api/ion/messaging/service/v2/message\"".to_owned(),
        ),
    ];
    for (prefix, sink) in &sinks {
        for status in [502, 503] {
            let _ = std::fs::remove_file(dir.path().join("dead.jsonl"));
            let path = writes(dir.path(), &ionapi, &format!("{sink}\n{RETRY}"));
            // The first write meets the status; the others go through (or
            // are refused by the product, which is beside the point here).
            sim_post(
                &sim,
                "faults",
                json!({"path_prefix": prefix, "count": 1, "status": status}),
            )
            .await;
            let before = sim.counters().api_calls;
            let (result, summary) = run_json(&path).await;
            assert_eq!(result.code, 4, "{sink} {status}: {}", result.all_output());
            assert_eq!(summary["retries"], 0, "{summary}");
            assert_eq!(
                sim.counters().api_calls - before,
                3,
                "{sink} {status}: each write sent once, none repeated"
            );
            let dead = read_jsonl(&dir.path().join("dead.jsonl"));
            let unknown: Vec<&Value> = dead
                .iter()
                .filter(|d| {
                    d["error"]
                        .as_str()
                        .unwrap()
                        .contains("the outcome is unknown, check before sending it again")
                })
                .collect();
            assert_eq!(unknown.len(), 1, "{sink} {status}: {dead:?}");
            assert_eq!(unknown[0]["record"]["item"], "W-1");
            let error = unknown[0]["error"].as_str().unwrap();
            assert!(error.contains(&format!("HTTP {status}")), "{error}");
            assert!(!error.contains("without a"), "{error}");
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_write_that_may_be_repeated_stops_the_run_with_5_once_its_retries_are_spent() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    let (url, server) = always(503).await;
    let sinks = [
        (
            "IONSERVICES/",
            "kind = \"gateway\"\npath = \"IONSERVICES/api/ion/messaging/service/v2/message\"\nidempotent = true".to_owned(),
        ),
        (
            "CSI/",
            "kind = \"ido_update\"\nido = \"SLItems\"\nmongoose_config = \"ACME\"\naction = \"update\"\nproperties = { Item = \"{{ record.item }}\", Description = \"{{ record.name }}\" }".to_owned(),
        ),
        (
            "none",
            format!("kind = \"http\"\nurl = \"{url}/items\"\nmethod = \"PUT\""),
        ),
    ];
    for (prefix, sink) in &sinks {
        let _ = std::fs::remove_file(dir.path().join("dead.jsonl"));
        sim_post(
            &sim,
            "faults",
            json!({"path_prefix": prefix, "count": 50, "status": 503}),
        )
        .await;
        let path = writes(dir.path(), &ionapi, &format!("{sink}\n{RETRY}"));
        let path_text = std::fs::read_to_string(&path).unwrap();
        if sink.starts_with("kind = \"http\"") {
            std::fs::write(&path, path_text.replace("connection = \"c\"\n", "")).unwrap();
        }
        let (result, _) = run_json(&path).await;
        assert_eq!(result.code, 5, "{sink}: {}", result.all_output());
        for expected in [
            "HTTP 503 Service Unavailable",
            "sent 3 times",
            "run again later",
        ] {
            assert!(
                result.stderr.contains(expected),
                "{sink}: {expected}: {}",
                result.stderr
            );
        }
        assert!(
            !dir.path().join("dead.jsonl").exists(),
            "{sink}: a record that may be sent again is not dead-lettered"
        );
        ionflow_runtime::tls::client()
            .delete(format!("{}/__sim/faults", sim.base_url()))
            .send()
            .await
            .unwrap();
    }
    server.abort();
    sim.shutdown().await;
}

#[tokio::test]
async fn a_token_endpoint_that_does_not_answer_stops_a_write_run_at_once() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    let path = writes(dir.path(), &ionapi, M3_ADD);
    for fault in [
        json!({"count": 10, "delay_ms": 3000}),
        json!({"count": 10, "status": 503}),
    ] {
        sim_post(&sim, "token-faults", fault.clone()).await;
        let started = Instant::now();
        let (result, _) = run_json(&path).await;
        let took = started.elapsed();
        assert_eq!(result.code, 5, "{fault}: {}", result.all_output());
        assert!(
            result.stderr.contains(&format!(
                "no access token could be obtained from the token endpoint {}",
                token_url(&ionapi)
            )),
            "{fault}: {}",
            result.stderr
        );
        assert!(
            result.stderr.contains("nothing was sent"),
            "{}",
            result.stderr
        );
        assert_eq!(sim.counters().api_calls, 0, "{fault}: no write was sent");
        assert!(
            !dir.path().join("dead.jsonl").exists(),
            "{fault}: nothing is dead-lettered"
        );
        // One token request's timeout (1 s), not one per record.
        assert!(took.as_secs_f64() < 10.0, "{fault}: took {took:?}");
        ionflow_runtime::tls::client()
            .delete(format!("{}/__sim/token-faults", sim.base_url()))
            .send()
            .await
            .unwrap();
    }
    sim.shutdown().await;
}

fn token_url(ionapi: &Path) -> String {
    let file: Value = serde_json::from_str(&std::fs::read_to_string(ionapi).unwrap()).unwrap();
    format!(
        "{}{}",
        file["pu"].as_str().unwrap(),
        file["ot"].as_str().unwrap()
    )
}

#[tokio::test]
async fn a_413_names_the_gateways_refusal_and_the_size_sent() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    sim_post(
        &sim,
        "faults",
        json!({"path_prefix": "IONSERVICES/", "count": 1, "status": 413}),
    )
    .await;
    let path = writes(
        dir.path(),
        &ionapi,
        "kind = \"ion_message\"\ndocument_name = \"ItemExport\"\nfrom_logical_id = \"lid://infor.ims.ionflow\"",
    );
    let (result, summary) = run_json(&path).await;
    assert_eq!(result.code, 4, "{}", result.all_output());
    assert_eq!(summary["records_failed"], 1);
    let dead = read_jsonl(&dir.path().join("dead.jsonl"));
    let error = dead[0]["error"].as_str().unwrap();
    assert!(
        error.contains("the gateway refused the request body of")
            && error.contains("bytes with HTTP 413 Payload Too Large"),
        "{error}"
    );
    assert!(
        !error.contains("10485760"),
        "not the client's own limit: {error}"
    );
    assert!(
        !error.contains("outcome is unknown"),
        "a 413 never reached the product: {error}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn bulk_m3_dead_letters_keep_the_m3_error_code() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    let path = writes(
        dir.path(),
        &ionapi,
        "kind = \"m3_bulk\"\nprogram = \"MMS200MI\"\ntransaction = \"AddItmBasic\"\nbatch_size = 10\nfields = { ITNO = \"{% if record.item == 'W-2' %} {% endif %}{{ record.item }}\", ITDS = \"{{ record.name }}\", UNMS = \"EA\" }",
    );
    let (result, _) = run_json(&path).await;
    assert_eq!(result.code, 4, "{}", result.all_output());
    let dead = read_jsonl(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0]["error"],
        "M3 AddItmBasic: Item number must not start with a blank (field ITNO) [WITNO04]"
    );
    sim.shutdown().await;
}

/// A system without root certificates (a bare container image): a pipeline
/// that makes no HTTP call runs, since HTTP clients are built at their first
/// use, and one that needs TLS says what is missing instead of "builder
/// error".
#[tokio::test]
async fn without_root_certificates_a_file_pipeline_runs_and_https_names_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let empty_dir = dir.path().join("no-certs");
    std::fs::create_dir(&empty_dir).unwrap();
    let empty_file = write(dir.path(), "no-certs.pem", "");
    write(dir.path(), "in.jsonl", "{\"a\":1}\n{\"a\":2}\n");
    let files = write(
        dir.path(),
        "files.toml",
        "name = \"files\"\n[source]\nkind = \"file\"\npath = \"in.jsonl\"\n\
         [[sinks]]\nkind = \"file\"\npath = \"out.jsonl\"\n",
    );
    let without_certs = |pipeline: &Path| {
        let mut cmd = crate::support::ionflow();
        cmd.arg("run")
            .arg(pipeline)
            .env("SSL_CERT_FILE", &empty_file)
            .env("SSL_CERT_DIR", &empty_dir);
        cmd
    };
    let result = crate::support::run(&mut without_certs(&files)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(read_jsonl(&dir.path().join("out.jsonl")).len(), 2);

    // The name does not resolve, but the client fails before any lookup.
    let https = write(
        dir.path(),
        "https.toml",
        "name = \"https\"\n[source]\nkind = \"http\"\nurl = \"https://ionflow-test.invalid/items\"\n\
         [[sinks]]\nkind = \"file\"\npath = \"out2.jsonl\"\n",
    );
    let result = crate::support::run(&mut without_certs(&https)).await;
    assert_ne!(result.code, 0);
    assert!(
        result.stderr.contains("could not build the HTTP client")
            && result.stderr.contains("No CA certificates were loaded"),
        "{}",
        result.stderr
    );
}
