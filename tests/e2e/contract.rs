//! The WIT contract as other hosts get it (`ionflow connector export --wit`)
//! against the committed snapshot of its version: a change to the contract
//! must be deliberate, and it must come with a new version.

use std::path::{Path, PathBuf};

use crate::support::{ionflow, run};

/// Set to record the snapshot of a new contract version.
const ACCEPT: &str = "IONFLOW_ACCEPT_WIT";

fn snapshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/snapshots")
}

/// The `.wit` files of a folder, by name.
fn wit_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wit"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// The contract without its documentation: comments and blank lines
/// removed, so that rewording a doc comment is not a contract change.
fn contract_text(files: &[(String, String)]) -> String {
    let mut text = String::new();
    for (name, body) in files {
        text.push_str(&format!("=== {name}\n"));
        for line in body.lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with("//") {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}

/// The version every file's `package ionflow:gateway@X;` line declares.
fn package_version(files: &[(String, String)]) -> String {
    let versions: Vec<&str> = files
        .iter()
        .map(|(name, body)| {
            body.lines()
                .find_map(|l| l.trim().strip_prefix("package ionflow:gateway@"))
                .and_then(|rest| rest.strip_suffix(';'))
                .unwrap_or_else(|| panic!("{name} declares no `package ionflow:gateway@VERSION;`"))
        })
        .collect();
    assert!(
        versions.windows(2).all(|w| w[0] == w[1]),
        "every wit/ file must declare the same version: {versions:?}"
    );
    versions[0].to_owned()
}

#[tokio::test]
async fn the_exported_wit_is_the_contract_and_matches_its_version_snapshot() {
    let out = tempfile::tempdir().unwrap();
    let result = run(ionflow()
        .args(["connector", "export", "--wit"])
        .arg(out.path()))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let exported = wit_files(out.path());
    let source = wit_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit"));
    assert_eq!(
        exported, source,
        "the exported WIT differs from wit/: rebuild ionflow"
    );

    let version = package_version(&source);
    let snapshot = snapshots().join(format!("ionflow-gateway@{version}.txt"));
    let current = contract_text(&source);
    match std::fs::read_to_string(&snapshot) {
        Ok(recorded) if recorded == current => {}
        Ok(recorded) => {
            let (line, (was, now)) = recorded
                .lines()
                .zip(current.lines())
                .enumerate()
                .find(|(_, (a, b))| a != b)
                .map(|(i, pair)| (i + 1, pair))
                .unwrap_or((
                    recorded.lines().count().min(current.lines().count()) + 1,
                    ("(end)", "(end)"),
                ));
            panic!(
                "the WIT contract changed, but its version is still {version}.\n\
                 First difference, line {line} of {}:\n  was: {was}\n  now: {now}\n\
                 Hosts built against {version} would break. If the change is intended, bump the \
                 version in every wit/*.wit package line (and WIT_PACKAGE, WORLD in host/src/runtime), \
                 then record the new snapshot with {ACCEPT}=1 cargo test --release contract.",
                snapshot.display()
            );
        }
        Err(_) if std::env::var_os(ACCEPT).is_some() => {
            std::fs::create_dir_all(snapshots()).unwrap();
            std::fs::write(&snapshot, &current).unwrap();
        }
        Err(_) => panic!(
            "no snapshot of contract version {version} ({}): a new version must be recorded \
             deliberately; review the WIT change and run {ACCEPT}=1 cargo test --release contract",
            snapshot.display()
        ),
    }
}
