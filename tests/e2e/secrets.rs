//! No secret from the `.ionapi` file and no token ever reaches stdout,
//! stderr or an output file, at the most verbose log level, in both log formats.

use crate::support::{
    assert_no_secret, file_secrets, ionflow, issued_tokens, items_pipeline, run, simulator, workdir,
};

#[tokio::test]
async fn no_secret_or_token_in_any_output_at_trace_level() {
    let sim = simulator(120).await;
    let (dir, ionapi) = workdir(&sim);
    let pipeline = items_pipeline(dir.path(), &ionapi, 50);

    let mut outputs = Vec::new();
    for format in ["text", "json"] {
        for args in [
            vec!["run".to_string(), pipeline.display().to_string()],
            vec!["whoami".to_string(), ionapi.display().to_string()],
            vec!["validate".to_string(), pipeline.display().to_string()],
        ] {
            let result = run(ionflow()
                .args(&args)
                .args(["-vvv", "--log-format", format])
                .env("IONFLOW_LOG", "trace"))
            .await;
            assert_eq!(result.code, 0, "{args:?}: {}", result.all_output());
            outputs.push((format!("{args:?} {format}"), result.all_output()));
        }
    }
    // Trace level really is on: the connector's own messages are there.
    assert!(
        outputs
            .iter()
            .any(|(_, o)| o.contains("requesting a token")),
        "trace logs were captured"
    );

    let mut secrets = file_secrets(&ionapi);
    secrets.extend(issued_tokens(&sim).await);
    for (what, output) in &outputs {
        assert_no_secret(output, &secrets, what);
    }
    let written = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert_no_secret(&written, &secrets, "out.jsonl");
    sim.shutdown().await;
}
