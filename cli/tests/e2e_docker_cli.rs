//! Debian's `docker` client (`/usr/bin/docker`, package `docker.io`)
//! pointed at berthd's socket: version, info and the volume commands must
//! work unchanged. `.ci/test` installs the package; without it this test
//! fails and says how to get it, rather than passing silently.

mod common;

use std::path::Path;

use common::{describe, docker, docker_ok, World, DOCKER};

fn ok(w: &World, args: &[&str]) -> String {
    docker_ok(w, args)
}

#[test]
fn the_debian_docker_client_manages_volumes_on_berthd() {
    assert!(
        Path::new(DOCKER).exists(),
        "{DOCKER} is missing: install Debian's client with `apt-get install -y docker.io` (.ci/test does)"
    );
    let w = World::new("");
    let _d = w.start();

    let version = ok(&w, &["version", "--format", "{{.Server.Version}} {{.Server.APIVersion}}"]);
    assert!(version.trim().ends_with("1.47"), "{version}");
    let info = ok(&w, &["info", "--format", "{{.Driver}} {{.DockerRootDir}}"]);
    assert_eq!(info.trim(), format!("vfs {}", w.root.display()));

    assert_eq!(ok(&w, &["volume", "create", "--label", "team=db", "alpha"]).trim(), "alpha");
    assert_eq!(ok(&w, &["volume", "create", "beta"]).trim(), "beta");
    let ls = ok(&w, &["volume", "ls", "--format", "{{.Driver}}/{{.Name}}"]);
    assert_eq!(ls.lines().collect::<Vec<_>>(), ["local/alpha", "local/beta"]);
    let filtered = ok(&w, &["volume", "ls", "-q", "--filter", "label=team=db"]);
    assert_eq!(filtered.trim(), "alpha");
    let inspect =
        ok(&w, &["volume", "inspect", "--format", "{{.Mountpoint}} {{.Scope}} {{.Labels.team}}", "alpha"]);
    assert_eq!(inspect.trim(), format!("{} local db", w.root.join("volumes/alpha/_data").display()));

    // A volume in use survives prune and rm.
    w.berth_ok(&["volume", "mount", "beta", "--id", "holder"]);
    let pruned = ok(&w, &["volume", "prune", "--force"]);
    assert!(pruned.contains("alpha") && !pruned.contains("beta"), "{pruned}");
    let rm = docker(&w, &["volume", "rm", "beta"]);
    assert!(!rm.status.success(), "{}", describe(&rm));
    assert!(String::from_utf8_lossy(&rm.stderr).contains("in use"), "{}", describe(&rm));
    w.berth_ok(&["volume", "unmount", "beta", "holder"]);
    assert_eq!(ok(&w, &["volume", "rm", "beta"]).trim(), "beta");
    let missing = docker(&w, &["volume", "inspect", "beta"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).to_lowercase().contains("no such volume"),
        "{}",
        describe(&missing)
    );
    assert!(ok(&w, &["volume", "ls", "-q"]).trim().is_empty());
}
