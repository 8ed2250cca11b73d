//! The precompiled connector in the cache is machine code wasmtime runs as
//! it is: an artifact that was changed, is writable by others, belongs to
//! someone else or is a link is not loaded but compiled again (and the run
//! still works). And whatever the umask, the cache and state folders are
//! 0700 and the files in them 0600.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::support::{chmod, ionflow, run, simulator, workdir};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

const REFUSED: &str = "not loading the precompiled connector";

#[tokio::test]
async fn a_tampered_or_exposed_artifact_is_compiled_again() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    let cache = dir.path().join("cache");
    let whoami = || async {
        let result = run(ionflow()
            .arg("whoami")
            .arg(&ionapi)
            .env("IONFLOW_CACHE_DIR", &cache)
            .env("IONFLOW_STATE_DIR", dir.path().join("state")))
        .await;
        assert_eq!(result.code, 0, "{}", result.all_output());
        result.stderr
    };

    let first = whoami().await;
    assert!(!first.contains(REFUSED), "{first}");
    let artifacts = files_ending(&cache, ".cwasm");
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    let artifact = artifacts[0].clone();
    let record = artifact.with_extension("sha256");
    assert_eq!(
        (mode(&cache), mode(&artifact), mode(&record)),
        (0o700, 0o600, 0o600)
    );
    assert!(!whoami().await.contains(REFUSED), "a good artifact loads");

    // 400 flipped bytes in the middle of the machine code.
    let original = std::fs::read(&artifact).unwrap();
    let mut tampered = original.clone();
    let middle = tampered.len() / 2;
    for byte in &mut tampered[middle..middle + 400] {
        *byte ^= 0x5a;
    }
    std::fs::write(&artifact, &tampered).unwrap();
    let stderr = whoami().await;
    assert!(
        stderr.contains(REFUSED) && stderr.contains("SHA-256"),
        "the tampered artifact was refused: {stderr}"
    );
    assert_ne!(std::fs::read(&artifact).unwrap(), tampered, "and replaced");
    assert!(!whoami().await.contains(REFUSED), "the new artifact loads");

    // Writable by others, even with the right bytes.
    chmod(&artifact, 0o666);
    let stderr = whoami().await;
    assert!(
        stderr.contains(REFUSED) && stderr.contains("others may write"),
        "{stderr}"
    );
    assert_eq!(mode(&artifact), 0o600);

    // A record that others may write is no record.
    chmod(&record, 0o622);
    let stderr = whoami().await;
    assert!(
        stderr.contains(REFUSED) && stderr.contains("others may write"),
        "{stderr}"
    );
    assert_eq!(mode(&record), 0o600);

    // A link in place of the artifact (to a copy of the right bytes).
    let elsewhere = dir.path().join("elsewhere.cwasm");
    std::fs::copy(&artifact, &elsewhere).unwrap();
    std::fs::remove_file(&artifact).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &artifact).unwrap();
    let stderr = whoami().await;
    assert!(stderr.contains(REFUSED), "{stderr}");
    assert!(std::fs::symlink_metadata(&artifact).unwrap().is_file());

    // Another user's artifact (only root can hand a file to someone else).
    let me = std::fs::metadata(&cache).unwrap().uid();
    if me == 0 {
        std::os::unix::fs::chown(&artifact, Some(65534), None).unwrap();
        let stderr = whoami().await;
        assert!(
            stderr.contains(REFUSED) && stderr.contains("user id 65534"),
            "{stderr}"
        );
        assert_eq!(std::fs::metadata(&artifact).unwrap().uid(), me);
    }

    // A cache folder left wider by an older version is narrowed and used.
    chmod(&cache, 0o777);
    assert!(!whoami().await.contains(REFUSED));
    assert_eq!(mode(&cache), 0o700);
    sim.shutdown().await;
}

#[tokio::test]
async fn folders_and_files_are_private_under_umask_000() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    let base = dir.path().join("fresh");
    let state = base.join("state");
    let cache = base.join("cache");
    let pipeline = dir.path().join("keep.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"
[connections.m3]
ionapi_file = "{}"
revoke_on_exit = false
[source]
kind = "m3_list"
connection = "m3"
program = "MMS200MI"
transaction = "LstItmByItm"
key_field = "ITNO"
page_size = 5
[[sinks]]
kind = "file"
path = "out.jsonl"
"#,
            ionapi.display()
        ),
    )
    .unwrap();
    let result = run(tokio::process::Command::new("sh")
        .arg("-c")
        .arg("umask 000 && exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_ionflow"))
        .arg("run")
        .arg(&pipeline)
        .env("IONFLOW_STATE_DIR", &state)
        .env("IONFLOW_CACHE_DIR", &cache)
        .env_remove("IONFLOW_LOG"))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    // The umask really was 000: the pipeline's own output is not ours to narrow.
    assert_eq!(mode(&dir.path().join("out.jsonl")), 0o666);

    let tokens = state.join("tokens");
    let locks = state.join("locks");
    for folder in [&base, &state, &tokens, &locks, &cache] {
        assert_eq!(mode(folder), 0o700, "{}", folder.display());
    }
    let mut files = files_ending(&tokens, ".json");
    assert_eq!(files.len(), 1, "the kept token set: {files:?}");
    files.extend(files_ending(&tokens, ".lock"));
    files.extend(files_ending(&locks, ".lock"));
    files.extend(files_ending(&cache, ".cwasm"));
    files.extend(files_ending(&cache, ".sha256"));
    assert!(files.len() >= 5, "{files:?}");
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    eprintln!(
        "under umask 000: {} folders 0700, {} files 0600",
        5,
        files.len()
    );

    // A state folder an older version left at 0777 is narrowed.
    chmod(&state, 0o777);
    let again = run(ionflow()
        .arg("run")
        .arg(&pipeline)
        .env("IONFLOW_STATE_DIR", &state)
        .env("IONFLOW_CACHE_DIR", &cache))
    .await;
    assert_eq!(again.code, 0, "{}", again.all_output());
    assert_eq!(mode(&state), 0o700);
    sim.shutdown().await;
}
