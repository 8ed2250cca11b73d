//! The authoring loop, as a new user meets it: `ionflow init`, a fixture
//! for a program the simulator does not know, the customers pipeline taken
//! from docs/PIPELINES.md as written, and two runs against `ionflow sim`
//! where the second sends only the customers that changed. Each command of
//! the loop (`state`, `api`, `jq`, `replay`, `list`, `run --dry-run`,
//! `--full-refresh`, `--limit`) is checked against the real binary.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::{
    ionflow, items_pipeline, read_jsonl, run, sim_post, sim_process, simulator, workdir,
};

fn docs() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/PIPELINES.md"))
        .unwrap()
}

/// The customers pipeline exactly as docs/PIPELINES.md shows it.
fn customers_pipeline_from_the_docs() -> String {
    let docs = docs();
    let start = docs
        .find("<!-- customers-pipeline -->")
        .expect("the worked example is marked in the docs");
    let block = &docs[start..];
    block
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(toml, _)| toml.to_owned())
        .expect("a toml block follows the marker")
}

/// `ionflow sim` as its own process; returns it and its base URL once the
/// credentials file is written.
async fn start_sim(args: &[&str]) -> (tokio::process::Child, String) {
    let (child, url, seen) = sim_process(args).await;
    assert!(
        seen.iter().any(|l| l
            .starts_with("fixture: M3 CRS610MI (Add, ChgBasicData, GetBasicData, LstByNumber)")),
        "the simulator lists the fixture it serves: {seen:?}"
    );
    (child, url)
}

async fn messages(base: &str) -> Vec<serde_json::Value> {
    ionflow_runtime::tls::client()
        .get(format!("{base}/__sim/messages"))
        .send()
        .await
        .unwrap()
        .json::<Vec<serde_json::Value>>()
        .await
        .unwrap()
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["customer", "name", "status", "changed"]
    );
    reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

async fn run_json(project: &Path, args: &[&str]) -> (crate::support::Run, serde_json::Value) {
    let result = run(ionflow()
        .current_dir(project)
        .arg("run")
        .arg("pipelines/customers.toml")
        .arg("--json")
        .args(args))
    .await;
    let summary = result
        .stdout
        .lines()
        .chain(result.stderr.lines())
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("pipeline").is_some())
        .unwrap_or(serde_json::Value::Null);
    (result, summary)
}

async fn state_since(project: &Path) -> serde_json::Value {
    let result = run(ionflow().current_dir(project).args([
        "state",
        "show",
        "pipelines/customers.toml",
        "--json",
    ]))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let shown: serde_json::Value = serde_json::from_str(&result.stdout).unwrap();
    assert_eq!(shown["watermarks"][0]["name"], "since");
    shown["watermarks"][0]["saved"].clone()
}

