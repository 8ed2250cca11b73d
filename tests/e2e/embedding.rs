//! The connector outside ionflow's own build: exported for other hosts,
//! loaded by path from a pipeline, refused when it is not the world, and run
//! by the JavaScript example host on Node.js.

use std::path::{Path, PathBuf};

use crate::support::{
    assert_no_secret, file_secrets, ionflow, issued_tokens, items_pipeline, read_jsonl, run,
    simulator, workdir,
};

/// Writes the embedded component with `ionflow connector export`.
async fn export_component(out: &Path) {
    let result = run(ionflow().args(["connector", "export", "--out"]).arg(out)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(out.is_file());
}

/// A component that behaves like the embedded one but has other bytes: a
/// custom section appended, as a rebuild or another vendor's build would.
fn variant_of(component: &Path, out: &Path) {
    let mut bytes = std::fs::read(component).unwrap();
    let name = b"ionflow-test-variant";
    let payload = b"a different build of the same connector";
    bytes.push(0); // custom section
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    std::fs::write(out, bytes).unwrap();
}

fn with_connector(pipeline: &Path, connector: &str) {
    let text = std::fs::read_to_string(pipeline).unwrap();
    let text = text.replacen(
        "[connections.m3]\n",
        &format!("[connections.m3]\nconnector = \"{connector}\"\n"),
        1,
    );
    std::fs::write(pipeline, text).unwrap();
}

fn cached_artifacts(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn a_pipeline_runs_on_a_connector_loaded_from_a_path() {
    let sim = simulator(30).await;
    let (dir, ionapi) = workdir(&sim);
    let exported = dir.path().join("ionflow-connector.wasm");
    export_component(&exported).await;
    std::fs::create_dir(dir.path().join("connectors")).unwrap();
    variant_of(&exported, &dir.path().join("connectors/variant.wasm"));
    let pipeline = items_pipeline(dir.path(), &ionapi, 7);
    with_connector(&pipeline, "connectors/variant.wasm");
    let cache = dir.path().join("cache");

    for attempt in 0..2 {
        let result = run(ionflow()
            .env("IONFLOW_CACHE_DIR", &cache)
            .env("IONFLOW_LOG", "ionflow=debug")
            .arg("run")
            .arg(&pipeline)
            .arg("--json"))
        .await;
        assert_eq!(result.code, 0, "{}", result.all_output());
        let summary: serde_json::Value = serde_json::from_str(result.stdout.trim()).unwrap();
        assert_eq!(summary["records_out"], 30);
        assert!(
            result.stderr.contains("connectors/variant.wasm"),
            "the log names the component in use: {}",
            result.stderr
        );
        // The embedded connector and the variant, each precompiled once
        // under its own digest and reused by the second run.
        assert_eq!(cached_artifacts(&cache), 2, "attempt {attempt}");
    }
    assert_eq!(read_jsonl(&dir.path().join("out.jsonl")).len(), 30);
    assert_eq!(
        sim.counters().token_requests.password,
        1,
        "the first run's grant, kept for the second"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_component_that_is_not_the_world_is_refused_naming_what_is_missing() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    let pipeline = items_pipeline(dir.path(), &ionapi, 5);
    // The smallest valid component: a header and nothing else.
    std::fs::write(
        dir.path().join("empty.wasm"),
        b"\0asm\x0d\x00\x01\x00".as_slice(),
    )
    .unwrap();
    // A core module, not a component.
    std::fs::write(
        dir.path().join("core.wasm"),
        b"\0asm\x01\x00\x00\x00".as_slice(),
    )
    .unwrap();

    with_connector(&pipeline, "empty.wasm");
    let result = run(ionflow().arg("validate").arg(&pipeline)).await;
    assert_eq!(result.code, 2, "{}", result.all_output());
    for expected in [
        "connections.m3.connector",
        "empty.wasm does not implement the ionflow:gateway/connector@0.1.0 world",
        "does not export `ionflow:gateway/auth@0.1.0`",
        "[static]connection.open",
        "does not export `ionflow:gateway/gateway@0.1.0` (connection, call)",
    ] {
        assert!(
            result.stderr.contains(expected),
            "want {expected:?} in {}",
            result.stderr
        );
    }

    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(&pipeline, text.replace("empty.wasm", "core.wasm")).unwrap();
    let result = run(ionflow().arg("run").arg(&pipeline)).await;
    assert_eq!(result.code, 2, "{}", result.all_output());
    assert!(
        result
            .stderr
            .contains("core.wasm is not a WebAssembly component"),
        "{}",
        result.stderr
    );

    std::fs::write(&pipeline, text.replace("empty.wasm", "missing.wasm")).unwrap();
    let result = run(ionflow().arg("run").arg(&pipeline)).await;
    assert_eq!(result.code, 2, "{}", result.all_output());
    assert!(
        result
            .stderr
            .contains("cannot read the connector component"),
        "{}",
        result.stderr
    );
    assert!(result.stderr.contains("missing.wasm"), "{}", result.stderr);

    let result = run(ionflow()
        .args(["connector", "check"])
        .arg(dir.path().join("empty.wasm")))
    .await;
    assert_eq!(result.code, 2, "{}", result.all_output());
    assert!(
        result
            .stderr
            .contains("does not export `ionflow:gateway/auth@0.1.0`")
    );
    assert_eq!(sim.counters().api_calls, 0);
    assert_eq!(sim.counters().token_requests.password, 0);
    sim.shutdown().await;
}

fn js_example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/embed-js")
}

/// Node.js 20 or newer, or a failure that says how to get it: a missing
/// runtime must never turn into a silently skipped test.
fn require_node() {
    let version = std::process::Command::new("node").arg("--version").output();
    let version = match version {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => panic!(
            "Node.js is not installed or not on PATH: the JavaScript example host \
             (examples/embed-js) needs Node.js 20 or newer and npm; install them \
             (for example `apt-get install nodejs npm`) and run `npm ci` in examples/embed-js"
        ),
    };
    let major: u32 = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 20,
        "examples/embed-js needs Node.js 20 or newer, found {version}"
    );
}

/// `.ci/run` installs the example's packages; a developer's first test run
/// does it here, from the committed package-lock.json.
fn ensure_js_packages(dir: &Path) {
    if dir.join("node_modules/.bin/jco").exists() {
        return;
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run npm ({e}); install npm and run `npm ci` in {}",
                dir.display()
            )
        });
    assert!(status.success(), "`npm ci` failed in {}", dir.display());
}

