//! Traces: with OTEL_EXPORTER_OTLP_ENDPOINT set, `ionflow run` and
//! `ionflow serve` send their run, page and gateway-call spans over
//! OTLP/HTTP to a collector, here a loopback receiver that decodes the
//! protobuf; without it nothing is sent; a collector that is down or never
//! answers neither fails a run nor holds it up.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use crate::support::{
    assert_no_secret, file_secrets, ionflow, issued_tokens, items_pipeline, read_jsonl, run,
    sigterm, sim_post, simulator, workdir,
};

/// What the receiver got: each request's headers and protobuf body.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(HeaderMap, Bytes)>>>);

impl Received {
    fn requests(&self) -> Vec<(HeaderMap, Bytes)> {
        self.0.lock().unwrap().clone()
    }

    /// Every span received, with its resource's attributes.
    fn spans(&self) -> Vec<(BTreeMap<String, String>, Span)> {
        let mut spans = Vec::new();
        for (_, body) in self.requests() {
            let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
            for resource_spans in request.resource_spans {
                let resource = attributes(
                    &resource_spans
                        .resource
                        .map(|r| r.attributes)
                        .unwrap_or_default(),
                );
                for scope in resource_spans.scope_spans {
                    for span in scope.spans {
                        spans.push((resource.clone(), span));
                    }
                }
            }
        }
        spans
    }
}

/// An OTLP/HTTP collector on loopback: `POST /v1/traces` is kept and
/// answered with an empty (fully successful) export response.
async fn receiver() -> (String, Received) {
    let received = Received::default();
    let kept = received.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let kept = kept.clone();
            async move {
                kept.0.lock().unwrap().push((headers, body));
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    attributes(&span.attributes).remove(key)
}

fn named<'a>(spans: &'a [(BTreeMap<String, String>, Span)], name: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == name)
        .collect()
}