#[tokio::test]
async fn customers_from_init_a_fixture_and_the_docs_run_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("acme");
    let result = run(ionflow().arg("init").arg(&project)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    std::fs::write(
        project.join("pipelines/customers.toml"),
        customers_pipeline_from_the_docs(),
    )
    .unwrap();
    // A state folder of its own, so run locks do not meet other tests'.
    let state_dir = dir.path().join("state");
    let with_env = |cmd: &mut tokio::process::Command| {
        cmd.env("IONFLOW_STATE_DIR", &state_dir);
    };

    // Before any credentials exist, the project validates and tests.
    let mut validate = ionflow();
    with_env(&mut validate);
    let result = run(validate
        .current_dir(&project)
        .args(["validate", "pipelines/"]))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(
        result.stdout.contains("ok: pipelines/customers.toml"),
        "{}",
        result.stdout
    );
    assert!(result.stderr.contains("is not there"), "{}", result.stderr);
    let result = run(ionflow().current_dir(&project).args(["test", "pipelines/"])).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(
        result.stdout.contains("2 passed, 0 failed"),
        "{}",
        result.stdout
    );

    let fixtures = project.join("fixtures");
    let ionapi = project.join("secrets/dev.ionapi");
    let (mut sim, base) = start_sim(&[
        "--fixtures",
        fixtures.to_str().unwrap(),
        "--ionapi-out",
        ionapi.to_str().unwrap(),
    ])
    .await;

    // With credentials, validate checks them too (offline).
    let result = run(ionflow()
        .env("IONFLOW_STATE_DIR", &state_dir)
        .current_dir(&project)
        .args(["validate", "pipelines/customers.toml"]))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(!result.stderr.contains("is not there"), "{}", result.stderr);

    // First run: every customer.
    let (result, summary) = run_json(&project, &[]).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_in"], 5);
    assert_eq!(summary["records_out"], 5);
    let first = csv_rows(&project.join("out/customers-since-0.csv"));
    assert_eq!(first.len(), 5);
    assert_eq!(messages(&base).await.len(), 5);
    assert_eq!(state_since(&project).await, "20260311");

    // Two customers change in M3 (ChgBasicData stamps LMDT with today).
    for (customer, name) in [
        ("C0002", "Baltic Metal Oyj"),
        ("C0005", "Euro Fasteners SAS"),
    ] {
        let result = run(ionflow().current_dir(&project).args([
            "api",
            "GET",
            "M3/m3api-rest/v2/execute/CRS610MI/ChgBasicData",
            "--query",
            &format!("CUNO={customer}"),
            "--query",
            &format!("CUNM={name}"),
            "secrets/dev.ionapi",
        ]))
        .await;
        assert_eq!(result.code, 0, "{}", result.all_output());
        let answer: serde_json::Value = serde_json::from_str(&result.stdout).unwrap();
        assert_eq!(answer["nrOfFailedTransactions"], 0, "{answer}");
    }
    // A refusal comes back as M3 words it, with exit code 1.
    let result = run(ionflow().current_dir(&project).args([
        "api",
        "GET",
        "M3/m3api-rest/v2/execute/CRS610MI/ChgBasicData?CUNO=C0004",
        "secrets/dev.ionapi",
    ]))
    .await;
    assert!(
        result
            .stdout
            .contains("Customer C0004 is blocked for changes"),
        "{}",
        result.stdout
    );

    // Second run: only the two that changed.
    let (result, summary) = run_json(&project, &[]).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_in"], 5, "the list is read whole");
    assert_eq!(summary["records_out"], 2, "only changed customers go on");
    let second = csv_rows(&project.join("out/customers-since-20260311.csv"));
    let customers: Vec<&str> = second.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(customers, ["C0002", "C0005"]);
    assert_eq!(second[0][1], "Baltic Metal Oyj");
    let sent = messages(&base).await;
    assert_eq!(sent.len(), 7);
    let today = chrono::Utc::now().format("%Y%m%d").to_string();
    assert_eq!(state_since(&project).await, today.as_str());

    // Nothing changed since: nothing goes on.
    let (result, summary) = run_json(&project, &[]).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_out"], 0);

    // --full-refresh: everyone once more, and the watermark stays.
    let (result, summary) = run_json(&project, &["--full-refresh"]).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(summary["records_out"], 5);
    assert_eq!(summary["state_saved"], serde_json::Value::Null);
    assert_eq!(state_since(&project).await, today.as_str());
    assert_eq!(messages(&base).await.len(), 12);

    // A backfill, then a dry run: what would be sent is shown, nothing is.
    let result = run(ionflow().current_dir(&project).args([
        "state",
        "set",
        "pipelines/customers.toml",
        "since",
        "20260301",
    ]))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let result =
        run(ionflow()
            .current_dir(&project)
            .args(["run", "pipelines/customers.toml", "--dry-run"]))
        .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let shown: Vec<serde_json::Value> = result
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // C0002 and C0005 (today), C0004 (20260305): to both sinks.
    assert_eq!(shown.len(), 6, "{}", result.stdout);
    assert!(shown.iter().any(|s| s["sink"] == "sinks[1]"
        && s["kind"] == "ion_message"
        && s["would_send"]["path"] == "IONSERVICES/api/ion/messaging/service/v2/message"));
    assert_eq!(messages(&base).await.len(), 12, "a dry run sends nothing");
    assert_eq!(state_since(&project).await, "20260301", "nor saves state");
    assert!(!project.join("out/customers-since-20260301.csv").exists());

    let result =
        run(ionflow()
            .current_dir(&project)
            .args(["state", "reset", "pipelines/customers.toml"]))
        .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(state_since(&project).await, serde_json::Value::Null);
    let result = run(ionflow().current_dir(&project).args([
        "state",
        "set",
        "pipelines/customers.toml",
        "nosuch",
        "1",
    ]))
    .await;
    assert_eq!(result.code, 2, "{}", result.all_output());
    assert!(
        result
            .stderr
            .contains("has no watermark `nosuch`; it has: since"),
        "{}",
        result.stderr
    );

    let _ = sim.start_kill();
    let _ = sim.wait().await;
}

