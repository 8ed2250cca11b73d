//! `ionflow inspect`, `token`, `whoami` and `check-scope` against the
//! simulator, with CONNECTION given as a file, a pipeline's connection and
//! an environment variable.

use serde_json::Value;

use crate::support::{
    chmod, copy_ionapi, edit_ionapi, git_available, ionflow, issued_tokens, items_pipeline, run,
    simulator, workdir,
};

fn json_out(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn findings(report: &Value) -> Vec<(String, Option<String>, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["level"].as_str().unwrap().to_owned(),
                f["field"].as_str().map(str::to_owned),
                f["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn inspect_describes_the_file_with_secrets_masked_and_warns() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    chmod(&ionapi, 0o644);

    let result = run(ionflow().arg("inspect").arg(&ionapi).arg("--json")).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let report = json_out(&result.stdout);
    let info = &report["info"];
    assert_eq!(info["tenant"], "ACME_TST");
    assert_eq!(info["application"], "ionflow simulator");
    assert!(
        info["client_secret"]
            .as_str()
            .unwrap()
            .starts_with("***** (")
    );
    assert!(
        info["service_account_secret"]
            .as_str()
            .unwrap()
            .starts_with("*****")
    );
    assert_eq!(info["ion_api_url"], sim.base_url());
    assert_eq!(
        info["grants"],
        serde_json::json!([
            "backend-service",
            "client-credentials",
            "authorization-code",
            "saml-bearer"
        ])
    );
    let found = findings(&report);
    for field in ["pu", "iu"] {
        assert!(
            found.iter().any(|(level, f, m)| level == "warning"
                && f.as_deref() == Some(field)
                && m.contains("http://")),
            "no http warning for {field}: {found:?}"
        );
    }
    assert!(
        found
            .iter()
            .any(|(_, _, m)| m.contains("mode 0644") && m.contains("chmod 600")),
        "{found:?}"
    );

    // Tightened, the mode warning goes away.
    chmod(&ionapi, 0o600);
    let result = run(ionflow().arg("inspect").arg(&ionapi)).await;
    assert_eq!(result.code, 0);
    assert!(!result.stdout.contains("mode 0"), "{}", result.stdout);
    assert!(
        result.stdout.contains("client secret (cs)      ***** ("),
        "{}",
        result.stdout
    );

    // The portal URL where the ION API URL belongs.
    let swapped = copy_ionapi(&ionapi, "swapped.ionapi");
    edit_ionapi(&swapped, |j| {
        let pu = j["pu"].clone();
        j.insert("iu".into(), pu);
    });
    let result = run(ionflow().arg("inspect").arg(&swapped).arg("--json")).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(
        findings(&json_out(&result.stdout))
            .iter()
            .any(|(_, f, m)| f.as_deref() == Some("iu") && m.contains("same URL as `pu`")),
        "{}",
        result.stdout
    );

    // Unusable files: an error finding naming the field, exit code 2.
    let remote_http = copy_ionapi(&ionapi, "remote-http.ionapi");
    edit_ionapi(&remote_http, |j| {
        j.insert("iu".into(), "http://mingle-ionapi.example.com".into());
    });
    let no_sask = copy_ionapi(&ionapi, "no-sask.ionapi");
    edit_ionapi(&no_sask, |j| {
        j.remove("sask");
    });
    for (file, field) in [(&remote_http, "iu"), (&no_sask, "sask")] {
        let result = run(ionflow().arg("inspect").arg(file).arg("--json")).await;
        assert_eq!(result.code, 2, "{}", result.all_output());
        let report = json_out(&result.stdout);
        assert!(report["info"].is_null());
        assert!(
            findings(&report)
                .iter()
                .any(|(l, f, _)| l == "error" && f.as_deref() == Some(field)),
            "{report}"
        );
    }

    // A file without saak/sask still describes itself, with the grant it lacks named.
    let no_sa = copy_ionapi(&ionapi, "no-service-account.ionapi");
    edit_ionapi(&no_sa, |j| {
        j.remove("saak");
        j.remove("sask");
    });
    let result = run(ionflow().arg("inspect").arg(&no_sa).arg("--json")).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let report = json_out(&result.stdout);
    assert_eq!(
        report["info"]["grants"],
        serde_json::json!(["client-credentials", "authorization-code", "saml-bearer"])
    );
    assert!(
        findings(&report)
            .iter()
            .any(|(_, f, m)| f.as_deref() == Some("saak") && m.contains("backend-service")),
        "{report}"
    );

    // Through a pipeline's connection.
    let pipeline = items_pipeline(dir.path(), &ionapi, 5);
    let result = run(ionflow()
        .arg("inspect")
        .arg(format!("{}#m3", pipeline.display()))
        .arg("--json"))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let report = json_out(&result.stdout);
    assert_eq!(report["connection"], "m3");
    assert_eq!(report["source"], ionapi.display().to_string());

    // The pipeline's grant is the one described, and one the file cannot
    // do is an error.
    let text = std::fs::read_to_string(&pipeline).unwrap();
    let with_grant = |file: &std::path::Path, grant: &str| {
        let path = dir.path().join(format!("{grant}.toml"));
        let connection = format!("ionapi_file = \"{}\"\ngrant = \"{grant}\"", file.display());
        let original = format!("ionapi_file = \"{}\"", ionapi.display());
        std::fs::write(&path, text.replace(&original, &connection)).unwrap();
        path
    };
    let result = run(ionflow()
        .arg("inspect")
        .arg(with_grant(&ionapi, "client_credentials"))
        .arg("--json"))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(
        json_out(&result.stdout)["info"]["grant"],
        "client-credentials"
    );
    let result = run(ionflow()
        .arg("inspect")
        .arg(with_grant(&no_sa, "backend_service"))
        .arg("--json"))
    .await;
    assert_eq!(result.code, 2, "{}", result.all_output());
    assert!(
        findings(&json_out(&result.stdout))
            .iter()
            .any(|(l, _, m)| l == "error" && m.contains("with the pipeline's settings")),
        "{}",
        result.stdout
    );

    let counters = sim.counters();
    assert_eq!(counters.api_calls, 0, "inspect never calls the gateway");
    assert_eq!(counters.token_requests.password, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn inspect_warns_about_a_file_git_would_commit() {
    if !git_available() {
        eprintln!("git is not installed; skipping the git check-ignore test");
        return;
    }
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    let git = |args: &[&str]| {
        let status = std::process::Command::new("git")
            .arg("-C")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(status.status.success(), "git {args:?}");
    };
    git(&["init", "-q", "."]);

    let result = run(ionflow().arg("inspect").arg(&ionapi)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(
        result.stdout.contains("warning:") && result.stdout.contains("not ignored"),
        "{}",
        result.stdout
    );
    assert!(result.stdout.contains("*.ionapi"), "the fix is named");

    std::fs::write(dir.path().join(".gitignore"), "*.ionapi\n").unwrap();
    let result = run(ionflow().arg("inspect").arg(&ionapi)).await;
    assert_eq!(result.code, 0);
    assert!(!result.stdout.contains("not ignored"), "{}", result.stdout);

    // Without git on PATH the check degrades to a note.
    let empty = tempfile::tempdir().unwrap();
    let result = run(ionflow()
        .arg("inspect")
        .arg(&ionapi)
        .env("PATH", empty.path()))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert!(
        result.stdout.contains("note: git is not on PATH"),
        "{}",
        result.stdout
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn token_shows_metadata_and_the_token_only_when_asked() {
    let sim = simulator(5).await;
    let (_dir, ionapi) = workdir(&sim);

    let result = run(ionflow().arg("token").arg(&ionapi).arg("--json")).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let meta = json_out(&result.stdout);
    assert_eq!(meta["token_type"], "Bearer");
    let expires = meta["expires_in_secs"].as_u64().unwrap();
    assert!((7100..=7200).contains(&expires), "{meta}");
    assert_eq!(meta["scope"], "openid profile");
    assert_eq!(meta["refresh_token_issued"], true);
    assert_eq!(meta["grant"], "backend-service");
    assert!(meta.get("access_token").is_none(), "{meta}");

    let result = run(ionflow().arg("token").arg(&ionapi)).await;
    assert_eq!(result.code, 0);
    assert!(
        result.stdout.contains("refresh token  issued"),
        "{}",
        result.stdout
    );
    assert!(result.stdout.contains("--show-token"), "{}", result.stdout);
    for token in issued_tokens(&sim).await {
        assert!(!result.all_output().contains(&token), "a token was printed");
    }

    let result = run(ionflow()
        .arg("token")
        .arg(&ionapi)
        .args(["--show-token", "--json", "-vvv"])
        .env("IONFLOW_LOG", "trace"))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let shown = json_out(&result.stdout)["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let issued = issued_tokens(&sim).await;
    assert!(
        issued.contains(&shown),
        "the printed token is the issued one"
    );
    assert!(
        !result.stderr.contains(&shown),
        "--show-token prints to stdout only, never into the logs"
    );
    // `token` leaves its token in the token store for the next command: one
    // grant serves all three calls, as Infor's usage rules ask.
    assert_eq!(sim.counters().token_requests.password, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn whoami_resolves_files_pipelines_and_environment_variables() {
    let sim = simulator(5).await;
    let (dir, ionapi) = workdir(&sim);
    let pipeline = items_pipeline(dir.path(), &ionapi, 5);
    let json = std::fs::read_to_string(&ionapi).unwrap();

    let by_file = ionapi.display().to_string();
    let by_name = format!("{}#m3", pipeline.display());
    let only_one = pipeline.display().to_string();
    for connection in [
        &by_file,
        &by_name,
        &only_one,
        &"env:IONFLOW_TEST_IONAPI".to_string(),
    ] {
        let result = run(ionflow()
            .arg("whoami")
            .arg(connection)
            .arg("--json")
            .env("IONFLOW_TEST_IONAPI", &json))
        .await;
        assert_eq!(result.code, 0, "{connection}: {}", result.all_output());
        let me = json_out(&result.stdout);
        assert_eq!(me["user"], "svc_ionflow@acme.example", "{connection}");
        assert_eq!(
            me["users_me"]["response"]["userlist"][0]["userName"], "svc_ionflow@acme.example",
            "{connection}: the answer as it came"
        );
    }

    let result = run(ionflow()
        .arg("whoami")
        .arg(format!("{}#erp", pipeline.display())))
    .await;
    assert_eq!(result.code, 2, "{}", result.all_output());
    assert!(
        result.stderr.contains("no connection `erp`; known: m3"),
        "{}",
        result.stderr
    );
    let result = run(ionflow()
        .arg("whoami")
        .arg("env:IONFLOW_TEST_UNSET_VARIABLE"))
    .await;
    assert_eq!(result.code, 2, "{}", result.all_output());
    assert!(
        result
            .stderr
            .contains("IONFLOW_TEST_UNSET_VARIABLE is not set")
    );
    assert_eq!(sim.counters().calls_by_path.len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn check_scope_sorts_paths_into_allowed_forbidden_and_other() {
    let sim = simulator(5).await;
    let (_dir, ionapi) = workdir(&sim);
    let allowed = [
        "ifsservice/usermgt/v2/users/me",
        "M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm?maxrecs=1",
    ];
    let forbidden = "IDM/api/items/search";
    let other = "M3/no/such/api";

    let result = run(ionflow()
        .arg("check-scope")
        .arg(&ionapi)
        .args(allowed)
        .args([forbidden, other, "--json"]))
    .await;
    assert_eq!(
        result.code,
        3,
        "a forbidden path is exit 3: {}",
        result.all_output()
    );
    let verdicts = json_out(&result.stdout);
    let verdict = |i: usize| {
        (
            verdicts[i]["verdict"].as_str().unwrap(),
            verdicts[i]["status"].as_u64(),
        )
    };
    assert_eq!(verdict(0), ("allowed", Some(200)));
    assert_eq!(verdict(1), ("allowed", Some(200)));
    assert_eq!(verdict(2), ("forbidden", Some(403)));
    assert_eq!(verdict(3), ("other", Some(404)));
    let fix = verdicts[2]["detail"].as_str().unwrap();
    assert!(
        fix.contains("Add the API's scope to the authorized app"),
        "{fix}"
    );
    assert!(fix.contains("IDM"), "{fix}");

    let result = run(ionflow().arg("check-scope").arg(&ionapi).args(allowed)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    assert_eq!(
        result
            .stdout
            .lines()
            .filter(|l| l.starts_with("allowed"))
            .count(),
        2
    );

    let result = run(ionflow().arg("check-scope").arg(&ionapi).arg(other)).await;
    assert_eq!(result.code, 1, "{}", result.all_output());
    assert!(result.stdout.starts_with("other"), "{}", result.stdout);

    let counters = sim.counters();
    assert_eq!(counters.forbidden, 1);
    assert_eq!(
        counters.token_requests.password, 1,
        "the first command's grant is kept for the next ones"
    );
    sim.shutdown().await;
}
