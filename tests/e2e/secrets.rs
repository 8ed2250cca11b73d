//! No secret from a `.ionapi` file and no token ever reaches stdout, stderr
//! or a file ionflow writes, for every command and a failing pipeline, at
//! the most verbose log level, in both log formats.

use std::path::Path;

use crate::support::{
    assert_no_secret, copy_ionapi, edit_ionapi, file_secrets, files_under, ionflow, issued_tokens,
    items_pipeline, run, simulator, workdir,
};

#[tokio::test]
async fn no_secret_or_token_in_any_output_at_trace_level() {
    let sim = simulator(120).await;
    let (dir, ionapi) = workdir(&sim);
    let pipeline = items_pipeline(dir.path(), &ionapi, 50);

    // A second file whose service account secret is wrong: the pipeline
    // using it fails at the token endpoint, through the error paths.
    let wrong = copy_ionapi(&ionapi, "wrong.ionapi");
    edit_ionapi(&wrong, |j| {
        j.insert("sask".into(), "wrong#sask+/=&%value-0123456789".into());
    });
    let failing = dir.path().join("failing.toml");
    std::fs::write(
        &failing,
        std::fs::read_to_string(&pipeline)
            .unwrap()
            .replace(&ionapi.display().to_string(), &wrong.display().to_string())
            .replace("out.jsonl", "failing.jsonl"),
    )
    .unwrap();

    // ionflow's own state (cache, anything under HOME) lands in here, so
    // every file it writes can be read afterwards.
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();

    let file = ionapi.display().to_string();
    let by_name = format!("{}#m3", pipeline.display());
    let commands: Vec<(Vec<String>, i32)> = vec![
        (vec!["run".into(), pipeline.display().to_string()], 0),
        (vec!["run".into(), failing.display().to_string()], 3),
        (vec!["validate".into(), pipeline.display().to_string()], 0),
        (vec!["whoami".into(), file.clone()], 0),
        (vec!["whoami".into(), by_name.clone()], 0),
        (vec!["whoami".into(), wrong.display().to_string()], 3),
        (vec!["inspect".into(), file.clone()], 0),
        (vec!["inspect".into(), by_name.clone(), "--json".into()], 0),
        (vec!["token".into(), file.clone()], 0),
        (vec!["token".into(), by_name.clone(), "--json".into()], 0),
        (vec!["token".into(), wrong.display().to_string()], 3),
        (
            vec![
                "check-scope".into(),
                file.clone(),
                "ifsservice/usermgt/v2/users/me".into(),
                "IDM/api/items/search".into(),
                "M3/no/such/api".into(),
            ],
            3,
        ),
        (
            vec![
                "check-scope".into(),
                by_name.clone(),
                "M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm?maxrecs=5".into(),
                "--json".into(),
            ],
            0,
        ),
    ];

    let mut outputs = Vec::new();
    for format in ["text", "json"] {
        for (args, expected) in &commands {
            let result = run(ionflow()
                .args(args)
                .args(["-vvv", "--log-format", format])
                .env("IONFLOW_LOG", "trace")
                .env("IONFLOW_CACHE_DIR", state.join("cache"))
                .env("HOME", &state)
                .env("XDG_CACHE_HOME", state.join("xdg")))
            .await;
            assert_eq!(
                result.code,
                *expected,
                "{args:?} {format}: {}",
                result.all_output()
            );
            outputs.push((format!("{args:?} {format}"), result.all_output()));
        }
    }
    // Trace level really is on: the connector's and the host's own messages are there.
    for expected in ["requesting a token", "invalid_grant", "insufficient_scope"] {
        assert!(
            outputs.iter().any(|(_, o)| o.contains(expected)),
            "{expected} was not captured"
        );
    }
    assert!(
        outputs
            .iter()
            .any(|(what, o)| what.contains("json") && o.contains("\"level\":\"TRACE\"")),
        "JSON trace logs were captured"
    );

    let mut secrets = file_secrets(&ionapi);
    secrets.extend(file_secrets(&wrong));
    secrets.extend(issued_tokens(&sim).await);
    for (what, output) in &outputs {
        assert_no_secret(output, &secrets, what);
    }
    // Every file ionflow wrote: the pipeline output, the connector cache and
    // anything under HOME. (Tokens are kept in memory: there is no token store file.)
    let written: Vec<_> = files_under(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "ionapi"))
        .collect();
    assert!(written.iter().any(|p| p.ends_with("out.jsonl")));
    assert!(
        written.iter().any(|p| p.starts_with(state.join("cache"))),
        "the cache was used"
    );
    for path in &written {
        let bytes = std::fs::read(path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert_no_secret(&text, &secrets, &relative(path, dir.path()));
    }
    assert!(
        !dir.path().join("failing.jsonl").exists(),
        "a failed run claims no output"
    );
    sim.shutdown().await;
}