#[tokio::test]
async fn the_shipped_pipelines_and_a_new_project_validate_without_credentials() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
    assert!(!examples.join("../secrets/dev.ionapi").exists());
    let result = run(ionflow().arg("validate").arg(&examples)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let files = std::fs::read_dir(&examples)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "toml")
        })
        .count();
    assert_eq!(
        result.stdout.matches("ok: ").count(),
        files,
        "{}",
        result.stdout
    );
    let result = run(ionflow()
        .arg("validate")
        .arg("--offline")
        .arg("--json")
        .arg(&examples))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let json: serde_json::Value = serde_json::from_str(&result.stdout).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["files"].as_array().unwrap().len(), files);
}

const MANY_MISTAKES: &str = r#"name = "mistakes"

[vars]
company = "100"

[source]
kind = "file"
path = "in.jsonl"
fromat = "jsonl"

[[transforms]]
kind = "jq"
filter = 'select(.LMDT > "${state.since}")'

[[sinks]]
kind = "http"
url = "https://example.com/{{ recod.item }}"
body = "{{ record.x | uper }} {{ vars.compny }}"
"#;

#[tokio::test]
async fn validate_shows_every_problem_with_its_line_and_a_caret() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("mistakes.toml");
    std::fs::write(&bad, MANY_MISTAKES).unwrap();
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        "[source]\nkind = \"file\"\npath = \"x\"\n[[sinks]]\nkind = \"stdout\"\nbogus = 1\n",
    )
    .unwrap();
    let result = run(ionflow().arg("validate").arg(&bad).arg(&other)).await;
    assert_eq!(result.code, 2, "{}", result.all_output());
    let err = &result.stderr;
    assert!(
        err.contains("mistakes.toml:9:1: unknown field `fromat`"),
        "{err}"
    );
    assert!(
        err.contains("other.toml:6:1: unknown field `bogus`"),
        "every file: {err}"
    );
    // The line itself, and a caret under the key.
    assert!(err.contains("fromat = \"jsonl\""), "{err}");
    assert!(err.contains("^^^^^^"), "{err}");
    // The parse stops at the unknown key; the rest of the file is still checked.
    for expected in [
        "mistakes.toml:13:27: transforms[0].filter: `${state.since}` is not expanded here: jq filters see the pipeline's values as jq variables; write $state.since",
        "mistakes.toml:17:31: sinks[0].url: `recod` is not defined",
        "mistakes.toml:18:23: sinks[0].body: the filter `uper` does not exist",
        "mistakes.toml:18:39: sinks[0].body: `vars.compny` is not defined; [vars] has company",
    ] {
        assert!(err.contains(expected), "want `{expected}` in\n{err}");
    }
    let result = run(ionflow().arg("validate").arg("--json").arg(&bad)).await;
    assert_eq!(result.code, 2);
    let json: serde_json::Value = serde_json::from_str(&result.stdout).unwrap();
    let problems = json["files"][0]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 5, "{problems:?}");
    assert_eq!(problems[0]["line"], 9);
    assert_eq!(problems[0]["column"], 1);
    assert_eq!(problems[1]["line"], 13);
    assert_eq!(problems[1]["column"], 27);
    assert_eq!(problems[1]["severity"], "error");
}

