//! A run killed with `kill -9` cannot clean up after itself: its partial
//! output file and any token-store temporary file it was writing stay
//! behind. The next run removes them, and only them: files that a live
//! process is writing right now are left alone.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{ionflow, items_pipeline, run, sim_post, simulator, workdir};

fn partials(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect()
}

#[tokio::test]
async fn the_next_run_removes_what_a_killed_run_left() {
    let sim = simulator(30).await;
    let (dir, ionapi) = workdir(&sim);
    let state = dir.path().join("state");
    let pipeline = items_pipeline(dir.path(), &ionapi, 10);

    // The first page hangs for a minute: the run is mid-way when it dies.
    sim_post(
        &sim,
        "faults",
        serde_json::json!({ "count": 1, "delay_ms": 60_000 }),
    )
    .await;
    let mut child = ionflow()
        .arg("run")
        .arg(&pipeline)
        .env("IONFLOW_STATE_DIR", &state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let killed_pid = child.id().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while partials(dir.path()).is_empty() || sim.counters().faults_injected == 0 {
        assert!(Instant::now() < deadline, "the run never started writing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    let left = partials(dir.path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0]
            .to_string_lossy()
            .ends_with(&format!("out.jsonl.ionflow-{killed_pid}.partial")),
        "{left:?}"
    );

    // What the killed process would have left had it died mid token write,
    // next to a write in progress by a live process (this test) that must stay.
    let tokens = state.join("tokens");
    let dead_tmp = tokens.join(format!("0123456789abcdef.json.tmp{killed_pid}-12345"));
    let live_tmp = tokens.join(format!("0123456789abcdef.json.tmp{}-1", std::process::id()));
    std::fs::write(
        &dead_tmp,
        r#"{"key":"k","version":1,"value":"a token set"}"#,
    )
    .unwrap();
    std::fs::write(&live_tmp, "being written").unwrap();
    // Another program's file that merely looks partial, and a partial a
    // live writer holds (this test, locking it): neither is ionflow's to remove.
    let foreign = dir.path().join("report.2024.partial");
    std::fs::write(&foreign, "not ionflow's").unwrap();
    let held = dir.path().join("other.jsonl.ionflow-2147483632.partial");
    let lock = std::fs::File::create(&held).unwrap();
    lock.lock().unwrap();

    ionflow_runtime::tls::client()
        .delete(format!("{}/__sim/faults", sim.base_url()))
        .send()
        .await
        .unwrap();
    let result = run(ionflow()
        .arg("run")
        .arg(&pipeline)
        .arg("-v")
        .env("IONFLOW_STATE_DIR", &state))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(
        !left[0].exists(),
        "the killed run's partial output was removed"
    );
    assert!(
        !dead_tmp.exists(),
        "the killed run's token temp file was removed"
    );
    assert!(live_tmp.exists(), "a live writer's temp file stays");
    assert!(
        foreign.exists() && held.exists(),
        "files ionflow may not own stay"
    );
    assert!(dir.path().join("out.jsonl").exists());
    assert_eq!(partials(dir.path()).len(), 2, "only the two kept files");
    sim.shutdown().await;
}
