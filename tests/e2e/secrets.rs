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
                "DATAFABRIC/compass/v2/jobs/".into(),
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
