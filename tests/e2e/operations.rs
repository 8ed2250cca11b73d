//! Operating `ionflow serve`: the HTTP endpoint on any address (status,
//! Prometheus metrics, probes) and reloads of the pipeline folder.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::{
    assert_no_secret, daemon_timing, file_secrets, ionflow, issued_tokens, read_jsonl, sigterm,
    simulator, workdir,
};

/// One sample of an OpenMetrics text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the OpenMetrics text format strictly: every line is a `# HELP`,
/// `# TYPE` or `# UNIT` of a declared family, a sample of a declared family
/// (its name, or with a suffix its type allows), or the final `# EOF`.
/// Names and label names follow Prometheus's grammar; label values are
/// quoted with escapes; values are numbers. Panics naming the bad line.
pub fn parse_openmetrics(text: &str) -> Vec<Sample> {
    fn is_name(s: &str, colon: bool) -> bool {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
    }
    assert!(text.ends_with("# EOF\n"), "no final # EOF:\n{text}");
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if *line == "# EOF" {
            assert_eq!(i, lines.len() - 1, "# EOF before the end");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            assert!(
                is_name(name, true),
                "line {}: bad family name: {line}",
                i + 1
            );
            match kind {
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "info",
                            "stateset",
                            "unknown",
                            "gaugehistogram"
                        ]
                        .contains(&t),
                        "line {}: bad type: {line}",
                        i + 1
                    );
                    assert!(
                        families.insert(name.to_owned(), t.to_owned()).is_none(),
                        "line {}: family declared twice",
                        i + 1
                    );
                }
                "HELP" | "UNIT" => {}
                _ => panic!("line {}: unknown comment: {line}", i + 1),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("line {}: no value: {line}", i + 1));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("line {}: bad value: {line}", i + 1));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("line {}: unclosed labels: {line}", i + 1));
                (name, parse_labels(body, line))
            }
            None => (series, BTreeMap::new()),
        };
        assert!(
            is_name(name, true),
            "line {}: bad metric name: {line}",
            i + 1
        );
        let family = families
            .iter()
            .filter(|(f, t)| {
                let suffixes: &[&str] = match t.as_str() {
                    "counter" => &["_total", "_created"],
                    "histogram" => &["_bucket", "_count", "_sum", "_created"],
                    "summary" => &["", "_count", "_sum", "_created"],
                    "info" => &["_info"],
                    _ => &[""],
                };
                suffixes.iter().any(|s| name == format!("{f}{s}"))
            })
            .count();
        assert_eq!(
            family,
            1,
            "line {}: sample of no declared family: {line}",
            i + 1
        );
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

fn parse_labels(body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label in: {line}"));
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.is_empty(),
            "bad label name in: {line}"
        );
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => panic!("bad escape in: {line}"),
                },
                Some((at, '"')) => break at,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in: {line}"),
            }
        };
        assert!(
            labels.insert(name.to_owned(), value).is_none(),
            "label twice in: {line}"
        );
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    labels
}

/// The sum of a metric's samples whose labels include `with`.
pub fn total(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A pipeline reading the catalogue with `transform` (a jq filter), on a
/// schedule, into `NAME.jsonl`, failed records into `NAME.dead.jsonl`.
fn pipeline(dir: &Path, name: &str, ionapi: &Path, schedule: &str, filter: &str) {
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            r#"schedule = "{schedule}"
timezone = "UTC"

[connections.m3]
ionapi_file = "{}"
rate_limit = {{ requests = 1000000, window_secs = 1 }}

[source]
kind = "m3_list"
connection = "m3"
program = "MMS200MI"
transaction = "LstItmByItm"
key_field = "ITNO"
page_size = 7

[[transforms]]
kind = "jq"
filter = '{filter}'

[[sinks]]
kind = "file"
path = "{name}.jsonl"

[dead_letter]
path = "{name}.dead.jsonl"
"#,
            ionapi.display()
        ),
    )
    .unwrap();
}

async fn get(url: &str) -> (u16, String, String) {
    let answer = ionflow_runtime::tls::client()
        .get(url)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, answer.text().await.unwrap())
}