/// An IDO read of the simulator's SLItems, next to `ionapi`.
fn ido_pipeline(dir: &Path, ionapi: &Path) -> std::path::PathBuf {
    let path = dir.join("slitems.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[connections.csi]
ionapi_file = "{}"

[source]
kind = "ido"
connection = "csi"
ido = "SLItems"
mongoose_config = "ACME"
properties = ["Item", "Description"]
page_size = 10

[[sinks]]
kind = "file"
path = "slitems.jsonl"
"#,
            ionapi.display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn a_run_sends_its_run_page_and_call_spans_without_a_secret() {
    let sim = simulator(25).await;
    let (dir, ionapi) = workdir(&sim);
    let items = items_pipeline(dir.path(), &ionapi, 10);
    let slitems = ido_pipeline(dir.path(), &ionapi);
    let (url, received) = receiver().await;
    // The first M3 call meets a 503 and is sent again.
    sim_post(
        &sim,
        "faults",
        serde_json::json!({"path_prefix": "M3/", "count": 1, "status": 503}),
    )
    .await;
    for pipeline in [&items, &slitems] {
        let result = run(ionflow()
            .arg("run")
            .arg(pipeline)
            .args(["--log-format", "json", "-vv"])
            .current_dir(dir.path())
            .env("IONFLOW_STATE_DIR", dir.path().join("state"))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &url)
            .env(
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-collector-key=loopback-test",
            ))
        .await;
        assert_eq!(result.code, 0, "{}", result.all_output());
        // Traces change nothing in the log: every line is JSON, and a
        // line logged during a call still names the run's pipeline.
        for line in result.stderr.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            if v["target"] == "ionflow::connector" {
                assert!(v["span"]["pipeline"].is_string(), "{line}");
            }
        }
    }
    let requests = received.requests();
    assert!(!requests.is_empty(), "the receiver got nothing");
    for (headers, _) in &requests {
        assert_eq!(headers["content-type"], "application/x-protobuf");
        assert_eq!(headers["x-collector-key"], "loopback-test");
        assert!(headers.get("authorization").is_none());
    }
    let spans = received.spans();
    for (resource, _) in &spans {
        assert_eq!(resource["service.name"], "ionflow", "{resource:?}");
    }

    // One run span per run, with its outcome and counts.
    let runs = named(&spans, "run");
    assert_eq!(runs.len(), 2, "{runs:?}");
    let run_of = |pipeline: &str| {
        *runs
            .iter()
            .find(|s| attr(s, "pipeline").as_deref() == Some(pipeline))
            .unwrap_or_else(|| panic!("no run span of {pipeline}: {runs:?}"))
    };
    let items_run = run_of("items");
    assert_eq!(attr(items_run, "outcome").as_deref(), Some("ok"));
    assert_eq!(attr(items_run, "records_in").as_deref(), Some("25"));
    assert_eq!(attr(items_run, "records_out").as_deref(), Some("25"));
    assert_eq!(attr(items_run, "records_failed").as_deref(), Some("0"));
    assert_eq!(attr(items_run, "retries").as_deref(), Some("1"));
    assert_eq!(attr(items_run, "run_id").map(|id| id.len()), Some(16));
    assert!(
        items_run.parent_span_id.is_empty(),
        "a run is a trace's root"
    );
    let ido_run = run_of("slitems");
    assert_ne!(items_run.trace_id, ido_run.trace_id, "one trace per run");

    // Pages are children of their run and hold its records.
    for run_span in [items_run, ido_run] {
        let pages: Vec<&Span> = named(&spans, "page")
            .into_iter()
            .filter(|p| p.trace_id == run_span.trace_id)
            .collect();
        assert!(pages.len() >= 3, "{pages:?}");
        let mut total = 0;
        for page in &pages {
            assert_eq!(page.parent_span_id, run_span.span_id);
            total += attr(page, "records").unwrap().parse::<u64>().unwrap();
        }
        assert_eq!(total, 25);
        let mut numbers: Vec<u64> = pages
            .iter()
            .map(|p| attr(p, "page").unwrap().parse().unwrap())
            .collect();
        numbers.sort();
        assert_eq!(numbers, (1..=pages.len() as u64).collect::<Vec<_>>());

        // Calls nest under the run's pages.
        let page_ids: Vec<&Vec<u8>> = pages.iter().map(|p| &p.span_id).collect();
        let calls: Vec<&Span> = named(&spans, "gateway call")
            .into_iter()
            .filter(|c| c.trace_id == run_span.trace_id)
            .collect();
        assert!(calls.len() >= 3, "{calls:?}");
        for call in &calls {
            assert!(page_ids.contains(&&call.parent_span_id), "{call:?}");
            assert_eq!(attr(call, "http.request.method").as_deref(), Some("GET"));
            assert_eq!(
                attr(call, "http.response.status_code").as_deref(),
                Some("200")
            );
            let path = attr(call, "url.path").unwrap();
            assert!(!path.contains('?'), "{path}");
        }
    }
    let calls = named(&spans, "gateway call");
    let m3_calls: Vec<&&Span> = calls
        .iter()
        .filter(|c| attr(c, "product").as_deref() == Some("m3"))
        .collect();
    assert!(!m3_calls.is_empty());
    for call in &m3_calls {
        assert_eq!(attr(call, "connection").as_deref(), Some("m3"));
        assert_eq!(attr(call, "m3.program").as_deref(), Some("MMS200MI"));
        assert_eq!(attr(call, "m3.transaction").as_deref(), Some("LstItmByItm"));
        assert_eq!(
            attr(call, "url.path").as_deref(),
            Some("M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm")
        );
    }
    // The call that met the 503 was sent twice and ended with a 200.
    let attempts: Vec<String> = m3_calls
        .iter()
        .map(|c| attr(c, "attempts").unwrap())
        .collect();
    assert_eq!(
        attempts.iter().filter(|a| *a == "2").count(),
        1,
        "{attempts:?}"
    );
    // Each call holds its HTTP exchanges, made inside the connector's
    // sandbox: the 503 and the 200 that followed it among them.
    let call_ids: Vec<&Vec<u8>> = calls.iter().map(|c| &c.span_id).collect();
    let exchanges = named(&spans, "http exchange");
    let business: Vec<&&Span> = exchanges
        .iter()
        .filter(|e| attr(e, "kind").as_deref() == Some("business"))
        .collect();
    assert!(business.len() >= calls.len(), "{exchanges:?}");
    for exchange in &business {
        assert!(call_ids.contains(&&exchange.parent_span_id), "{exchange:?}");
    }
    let statuses: Vec<String> = business
        .iter()
        .filter_map(|e| attr(e, "http.response.status_code"))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| *s == "503").count(),
        1,
        "{statuses:?}"
    );
    assert!(
        exchanges
            .iter()
            .any(|e| attr(e, "kind").as_deref() == Some("token")
                && attr(e, "grant").as_deref() == Some("password")),
        "{exchanges:?}"
    );
    let ido_calls: Vec<&&Span> = calls
        .iter()
        .filter(|c| attr(c, "product").as_deref() == Some("ido"))
        .collect();
    assert!(!ido_calls.is_empty());
    for call in ido_calls {
        assert_eq!(attr(call, "ido.collection").as_deref(), Some("SLItems"));
        assert_eq!(attr(call, "connection").as_deref(), Some("csi"));
    }

    // No secret and no record value anywhere in what was sent.
    let mut secrets = file_secrets(&ionapi);
    secrets.extend(issued_tokens(&sim).await);
    for record in read_jsonl(&dir.path().join("out.jsonl")) {
        secrets.push(record["description"].as_str().unwrap().to_owned());
    }
    for record in read_jsonl(&dir.path().join("slitems.jsonl")) {
        secrets.push(record["Description"].as_str().unwrap().to_owned());
    }
    let everything: String = requests
        .iter()
        .map(|(headers, body)| format!("{headers:?}{}", String::from_utf8_lossy(body)))
        .collect();
    assert_no_secret(&everything, &secrets, "the exported spans");
    for word in ["Bearer", "authorization", "Authorization", "client_secret"] {
        assert!(!everything.contains(word), "{word} in the exported spans");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn nothing_is_sent_without_an_endpoint() {
    let sim = simulator(15).await;
    let (dir, ionapi) = workdir(&sim);
    let items = items_pipeline(dir.path(), &ionapi, 10);
    let (url, received) = receiver().await;
    // Other OTEL_ variables alone turn nothing on.
    let result = run(ionflow()
        .arg("run")
        .arg(&items)
        .args(["--log-format", "json"])
        .current_dir(dir.path())
        .env("IONFLOW_STATE_DIR", dir.path().join("state"))
        .env("OTEL_SERVICE_NAME", "ionflow-test")
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-collector-key=loopback-test",
        ))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(read_jsonl(&dir.path().join("out.jsonl")).len(), 15);
    // Set, but switched off by the standard variable: nothing either.
    let result = run(ionflow()
        .arg("run")
        .arg(&items)
        .current_dir(dir.path())
        .env("IONFLOW_STATE_DIR", dir.path().join("state"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &url)
        .env("OTEL_SDK_DISABLED", "true"))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(received.requests().len(), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_collector_that_is_down_or_silent_neither_fails_nor_holds_up_a_run() {
    let sim = simulator(15).await;
    let (dir, ionapi) = workdir(&sim);
    let items = items_pipeline(dir.path(), &ionapi, 10);
    // A port nobody listens on: connections are refused.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    // A collector that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    for addr in [closed, silent_addr] {
        let out = dir.path().join("out.jsonl");
        let _ = std::fs::remove_file(&out);
        let started = std::time::Instant::now();
        // A hang, not a speed, is what the bound catches: the exporter's
        // own timeout and the flush's wait are a few seconds.
        let result = tokio::time::timeout(
            Duration::from_secs(120),
            run(ionflow()
                .arg("run")
                .arg(&items)
                .current_dir(dir.path())
                .env("IONFLOW_STATE_DIR", dir.path().join("state"))
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))),
        )
        .await
        .unwrap_or_else(|_| panic!("the run against {addr} did not end"));
        assert_eq!(result.code, 0, "{addr}: {}", result.all_output());
        assert_eq!(read_jsonl(&out).len(), 15, "{addr}");
        // Said once, in a line of its own.
        let said = result
            .stderr
            .lines()
            .filter(|l| {
                l.contains("did not reach the collector")
                    || l.contains("the last spans may not have reached the collector")
            })
            .count();
        assert_eq!(said, 1, "{addr}: {}", result.stderr);
        eprintln!("collector at {addr}: the run took {:?}", started.elapsed());
    }
    sim.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn serve_sends_the_spans_of_its_runs_while_it_runs() {
    let sim = simulator(15).await;
    let (dir, ionapi) = workdir(&sim);
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    let items = items_pipeline(&pipelines, &ionapi, 10);
    let text = std::fs::read_to_string(&items).unwrap();
    std::fs::write(&items, format!("schedule = \"* * * * * *\"\n{text}")).unwrap();
    let (url, received) = receiver().await;
    let child = ionflow()
        .arg("serve")
        .arg(&pipelines)
        .args(["--log-format", "json"])
        .env("IONFLOW_STATE_DIR", dir.path().join("state"))
        .env(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("{url}/v1/traces"),
        )
        .env("OTEL_SERVICE_NAME", "ionflow-worker")
        // Batches go out every 200 ms rather than every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let run = loop {
        let spans = received.spans();
        if let Some((resource, span)) = spans.iter().find(|(_, s)| s.name == "run") {
            assert_eq!(resource["service.name"], "ionflow-worker");
            break span.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no run span reached the receiver"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(attr(&run, "pipeline").as_deref(), Some("items"));
    assert_eq!(attr(&run, "outcome").as_deref(), Some("ok"));
    sigterm(child.id().unwrap()).await;
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("serve stops")
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for line in stderr.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|_| panic!("not JSON: {line}"));
    }
    // The calls of the run reached the receiver too, under their pages.
    let spans = received.spans();
    let calls = named(&spans, "gateway call");
    assert!(
        calls.iter().any(|c| c.trace_id == run.trace_id),
        "{calls:?}"
    );
    sim.shutdown().await;
}
