//! `ionflow sim --record DIR --upstream CONNECTION`: a second `ionflow sim`
//! plays the real tenant; pipelines run against the recorder with the
//! recorder's own `.ionapi`; then, both stopped, `ionflow sim --fixtures
//! DIR` alone serves the same records, and DIR holds no secret of either.

use std::path::Path;
use std::time::Duration;

use crate::support::{
    assert_no_secret, file_secrets, files_under, ionflow, issued_tokens_at, read_jsonl, run,
    sigterm, sim_get_at, sim_process,
};

const UPSTREAM_TENANT: &str = "REAL_PRD";

/// What the upstream serves besides its built-in SLItems: customers in
/// M3 and an OData-like path whose records link back to the tenant.
const UPSTREAM_FIXTURES: &str = r#"
[[m3]]
program = "CRS610MI"
key = ["CUNO"]
records = [
  { CUNO = "C0001", CUNM = "Acme Oy", LMDT = "20260301" },
  { CUNO = "C0002", CUNM = "Baltic Metal", LMDT = "20260302" },
  { CUNO = "C0003", CUNM = "Cobalt AB", LMDT = "20260303" },
  { CUNO = "C0004", CUNM = "Delta GmbH", LMDT = "20260304" },
  { CUNO = "C0005", CUNM = "Euro Fasteners", LMDT = "20260305" },
  { CUNO = "C0006", CUNM = "Fjord AS", LMDT = "20260306" },
  { CUNO = "C0007", CUNM = "Gdansk Steel", LMDT = "20260307" },
]

[[m3.transactions]]
name = "LstByNumber"
type = "list"
inputs = { CUNO = "key" }
outputs = ["CUNO", "CUNM", "LMDT"]

[[paths]]
path = "LN/lnapi/odata/txsmi.opr/Orders"
paging = { records_pointer = "/value" }
body = { "@odata.context" = "{{iu}}/{{ti}}/LN/lnapi/odata/$metadata", value = [
  { Order = "O1", Amount = 10, link = "{{iu}}/{{ti}}/LN/lnapi/odata/txsmi.opr/Orders('O1')" },
  { Order = "O2", Amount = 20, link = "{{iu}}/{{ti}}/LN/lnapi/odata/txsmi.opr/Orders('O2')" },
  { Order = "O3", Amount = 30, link = "{{iu}}/{{ti}}/LN/lnapi/odata/txsmi.opr/Orders('O3')" },
  { Order = "O4", Amount = 40, link = "{{iu}}/{{ti}}/LN/lnapi/odata/txsmi.opr/Orders('O4')" },
  { Order = "O5", Amount = 50, link = "{{iu}}/{{ti}}/LN/lnapi/odata/txsmi.opr/Orders('O5')" },
] }
"#;

