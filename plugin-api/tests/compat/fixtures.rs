//! Builds the ABI compatibility fixture plugins and says where they are.
//!
//! Shared, with `#[path]`, by `core/tests/evolution.rs` and the
//! `berth-conformance` tests (PL-09, PL-10); `build.sh` next to this file
//! does the same from a shell. It also copies the workspace's faulty plugin
//! (`conformance/fixtures/faulty`, which panics on request) next to them,
//! so PL-09 can provoke a panic inside a real shared object. The three plugins are separate workspaces
//! (each depends on its own copy of `berth-plugin-api`, and two packages of
//! one name cannot share a workspace) built into one target directory,
//! `<workspace target>/compat`, so abi_stable compiles once. Each has a
//! `Cargo.lock`, so with the crates in the local cache no network is needed.
//! This file is not a test target of its own (only `tests/*.rs` are).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The fixture plugins and what each must prove.
pub const PLUGINS: [(&str, &str); 3] =
    [("plugin-1.0", "libcompat10.so"), ("plugin-2.0", "libcompat20.so"), ("plugin-bad", "libcompatbad.so")];

/// This directory: `plugin-api/tests/compat`. Every crate including this
/// file (`core`, `conformance`) sits one level below the workspace root.
pub fn compat_dir() -> PathBuf {
    let including_crate = Path::new(env!("CARGO_MANIFEST_DIR"));
    including_crate.parent().expect("the crate lies inside the workspace").join("plugin-api/tests/compat")
}

/// `<workspace target>/compat`, derived from the running test binary.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile>/deps/<binary>
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps");
    target.join("compat")
}

/// The workspace's faulty plugin (`conformance/fixtures/faulty`, whose
/// driver panics on request), copied next to the compat fixtures.
pub const FAULTY: &str = "libberth_fixture_faulty.so";

/// Builds the three fixture plugins and the faulty plugin (once per
/// process) and returns the directory holding `libcompat10.so`,
/// `libcompat20.so`, `libcompatbad.so` and `libberth_fixture_faulty.so`.
/// Panics with cargo's output when a build fails.
pub fn build() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let target = target_dir();
        for (dir, _) in PLUGINS {
            let manifest = compat_dir().join(dir).join("Cargo.toml");
            let out = Command::new(&cargo)
                .arg("build")
                .arg("--quiet")
                .arg("--manifest-path")
                .arg(&manifest)
                .arg("--target-dir")
                .arg(&target)
                // The outer `cargo test` may export these; the fixtures are
                // built with their own settings.
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("CARGO_BUILD_TARGET_DIR")
                .output()
                .unwrap_or_else(|e| panic!("cannot run cargo to build {}: {e}", manifest.display()));
            assert!(
                out.status.success(),
                "building fixture {} failed:\n{}",
                manifest.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let dir = target.join("debug");
        // The faulty plugin is a workspace member: build it in the
        // workspace's own target dir and copy it over (write, then rename,
        // so a process that has the old file mapped keeps it intact).
        let workspace_target = target.parent().expect("<target>/compat has a parent");
        let out = Command::new(&cargo)
            .args(["build", "--quiet", "-p", "berth-fixture-faulty", "--manifest-path"])
            .arg(compat_dir().join("../../../Cargo.toml"))
            .arg("--target-dir")
            .arg(workspace_target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .unwrap_or_else(|e| panic!("cannot run cargo to build berth-fixture-faulty: {e}"));
        assert!(
            out.status.success(),
            "building berth-fixture-faulty failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tmp = dir.join(format!(".{FAULTY}.{}", std::process::id()));
        std::fs::copy(workspace_target.join("debug").join(FAULTY), &tmp).expect("copy the faulty plugin");
        std::fs::rename(&tmp, dir.join(FAULTY)).expect("move the faulty plugin into place");
        for so in PLUGINS.iter().map(|(_, so)| *so).chain([FAULTY]) {
            assert!(dir.join(so).exists(), "{} missing after the build", dir.join(so).display());
        }
        dir
    })
    .clone()
}