#[cfg(unix)]
#[tokio::test]
async fn metrics_on_an_open_address_match_the_runs_and_show_no_secret_or_record() {
    let _timing = daemon_timing().await;
    let sim = simulator(30).await;
    let (dir, ionapi) = workdir(&sim);
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    // Every 15 s: the endpoint is read between the first and second runs.
    let schedule = "*/15 * * * * *";
    pipeline(
        &pipelines,
        "clean",
        &ionapi,
        schedule,
        "{item: .ITNO, text: .ITDS}",
    );
    // Every third record fails with its description in the error: the
    // dead letter keeps it, the endpoint must not.
    pipeline(
        &pipelines,
        "flaky",
        &ionapi,
        schedule,
        r#"if (.ITNO | explode | add) % 3 == 0 then error("refused \(.ITDS)") else {item: .ITNO} end"#,
    );
    let port = free_port();
    let child = ionflow()
        .arg("serve")
        .arg(&pipelines)
        .args(["--log-format", "json", "--status-addr"])
        .arg(format!("0.0.0.0:{port}"))
        .env("IONFLOW_STATE_DIR", dir.path().join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (status, metrics) = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(answer) = ionflow_runtime::tls::client()
            .get(format!("{base}/status"))
            .send()
            .await
        {
            let status: serde_json::Value = answer.json().await.unwrap();
            let done = status["pipelines"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["runs"] == 1 && p["running"] == false);
            if done {
                let metrics = get(&format!("{base}/metrics")).await;
                // Still the same runs once the metrics were read.
                let again: serde_json::Value = ionflow_runtime::tls::client()
                    .get(format!("{base}/status"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(
                    again["pipelines"], status["pipelines"],
                    "a run began meanwhile"
                );
                break (status, metrics);
            }
        }
        assert!(Instant::now() < deadline, "the two runs did not end");
    };
    let (code, content_type, metrics) = metrics;
    let (health, _, _) = get(&format!("{base}/healthz")).await;
    let (ready, _, readiness) = get(&format!("{base}/readyz")).await;
    sigterm(child.id().unwrap()).await;
    let output = child.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(log.contains(&format!("0.0.0.0:{port}")), "{log}");

    assert_eq!(code, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert_eq!(health, 200);
    assert_eq!(ready, 200, "{readiness}");
    let samples = parse_openmetrics(&metrics);
    for p in status["pipelines"].as_array().unwrap() {
        let name = p["pipeline"].as_str().unwrap();
        let s = &p["last_summary"];
        let of = |metric: &str| total(&samples, metric, &[("pipeline", name)]);
        assert_eq!(
            of("ionflow_records_in_total"),
            s["records_in"].as_f64().unwrap(),
            "{name}"
        );
        assert_eq!(
            of("ionflow_records_out_total"),
            s["records_out"].as_f64().unwrap()
        );
        assert_eq!(
            of("ionflow_records_failed_total"),
            s["records_failed"].as_f64().unwrap()
        );
        assert_eq!(
            of("ionflow_records_dead_lettered_total"),
            s["records_dead_lettered"].as_f64().unwrap()
        );
        assert_eq!(of("ionflow_runs_total"), 1.0);
        assert_eq!(of("ionflow_run_duration_seconds_count"), 1.0);
        assert_eq!(of("ionflow_runs_in_progress"), 0.0);
    }
    let clean = &status["pipelines"][0];
    let flaky = &status["pipelines"][1];
    assert_eq!(clean["pipeline"], "clean");
    assert_eq!(clean["last_summary"]["records_in"], 30);
    assert!(
        flaky["last_summary"]["records_failed"].as_u64().unwrap() > 0,
        "{status}"
    );
    assert_eq!(
        total(
            &samples,
            "ionflow_runs_total",
            &[("pipeline", "clean"), ("outcome", "succeeded")]
        ),
        1.0
    );
    assert_eq!(
        total(
            &samples,
            "ionflow_runs_total",
            &[("pipeline", "flaky"), ("outcome", "records_failed")]
        ),
        1.0
    );
    // Only the clean run succeeded: only it has a last success time.
    let now = chrono::Utc::now().timestamp() as f64;
    let last = total(
        &samples,
        "ionflow_last_success_timestamp_seconds",
        &[("pipeline", "clean")],
    );
    assert!(now - last < 60.0 && last <= now + 1.0, "{last} vs {now}");
    assert!(
        !samples
            .iter()
            .any(|s| s.name == "ionflow_last_success_timestamp_seconds"
                && s.labels["pipeline"] == "flaky")
    );
    // Every HTTP exchange of the two runs, token requests included.
    let calls = total(&samples, "ionflow_api_calls_total", &[("connection", "m3")]);
    let summed = |key: &str| -> f64 {
        status["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["last_summary"][key].as_f64().unwrap())
            .sum()
    };
    assert_eq!(calls, summed("api_calls"), "{metrics}");
    assert_eq!(
        total(
            &samples,
            "ionflow_token_requests_total",
            &[("connection", "m3")]
        ),
        summed("token_requests")
    );
    assert_eq!(
        total(
            &samples,
            "ionflow_token_requests_total",
            &[("grant", "password")]
        ),
        summed("token_requests")
    );
    // 30 records in pages of 7: 5 list calls per run, all answered 200 by M3.
    assert_eq!(
        total(
            &samples,
            "ionflow_api_calls_total",
            &[("product", "M3"), ("status", "200")]
        ),
        10.0,
        "{metrics}"
    );
    assert_eq!(total(&samples, "ionflow_in_flight_requests", &[]), 0.0);
    assert_eq!(total(&samples, "ionflow_pipelines_loaded", &[]), 2.0);
    assert_eq!(total(&samples, "ionflow_pipeline_files_invalid", &[]), 0.0);

    // Nothing served names a secret, a token or a record.
    let mut values: Vec<String> = Vec::new();
    for file in ["clean.jsonl", "flaky.dead.jsonl"] {
        for line in read_jsonl(&pipelines.join(file)) {
            // A dead-letter line holds the record under `record`.
            let record = line.get("record").unwrap_or(&line);
            let mut strings = Vec::new();
            collect(record, &mut strings);
            values.extend(strings.into_iter().filter(|s| s.len() >= 6));
        }
    }
    assert!(values.len() > 30, "{values:?}");
    let mut secrets = file_secrets(&ionapi);
    secrets.extend(issued_tokens(&sim).await);
    for (what, body) in [
        ("/status", status.to_string()),
        ("/metrics", metrics.clone()),
        ("/readyz", readiness.clone()),
    ] {
        assert_no_secret(&body, &secrets, what);
        for value in &values {
            assert!(
                !body.contains(value.as_str()),
                "{what} shows a record value: {value}"
            );
        }
    }
    sim.shutdown().await;
}

fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| collect(v, out)),
        _ => {}
    }
}

fn events(log: &str, name: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["fields"]["event"] == name)
        .collect()
}

