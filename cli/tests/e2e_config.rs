//! Acceptance 3: `berthd --check-config`, and a daemon that starts with a
//! plugin missing.

mod common;

use std::process::Command;

use common::{berthd_bin, describe, World};

fn check(config: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(berthd_bin()).arg("--check-config").arg("--config").arg(config).args(extra).output().unwrap()
}

#[test]
fn an_unknown_key_is_refused_with_file_line_and_column() {
    let w = World::new("");
    let bad = w.write(
        "bad.toml",
        "[daemon]\nroot = \"/nonexistent/berth\"\n\n[volume]\ndefault = \"local\"\ncolour = \"red\"\n",
    );
    let out = check(&bad, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:6:1: "), "{err}");
    assert!(err.contains("colour"), "{err}");
    // The daemon proper refuses it the same way.
    let out = Command::new(berthd_bin()).arg("--config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml:6:1: "));
}

#[test]
fn a_valid_config_lists_every_plugin_without_touching_the_root() {
    let w = World::new(common::FAULTY);
    let out = check(&w.config, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["vfs", "none", "host", "default", "local", "faulty"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name}: {text}"));
        assert!(line.contains("shared-object") && line.contains("ready"), "{line}");
    }
    assert!(text.contains("6 plugins: 6 ready, 0 skipped, 0 failed"), "{text}");
    assert!(!w.root.exists(), "--check-config must not create the real root");
    assert!(!w.exec_root.exists(), "--check-config must not create the real exec root");

    let out = check(&w.config, &["--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["plugins"].as_array().unwrap().len(), 6);
    assert!(!w.root.exists());
}

#[test]
fn a_missing_shared_object_fails_only_its_plugin() {
    let w = World::new("\n[[plugin]]\nname = \"ghost\"\npath = \"libberth_ghost.so\"\n");
    let out = check(&w.config, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let ghost = text.lines().find(|l| l.starts_with("ghost ")).unwrap();
    assert!(ghost.contains("failed") && ghost.contains("not found"), "{ghost}");
    assert!(text.contains("5 ready, 0 skipped, 1 failed"), "{text}");

    // The daemon itself starts with the rest.
    let _d = w.start();
    let plugins = w.berth_json(&["plugin", "ls", "--format", "json"]);
    let plugins = plugins.as_array().unwrap();
    assert_eq!(plugins.iter().filter(|p| p["status"] == "ready").count(), 5);
    let ghost = plugins.iter().find(|p| p["name"] == "ghost").unwrap();
    assert_eq!(ghost["status"], "failed");
    assert!(ghost["reason"].as_str().unwrap().contains("libberth_ghost.so not found"), "{ghost}");
    let table = w.berth_ok(&["plugin", "ls"]);
    assert!(table.lines().any(|l| l.starts_with("ghost") && l.contains("failed")), "{table}");
    let info = w.berth_json(&["info", "--format", "json"]);
    assert_eq!(info["Berth"]["Plugins"]["Failed"], 1);
    // And its volumes work.
    assert_eq!(w.berth_ok(&["volume", "create", "still-fine"]).trim(), "still-fine");
}

#[path = "../../plugin-api/tests/compat/fixtures.rs"]
mod fixtures;

#[test]
fn incompatible_plugins_are_refused_in_one_line_and_the_daemon_starts_with_the_rest() {
    let dir = fixtures::build();
    let entry = |name: &str, file: &str| {
        format!("\n[[plugin]]\nname = \"{name}\"\npath = \"{}\"\n", dir.join(file).display())
    };
    let extra = entry("bad", "libcompatbad.so")
        + &entry("major2", "libcompat20.so")
        + &entry("old", "libcompat10.so");
    let w = World::new(&extra);

    // --check-config already says it, and exits 3.
    let out = check(&w.config, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));

    let _d = w.start();
    let plugins = w.berth_json(&["plugin", "ls", "--format", "json"]);
    let plugins = plugins.as_array().unwrap();
    let by = |n: &str| plugins.iter().find(|p| p["name"] == n).unwrap_or_else(|| panic!("{n} not listed"));

    let bad = by("bad");
    assert_eq!(bad["status"], "failed", "{bad}");
    let reason = bad["reason"].as_str().unwrap();
    assert!(reason.lines().count() <= 2, "reason longer than two lines: {reason}");
    assert!(reason.contains("incompatible interface"), "{reason}");
    assert!(reason.contains("create") && reason.contains("u64"), "the mismatch is not named: {reason}");

    let major2 = by("major2");
    assert_eq!(major2["status"], "failed", "{major2}");
    assert!(major2["reason"].as_str().unwrap().contains("2.0.0"), "{major2}");

    // A plugin built against plugin-api 1.0 loads in this 1.1 daemon.
    let old = by("old");
    assert_eq!(old["status"], "ready", "{old}");
    assert_eq!(old["compat"], "older_minor", "{old}");
    assert_eq!(old["api_version"], "1.0.0", "{old}");
    assert_eq!(w.berth_ok(&["volume", "create", "--driver", "old", "from-1-0"]).trim(), "from-1-0");

    // The built-in plugins are all ready.
    for name in ["vfs", "none", "host", "default", "local"] {
        assert_eq!(by(name)["status"], "ready", "{name}");
    }
    let table = w.berth_ok(&["plugin", "ls"]);
    assert!(table.lines().any(|l| l.starts_with("bad") && l.contains("failed")), "{table}");
}

#[test]
fn a_driver_that_declines_is_listed_as_skipped_with_its_reason() {
    let reason = "needs the acme kernel module, which this kernel lacks";
    let w = World::new(&format!(
        "\n[[plugin]]\nname = \"acme\"\npath = \"libberth_fixture_faulty.so\"\noptions = {{ skip = \"{reason}\" }}\n"
    ));
    // Skipped is not a failure: --check-config exits 0.
    let out = check(&w.config, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("acme ") && l.contains("skipped")), "{text}");

    let _d = w.start();
    let plugins = w.berth_json(&["plugin", "ls", "--format", "json"]);
    let acme = plugins.as_array().unwrap().iter().find(|p| p["name"] == "acme").unwrap().clone();
    assert_eq!(acme["status"], "skipped", "{acme}");
    assert_eq!(acme["reason"], reason, "{acme}");
    assert_eq!(acme["drivers"][0]["status"], "skipped", "{acme}");
    let out = w.berth(&["volume", "create", "--driver", "acme", "v1"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("skipped on this host") && err.contains(reason) && err.contains("(unavailable)"),
        "{err}"
    );
}

#[test]
fn a_constructor_that_hangs_fails_its_plugin_and_the_daemon_starts_anyway() {
    let w = World::new(
        "\n[[plugin]]\nname = \"stuck\"\npath = \"libberth_fixture_faulty.so\"\ntimeout = \"1s\"\noptions = { hang = true }\n",
    );
    let t = std::time::Instant::now();
    let _d = w.start();
    assert!(t.elapsed() < std::time::Duration::from_secs(10), "start took {:?}", t.elapsed());
    let plugins = w.berth_json(&["plugin", "ls", "--format", "json"]);
    let plugins = plugins.as_array().unwrap();
    let stuck = plugins.iter().find(|p| p["name"] == "stuck").unwrap();
    assert_eq!(stuck["status"], "failed", "{stuck}");
    let reason = stuck["reason"].as_str().unwrap();
    assert!(reason.contains("did not construct its volume driver within 1s"), "{reason}");
    assert_eq!(plugins.iter().filter(|p| p["status"] == "ready").count(), 5);
    assert_eq!(w.berth_ok(&["volume", "create", "fine"]).trim(), "fine");
}