#[tokio::test]
async fn a_var_sets_pipeline_vars_and_a_file_path_is_a_template() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), "{\"n\": 1}\n{\"n\": 2}\n").unwrap();
    let pipeline = dir.path().join("p.toml");
    std::fs::write(
        &pipeline,
        r#"
[vars]
company = "100"

[source]
kind = "file"
path = "in.jsonl"

[[transforms]]
kind = "jq"
filter = '{n, company: $vars.company, user: $env.IONFLOW_TEST_WHO, at: $run.started_at}'

[[sinks]]
kind = "file"
path = "out/{{ vars.company }}.jsonl"
"#,
    )
    .unwrap();
    let result = run(ionflow()
        .arg("run")
        .arg(&pipeline)
        .args(["--var", "company=555", "--var", "compnay=1"])
        .env("IONFLOW_TEST_WHO", "me")
        .env("IONFLOW_STATE_DIR", dir.path().join("state")))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(
        result
            .stderr
            .contains("--var compnay: nothing in the pipeline uses it"),
        "{}",
        result.stderr
    );
    let out = read_jsonl(&dir.path().join("out/555.jsonl"));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["company"], "555");
    assert_eq!(out[0]["user"], "me");
    assert!(out[0]["at"].as_str().unwrap().ends_with('Z'));
    assert!(!dir.path().join("out/{{ vars.company }}.jsonl").exists());

    // --limit stops after N source records.
    let result = run(ionflow()
        .arg("run")
        .arg(&pipeline)
        .args(["--limit", "1", "--json"])
        .env("IONFLOW_STATE_DIR", dir.path().join("state")))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let summary: serde_json::Value = serde_json::from_str(result.stdout.trim()).unwrap();
    assert_eq!(summary["records_in"], 1);
}