#[tokio::test]
async fn the_javascript_host_runs_the_component_on_node() {
    require_node();
    let example = js_example_dir();
    ensure_js_packages(&example);
    let sim = simulator(250).await;
    let (dir, ionapi) = workdir(&sim);
    let component = dir.path().join("ionflow-connector.wasm");
    export_component(&component).await;

    let generated = dir.path().join("generated");
    let transpile = tokio::process::Command::new("node")
        .arg(example.join("node_modules/.bin/jco"))
        .arg("transpile")
        .arg(&component)
        .args(["--instantiation", "async", "-o"])
        .arg(&generated)
        .output()
        .await
        .unwrap();
    assert!(
        transpile.status.success(),
        "jco transpile failed: {}",
        String::from_utf8_lossy(&transpile.stderr)
    );

    let host = run(tokio::process::Command::new("node")
        .arg(example.join("host.mjs"))
        .arg(generated.join("ionflow-connector.js"))
        .arg(&ionapi)
        .arg("40")
        .kill_on_drop(true))
    .await;
    assert_eq!(host.code, 0, "{}", host.all_output());
    let lines: Vec<&str> = host.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", host.all_output());
    assert!(
        lines[0].starts_with("token: backend-service grant, Bearer, expires in "),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], "whoami: svc_ionflow@acme.example (ACME_TST)");
    // 250 records at 40 a page: 6 full pages and one of 10.
    assert_eq!(lines[2], "items: 250 records (250 distinct) in 7 pages");

    let counters = sim.counters();
    assert_eq!(
        counters.token_requests.password, 1,
        "one token for every call"
    );
    assert_eq!(counters.api_calls, 1 + 7);
    assert_eq!(counters.revocations, 1);
    assert_eq!(counters.wrong_host, 0);
    let mut secrets = file_secrets(&ionapi);
    secrets.extend(issued_tokens(&sim).await);
    assert_no_secret(&host.all_output(), &secrets, "the JavaScript host's output");
    sim.shutdown().await;
}

/// The only precompiled artifact in `dir`, and its inode: a file the cache
/// wrote again (compiled anew) gets a new inode from the atomic rename.
fn only_artifact(dir: &Path) -> (PathBuf, u64) {
    use std::os::unix::fs::MetadataExt as _;
    let artifacts: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    let inode = std::fs::metadata(&artifacts[0]).unwrap().ino();
    (artifacts[0].clone(), inode)
}

#[tokio::test]
async fn connector_precompile_fills_the_cache_that_runs_then_load() {
    let sim = simulator(12).await;
    let (dir, ionapi) = workdir(&sim);
    // As an image build would: a cache folder that does not exist yet.
    let cache = dir.path().join("image/cache");
    let result = run(ionflow()
        .env("IONFLOW_CACHE_DIR", &cache)
        .args(["connector", "precompile"]))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let (artifact, inode) = only_artifact(&cache);
    assert!(
        result.stdout.contains(&artifact.display().to_string()),
        "names the artifact: {}",
        result.stdout
    );

    // Again, and then a run: both load the artifact; neither compiles and
    // writes it anew.
    let again = run(ionflow()
        .env("IONFLOW_CACHE_DIR", &cache)
        .args(["connector", "precompile"]))
    .await;
    assert_eq!(again.code, 0, "{}", again.all_output());
    let pipeline = items_pipeline(dir.path(), &ionapi, 5);
    let result = run(ionflow()
        .env("IONFLOW_CACHE_DIR", &cache)
        .arg("run")
        .arg(&pipeline))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(read_jsonl(&dir.path().join("out.jsonl")).len(), 12);
    assert_eq!(only_artifact(&cache), (artifact, inode));

    // `--cache-dir` wins over the environment; a folder that cannot be
    // created is an error naming it.
    std::fs::write(dir.path().join("a-file"), "not a folder").unwrap();
    let blocked = dir.path().join("a-file/cache");
    let result = run(ionflow()
        .env("IONFLOW_CACHE_DIR", &cache)
        .args(["connector", "precompile", "--cache-dir"])
        .arg(&blocked))
    .await;
    assert_eq!(result.code, 1, "{}", result.all_output());
    assert!(
        result.stderr.contains(&blocked.display().to_string())
            && result.stderr.contains("writable"),
        "{}",
        result.stderr
    );
    sim.shutdown().await;
}