async fn stop(mut child: tokio::process::Child) {
    sigterm(child.id().unwrap()).await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the simulator stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Three pipelines on `ionapi`: an M3 list paged by key, an IDO load
/// paged by bookmark, a gateway path paged by offset.
fn pipelines(dir: &Path, ionapi: &Path) -> Vec<(&'static str, std::path::PathBuf)> {
    let connection = format!(
        "[connections.tenant]\nionapi_file = \"{}\"\n",
        ionapi.display()
    );
    let sources = [
        (
            "customers",
            r#"kind = "m3_list"
connection = "tenant"
program = "CRS610MI"
transaction = "LstByNumber"
key_field = "CUNO"
page_size = 3"#,
        ),
        (
            "items",
            r#"kind = "ido"
connection = "tenant"
ido = "SLItems"
mongoose_config = "ACME_DALS"
properties = ["Item", "Description", "UM"]
order_by = "Item"
page_size = 7"#,
        ),
        (
            "orders",
            r#"kind = "gateway"
connection = "tenant"
path = "LN/lnapi/odata/txsmi.opr/Orders"
records_pointer = "/value"
paging = { page_size = 2 }"#,
        ),
    ];
    sources
        .into_iter()
        .map(|(name, source)| {
            let path = dir.join(format!("{name}.toml"));
            let text = format!(
                "{connection}\n[source]\n{source}\n\n[[sinks]]\nkind = \"file\"\npath = \"{name}.jsonl\"\n"
            );
            std::fs::write(&path, text).unwrap();
            (name, path)
        })
        .collect()
}

/// Runs each pipeline (fresh output) and returns its records by name.
async fn run_all(
    dir: &Path,
    pipelines: &[(&str, std::path::PathBuf)],
) -> Vec<Vec<serde_json::Value>> {
    let mut all = Vec::new();
    for (name, pipeline) in pipelines {
        let out = dir.join(format!("{name}.jsonl"));
        let _ = std::fs::remove_file(&out);
        let result = run(ionflow().current_dir(dir).arg("run").arg(pipeline)).await;
        assert_eq!(result.code, 0, "{name}: {}", result.all_output());
        all.push(read_jsonl(&out));
    }
    all
}

#[tokio::test]
async fn recorded_answers_replay_offline_without_secrets() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let upstream_fixtures = dir.join("upstream-fixtures");
    std::fs::create_dir_all(&upstream_fixtures).unwrap();
    std::fs::write(upstream_fixtures.join("tenant.toml"), UPSTREAM_FIXTURES).unwrap();
    let upstream_ionapi = dir.join("upstream.ionapi");
    let recorded = dir.join("recorded");
    let ionapi = dir.join("sim.ionapi");

    // The "real tenant", and the recorder in front of it.
    let (upstream, upstream_base, _) = sim_process(&[
        "--fixtures",
        upstream_fixtures.to_str().unwrap(),
        "--tenant",
        UPSTREAM_TENANT,
        "--items",
        "30",
        "--ionapi-out",
        upstream_ionapi.to_str().unwrap(),
    ])
    .await;
    let (recorder, recorder_base, said) = sim_process(&[
        "--record",
        recorded.to_str().unwrap(),
        "--upstream",
        upstream_ionapi.to_str().unwrap(),
        "--ionapi-out",
        ionapi.to_str().unwrap(),
    ])
    .await;
    assert!(
        said.iter().any(|l| l.starts_with("recording: ")),
        "{said:?}"
    );

    let pipelines = pipelines(dir, &ionapi);
    let live = run_all(dir, &pipelines).await;
    let names = |records: &[serde_json::Value], field: &str| -> Vec<String> {
        records
            .iter()
            .map(|r| r[field].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(&live[0], "CUNO"),
        [
            "C0001", "C0002", "C0003", "C0004", "C0005", "C0006", "C0007"
        ]
    );
    assert_eq!(live[1].len(), 30, "every item, in pages of 7");
    assert_eq!(names(&live[2], "Order"), ["O1", "O2", "O3", "O4", "O5"]);
    assert!(
        live[2][0]["link"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{upstream_base}/{UPSTREAM_TENANT}/")),
        "{}",
        live[2][0]
    );
    // The answers came from the upstream, through its gateway.
    let counted = sim_get_at(&upstream_base, "counters").await;
    assert!(
        counted["api_calls"].as_u64().unwrap_or(0) >= 3 + 5 + 3,
        "{counted}"
    );

    // Neither side's secrets nor the upstream's tokens, URL or tenant are in DIR.
    let mut secrets = file_secrets(&upstream_ionapi);
    secrets.extend(file_secrets(&ionapi));
    secrets.extend(issued_tokens_at(&upstream_base).await);
    secrets.extend(issued_tokens_at(&recorder_base).await);
    secrets.push(upstream_base.clone());
    secrets.push(UPSTREAM_TENANT.to_owned());
    stop(recorder).await;
    stop(upstream).await;
    let files = files_under(&recorded);
    assert!(
        files.iter().any(|f| f.ends_with("m3-CRS610MI.toml")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.ends_with("ido-SLItems.toml")),
        "{files:?}"
    );
    assert!(files.iter().any(|f| f.ends_with("paths.toml")), "{files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        assert_no_secret(&text, &secrets, &file.display().to_string());
    }

    // Offline: the recorded folder alone, the same pipelines, the same records.
    let (offline, offline_base, said) = sim_process(&[
        "--fixtures",
        recorded.to_str().unwrap(),
        "--ionapi-out",
        ionapi.to_str().unwrap(),
    ])
    .await;
    assert!(
        said.iter()
            .any(|l| l.starts_with("fixture: M3 CRS610MI (LstByNumber), 7 records")),
        "{said:?}"
    );
    let replayed = run_all(dir, &pipelines).await;
    assert_eq!(replayed[0], live[0]);
    assert_eq!(replayed[1], live[1]);
    // Links lead to the simulator that serves them now.
    let relinked: Vec<serde_json::Value> = live[2]
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let link = r["link"].as_str().unwrap().replace(
                &format!("{upstream_base}/{UPSTREAM_TENANT}/"),
                &format!("{offline_base}/ACME_TST/"),
            );
            r["link"] = link.into();
            r
        })
        .collect();
    assert_eq!(replayed[2], relinked);
    stop(offline).await;
}

#[tokio::test]
async fn record_mode_needs_an_upstream_and_no_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let result = run(ionflow().args(["sim", "--record"]).arg(dir.path())).await;
    assert_eq!(result.code, 2, "{}", result.all_output());
    assert!(result.stderr.contains("--upstream"), "{}", result.stderr);
    let result = run(ionflow()
        .args(["sim", "--record"])
        .arg(dir.path())
        .args(["--upstream", "x.ionapi", "--fixtures"])
        .arg(dir.path()))
    .await;
    assert_eq!(result.code, 2, "{}", result.all_output());
    assert!(
        result.stderr.contains("cannot be used with"),
        "{}",
        result.stderr
    );
}

#[tokio::test]
async fn a_broken_fixture_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("programs.toml"),
        "[[m3]\nprogram = \"CRS610MI\"\n",
    )
    .unwrap();
    let result = run(ionflow()
        .args(["sim", "--port", "0", "--fixtures"])
        .arg(dir.path()))
    .await;
    assert_eq!(result.code, 2, "{}", result.all_output());
    assert!(
        result.stderr.contains("programs.toml"),
        "the message names the file: {}",
        result.stderr
    );
    let empty = tempfile::tempdir().unwrap();
    let result = run(ionflow()
        .args(["sim", "--port", "0", "--fixtures"])
        .arg(empty.path()))
    .await;
    assert_eq!(result.code, 2, "{}", result.all_output());
    assert!(
        result.stderr.contains("no .toml fixture file"),
        "{}",
        result.stderr
    );
}