fn relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// `ionflow sim` writes credentials on purpose (its `--ionapi-out` file) but
/// must not print them or the tokens it issues, even at trace level.
#[tokio::test]
async fn the_simulator_command_keeps_its_secrets_out_of_its_logs() {
    let dir = tempfile::tempdir().unwrap();
    for format in ["text", "json"] {
        let ionapi = dir.path().join(format!("sim-{format}.ionapi"));
        let mut sim = ionflow()
            .arg("sim")
            .arg("--ionapi-out")
            .arg(&ionapi)
            .args(["-vvv", "--log-format", format])
            .env("IONFLOW_LOG", "trace")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut waited = 0;
        while !ionapi.exists() || std::fs::read_to_string(&ionapi).unwrap().is_empty() {
            assert!(waited < 100, "ionflow sim wrote no .ionapi file");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            waited += 1;
        }
        let client = run(ionflow().arg("whoami").arg(&ionapi)).await;
        assert_eq!(client.code, 0, "{}", client.all_output());
        let checked = run(ionflow()
            .arg("check-scope")
            .arg(&ionapi)
            .arg("IDM/api/items/search"))
        .await;
        assert_eq!(checked.code, 3, "{}", checked.all_output());

        let iu: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&ionapi).unwrap()).unwrap();
        let tokens: serde_json::Value =
            ionflow_runtime::tls::client().get(format!("{}/__sim/tokens", iu["iu"].as_str().unwrap())).send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        sim.start_kill().unwrap();
        let output = sim.wait_with_output().await.unwrap();
        let logs = format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(logs.contains("listening"), "{logs}");
        assert!(logs.contains("token.oauth2"), "trace request logs: {logs}");

        let mut secrets = file_secrets(&ionapi);
        for key in ["access_tokens", "refresh_tokens"] {
            for t in tokens[key].as_array().unwrap() {
                secrets.push(t.as_str().unwrap().to_owned());
            }
        }
        assert!(secrets.len() >= 5, "tokens were issued");
        assert_no_secret(&logs, &secrets, &format!("ionflow sim ({format})"));
        assert_no_secret(&client.all_output(), &secrets, "whoami against ionflow sim");
    }
}

/// `ionflow demo` runs its own simulator with credentials nobody else sees;
/// its output must still hold no token (every simulator token is 64 hex
/// digits) and no service account key (which starts with the tenant and `#`).
#[tokio::test]
async fn the_demo_prints_no_token_or_service_account_key() {
    let out = tempfile::tempdir().unwrap();
    for format in ["text", "json"] {
        let result = run(ionflow()
            .args(["demo", "--items", "30", "--out"])
            .arg(out.path())
            .args(["-vvv", "--log-format", format])
            .env("IONFLOW_LOG", "trace"))
        .await;
        assert_eq!(result.code, 0, "{}", result.all_output());
        assert!(result.all_output().contains("requesting a token"));
        let mut texts = vec![result.all_output()];
        for file in files_under(out.path()) {
            texts.push(std::fs::read_to_string(file).unwrap());
        }
        for text in &texts {
            assert!(!text.contains("ACME_TST#"), "a service account key leaked");
            assert!(longest_hex_run(text) < 64, "a token-shaped value leaked");
        }
    }
}

fn longest_hex_run(text: &str) -> usize {
    let (mut longest, mut current) = (0, 0);
    for c in text.chars() {
        current = if c.is_ascii_hexdigit() {
            current + 1
        } else {
            0
        };
        longest = longest.max(current);
    }
    longest
}
