//! `ionflow schema`, `init`, `completions`, `test` and `--help`.

use crate::support::{ionflow, run};

#[tokio::test]
async fn schema_describes_every_kind() {
    let result = run(ionflow().arg("schema")).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let schema: serde_json::Value = serde_json::from_str(&result.stdout).unwrap();
    assert_eq!(schema["title"], "ionflow pipeline");
    let text = result.stdout;
    for kind in [
        "m3_list",
        "ido",
        "gateway",
        "compass",
        "data_lake",
        "http",
        "file",
        "jq",
        "stdout",
        "m3",
        "m3_bulk",
        "ido_update",
        "ion_message",
        "count",
    ] {
        assert!(
            text.contains(&format!("\"{kind}\"")),
            "{kind} missing from the schema"
        );
    }
    assert!(
        text.contains("additionalProperties"),
        "unknown keys are refused in the schema too"
    );
}

#[tokio::test]
async fn init_scaffolds_a_project_whose_example_tests_pass() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("acme");
    let result = run(ionflow().arg("init").arg(&project)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let gitignore = std::fs::read_to_string(project.join(".gitignore")).unwrap();
    assert!(gitignore.lines().any(|l| l == "*.ionapi"));
    assert!(gitignore.lines().any(|l| l == ".ionflow/"));
    assert!(project.join("README.md").exists());
    let pipeline = project.join("pipelines/items.toml");
    let result = run(ionflow().arg("test").arg(&pipeline)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(result.stdout.contains("1 passed, 0 failed"));
    // Without credentials the project validates, and says what it did
    // without (issue 18: a fresh project used to exit 2 here).
    let result = run(ionflow()
        .arg("validate")
        .arg(project.join("pipelines"))
        .env("INFOR_ENV", "dev"))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(
        result.stderr.contains("secrets/dev.ionapi is not there"),
        "{}",
        result.stderr
    );
    // The editor wiring: the schema and a taplo rule that points at it.
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(project.join("pipeline.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(schema["title"], "ionflow pipeline");
    let taplo = std::fs::read_to_string(project.join(".taplo.toml")).unwrap();
    assert!(
        taplo.contains("path = \"./pipeline.schema.json\""),
        "{taplo}"
    );
    assert!(project.join("fixtures/crs610mi.toml").exists());
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    assert!(
        !readme.contains("https://github.com/)"),
        "no placeholder link: {readme}"
    );
    // A configuration mistake (issue 16: exit 2, as the README says).
    let again = run(ionflow().arg("init").arg(&project)).await;
    assert_eq!(
        again.code,
        2,
        "init never overwrites: {}",
        again.all_output()
    );
}

#[tokio::test]
async fn a_failing_unit_test_shows_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = dir.path().join("t.toml");
    std::fs::write(
        &pipeline,
        r#"
[source]
kind = "file"
path = "in.jsonl"
[[transforms]]
kind = "jq"
filter = "{n: (.n * 2)}"
[[sinks]]
kind = "http"
url = "https://example.com/n/{{ record.n }}"
[[tests]]
name = "doubles"
input = [{ n = 2 }]
output = [{ n = 5 }]
[[tests.requests]]
sink = 0
expect = [{ url = "https://example.com/n/4", method = "POST", body = { n = 4 } }]
"#,
    )
    .unwrap();
    let result = run(ionflow().arg("test").arg(&pipeline)).await;
    assert_eq!(result.code, 4, "{}", result.all_output());
    assert!(result.stdout.contains("FAIL"), "{}", result.stdout);
    // Field by field (issue 18 replaced the two arrays on one line).
    assert!(result.stdout.contains("- n: 5"), "{}", result.stdout);
    assert!(result.stdout.contains("+ n: 4"), "{}", result.stdout);
    assert!(
        !result.stdout.contains("sinks[0] for output[0]"),
        "the request matched: {}",
        result.stdout
    );
}

#[tokio::test]
async fn completions_and_help_with_examples() {
    for shell in ["bash", "zsh", "fish"] {
        let result = run(ionflow().arg("completions").arg(shell)).await;
        assert_eq!(result.code, 0, "{shell}");
        assert!(result.stdout.contains("validate"), "{shell}");
    }
    for command in [
        "run",
        "validate",
        "test",
        "schema",
        "init",
        "completions",
        "sim",
        "demo",
        "whoami",
        "jq",
        "api",
        "replay",
        "list",
        "state",
    ] {
        let result = run(ionflow().arg(command).arg("--help")).await;
        assert_eq!(result.code, 0, "{command}");
        assert!(
            result.stdout.contains("Example"),
            "{command} --help has no example"
        );
    }
}

/// The examples in `--help` that need neither credentials nor a gateway
/// run as written, from the repository's root, with the shipped files.
#[tokio::test]
async fn help_examples_run_as_written() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let offline = [
        "validate",
        "test",
        "jq",
        "list",
        "schedule",
        "state show",
        "schema",
    ];
    let mut ran = 0;
    for command in [
        "run", "validate", "test", "state", "jq", "list", "schedule", "schema",
    ] {
        let help = run(ionflow().arg(command).arg("--help")).await;
        let examples = help
            .stdout
            .lines()
            .skip_while(|l| !l.starts_with("Example"))
            .filter_map(|l| l.trim().strip_prefix("ionflow "))
            .filter(|l| {
                offline
                    .iter()
                    .any(|o| l.starts_with(&format!("{o} ")) || l == o)
                    && !l.contains("--from")
                    && !l.contains('>')
            })
            .map(str::to_owned)
            .collect::<Vec<_>>();
        for example in examples {
            let line = format!("\"$IONFLOW\" {example}");
            let result = run(tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&line)
                .current_dir(&root)
                .env("IONFLOW", env!("CARGO_BIN_EXE_ionflow"))
                .env(
                    "IONFLOW_CACHE_DIR",
                    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ionflow-cache"),
                )
                .env("IONFLOW_STATE_DIR", tempfile::tempdir().unwrap().keep()))
            .await;
            assert_eq!(
                result.code,
                0,
                "`ionflow {example}`: {}",
                result.all_output()
            );
            ran += 1;
        }
    }
    assert!(ran >= 6, "only {ran} examples ran");
}
