//! The README's exit-code table is the contract with schedulers: this test
//! reads it, checks that `cli/exit.rs` declares the same codes, and runs,
//! for every documented code, a command that must end with it against the
//! simulator. A code added to one place and not the others, or a command
//! that drifts to another code, fails here.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::support::{
    Run, copy_ionapi, edit_ionapi, ionflow, items_pipeline, run, sigterm, sim_post, simulator,
    without_rate_limit, workdir,
};

/// The codes in the first column of the README's "Exit codes" table.
fn readme_codes() -> BTreeSet<i32> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let section = readme
        .split("## Exit codes")
        .nth(1)
        .expect("the README has an `## Exit codes` section");
    let section = section.split("\n## ").next().unwrap();
    let codes: BTreeSet<i32> = section
        .lines()
        .filter_map(|line| line.strip_prefix('|'))
        .filter_map(|row| row.split('|').next())
        .filter_map(|cell| cell.trim().parse().ok())
        .collect();
    assert!(codes.len() >= 5, "the table was not read: {codes:?}");
    codes
}

/// The codes `enum Exit` declares (`Name = N,`).
fn declared_codes() -> BTreeSet<i32> {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli/exit.rs"))
            .unwrap();
    let body = source
        .split("pub enum Exit {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("exit.rs declares `pub enum Exit`");
    body.lines()
        .filter_map(|line| line.trim().split_once(" = "))
        .filter_map(|(_, value)| value.trim_end_matches(',').trim().parse().ok())
        .collect()
}

#[tokio::test]
async fn every_exit_code_in_the_readme_is_declared_and_produced() {
    let documented = readme_codes();
    assert_eq!(
        documented,
        declared_codes(),
        "the README's table and cli/exit.rs disagree"
    );
    let sim = simulator(50_000).await;
    let (dir, ionapi) = workdir(&sim);
    for code in &documented {
        let result = produce(*code, &sim, dir.path(), &ionapi).await;
        assert_eq!(
            result.code,
            *code,
            "exit code {code}: {}",
            result.all_output()
        );
        ionflow_runtime::tls::client()
            .delete(format!("{}/__sim/faults", sim.base_url()))
            .send()
            .await
            .unwrap();
    }
    sim.shutdown().await;
}

/// Runs a command that must end with `code`.
async fn produce(code: i32, sim: &ionflow_sim::Simulator, dir: &Path, ionapi: &Path) -> Run {
    match code {
        0 => run(ionflow().arg("whoami").arg(ionapi)).await,
        // check-scope: a path answered neither 2xx nor 403 (here a 404).
        1 => {
            run(ionflow()
                .args(["check-scope"])
                .arg(ionapi)
                .arg("NOPE/api/x"))
            .await
        }
        // Configuration: `init` on a folder that already holds a project.
        2 => {
            let project = dir.join("project");
            std::fs::create_dir_all(project.join("pipelines")).unwrap();
            run(ionflow().arg("init").arg(&project)).await
        }
        // Credentials refused: a client secret that is not the app's.
        3 => {
            let wrong = copy_ionapi(ionapi, "wrong.ionapi");
            edit_ionapi(&wrong, |file| {
                file.insert("cs".into(), json!("not-the-secret"));
            });
            run(ionflow().arg("whoami").arg(&wrong)).await
        }
        // A record failed: M3 refuses an item that exists.
        4 => {
            std::fs::write(dir.join("add.csv"), "item\nITM000001\n").unwrap();
            let pipeline = dir.join("add.toml");
            std::fs::write(
                &pipeline,
                format!(
                    "[connections.m3]\nionapi_file = \"{}\"\n[source]\nkind = \"file\"\npath = \"add.csv\"\nformat = \"csv\"\n\
                     [[sinks]]\nkind = \"m3\"\nconnection = \"m3\"\nprogram = \"MMS200MI\"\ntransaction = \"AddItmBasic\"\n\
                     fields = {{ ITNO = \"{{{{ record.item }}}}\", ITDS = \"x\", UNMS = \"EA\" }}\n",
                    ionapi.display()
                ),
            )
            .unwrap();
            run(ionflow().arg("run").arg(&pipeline)).await
        }
        // The gateway stays unavailable: 503 until the retries are spent.
        5 => {
            sim_post(
                sim,
                "faults",
                json!({"path_prefix": "M3/", "count": 10, "status": 503}),
            )
            .await;
            let pipeline = items_pipeline(dir, ionapi, 10);
            let text = std::fs::read_to_string(&pipeline).unwrap().replace(
                "page_size = 10",
                "page_size = 10\nretry = { max_retries = 1, backoff_ms = 10 }",
            );
            std::fs::write(&pipeline, text).unwrap();
            run(ionflow().arg("run").arg(&pipeline)).await
        }
        // A second run while the first holds the pipeline's lock; the
        // first is then stopped by SIGTERM (130, checked on its own below).
        75 => {
            let pipeline = items_pipeline(dir, ionapi, 1);
            without_rate_limit(&pipeline);
            let first = ionflow()
                .arg("run")
                .arg(&pipeline)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let started = sim.counters().api_calls;
            for _ in 0..500 {
                if sim.counters().api_calls > started + 5 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let second = run(ionflow().arg("run").arg(&pipeline)).await;
            sigterm(first.id().unwrap()).await;
            let stopped = first.wait_with_output().await.unwrap();
            assert_eq!(stopped.status.code(), Some(130), "the first run, stopped");
            second
        }
        // Stopped by a signal after the current page.
        130 => {
            let pipeline = items_pipeline(dir, ionapi, 1);
            without_rate_limit(&pipeline);
            let child = ionflow()
                .arg("run")
                .arg(&pipeline)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let started = sim.counters().api_calls;
            for _ in 0..500 {
                if sim.counters().api_calls > started + 5 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sigterm(child.id().unwrap()).await;
            let output = child.wait_with_output().await.unwrap();
            Run {
                code: output.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        }
        other => panic!(
            "the README documents exit code {other}, but this test has no command that \
             produces it: add one to `produce`"
        ),
    }
}
