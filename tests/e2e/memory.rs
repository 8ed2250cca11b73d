//! Bounded memory: a file-to-file pipeline keeps the same peak RSS for
//! 100,000 and 1,000,000 records. Slow (about 15 s), so it is ignored by
//! default: `cargo test --release --test e2e -- --ignored memory`.
//! Needs GNU time at /usr/bin/time for the peak RSS.

use std::io::Write as _;

use crate::support::{ionflow, run};

fn write_records(path: &std::path::Path, count: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..count {
        writeln!(
            out,
            r#"{{"ITNO":"ITM{i:07}","ITDS":"Item number {i} with a description","STAT":"{}","GRWE":"{}.125","UNMS":"EA"}}"#,
            if i % 3 == 0 { "90" } else { "20" },
            i % 1000
        )
        .unwrap();
    }
}

async fn peak_rss_kib(dir: &std::path::Path, count: usize) -> u64 {
    let input = dir.join(format!("in-{count}.jsonl"));
    write_records(&input, count);
    let pipeline = dir.join(format!("p-{count}.toml"));
    std::fs::write(
        &pipeline,
        format!(
            r#"
[source]
kind = "file"
path = "in-{count}.jsonl"
[[transforms]]
kind = "jq"
filter = 'select(.STAT == "20") | {{item: .ITNO, name: .ITDS, kg: (.GRWE | tonumber)}}'
[[sinks]]
kind = "file"
path = "out-{count}.csv"
format = "csv"
[[sinks]]
kind = "file"
path = "out-{count}.jsonl"
"#
        ),
    )
    .unwrap();
    let binary = ionflow().as_std().get_program().to_owned();
    let result = run(tokio::process::Command::new("/usr/bin/time")
        .arg("-v")
        .arg(binary)
        .arg("run")
        .arg(&pipeline)
        .env(
            "IONFLOW_CACHE_DIR",
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ionflow-cache"),
        ))
    .await;
    assert_eq!(result.code, 0, "{}", result.all_output());
    result
        .stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .expect("GNU time reports the peak RSS")
        .parse()
        .unwrap()
}

#[tokio::test]
#[ignore = "slow: writes and reads 1,000,000 records"]
async fn memory_stays_flat_from_100k_to_1m_records() {
    let dir = tempfile::tempdir().unwrap();
    let small = peak_rss_kib(dir.path(), 100_000).await;
    let large = peak_rss_kib(dir.path(), 1_000_000).await;
    eprintln!("peak RSS: {small} KiB for 100k records, {large} KiB for 1M records");
    assert!(
        large < small + small / 4,
        "memory grew with the record count: {small} -> {large} KiB"
    );
    assert!(large < 64 * 1024, "peak RSS {large} KiB");
}
