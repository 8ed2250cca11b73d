//! Shared helpers: run the binary, start a simulator, write files.

use std::path::{Path, PathBuf};
use std::process::Output;

use ionflow_sim::{SimConfig, Simulator};

/// The binary under test, with a cache folder shared by the whole test run
/// (so the connector is compiled once), a state folder (token store, run
/// locks) under the target folder rather than the tester's home (runs keep
/// their grants there; every simulator's credentials, hence its keys,
/// differ), and no inherited log or trace settings.
pub fn ionflow() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ionflow"));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    cmd.env("IONFLOW_CACHE_DIR", tmp.join("ionflow-cache"))
        .env("IONFLOW_STATE_DIR", tmp.join("ionflow-state"))
        .env_remove("IONFLOW_LOG")
        .env_remove("RUST_LOG")
        // Traces go where a test says, never to the tester's collector.
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .kill_on_drop(true);
    cmd
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

pub async fn run(cmd: &mut tokio::process::Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().await.expect("ionflow could not be started");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

pub async fn simulator(items: usize) -> Simulator {
    Simulator::start(SimConfig {
        items,
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

/// A temporary folder holding the simulator's `.ionapi` file.
pub fn workdir(sim: &Simulator) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ionapi = dir.path().join("sim.ionapi");
    sim.write_ionapi(&ionapi).unwrap();
    (dir, ionapi)
}

/// Lifts the client-side limiter (1,000 calls a minute by default) for
/// tests that make many calls on purpose.
pub fn without_rate_limit(pipeline: &Path) {
    let text = std::fs::read_to_string(pipeline).unwrap().replacen(
        "[source]",
        "rate_limit = { requests = 1000000, window_secs = 1 }\n\n[source]",
        1,
    );
    std::fs::write(pipeline, text).unwrap();
}

/// Makes the pipeline's connection (the table just above `[source]`) revoke
/// its grant when the run ends as its last holder.
pub fn revoking_on_exit(pipeline: &Path) {
    let text = std::fs::read_to_string(pipeline).unwrap().replacen(
        "[source]",
        "revoke_on_exit = true\n\n[source]",
        1,
    );
    std::fs::write(pipeline, text).unwrap();
}

/// A pipeline reading every M3 item into `out.jsonl`, next to `ionapi`.
pub fn items_pipeline(dir: &Path, ionapi: &Path, page_size: u32) -> PathBuf {
    let path = dir.join("items.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[connections.m3]
ionapi_file = "{}"

[source]
kind = "m3_list"
connection = "m3"
program = "MMS200MI"
transaction = "LstItmByItm"
key_field = "ITNO"
page_size = {page_size}

[[transforms]]
kind = "jq"
filter = "{{item: .ITNO, description: .ITDS}}"

[[sinks]]
kind = "file"
path = "out.jsonl"
"#,
            ionapi.display()
        ),
    )
    .unwrap();
    path
}

pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every secret the simulator's `.ionapi` file holds.
pub fn file_secrets(ionapi: &Path) -> Vec<String> {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ionapi).unwrap()).unwrap();
    ["cs", "saak", "sask"]
        .iter()
        .map(|k| json[k].as_str().unwrap().to_owned())
        .collect()
}

/// Every access and refresh token the simulator issued.
pub async fn issued_tokens(sim: &Simulator) -> Vec<String> {
    issued_tokens_at(&sim.base_url()).await
}

/// Every token the simulator at `base` (in-process or an `ionflow sim`
/// process) issued.
pub async fn issued_tokens_at(base: &str) -> Vec<String> {
    let body = sim_get_at(base, "tokens").await;
    let mut tokens = Vec::new();
    collect_strings(&body, &mut tokens);
    assert!(!tokens.is_empty(), "the simulator lists no tokens: {body}");
    tokens
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if s.len() >= 16 => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// Fails naming the secret's position, never printing the secret itself.
pub fn assert_no_secret(haystack: &str, secrets: &[String], what: &str) {
    for (i, secret) in secrets.iter().enumerate() {
        assert!(
            !haystack.contains(secret.as_str()),
            "secret #{i} (length {}) appears in {what}",
            secret.len()
        );
    }
}

/// The repository's `pipelines/` folder.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines")
}

