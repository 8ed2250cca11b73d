//! A runaway jq filter or template fails its record (or the check), with
//! the limit named and a documented exit code; the process never aborts
//! (issue 15). Every run is bounded by a timeout.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Run, ionflow, read_jsonl, run};

/// No command here may take longer: a limit that does not hold fails the
/// test instead of hanging it.
const BOUND: Duration = Duration::from_secs(90);

async fn bounded(cmd: &mut tokio::process::Command) -> Run {
    tokio::time::timeout(BOUND, run(cmd))
        .await
        .expect("ionflow ended within the bound")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// One record per runaway filter of issue 15, between records that pass.
const RUNAWAY_FILTER: &str = r#"
if .k == "recurse" then (def f: 1 + f; f)
elif .k == "spin" then (def f: f; f)
elif .k == "grow" then ([range(1e9)] | length)
elif .k == "last" then last(range(1e15))
elif .k == "string" then ("x" * 10000000000)
else {k, ok: true} end
"#;

const RECORDS: &str = "{\"k\":\"a\"}\n{\"k\":\"recurse\"}\n{\"k\":\"spin\"}\n{\"k\":\"grow\"}\n\
                       {\"k\":\"last\"}\n{\"k\":\"string\"}\n{\"k\":\"z\"}\n";

fn limit_of(k: &str) -> &'static str {
    match k {
        "recurse" => "depth limit",
        "spin" | "last" => "time limit of 500 ms",
        _ => "memory limit of 16 MiB",
    }
}

#[tokio::test]
async fn runaway_filters_fail_their_records_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), RECORDS).unwrap();
    // Two transforms and a file sink: the records go as JSON text through
    // the workers; with watermarks they would go as records. Both ways.
    for (name, state) in [
        ("text.toml", ""),
        (
            "records.toml",
            "[state.watermarks.k]\nfield = \"k\"\ninitial = \"\"\n",
        ),
    ] {
        let pipeline = write(
            dir.path(),
            name,
            &format!(
                r#"
[source]
kind = "file"
path = "in.jsonl"
[[transforms]]
kind = "jq"
filter = '''{RUNAWAY_FILTER}'''
timeout_ms = 500
max_memory_mb = 16
[[transforms]]
kind = "jq"
filter = '.'
[[sinks]]
kind = "file"
path = "out-{name}.jsonl"
[dead_letter]
path = "dead-{name}.jsonl"
{state}"#
            ),
        );
        let started = Instant::now();
        let result = bounded(
            ionflow()
                .arg("run")
                .arg("--json")
                .arg(&pipeline)
                .env("IONFLOW_STATE_DIR", dir.path().join("state")),
        )
        .await;
        assert_eq!(result.code, 4, "{name}: {}", result.all_output());
        let summary: Value = serde_json::from_str(result.stdout.trim()).unwrap();
        assert_eq!(summary["records_failed"], 5, "{summary}");
        let out = read_jsonl(&dir.path().join(format!("out-{name}.jsonl")));
        assert_eq!(
            out,
            vec![json!({"k": "a", "ok": true}), json!({"k": "z", "ok": true})],
            "{name}: the records around the runaway ones went through, in order"
        );
        let dead = read_jsonl(&dir.path().join(format!("dead-{name}.jsonl")));
        let failed: Vec<&str> = dead
            .iter()
            .map(|d| d["record"]["k"].as_str().unwrap())
            .collect();
        assert_eq!(
            failed,
            ["recurse", "spin", "grow", "last", "string"],
            "{name}"
        );
        for d in &dead {
            let k = d["record"]["k"].as_str().unwrap();
            let error = d["error"].as_str().unwrap();
            assert!(error.contains(limit_of(k)), "{name} {k}: {error}");
            assert_eq!(d["stage"], "transforms[0]", "{d}");
        }
        // Each runaway record is stopped within its budget (plus a
        // second when it has to be stopped from outside), not minutes.
        assert!(started.elapsed() < Duration::from_secs(60), "{name}");
    }
}

