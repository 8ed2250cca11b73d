//! Compiles the connector (`../connector`) to a WebAssembly component and
//! hands its path to the host through `IONFLOW_CONNECTOR_WASM`, so that
//! `cargo build` is the only build command.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "connector";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    // host/runtime/ sits two levels below the workspace root.
    let workspace = manifest_dir
        .ancestors()
        .nth(2)
        .expect("host/runtime is two levels below the workspace")
        .to_path_buf();
    for path in [
        "connector/src",
        "connector/Cargo.toml",
        "wit",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }

    ensure_target_installed();

    // The nested cargo needs a target dir of its own: sharing the outer one
    // deadlocks on cargo's file lock. Keep it beside the outer profile dir so
    // that it survives between builds.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target_dir = out_dir
        .ancestors()
        .nth(3)
        .map(|profile_dir| profile_dir.join("connector-build"))
        .unwrap_or_else(|| out_dir.join("connector-build"));

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--package",
            "ionflow-connector",
            "--target",
            TARGET,
        ])
        .args(["--profile", PROFILE, "--target-dir"])
        .arg(&target_dir);
    // Variables cargo sets for this build script describe the host build;
    // left in place they would silently reconfigure the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("could not run cargo to build the connector");
    if !status.success() {
        panic!(
            "building the connector component (connector/) for {TARGET} failed; see the errors above"
        );
    }
    let wasm = target_dir
        .join(TARGET)
        .join(PROFILE)
        .join("ionflow_connector.wasm");
    assert!(
        wasm.exists(),
        "connector build produced no {}",
        wasm.display()
    );
    println!("cargo:rustc-env=IONFLOW_CONNECTOR_WASM={}", wasm.display());
    // The engine compiles for this target's baseline CPU (src/engine.rs).
    println!(
        "cargo:rustc-env=IONFLOW_HOST_TARGET={}",
        std::env::var("TARGET").unwrap()
    );
}

/// Without the target the guest build fails with "can't find crate for `std`",
/// which says nothing about the fix. Install it, or say exactly what to run.
fn ensure_target_installed() {
    if target_installed() {
        return;
    }
    println!("cargo:warning=installing the Rust target {TARGET} (rustup target add {TARGET})");
    let installed = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !installed || !target_installed() {
        panic!(
            "the Rust target {TARGET} is not installed and could not be installed automatically.\n\
             Run:  rustup target add {TARGET}\n\
             then build again."
        );
    }
}

fn target_installed() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib")
        .is_dir()
}
