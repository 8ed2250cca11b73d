//! Every business call stays below `{iu}/{ti}/`: a `gateway` source whose
//! path or query tries to climb out of the tenant, in any spelling, fails
//! with exit 2 naming the path and the fix, and the simulator, which reads
//! each request's path as a lenient server would, sees nothing leave `{ti}/`.

use std::path::Path;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::{ionflow, run, simulator, workdir};

fn gateway_pipeline(
    dir: &Path,
    ionapi: &Path,
    name: &str,
    path: &str,
    query: &str,
) -> std::path::PathBuf {
    let file = dir.join(format!("{name}.toml"));
    // A TOML literal string keeps backslashes and percent signs as they are.
    std::fs::write(
        &file,
        format!(
            r#"
[connections.m3]
ionapi_file = "{}"
[source]
kind = "gateway"
connection = "m3"
path = '{path}'
query = {{ {query} }}
records_pointer = "/results/0/records"
[[sinks]]
kind = "file"
path = "out.jsonl"
"#,
            ionapi.display()
        ),
    )
    .unwrap();
    file
}

#[tokio::test]
async fn hostile_gateway_paths_never_leave_the_tenant() {
    let sim = simulator(10).await;
    let (dir, ionapi) = workdir(&sim);

    // The control: a real product path goes through and is seen inside.
    let good = gateway_pipeline(
        dir.path(),
        &ionapi,
        "good",
        "M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm",
        r#"maxrecs = "5""#,
    );
    let result = run(ionflow().arg("run").arg(&good)).await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    let before = sim.counters();
    assert!(before.api_calls >= 1 && before.outside_tenant == 0);

    let hostile_paths = [
        r"M3\..\..\other",
        "M3/%2e%2e/%2e%2e/other3",
        "M3/%2E%2e/%2e%2E/other",
        "M3/.%2e/.%2E/other",
        "M3/%252e%252e/%252e%252e/other",
        "M3/..%2f..%2fother",
        "M3/..%5c..%5cother",
        "M3/../../other",
        "M3/./../other",
        "M3/..;/..;/other",
        "M3/%c0%ae%c0%ae/other",
        "M3//other",
        "//127.0.0.2/other",
        "http://127.0.0.1:9/other",
    ];
    for path in hostile_paths {
        let pipeline = gateway_pipeline(dir.path(), &ionapi, "hostile", path, "");
        let result = run(ionflow().arg("run").arg(&pipeline)).await;
        assert_eq!(result.code, 2, "{path}: {}", result.all_output());
        assert!(
            result.stderr.contains("the request path")
                && result.stderr.contains("must stay below {iu}/{ti}/"),
            "{path}: the error names the path and the fix: {}",
            result.stderr
        );
        assert!(!dir.path().join("out.jsonl.partial").exists());
    }

    let hostile_query_names = [
        r#""../../other" = "1""#,
        r#""%2e%2e" = "1""#,
        r#""a/b" = "1""#,
    ];
    for query in hostile_query_names {
        let pipeline = gateway_pipeline(
            dir.path(),
            &ionapi,
            "query",
            "M3/m3api-rest/v2/execute/MMS200MI/LstItmByItm",
            query,
        );
        let result = run(ionflow().arg("run").arg(&pipeline)).await;
        assert_eq!(result.code, 2, "{query}: {}", result.all_output());
        assert!(
            result.stderr.contains("the query parameter name"),
            "{query}: {}",
            result.stderr
        );
    }

    let after = sim.counters();
    assert_eq!(after.outside_tenant, 0, "a request left {{ti}}/");
    assert_eq!(
        after.api_calls, before.api_calls,
        "no refused path reached the gateway at all"
    );

    // The counter is not blind: a raw request that climbs out is counted.
    let mut stream = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let request = format!(
        "GET /ACME_TST/M3/..%2f..%2fother HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        sim.addr().port()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert_eq!(sim.counters().outside_tenant, 1);
    sim.shutdown().await;
}