#[tokio::test]
async fn jq_runs_a_filter_over_a_file_stdin_or_a_pipelines_source() {
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("r.jsonl");
    std::fs::write(
        &records,
        "{\"ITNO\":\"A\",\"STAT\":\"20\"}\n{\"ITNO\":\"B\",\"STAT\":\"90\"}\n",
    )
    .unwrap();
    let result = run(ionflow()
        .args(["jq", "select(.STAT == \"20\") | {item: .ITNO, c: $vars.c}"])
        .arg(&records)
        .args(["--var", "c=7"]))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(result.stdout.trim(), "{\"item\":\"A\",\"c\":\"7\"}");

    let mut child = ionflow()
        .args(["jq", ".[0] + 1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"[[1], [\"x\"]]").await.unwrap();
    }
    let output = child.wait_with_output().await.unwrap();
    assert_eq!(output.status.code(), Some(4), "the second record fails");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "2");
    assert!(String::from_utf8_lossy(&output.stderr).contains("record 1: jq error"));

    let result = run(ionflow().args(["jq", "{item: .ITNO"]).arg(&records)).await;
    assert_eq!(
        result.code,
        2,
        "a filter that does not parse: {}",
        result.all_output()
    );

    // --from: the first records of a pipeline's source, through its connection.
    let sim = simulator(50).await;
    let (work, ionapi) = workdir(&sim);
    let pipeline = items_pipeline(work.path(), &ionapi, 20);
    let result = run(ionflow()
        .args(["jq", ".ITNO", "--from"])
        .arg(&pipeline)
        .args(["--limit", "3"]))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(
        result.stdout.lines().collect::<Vec<_>>(),
        ["\"ITM000001\"", "\"ITM000002\"", "\"ITM000003\""]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn replay_resends_dead_letters_and_keeps_only_what_fails_again() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    std::fs::write(
        dir.path().join("new.jsonl"),
        "{\"ITNO\":\"NEW-1\",\"ITDS\":\"One\"}\n{\"ITNO\":\"NEW-2\",\"ITDS\":\"Two\"}\n{\"ITNO\":\"ITM000001\",\"ITDS\":\"Exists\"}\n",
    )
    .unwrap();
    let pipeline = dir.path().join("add.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"
[connections.m3]
ionapi_file = "{}"

[source]
kind = "file"
path = "new.jsonl"

[[sinks]]
kind = "m3"
connection = "m3"
program = "MMS200MI"
transaction = "AddItmBasic"

[dead_letter]
path = "dead.jsonl"
"#,
            ionapi.display()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    // The first Add breaks off: its outcome is unknown, so it is dead-lettered.
    sim_post(
        &sim,
        "faults",
        serde_json::json!({"path_prefix": "M3/m3api-rest/v2/execute/MMS200MI/AddItmBasic", "count": 1, "status": 503}),
    )
    .await;
    let result = run(ionflow()
        .arg("run")
        .arg(&pipeline)
        .env("IONFLOW_STATE_DIR", &state))
    .await;
    assert_eq!(result.code, 4, "{}", result.all_output());
    let dead = dir.path().join("dead.jsonl");
    let entries = read_jsonl(&dead);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["record"]["ITNO"], "NEW-1");
    assert_eq!(entries[1]["record"]["ITNO"], "ITM000001");

    let result = run(ionflow()
        .arg("replay")
        .arg(&dead)
        .arg("--pipeline")
        .arg(&pipeline)
        .arg("--json")
        .env("IONFLOW_STATE_DIR", &state))
    .await;
    assert_eq!(
        result.code,
        4,
        "one record fails again: {}",
        result.all_output()
    );
    let summary: serde_json::Value = serde_json::from_str(result.stdout.trim()).unwrap();
    assert_eq!(summary["delivered"], 1);
    assert_eq!(summary["failed"], 1);
    let left = read_jsonl(&dead);
    assert_eq!(left.len(), 1, "the delivered record left the file");
    assert_eq!(left[0]["record"]["ITNO"], "ITM000001");
    assert!(
        left[0]["error"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    assert!(!dir.path().join("dead.jsonl.partial").exists());
    // NEW-1 now exists in M3.
    let result = run(ionflow()
        .args([
            "api",
            "GET",
            "M3/m3api-rest/v2/execute/MMS200MI/GetItmBasic",
            "--query",
            "ITNO=NEW-1",
        ])
        .arg(&ionapi))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(
        result.stdout.contains("\"ITDS\": \"One\""),
        "{}",
        result.stdout
    );
    let result = run(ionflow()
        .args(["api", "GET", "NOPE/nothing/here"])
        .arg(&ionapi))
    .await;
    assert_eq!(result.code, 1, "{}", result.all_output());
    assert!(result.stderr.contains("HTTP 404"), "{}", result.stderr);
    sim.shutdown().await;
}

#[tokio::test]
async fn list_names_every_kind_of_the_schema_and_its_docs_section() {
    let result = run(ionflow().arg("list")).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let schema = run(ionflow().arg("schema")).await;
    let schema: serde_json::Value = serde_json::from_str(&schema.stdout).unwrap();
    let docs = docs();
    let mut kinds = Vec::new();
    collect_kinds(&schema, &mut kinds);
    // 7 sources, jq, 9 sinks; `file`, `gateway` and `http` are both.
    assert!(kinds.len() >= 14, "{kinds:?}");
    for kind in &kinds {
        let line = result
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{kind} ")))
            .unwrap_or_else(|| panic!("{kind} is not listed:\n{}", result.stdout));
        let anchor = line.rsplit("docs/PIPELINES.md#").next().unwrap();
        assert!(
            docs.contains(&format!("<a id=\"{anchor}\"></a>")),
            "{kind}: no section {anchor} in docs/PIPELINES.md"
        );
    }
}

/// Every `kind` constant of the schema (`"kind": {"const": "m3_list"}`).
fn collect_kinds(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(kind) = map
                .get("properties")
                .and_then(|p| p.get("kind"))
                .and_then(|k| {
                    k.get("const")
                        .or_else(|| k.get("enum").and_then(|e| e.get(0)))
                })
                .and_then(|k| k.as_str())
                && !out.iter().any(|k| k == kind)
            {
                out.push(kind.to_owned());
            }
            map.values().for_each(|v| collect_kinds(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_kinds(v, out)),
        _ => {}
    }
}

/// Every property name anywhere in the schema (a `properties` map names
/// keys; its values are schemas again, whatever their own names).
fn collect_keys(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (name, sub) in map {
                match (name.as_str(), sub) {
                    ("properties", serde_json::Value::Object(properties)) => {
                        for (key, schema) in properties {
                            if !out.contains(key) {
                                out.push(key.clone());
                            }
                            collect_keys(schema, out);
                        }
                    }
                    _ => collect_keys(sub, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_keys(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_docs_name_every_key_the_schema_accepts() {
    let schema = run(ionflow().arg("schema")).await;
    let schema: serde_json::Value = serde_json::from_str(&schema.stdout).unwrap();
    let docs = docs();
    let mut keys = Vec::new();
    collect_keys(&schema, &mut keys);
    assert!(keys.len() > 60, "{keys:?}");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !docs.contains(&format!("`{k}`")) && !docs.contains(&format!(".{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/PIPELINES.md does not name: {missing:?}"
    );
    let mut kinds = Vec::new();
    collect_kinds(&schema, &mut kinds);
    for kind in kinds {
        assert!(docs.contains(&format!("`{kind}`")), "{kind}");
    }
}

#[tokio::test]
async fn runs_say_each_call_and_each_wait_and_ctrl_c_says_what_it_waits_for() {
    let sim = simulator(40).await;
    let (dir, ionapi) = workdir(&sim);
    let pipeline = items_pipeline(dir.path(), &ionapi, 10);
    // Debug: one line per gateway call; trace: without wasmtime's internals.
    let result = run(ionflow().arg("-vv").arg("run").arg(&pipeline)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let calls = result
        .stderr
        .lines()
        .filter(|l| l.contains("GET M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm -> 200 in"))
        .count();
    assert_eq!(calls, 5, "{}", result.stderr);
    let result = run(ionflow().arg("-vvv").arg("run").arg(&pipeline)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let noise: Vec<&str> = result
        .stderr
        .lines()
        .filter(|l| {
            [" wasmtime", " cranelift"]
                .iter()
                .any(|t| l.contains(&format!("TRACE{t}")) || l.contains(&format!("DEBUG{t}")))
        })
        .collect();
    assert!(
        noise.is_empty(),
        "{} noise lines, first: {:?}",
        noise.len(),
        noise.first()
    );

    // A tight rate limit: the wait is logged with the policy (-v) ...
    let text = std::fs::read_to_string(&pipeline).unwrap().replacen(
        "[source]",
        "rate_limit = { requests = 2, window_secs = 2 }\n\n[source]",
        1,
    );
    std::fs::write(&pipeline, text).unwrap();
    let result = run(ionflow().arg("-v").arg("run").arg(&pipeline)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(
        result
            .stderr
            .contains("for the rate limit: 2 calls per 2 s"),
        "{}",
        result.stderr
    );

    // ... and Ctrl-C during a long wait says at once what the run waits for.
    let text = std::fs::read_to_string(&pipeline).unwrap().replace(
        "requests = 2, window_secs = 2",
        "requests = 1, window_secs = 60",
    );
    std::fs::write(&pipeline, text).unwrap();
    sim_post(&sim, "reset-counters", serde_json::json!({})).await;
    let child = ionflow()
        .arg("run")
        .arg(&pipeline)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if sim.counters().calls_by_path.values().sum::<u64>() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The first page is in; the second waits for the limiter.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = tokio::process::Command::new("kill")
        .args(["-INT", &child.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("stopping: waiting")
            && stderr.contains("for the rate limit: 1 calls per 60 s"),
        "{stderr}"
    );
    sim.shutdown().await;
}

/// `ionflow state` on the shared store: the watermarks a run saved in
/// PostgreSQL are shown, set and reset there, and no state file appears.
#[tokio::test]
async fn state_commands_work_on_the_postgres_store() {
    let Some(db) = crate::postgres::test_database("state_commands").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"id\": 3, \"at\": \"2026-03-01\"}\n{\"id\": 5, \"at\": \"2026-04-01\"}\n",
    )
    .unwrap();
    let pipeline = dir.path().join("shared.toml");
    std::fs::write(
        &pipeline,
        r#"
[source]
kind = "file"
path = "in.jsonl"

[state.watermarks.since]
field = "at"
initial = "2000-01-01"

[state.watermarks.last]
field = "id"
initial = "0"
from = "output"

[[transforms]]
kind = "jq"
filter = 'select(.at > $state.since)'

[[sinks]]
kind = "count"
"#,
    )
    .unwrap();
    let ionflow_pg = || {
        let mut cmd = ionflow();
        cmd.env("IONFLOW_STORE", &db.url)
            .env("IONFLOW_STATE_DIR", dir.path().join("state"));
        cmd
    };
    let result = run(ionflow_pg().arg("run").arg(&pipeline)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let show = |args: &'static [&'static str]| {
        let mut cmd = ionflow_pg();
        cmd.arg("state")
            .arg(args[0])
            .arg(&pipeline)
            .args(&args[1..]);
        cmd
    };
    let result = run(&mut show(&["show", "--json"])).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let shown: serde_json::Value = serde_json::from_str(&result.stdout).unwrap();
    assert!(
        shown["kept_in"].as_str().unwrap().contains("postgres://"),
        "{shown}"
    );
    assert!(!shown["kept_in"].as_str().unwrap().contains("PASSWORD"));
    let marks = shown["watermarks"].as_array().unwrap();
    assert_eq!(marks[0]["name"], "last");
    assert_eq!(marks[0]["saved"], "5", "an output watermark");
    assert_eq!(marks[1]["saved"], "2026-04-01");
    assert!(
        !dir.path().join(".ionflow").exists(),
        "no state file with a shared store"
    );

    let result = run(&mut show(&["set", "since", "2026-03-15"])).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let result = run(ionflow_pg().arg("run").arg(&pipeline).arg("--json")).await;
    let summary: serde_json::Value = serde_json::from_str(result.stdout.trim()).unwrap();
    assert_eq!(
        summary["records_out"], 1,
        "only the record after the set value"
    );
    let result = run(&mut show(&["reset", "since"])).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let result = run(&mut show(&["show", "since", "--json"])).await;
    let shown: serde_json::Value = serde_json::from_str(&result.stdout).unwrap();
    assert_eq!(shown["watermarks"][0]["saved"], serde_json::Value::Null);
    assert_eq!(shown["watermarks"][0]["initial"], "2000-01-01");
    db.drop().await;
}

/// `run --watch`: a change to the input runs the pipeline again; Ctrl-C
/// while it waits ends it cleanly.
#[tokio::test]
async fn watch_runs_again_when_the_input_changes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"n\": 1}\n").unwrap();
    let pipeline = dir.path().join("w.toml");
    std::fs::write(
        &pipeline,
        "[source]\nkind = \"file\"\npath = \"in.jsonl\"\n\n[[sinks]]\nkind = \"file\"\npath = \"out.jsonl\"\n",
    )
    .unwrap();
    let child = ionflow()
        .arg("run")
        .arg(&pipeline)
        .arg("--watch")
        .env("IONFLOW_STATE_DIR", dir.path().join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = dir.path().join("out.jsonl");
    let lines = |n: usize| {
        let out = out.clone();
        async move {
            for _ in 0..600 {
                if std::fs::read_to_string(&out).is_ok_and(|t| t.lines().count() == n) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }
    };
    assert!(lines(1).await, "the first run writes one record");
    // A new modification time, even on a coarse file system clock.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&input, "{\"n\": 1}\n{\"n\": 2}\n").unwrap();
    assert!(lines(2).await, "the change runs the pipeline again");
    let status = tokio::process::Command::new("kill")
        .args(["-INT", &child.id().unwrap().to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("watching"), "{stderr}");
}

/// On a terminal (a pseudo-terminal from `script`), a run that waits for
/// the rate limiter shows a progress line that says so, with the policy.
#[tokio::test]
async fn a_terminal_shows_progress_and_the_rate_limit_wait() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED progress test: `script` (util-linux) is missing"
        );
        return;
    }
    let sim = simulator(30).await;
    let (dir, ionapi) = workdir(&sim);
    let pipeline = items_pipeline(dir.path(), &ionapi, 10);
    let text = std::fs::read_to_string(&pipeline).unwrap().replacen(
        "[source]",
        "rate_limit = { requests = 1, window_secs = 3 }\n\n[source]",
        1,
    );
    std::fs::write(&pipeline, text).unwrap();
    let command = format!(
        "\"$IONFLOW\" run '{}'",
        pipeline.display().to_string().replace('\'', "'\\''")
    );
    let result = run(tokio::process::Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("IONFLOW", env!("CARGO_BIN_EXE_ionflow"))
        .env(
            "IONFLOW_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("ionflow-cache"),
        )
        .env("TERM", "xterm"))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let screen = result.all_output();
    assert!(screen.contains("records in"), "{screen}");
    assert!(screen.contains("pages"), "{screen}");
    assert!(
        screen.contains("for the rate limit: 1 calls per 3 s (connection m3)"),
        "{screen}"
    );
    sim.shutdown().await;
}
