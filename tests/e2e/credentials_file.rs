//! Bad `.ionapi` files and bad credentials: named errors, the right exit
//! code, and never a secret value in the message.

use crate::support::{
    assert_no_secret, file_secrets, ionflow, items_pipeline, run, simulator, workdir,
};

#[tokio::test]
async fn malformed_files_name_the_file_and_field() {
    let sim = simulator(10).await;
    let (dir, ionapi) = workdir(&sim);
    let secrets = file_secrets(&ionapi);
    let pipeline = items_pipeline(dir.path(), &ionapi, 5);
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ionapi).unwrap()).unwrap();

    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    let mut missing_ot = original.clone();
    missing_ot.as_object_mut().unwrap().remove("ot");
    cases.push(("missing ot", missing_ot.to_string(), "field `ot`"));
    let mut cs_number = original.clone();
    cs_number["cs"] = serde_json::json!(12345);
    cases.push(("cs as number", cs_number.to_string(), "field `cs`"));
    let mut http_iu = original.clone();
    http_iu["iu"] = serde_json::json!("http://ionapi.example.com");
    cases.push(("http iu", http_iu.to_string(), "field `iu`"));
    let mut lone_saak = original.clone();
    lone_saak.as_object_mut().unwrap().remove("sask");
    cases.push(("saak without sask", lone_saak.to_string(), "field `sask`"));
    let truncated = original.to_string();
    cases.push((
        "truncated JSON",
        truncated[..truncated.len() / 2].to_owned(),
        "not valid JSON",
    ));

    for (case, content, expected) in cases {
        std::fs::write(&ionapi, &content).unwrap();
        let result = run(ionflow().arg("run").arg(&pipeline)).await;
        assert_eq!(result.code, 2, "{case}: {}", result.all_output());
        assert!(
            result.stderr.contains(expected),
            "{case}: {}",
            result.stderr
        );
        assert!(
            result.stderr.contains(&ionapi.display().to_string()),
            "{case}: the error names the file: {}",
            result.stderr
        );
        assert_no_secret(&result.all_output(), &secrets, case);
    }
    assert_eq!(sim.counters().api_calls, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_service_account_secret_is_an_auth_error() {
    let sim = simulator(10).await;
    let (dir, ionapi) = workdir(&sim);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ionapi).unwrap()).unwrap();
    let wrong = "wrong#sask+/=&%value";
    json["sask"] = serde_json::json!(wrong);
    std::fs::write(&ionapi, json.to_string()).unwrap();
    let secrets = file_secrets(&ionapi);
    let pipeline = items_pipeline(dir.path(), &ionapi, 5);

    let result = run(ionflow().arg("run").arg(&pipeline).arg("-vv")).await;
    assert_eq!(result.code, 3, "{}", result.all_output());
    assert!(result.stderr.contains("invalid_grant"), "{}", result.stderr);
    assert!(
        result.stderr.contains("`saak` and `sask`"),
        "{}",
        result.stderr
    );
    assert_no_secret(&result.all_output(), &secrets, "output");
    assert!(
        !dir.path().join("out.jsonl").exists(),
        "no output claims success"
    );
    sim.shutdown().await;
}

/// A `.ionapi` path (or a SAML assertion file) that is not a regular file
/// of a sane size is refused at once with exit 2, naming the file and the
/// fix, before anything is read from it: `/dev/zero` would never end, a
/// FIFO with no writer would block forever, a 50 MB file would be read
/// whole. A symbolic link to a regular file is still fine.
#[tokio::test]
async fn special_and_oversized_credentials_files_are_refused_at_once() {
    let sim = simulator(10).await;
    let (dir, ionapi) = workdir(&sim);

    let linked = dir.path().join("linked.ionapi");
    std::os::unix::fs::symlink(&ionapi, &linked).unwrap();
    let result = run(ionflow().arg("whoami").arg(&linked)).await;
    assert_eq!(result.code, 0, "a link to a file: {}", result.all_output());

    let zero = dir.path().join("zero.ionapi");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let fifo = dir.path().join("fifo.ionapi");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    let huge = dir.path().join("huge.ionapi");
    let file = std::fs::File::create(&huge).unwrap();
    file.set_len(50 * 1024 * 1024).unwrap();
    let folder = dir.path().join("folder.ionapi");
    std::fs::create_dir(&folder).unwrap();

    let cases = [
        (&zero, "a device, not a regular file"),
        (&fifo, "a FIFO (named pipe), not a regular file"),
        (&huge, "larger than the limit of 1048576 bytes"),
        (&folder, "a folder, not a regular file"),
    ];
    for (path, expected) in cases {
        let pipeline = dir.path().join("special.toml");
        std::fs::write(
            &pipeline,
            std::fs::read_to_string(items_pipeline(dir.path(), &ionapi, 5))
                .unwrap()
                .replace(&ionapi.display().to_string(), &path.display().to_string()),
        )
        .unwrap();
        for args in [
            vec!["whoami".to_string(), path.display().to_string()],
            vec!["run".to_string(), pipeline.display().to_string()],
        ] {
            let started = std::time::Instant::now();
            let result = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                run(ionflow().args(&args)),
            )
            .await
            .unwrap_or_else(|_| panic!("{args:?} hung"));
            eprintln!(
                "{args:?}: exit {} after {:?}",
                result.code,
                started.elapsed()
            );
            assert_eq!(result.code, 2, "{args:?}: {}", result.all_output());
            assert!(
                result.stderr.contains(expected)
                    && result.stderr.contains(&path.display().to_string())
                    && result.stderr.contains("regular file"),
                "{args:?}: names the file, the problem and the fix: {}",
                result.stderr
            );
        }
    }

    // The SAML assertion file of a saml_bearer connection, as a FIFO.
    let saml = dir.path().join("saml.toml");
    std::fs::write(
        &saml,
        format!(
            r#"
[connections.user]
ionapi_file = "{}"
grant = "saml_bearer"
saml_assertion_file = "{}"
[source]
kind = "gateway"
connection = "user"
path = "ifsservice/usermgt/v2/users/me"
[[sinks]]
kind = "stdout"
"#,
            ionapi.display(),
            fifo.display()
        ),
    )
    .unwrap();
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        run(ionflow().arg("run").arg(&saml)),
    )
    .await
    .expect("a FIFO as SAML assertion hung the run");
    assert_eq!(result.code, 2, "{}", result.all_output());
    assert!(
        result.stderr.contains("saml_assertion_file") && result.stderr.contains("FIFO"),
        "{}",
        result.stderr
    );
    assert_eq!(sim.counters().token_requests.saml_bearer, 0);
    sim.shutdown().await;
}
