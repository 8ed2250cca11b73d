//! Response bodies are capped while they stream in: a chunked answer (no
//! Content-Length) larger than the cap stops being read at the cap, the run
//! fails naming the limit, and the process's memory stays bounded, both
//! through the connector's transport (a gateway source) and for plain HTTP
//! (an `http` source). The cap is lowered to 1 MiB for the test through
//! IONFLOW_MAX_RESPONSE_BYTES.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::{get, post};

use crate::support::{ionflow, run};

const CAP: u64 = 1024 * 1024;
/// What the server would send if nobody stopped reading: 256 MiB.
const ENDLESS: u64 = 256 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// A loopback server that issues tokens and answers every other path
/// with a chunked body of `ENDLESS` bytes, counting what it managed to send.
async fn streaming_server(sent: Arc<AtomicU64>) -> SocketAddr {
    let stream_body = move || {
        let sent = sent.clone();
        async move {
            let chunks = futures::stream::unfold(0u64, move |offset| {
                let sent = sent.clone();
                async move {
                    if offset >= ENDLESS {
                        return None;
                    }
                    sent.fetch_add(CHUNK as u64, Ordering::Relaxed);
                    let chunk = Bytes::from(vec![b' '; CHUNK]);
                    Some((Ok::<_, std::io::Error>(chunk), offset + CHUNK as u64))
                }
            });
            Body::from_stream(chunks)
        }
    };
    let app = Router::new()
        .route(
            "/T/as/token.oauth2",
            post(|| async {
                axum::Json(serde_json::json!({
                    "access_token": "streaming-test-access-token-0123456789",
                    "token_type": "Bearer",
                    "expires_in": 3600
                }))
            }),
        )
        .route("/T/as/revoke_token.oauth2", post(|| async { "" }))
        .route("/T/{*rest}", get(stream_body.clone()))
        .route("/plain", get(stream_body));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn ionapi(dir: &Path, addr: SocketAddr) -> std::path::PathBuf {
    let path = dir.join("stream.ionapi");
    let json = serde_json::json!({
        "ti": "T", "cn": "stream", "ci": "T~client", "cs": "client-secret-0123456789",
        "iu": format!("http://127.0.0.1:{}", addr.port()),
        "pu": format!("http://127.0.0.1:{}/T/as/", addr.port()),
        "ot": "token.oauth2", "or": "revoke_token.oauth2",
        "saak": "T#service-account-key", "sask": "service-account-secret-0123"
    });
    std::fs::write(&path, json.to_string()).unwrap();
    crate::support::chmod(&path, 0o600);
    path
}

/// Runs `ionflow run PIPELINE` and samples its resident memory while it runs.
async fn run_measured(pipeline: &Path) -> (crate::support::Run, u64) {
    let child = ionflow()
        .arg("run")
        .arg(pipeline)
        .env("IONFLOW_MAX_RESPONSE_BYTES", CAP.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let sampler = tokio::spawn(async move {
        let mut peak_kib = 0u64;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let rss = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            // The high-water mark, for the peak between two samples.
            peak_kib = peak_kib.max(rss("VmHWM:")).max(rss("VmRSS:"));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        peak_kib
    });
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the run ends")
        .unwrap();
    let peak_kib = sampler.await.unwrap();
    let run = crate::support::Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    (run, peak_kib * 1024)
}

#[tokio::test]
async fn chunked_bodies_stop_at_the_cap_for_gateway_and_plain_http_sources() {
    let sent = Arc::new(AtomicU64::new(0));
    let addr = streaming_server(sent.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let ionapi = ionapi(dir.path(), addr);
    let sources = [
        (
            "gateway",
            format!(
                r#"
[connections.big]
ionapi_file = "{}"
[source]
kind = "gateway"
connection = "big"
path = "M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm"
retry = {{ max_retries = 0 }}
"#,
                ionapi.display()
            ),
        ),
        (
            "http",
            format!(
                r#"
[source]
kind = "http"
url = "http://127.0.0.1:{}/plain"
retry = {{ max_retries = 0 }}
"#,
                addr.port()
            ),
        ),
    ];
    for (kind, source) in sources {
        sent.store(0, Ordering::Relaxed);
        let pipeline = dir.path().join(format!("{kind}.toml"));
        std::fs::write(
            &pipeline,
            format!("{source}\n[[sinks]]\nkind = \"file\"\npath = \"{kind}.jsonl\"\n"),
        )
        .unwrap();
        let (result, peak_rss) = run_measured(&pipeline).await;
        // Give the server a moment to notice the closed connection.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent_bytes = sent.load(Ordering::Relaxed);
        eprintln!(
            "{kind} source: the server got {} KiB out before ionflow stopped reading (cap {} KiB, \
             body {} MiB); ionflow's peak RSS {} MiB",
            sent_bytes / 1024,
            CAP / 1024,
            ENDLESS >> 20,
            peak_rss >> 20
        );
        assert_eq!(result.code, 1, "{kind}: {}", result.all_output());
        assert!(
            result
                .stderr
                .contains(&format!("exceeds the limit of {CAP} bytes"))
                && result.stderr.contains("IONFLOW_MAX_RESPONSE_BYTES"),
            "{kind}: the error names the limit: {}",
            result.stderr
        );
        // Reading stopped at the cap; what the server had out beyond it sat
        // in socket buffers, a few MiB at most.
        assert!(
            sent_bytes < 32 * 1024 * 1024,
            "{kind}: {sent_bytes} bytes were pulled from the server"
        );
        assert!(
            peak_rss < 200 * 1024 * 1024,
            "{kind}: ionflow grew to {peak_rss} bytes"
        );
        assert!(!dir.path().join(format!("{kind}.jsonl")).exists());
    }
}

#[tokio::test]
async fn a_bad_response_cap_setting_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let ionapi = dir.path().join("x.ionapi");
    std::fs::write(&ionapi, "{}").unwrap();
    for value in ["lots", "0", "12"] {
        let result = run(ionflow()
            .arg("whoami")
            .arg(&ionapi)
            .env("IONFLOW_MAX_RESPONSE_BYTES", value))
        .await;
        assert_eq!(result.code, 2, "{value}: {}", result.all_output());
        assert!(
            result.stderr.contains("IONFLOW_MAX_RESPONSE_BYTES"),
            "{}",
            result.stderr
        );
    }
}
