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
                .env_remove("IONFLOW_STATE_DIR")
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
    // anything under HOME, except the token store, the one place tokens
    // belong: runs keep their grant there for the next run (issue 15), in
    // files only their owner can read.
    let token_store = state.join(".local/state/ionflow/tokens");
    let written: Vec<_> = files_under(dir.path())
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "ionapi"))
        .filter(|p| !p.starts_with(&token_store))
        .collect();
    let kept: Vec<_> = files_under(&token_store)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert!(
        !kept.is_empty(),
        "the runs kept their grant in {token_store:?}"
    );
    #[cfg(unix)]
    for path in files_under(&token_store) {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", relative(&path, dir.path()));
    }
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
        let tokens: serde_json::Value = ionflow_runtime::tls::client()
            .get(format!("{}/__sim/tokens", iu["iu"].as_str().unwrap()))
            .send()
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

/// What the echoing identity provider was sent: each request's form body
/// and Authorization header, as they came over the wire.
#[derive(Default)]
struct Received {
    bodies: Vec<String>,
    authorizations: Vec<String>,
}

/// How the echoing token endpoint answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Echo {
    /// A 400 HTML page quoting the form and the Authorization header.
    Html,
    /// A 400 OAuth error whose description quotes them.
    Description,
    /// A 401 whose `error` code is the echo itself.
    ErrorCode,
    /// Tokens are issued; the revocation endpoint answers 500 with the echo.
    RevocationOnly,
}

struct EchoServer {
    addr: std::net::SocketAddr,
    mode: std::sync::Arc<std::sync::Mutex<Echo>>,
    received: std::sync::Arc<std::sync::Mutex<Received>>,
}

