//! What commands print and how they end: `whoami` in one line (JSON with
//! `--json`), `keepalive` and `logout` saying what actually happened, a
//! reader that closes the pipe early, and configuration mistakes on the
//! command line ending with exit code 2.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncReadExt as _;

use crate::support::{ionflow, items_pipeline, run, simulator, workdir};

#[tokio::test]
async fn whoami_prints_user_display_name_tenant_and_grant_in_one_line() {
    let sim = simulator(1).await;
    let (_dir, ionapi) = workdir(&sim);
    let result = run(ionflow().arg("whoami").arg(&ionapi)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(
        result.stdout,
        "svc_ionflow@acme.example (ionflow Service Account), tenant ACME_TST, grant backend-service\n"
    );
    let result = run(ionflow().arg("whoami").arg(&ionapi).arg("--json")).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let me: Value = serde_json::from_str(&result.stdout).unwrap();
    assert_eq!(me["user"], "svc_ionflow@acme.example");
    assert_eq!(me["display_name"], "ionflow Service Account");
    assert_eq!(me["tenant"], "ACME_TST");
    assert_eq!(me["grant"], "backend-service");
    sim.shutdown().await;
}

#[tokio::test]
async fn keepalive_and_logout_say_what_actually_happened() {
    let sim = simulator(1).await;
    let (dir, ionapi) = workdir(&sim);
    let state = dir.path().join("state");
    let command = |name: &str| {
        let mut cmd = ionflow();
        cmd.arg(name).arg(&ionapi).env("IONFLOW_STATE_DIR", &state);
        cmd
    };
    // An empty store: keepalive has nothing to refresh and makes a grant.
    let first = run(&mut command("keepalive")).await;
    assert_eq!(first.code, 0, "{}", first.all_output());
    assert!(
        first.stdout.starts_with(
            "no grant was stored for this connection: a new backend-service grant was made"
        ),
        "{}",
        first.stdout
    );
    assert!(!first.stdout.contains("refreshed"), "{}", first.stdout);
    let second = run(&mut command("keepalive")).await;
    assert!(
        second
            .stdout
            .starts_with("refreshed: the stored refresh token was spent and the new one stored"),
        "{}",
        second.stdout
    );
    let counters = sim.counters();
    assert_eq!(
        (
            counters.token_requests.password,
            counters.token_requests.refresh_token
        ),
        (1, 1)
    );

    let out = run(&mut command("logout")).await;
    assert_eq!(out.code, 0, "{}", out.all_output());
    assert!(
        out.stdout
            .starts_with("logged out: the stored token was revoked at http://"),
        "{}",
        out.stdout
    );
    assert_eq!(sim.counters().revocations, 1);
    // Nothing is stored any more: a second logout sends nothing and says so.
    let again = run(&mut command("logout")).await;
    assert_eq!(again.code, 0, "{}", again.all_output());
    assert!(
        again
            .stdout
            .starts_with("nothing to log out: no tokens are stored"),
        "{}",
        again.stdout
    );
    assert_eq!(sim.counters().revocations, 1, "nothing was sent");
    sim.shutdown().await;
}

/// Runs `ionflow ARGS`, reads `keep` bytes of its output and closes the
/// pipe, as `| head -c N` does; returns the exit code, the signal and
/// stderr. With `keep = 0` the pipe is closed before the command writes
/// anything, so its first write meets the closed pipe whatever the pipe's
/// buffer would have held.
async fn read_then_close(args: &[&str], keep: usize) -> (Option<i32>, Option<i32>, String) {
    let mut child = ionflow()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buffer = vec![0u8; keep];
    stdout.read_exact(&mut buffer).await.unwrap();
    drop(stdout);
    let output = child.wait_with_output().await.unwrap();
    use std::os::unix::process::ExitStatusExt as _;
    (
        output.status.code(),
        output.status.signal(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[cfg(unix)]
#[tokio::test]
async fn a_reader_that_closes_the_pipe_early_ends_the_command_quietly() {
    for (args, keep) in [
        (&["schema"][..], 0),
        (&["schema"], 50),
        (&["completions", "bash"], 0),
        (&["completions", "bash"], 20),
        (&["schedule", "--help"], 0),
    ] {
        let (code, signal, stderr) = read_then_close(args, keep).await;
        assert!(
            code == Some(0) || signal == Some(libc_sigpipe()),
            "{args:?} after {keep} bytes: exit {code:?}, signal {signal:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// SIGPIPE's number on every Unix ionflow builds for.
fn libc_sigpipe() -> i32 {
    13
}

#[tokio::test]
async fn configuration_mistakes_on_the_command_line_exit_2() {
    let sim = simulator(1).await;
    let (dir, ionapi) = workdir(&sim);
    let pipelines = dir.path().join("pipelines");
    std::fs::create_dir_all(&pipelines).unwrap();
    let pipeline = items_pipeline(&pipelines, &ionapi, 10);
    let scheduled = pipelines.join("scheduled.toml");
    std::fs::write(
        &scheduled,
        format!(
            "schedule = \"@daily\"\n{}",
            std::fs::read_to_string(&pipeline).unwrap()
        ),
    )
    .unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let state = dir.path().join("state");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "serve".into(),
                pipelines.display().to_string(),
                "--status-addr".into(),
                "10.1.2.3:9187".into(),
            ],
            "--status-addr 10.1.2.3:9187: cannot listen there",
        ),
        (
            vec![
                "serve".into(),
                pipelines.display().to_string(),
                "--status-addr".into(),
                busy_addr.clone(),
            ],
            "cannot listen there",
        ),
        (
            vec![
                "serve".into(),
                pipelines.display().to_string(),
                "--lease-secs".into(),
                "0".into(),
            ],
            "--lease-secs 0: use 0.2 to 86400 seconds",
        ),
        (
            vec!["init".into(), dir.path().display().to_string()],
            "already has a pipelines/ folder",
        ),
        (
            vec!["schedule".into(), pipeline.display().to_string()],
            "has no schedule",
        ),
        (
            vec![
                "run".into(),
                pipeline.display().to_string(),
                "--var".into(),
                "NOEQUALS".into(),
            ],
            "--var NOEQUALS: write NAME=VALUE",
        ),
    ];
    for (args, expected) in cases {
        let result = run(ionflow().args(&args).env("IONFLOW_STATE_DIR", &state)).await;
        assert_eq!(result.code, 2, "{args:?}: {}", result.all_output());
        assert!(
            result.stderr.contains(expected),
            "{args:?}: {}",
            result.stderr
        );
    }
    drop(busy);
    sim.shutdown().await;
}
