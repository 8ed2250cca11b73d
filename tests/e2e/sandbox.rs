//! The connector's sandbox: it reaches only the hosts of its `.ionapi` file,
//! and a guest that runs away or crashes fails its call, not the host.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ionflow_runtime::capabilities::MemoryTokenStore;
use ionflow_runtime::{ErrorKind, GatewayRequest, Method, Runtime, SandboxLimits, default_options};

use crate::support::{edit_ionapi, ionflow, run, simulator, workdir};

#[tokio::test]
async fn a_request_to_a_host_outside_the_ionapi_file_is_refused() {
    let sim = simulator(5).await;
    let (_dir, ionapi) = workdir(&sim);
    // A listener on another loopback address stands for "somewhere else":
    // if the host let the request through, it would land here.
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = elsewhere.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let listener = tokio::spawn(async move {
        while elsewhere.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    // On-premises files may carry absolute endpoint URLs; this one sends the
    // token request to a host that is neither `pu`'s nor `iu`'s.
    edit_ionapi(&ionapi, |j| {
        j.insert(
            "ot".into(),
            format!("http://127.0.0.2:{port}/ACME_TST/as/token.oauth2").into(),
        );
    });

    let result = run(ionflow().arg("whoami").arg(&ionapi)).await;
    assert_eq!(
        result.code,
        2,
        "a refused host is a configuration error: {}",
        result.all_output()
    );
    assert!(
        result
            .stderr
            .contains("refused the request to http://127.0.0.2"),
        "{}",
        result.stderr
    );
    assert!(
        result.stderr.contains(
            "127.0.0.2 is not one of the hosts named in the .ionapi file (localhost, 127.0.0.1)"
        ),
        "{}",
        result.stderr
    );
    assert!(
        result
            .stderr
            .contains("refused a connector request to a host outside its .ionapi file"),
        "the refusal is logged: {}",
        result.stderr
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "nothing reached the other host"
    );
    let counters = sim.counters();
    assert_eq!(counters.token_requests.password, 0);
    assert_eq!(counters.api_calls, 0);

    // `inspect` sees it coming.
    let result = run(ionflow().arg("inspect").arg(&ionapi)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(
        result.stdout.contains("warning: `ot` points at 127.0.0.2"),
        "{}",
        result.stdout
    );
    listener.abort();
    sim.shutdown().await;
}

/// Builds `tests/fixtures/runaway-connector` for wasm32-wasip2 in a target
/// dir of its own (sharing ours would deadlock on cargo's lock), without the
/// variables cargo set for this test build, which would reconfigure it.
fn fixture_component() -> Vec<u8> {
    let crate_dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/runaway-connector");
    let target_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("runaway-connector");
    let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cmd.current_dir(&crate_dir)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if (name.starts_with("CARGO_") && name != "CARGO_HOME")
            || name == "RUSTFLAGS"
            || name == "RUSTC_WORKSPACE_WRAPPER"
        {
            cmd.env_remove(name.as_ref());
        }
    }
    let output = cmd.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "building the fixture guest failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(target_dir.join("wasm32-wasip2/release/runaway_connector.wasm")).unwrap()
}

fn request(path: &str) -> GatewayRequest {
    GatewayRequest {
        method: Method::Get,
        path: path.into(),
        query: vec![],
        headers: vec![],
        body: vec![],
        timeout_ms: None,
    }
}

#[tokio::test]
async fn a_runaway_or_crashing_connector_fails_its_call_and_the_host_carries_on() {
    let wasm = tokio::task::spawn_blocking(fixture_component)
        .await
        .unwrap();
    let deadline = Duration::from_millis(800);
    let runtime = Runtime::with_component(&wasm, Arc::new(MemoryTokenStore::new()), None)
        .unwrap()
        .with_limits(SandboxLimits {
            memory_bytes: 32 * 1024 * 1024,
            call_deadline: Some(deadline),
            ..SandboxLimits::default()
        });
    let open = || runtime.open("fixture", "{}", default_options());

    let conn = open().await.unwrap();
    assert_eq!(conn.call(request("hello")).await.unwrap().status, 200);

    // An endless loop is interrupted at its deadline.
    let started = Instant::now();
    let error = conn.call(request("spin")).await.unwrap_err();
    let took = started.elapsed();
    eprintln!("the endless loop was stopped after {took:?} (deadline {deadline:?})");
    assert_eq!(error.kind(), ErrorKind::Sandbox, "{error}");
    assert!(
        error
            .to_string()
            .contains("ran past its deadline of 800 ms"),
        "{error}"
    );
    assert!(
        took >= deadline && took < deadline * 4,
        "stopped after {took:?}"
    );

    // That instance is never entered again; a fresh connection works.
    let again = conn.call(request("hello")).await.unwrap_err();
    assert!(
        again.to_string().contains("stopped by an earlier failure"),
        "{again}"
    );
    let fresh = open().await.unwrap();
    assert_eq!(fresh.call(request("hello")).await.unwrap().status, 200);

    // Unbounded allocation hits the memory limit.
    let error = open()
        .await
        .unwrap()
        .call(request("grow"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Sandbox, "{error}");
    assert!(
        error
            .to_string()
            .contains("memory beyond the limit of 32 MiB"),
        "{error}"
    );

    // A panic is a trap too.
    let error = open()
        .await
        .unwrap()
        .call(request("panic"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Sandbox, "{error}");
    assert!(error.to_string().contains("trapped"), "{error}");

    // The connection opened before all this is untouched.
    assert_eq!(fresh.call(request("hello")).await.unwrap().status, 200);
}