/// A project laid out like the repository: `pipelines/NAME.toml` copied
/// unchanged from the examples, `pipelines/data/`, and the simulator's
/// credentials in `secrets/dev.ionapi`, where the examples look for them.
pub fn example_project(sim: &Simulator, names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines/data")).unwrap();
    for name in names {
        std::fs::copy(
            examples_dir().join(format!("{name}.toml")),
            dir.path().join(format!("pipelines/{name}.toml")),
        )
        .unwrap();
    }
    sim.write_ionapi(&dir.path().join("secrets/dev.ionapi"))
        .unwrap();
    dir
}

/// Runs `ionflow run PIPELINE --json` with INFOR_ENV=dev and returns the
/// exit code and the summary.
pub async fn run_json(pipeline: &Path) -> (Run, serde_json::Value) {
    let result = run(ionflow()
        .arg("run")
        .arg(pipeline)
        .arg("--json")
        .env("INFOR_ENV", "dev"))
    .await;
    // With a stdout sink the records own stdout and the summary goes to stderr.
    let is_summary = |line: &str| {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .filter(|v| v.get("pipeline").is_some())
    };
    let summary = is_summary(result.stdout.trim())
        .or_else(|| result.stderr.lines().rev().find_map(is_summary))
        .unwrap_or(serde_json::Value::Null);
    (result, summary)
}

/// POSTs JSON to the simulator's control API.
pub async fn sim_post(sim: &Simulator, path: &str, body: serde_json::Value) {
    ionflow_runtime::tls::client()
        .post(format!("{}/__sim/{path}", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
}

/// Rewrites a `.ionapi` file in place (keeping its 0600 mode).
pub fn edit_ionapi(
    path: &Path,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) {
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(json.as_object_mut().unwrap());
    std::fs::write(path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
}

/// A copy of the simulator's `.ionapi` file under another name.
pub fn copy_ionapi(from: &Path, name: &str) -> PathBuf {
    let to = from.with_file_name(name);
    std::fs::copy(from, &to).unwrap();
    to
}

/// Sets a file's Unix permission bits.
pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn git_available() -> bool {
    std::process::Command::new("git")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

pub async fn sim_get(sim: &Simulator, path: &str) -> serde_json::Value {
    sim_get_at(&sim.base_url(), path).await
}

/// `GET {base}/__sim/{path}` of a simulator known by its URL.
pub async fn sim_get_at(base: &str, path: &str) -> serde_json::Value {
    ionflow_runtime::tls::client()
        .get(format!("{base}/__sim/{path}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `GET ifsservice/usermgt/v2/users/me`, the call that proves a token works.
pub fn users_me() -> ionflow_runtime::GatewayRequest {
    ionflow_runtime::GatewayRequest {
        method: ionflow_runtime::Method::Get,
        path: "ifsservice/usermgt/v2/users/me".into(),
        query: vec![],
        headers: vec![],
        body: vec![],
        timeout_ms: None,
    }
}

/// Sends SIGTERM to a child, as a scheduler or `kubectl delete` would.
pub async fn sigterm(pid: u32) {
    let status = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

/// Held by the tests that count ticks of a running daemon: run side by side
/// with another daemon test on a busy 2-core machine, a tick can come late.
pub async fn daemon_timing() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Starts `ionflow sim ARGS` as its own process and returns it, its base URL
/// and the lines it printed, once it has said what it serves. Its output is
/// drained afterwards, so it never blocks on a full pipe.
pub async fn sim_process(args: &[&str]) -> (tokio::process::Child, String, Vec<String>) {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = ionflow()
        .arg("sim")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = None;
    let mut seen = Vec::new();
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(std::time::Duration::from_secs(60), lines.next_line()).await
    {
        if let Some(rest) = line.strip_prefix("ION API Gateway simulator listening on ") {
            url = Some(rest.trim().to_owned());
        }
        let done = line.starts_with("counters:");
        seen.push(line);
        if done {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = url.unwrap_or_else(|| panic!("the simulator did not start: {seen:?}"));
    (child, url, seen)
}
