//! The benchmark binary builds with the workspace (so `cargo test` also
//! gives `bench/run` its binary, with the same features as the tests) and
//! answers `--help`. The figures themselves are never timed in tests: CI
//! runs `bench/run --quick` for that.

#[test]
fn the_benchmark_binary_starts() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ionflow-bench"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--quick"));
}