#[tokio::test]
async fn runaway_filters_fail_their_tests() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = write(
        dir.path(),
        "tested.toml",
        &format!(
            r#"
[source]
kind = "file"
path = "in.jsonl"
[[transforms]]
kind = "jq"
filter = '''{RUNAWAY_FILTER}'''
timeout_ms = 500
max_memory_mb = 16
[[sinks]]
kind = "stdout"
[[tests]]
name = "recursion"
input = [{{ k = "recurse" }}]
output = []
[[tests]]
name = "growth"
input = [{{ k = "grow" }}]
output = []
[[tests]]
name = "fine"
input = [{{ k = "a" }}]
output = [{{ k = "a", ok = true }}]
"#
        ),
    );
    let result = bounded(ionflow().arg("test").arg(&pipeline)).await;
    assert_eq!(result.code, 4, "{}", result.all_output());
    assert!(result.stdout.contains("depth limit"), "{}", result.stdout);
    assert!(
        result.stdout.contains("memory limit of 16 MiB"),
        "{}",
        result.stdout
    );
    assert!(
        result.stdout.contains("1 passed, 2 failed"),
        "{}",
        result.stdout
    );
}

#[tokio::test]
async fn oversized_filters_are_refused_by_validate() {
    let dir = tempfile::tempdir().unwrap();
    // Issue 15: a 2.5 MB filter overflowed the stack of `validate`.
    let huge = format!(". {}", "| .a ".repeat(500_000));
    let nested = format!("{}.{}", "[".repeat(10_000), "]".repeat(10_000));
    for (name, filter, limit) in [
        ("huge.toml", huge, "over the limit of 64 KiB"),
        ("nested.toml", nested, "over the limit of 256"),
    ] {
        let pipeline = write(
            dir.path(),
            name,
            &format!(
                "[source]\nkind = \"file\"\npath = \"in.jsonl\"\n[[transforms]]\nkind = \"jq\"\n\
                 filter = '{filter}'\n[[sinks]]\nkind = \"stdout\"\n"
            ),
        );
        for command in ["validate", "test", "run"] {
            let result = bounded(ionflow().arg(command).arg(&pipeline)).await;
            assert_eq!(result.code, 2, "{command} {name}: {}", result.all_output());
            assert!(
                result.stderr.contains(limit),
                "{command} {name}: {}",
                result.stderr
            );
            assert!(
                result.stderr.contains("transforms[0]"),
                "the error names the step: {}",
                result.stderr
            );
        }
    }
}

/// A receiver of the http sink's requests, to show what got through.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/in",
        axum::routing::post(move |body: String| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(body);
                (axum::http::StatusCode::CREATED, "ok")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, seen, server)
}

#[tokio::test]
async fn runaway_templates_fail_their_records() {
    let (url, seen, server) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"id\":\"a\",\"mode\":\"ok\"}\n{\"id\":\"b\",\"mode\":\"loops\"}\n\
         {\"id\":\"c\",\"mode\":\"big\"}\n{\"id\":\"d\",\"mode\":\"ok\"}\n",
    )
    .unwrap();
    // Issue 15: nested range(100000) loops ran 40 s and 800 MB.
    let body = "{% if record.mode == 'loops' %}{% for i in range(100000) %}\
                {% for j in range(100000) %}x{% endfor %}{% endfor %}\
                {% elif record.mode == 'big' %}{{ 'x' * 100000000 }}\
                {% else %}{\"id\": \"{{ record.id }}\"}{% endif %}";
    let pipeline = write(
        dir.path(),
        "templates.toml",
        &format!(
            r#"
[source]
kind = "file"
path = "in.jsonl"
[[sinks]]
kind = "http"
url = "{url}/in"
body = '''{body}'''
[dead_letter]
path = "dead.jsonl"
[[tests]]
name = "loops"
input = [{{ id = "b", mode = "loops" }}]
requests = [{{ sink = 0, expect = [{{ method = "POST" }}] }}]
"#
        ),
    );
    let started = Instant::now();
    let result = bounded(ionflow().arg("run").arg(&pipeline)).await;
    assert_eq!(result.code, 4, "{}", result.all_output());
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["{\"id\": \"a\"}".to_string(), "{\"id\": \"d\"}".to_string()]
    );
    let dead = read_jsonl(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0]["record"]["id"], "b");
    assert!(
        dead[0]["error"]
            .as_str()
            .unwrap()
            .contains("limit of 1000000 steps"),
        "{}",
        dead[0]
    );
    assert_eq!(dead[1]["record"]["id"], "c");
    // minijinja charges fuel by the size of what it builds: a 100 MB
    // string stops at the step limit, or else at the memory limit.
    let error = dead[1]["error"].as_str().unwrap();
    assert!(
        error.contains("limit of 1000000 steps") || error.contains("memory limit of 64 MiB"),
        "{error}"
    );
    let tested = bounded(ionflow().arg("test").arg(&pipeline)).await;
    assert_eq!(tested.code, 4, "{}", tested.all_output());
    assert!(
        tested.stdout.contains("limit of 1000000 steps"),
        "{}",
        tested.stdout
    );
    server.abort();
}