async fn echo_server() -> EchoServer {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use std::sync::{Arc, Mutex};

    let mode = Arc::new(Mutex::new(Echo::Html));
    let received = Arc::new(Mutex::new(Received::default()));
    let record = {
        let received = received.clone();
        move |headers: &HeaderMap, body: &str| {
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let mut r = received.lock().unwrap();
            r.bodies.push(body.to_owned());
            r.authorizations.push(auth.clone());
            format!("{body} Authorization: {auth}")
        }
    };
    let html = |echo: &str| {
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/html")],
            format!("<html><body><h1>Bad Request</h1><p>We received: {echo}</p></body></html>"),
        )
            .into_response()
    };
    let token = {
        let (mode, record) = (mode.clone(), record.clone());
        move |headers: HeaderMap, body: String| {
            let (mode, record) = (mode.clone(), record.clone());
            async move {
                let echo = record(&headers, &body);
                match *mode.lock().unwrap() {
                    Echo::Html => html(&echo),
                    Echo::Description => (
                        StatusCode::BAD_REQUEST,
                        axum::Json(serde_json::json!({
                            "error": "invalid_request",
                            "error_description": format!("unexpected parameters: {echo}")
                        })),
                    )
                        .into_response(),
                    Echo::ErrorCode => (
                        StatusCode::UNAUTHORIZED,
                        axum::Json(serde_json::json!({ "error": echo })),
                    )
                        .into_response(),
                    Echo::RevocationOnly => axum::Json(serde_json::json!({
                        "access_token": "echo-test-access-token-0123456789abcdef",
                        "token_type": "Bearer",
                        "expires_in": 3600,
                        "refresh_token": "echo-test-refresh#token+/=0123456789"
                    }))
                    .into_response(),
                }
            }
        }
    };
    let revoke = move |headers: HeaderMap, body: String| {
        let record = record.clone();
        async move {
            let echo = record(&headers, &body);
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/html")],
                format!("<pre>revocation failed for {echo}</pre>"),
            )
                .into_response()
        }
    };
    let app = axum::Router::new()
        .route("/T/as/token.oauth2", axum::routing::post(token))
        .route("/T/as/revoke_token.oauth2", axum::routing::post(revoke))
        .route(
            "/T/{*rest}",
            axum::routing::get(|| async {
                axum::Json(serde_json::json!({
                    "response": {"userlist": [{"userName": "echo-user", "displayName": "Echo User"}]}
                }))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    EchoServer {
        addr,
        mode,
        received,
    }
}

/// `%2F` as `%2f`: the same bytes, spelled by a server that lowercases escapes.
fn lower_hex(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[at + escape.len()..];
    }
    out + rest
}

fn form_decode(value: &str) -> String {
    let bytes = value.replace('+', " ").into_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = std::str::from_utf8(bytes.get(i + 1..i + 3).unwrap_or(b""))
            .ok()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A token endpoint (and a revocation endpoint) that echoes the request in
/// its error: nothing secret the request carried reaches ionflow's output,
/// raw, form-encoded (in either hex case) or as the Basic credential.
#[tokio::test]
async fn a_token_endpoint_that_echoes_the_form_leaks_nothing() {
    let server = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let ionapi = dir.path().join("echo.ionapi");
    let json = serde_json::json!({
        "ti": "T", "cn": "echo", "ci": "T~echo-client",
        "cs": "client#secret+/=&%value-0123456789",
        "iu": format!("http://127.0.0.1:{}", server.addr.port()),
        "pu": format!("http://127.0.0.1:{}/T/as/", server.addr.port()),
        "ot": "token.oauth2", "or": "revoke_token.oauth2",
        "saak": "TENANT#SAAK-key+/=0123456789",
        "sask": "sask#secret & value+/=0123456789"
    });
    std::fs::write(&ionapi, json.to_string()).unwrap();
    crate::support::chmod(&ionapi, 0o600);
    let basic = dir.path().join("basic.toml");
    std::fs::write(
        &basic,
        format!(
            "[connections.c]\nionapi_file = \"{}\"\nclient_auth = \"basic\"\n",
            ionapi.display()
        ),
    )
    .unwrap();
    let connections = [
        ionapi.display().to_string(),
        format!("{}#c", basic.display()),
    ];

    let mut outputs = Vec::new();
    for mode in [
        Echo::Html,
        Echo::Description,
        Echo::ErrorCode,
        Echo::RevocationOnly,
    ] {
        *server.mode.lock().unwrap() = mode;
        for connection in &connections {
            for format in ["text", "json"] {
                let state = tempfile::tempdir().unwrap();
                let mut result = run(ionflow()
                    .args(["whoami", connection, "-vvv", "--log-format", format])
                    .env("IONFLOW_LOG", "trace")
                    .env("IONFLOW_STATE_DIR", state.path()))
                .await;
                if mode == Echo::RevocationOnly {
                    // A whoami keeps a bare file's grant (issue 15); the
                    // revocation that echoes is `logout`'s.
                    assert_eq!(result.code, 0, "{}", result.all_output());
                    result = run(ionflow()
                        .args(["logout", connection, "-vvv", "--log-format", format])
                        .env("IONFLOW_LOG", "trace")
                        .env("IONFLOW_STATE_DIR", state.path()))
                    .await;
                    assert_ne!(result.code, 0, "{}", result.all_output());
                    assert!(
                        result.stderr.contains("revocation endpoint"),
                        "the failed revocation is reported: {}",
                        result.stderr
                    );
                } else {
                    assert_ne!(result.code, 0, "{}", result.all_output());
                }
                assert!(
                    result.all_output().contains("*****"),
                    "the echo reached the output, masked: {}",
                    result.all_output()
                );
                outputs.push(result.all_output());
            }
        }
    }

    // Every secret value as it went over the wire and as it reads decoded.
    let received = server.received.lock().unwrap();
    let mut secrets: Vec<String> = vec![
        json["cs"].as_str().unwrap().into(),
        json["saak"].as_str().unwrap().into(),
        json["sask"].as_str().unwrap().into(),
        "echo-test-access-token-0123456789abcdef".into(),
        "echo-test-refresh#token+/=0123456789".into(),
    ];
    for body in &received.bodies {
        for pair in body.split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !matches!(name, "grant_type" | "client_id" | "token_type_hint") {
                secrets.push(value.to_owned());
                secrets.push(lower_hex(value));
                secrets.push(form_decode(value));
            }
        }
    }
    for auth in &received.authorizations {
        if let Some(credential) = auth.strip_prefix("Basic ") {
            secrets.push(credential.to_owned());
        }
    }
    assert!(
        received
            .authorizations
            .iter()
            .any(|a| a.starts_with("Basic ")),
        "both client authentications were tried"
    );
    assert!(
        received
            .bodies
            .iter()
            .any(|b| b.contains("token_type_hint")),
        "a revocation was echoed"
    );
    let secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 8).collect();
    assert!(
        secrets.iter().any(|s| s.contains("%23")),
        "form-encoded spellings are checked"
    );
    for output in &outputs {
        assert_no_secret(
            output,
            &secrets,
            "the output of a run against an echoing endpoint",
        );
    }
}