async fn status_of(port: u16) -> Option<serde_json::Value> {
    ionflow_runtime::tls::client()
        .get(format!("http://127.0.0.1:{port}/status"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

fn runs_of(status: &serde_json::Value, name: &str) -> Option<u64> {
    status["pipelines"]
        .as_array()?
        .iter()
        .find(|p| p["pipeline"] == name)
        .and_then(|p| p["runs"].as_u64())
}

/// Waits until `check` holds for the status, or panics after `secs`.
async fn until(
    port: u16,
    secs: u64,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = status_of(port).await
            && check(&status)
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {:?}",
            status_of(port).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_running_serve_picks_up_added_changed_and_removed_files_and_skips_broken_ones() {
    let _timing = daemon_timing().await;
    let sim = simulator(12).await;
    let (dir, ionapi) = workdir(&sim);
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir(&pipelines).unwrap();
    pipeline(&pipelines, "alpha", &ionapi, "* * * * * *", "{item: .ITNO}");
    // A broken file at start-up no longer stops serve.
    std::fs::write(
        pipelines.join("broken.toml"),
        "schedule = \"* * * * * *\"\n[source]\nkind = \"nope\"\n",
    )
    .unwrap();
    let port = free_port();
    let child = ionflow()
        .arg("serve")
        .arg(&pipelines)
        .args(["--log-format", "json", "--status-addr"])
        .arg(format!("127.0.0.1:{port}"))
        .env("IONFLOW_STATE_DIR", dir.path().join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = until(port, 20, "alpha runs beside the broken file", |s| {
        runs_of(s, "alpha").unwrap_or(0) >= 1
    })
    .await;
    let problems = status["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{status}");
    assert!(
        problems[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("broken.toml")
    );
    assert!(
        problems[0]["problems"][0]
            .as_str()
            .unwrap()
            .contains("broken.toml"),
        "{status}"
    );
    let metrics = parse_openmetrics(&get(&format!("http://127.0.0.1:{port}/metrics")).await.2);
    assert_eq!(total(&metrics, "ionflow_pipeline_files_invalid", &[]), 1.0);

    // Added: runs on its schedule.
    pipeline(&pipelines, "beta", &ionapi, "* * * * * *", "{item: .ITNO}");
    until(port, 15, "beta runs once added", |s| {
        runs_of(s, "beta").unwrap_or(0) >= 2
    })
    .await;
    // Fixed: the problem goes.
    pipeline(
        &pipelines,
        "broken",
        &ionapi,
        "* * * * * *",
        "{item: .ITNO}",
    );
    until(port, 15, "the fixed file runs", |s| {
        runs_of(s, "broken").unwrap_or(0) >= 1 && s["problems"].as_array().unwrap().is_empty()
    })
    .await;
    // Broken again: reported, and it keeps running on its last good definition.
    std::fs::write(pipelines.join("broken.toml"), "schedule = \"every day\"\n").unwrap();
    let before = runs_of(&status_of(port).await.unwrap(), "broken").unwrap();
    let status = until(
        port,
        15,
        "the file broken again is reported while it runs",
        |s| {
            !s["problems"].as_array().unwrap().is_empty()
                && runs_of(s, "broken").unwrap_or(0) >= before + 2
        },
    )
    .await;
    assert_eq!(status["problems"][0]["still_serving"], "broken", "{status}");
    // Changed: new runs use the new definition.
    pipeline(
        &pipelines,
        "alpha",
        &ionapi,
        "* * * * * *",
        "{changed: .ITNO}",
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = std::fs::read_to_string(pipelines.join("alpha.jsonl")).unwrap_or_default();
        if out.contains("\"changed\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alpha never ran its new definition"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Removed: no longer served.
    std::fs::remove_file(pipelines.join("beta.toml")).unwrap();
    until(port, 15, "beta is gone", |s| runs_of(s, "beta").is_none()).await;
    // SIGHUP asks for a look and does not stop the daemon.
    let hup = tokio::process::Command::new("kill")
        .args(["-HUP", &child.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    assert!(hup.success());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let alpha = runs_of(&status_of(port).await.expect("alive after SIGHUP"), "alpha").unwrap();

    sigterm(child.id().unwrap()).await;
    let output = child.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{log}");
    assert!(alpha >= 3, "{alpha}");
    assert!(!events(&log, "pipeline_invalid").is_empty(), "{log}");
    assert!(!events(&log, "pipeline_added").is_empty(), "{log}");
    assert!(!events(&log, "pipeline_changed").is_empty(), "{log}");
    assert!(!events(&log, "pipeline_removed").is_empty(), "{log}");
    assert!(
        events(&log, "reloading")
            .iter()
            .any(|e| e["fields"]["cause"] == "SIGHUP"),
        "{log}"
    );
    // Every line is JSON with a message.
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(v["fields"]["message"].is_string(), "no message: {line}");
    }
    sim.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn every_line_of_a_failed_run_is_json_and_names_the_pipeline_and_run() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    let file = crate::support::items_pipeline(dir.path(), &ionapi, 10);
    // A client secret the identity provider refuses: exit 3.
    crate::support::edit_ionapi(&ionapi, |json| {
        json.insert("cs".into(), serde_json::json!("not-the-secret"));
    });
    let result = crate::support::run(
        ionflow()
            .arg("run")
            .arg(&file)
            .args(["--json", "--log-format", "json", "-vv"])
            .env("IONFLOW_STATE_DIR", dir.path().join("state")),
    )
    .await;
    assert_eq!(result.code, 3, "{}", result.all_output());
    let summary: serde_json::Value = serde_json::from_str(result.stdout.trim())
        .unwrap_or_else(|_| panic!("stdout: {}", result.stdout));
    assert_eq!(summary["ok"], false);
    assert_eq!(summary["exit_code"], 3);
    assert_eq!(summary["error_kind"], "auth");
    assert_eq!(summary["pipeline"], "items");
    assert!(summary["message"].as_str().unwrap().len() > 10, "{summary}");
    let lines: Vec<serde_json::Value> = result
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    assert!(lines.len() >= 3, "{}", result.stderr);
    let mut run_ids = std::collections::BTreeSet::new();
    let mut connector_lines = 0;
    for line in &lines {
        assert!(line["fields"]["message"].is_string(), "no message: {line}");
        if line["target"] == "ionflow::connector" {
            connector_lines += 1;
            assert_eq!(line["span"]["pipeline"], "items", "{line}");
        }
        if let Some(id) = line["span"]["run_id"].as_str() {
            run_ids.insert(id.to_owned());
        }
    }
    assert!(connector_lines > 0, "{}", result.stderr);
    assert_eq!(run_ids.len(), 1, "{run_ids:?}");
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR");
    assert_eq!(last["fields"]["exit_code"], 3);
    assert_eq!(last["fields"]["error_kind"], "auth");
    assert_no_secret(
        &result.all_output(),
        &file_secrets(&ionapi),
        "the JSON output",
    );
    sim.shutdown().await;
}
