//! Crash safety: a child process runs one network operation with
//! `BERTH_CRASH_AT` set and aborts at that point; the parent re-opens the
//! service, reconciles as the engine does, and checks that nothing is left
//! (no link, no namespace file, no IPAM lease: the same subnet and the
//! same first address can be taken again).

#[path = "network_support/builtins.rs"]
mod builtins;
mod network_support;

use std::path::Path;

use berth_core::network::{ConnectRequest, CreateSandbox, DisconnectRequest};
use berth_core::NetworkService;
use builtins::ServiceExt;
use network_support::{subnet_req, World};

const CHILD: &str = "BERTH_NET_CRASH_CHILD";
const SUBNET: &str = "10.254.90.0/24";
const GATEWAY: &str = "10.254.90.1";
const SUBNET6: &str = "fd00:b9:90::/64";

fn create(svc: &NetworkService) {
    svc.create(subnet_req("net", "veth", SUBNET, GATEWAY, Some(SUBNET6))).unwrap();
}

fn connect(svc: &NetworkService, sb: &str) -> berth_core::network::EndpointRecord {
    svc.connect("net", ConnectRequest { container: sb.into(), ..Default::default() }).unwrap()
}

fn sandbox(svc: &NetworkService, name: &str) {
    svc.create_sandbox(CreateSandbox { name: name.into(), host: false, ..Default::default() }).unwrap();
}

/// Runs in a child process only: the operation of the scenario, which
/// aborts at the crash point.
#[test]
fn network_crash_child() {
    let Ok(spec) = std::env::var(CHILD) else { return };
    let mut parts = spec.split('|');
    let (dir, prefix, scenario) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let w = World::at(Path::new(dir), prefix);
    let (svc, _) = w.service(std::env::var("BERTH_CRASH_AT").ok());
    let _ = match scenario {
        "create" => svc.create(subnet_req("net", "veth", SUBNET, GATEWAY, Some(SUBNET6))).map(drop),
        "delete" => svc.delete("net"),
        "connect" => {
            svc.connect("net", ConnectRequest { container: "box".into(), ..Default::default() }).map(drop)
        }
        "disconnect" => svc.disconnect("net", DisconnectRequest { container: "box".into(), force: false }),
        "sandbox-create" => svc
            .create_sandbox(CreateSandbox { name: "box2".into(), host: false, ..Default::default() })
            .map(drop),
        "sandbox-remove" => svc.remove_sandbox("box"),
        other => panic!("unknown scenario {other}"),
    };
    panic!("the crash point was not reached");
}

/// Sets `scenario` up, crashes a child at `point`, reconciles, checks.
fn crash(tag: u32, scenario: &str, point: &str) {
    let w = World::new(tag);
    {
        let (svc, _) = w.service(None);
        if matches!(scenario, "delete" | "connect" | "disconnect") {
            create(&svc);
        }
        if matches!(scenario, "connect" | "disconnect" | "sandbox-remove") {
            sandbox(&svc, "box");
        }
        if scenario == "disconnect" {
            connect(&svc, "box");
        }
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "network_crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{}|{}|{scenario}", w.dir.display(), w.prefix))
        .env("BERTH_CRASH_AT", point)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{point}: the child should have aborted");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("crash point was not reached"),
        "{point} not reached:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let (svc, store) = w.service(None);
    let pending = store.pending().unwrap();
    assert!(!pending.is_empty(), "{point}: the crash left no intent");
    for outcome in svc.reconcile(&pending) {
        assert!(outcome.is_ok(), "{point}: {outcome:?}");
    }
    assert!(store.pending().unwrap().is_empty(), "{point}: {:?}", store.pending().unwrap());
    assert!(w.links().is_empty(), "{point}: links left: {:?}", w.links());
    let keys: Vec<String> = svc.sandboxes().into_iter().map(|s| s.record.key).collect();
    let files: Vec<String> = w.namespaces().iter().map(|p| p.display().to_string()).collect();
    assert_eq!(files, keys, "{point}: namespace files vs sandboxes");
    match scenario {
        "create" | "delete" => {
            assert_eq!(svc.count(), 0, "{point}");
            // No lease left: the same subnets again.
            create(&svc);
        }
        "connect" | "disconnect" => {
            assert!(svc.inspect("net").unwrap().containers.is_empty(), "{point}");
            // The address went back: the next connect gets the same one.
            let ep = connect(&svc, "box");
            assert_eq!(ep.ipv4, "10.254.90.2/24", "{point}");
            assert_eq!(ep.ipv6, "fd00:b9:90::2/64", "{point}");
            svc.remove_sandbox("box").unwrap();
        }
        "sandbox-create" => assert!(svc.sandboxes().is_empty(), "{point}"),
        _ => assert!(svc.sandboxes().is_empty(), "{point}: removal finished"),
    }
    for s in svc.sandboxes() {
        svc.remove_sandbox(&s.record.id).unwrap();
    }
    if svc.count() > 0 {
        svc.delete("net").unwrap();
    }
    assert!(w.links().is_empty() && w.namespaces().is_empty(), "{point}: cleanup");
}

macro_rules! crash_tests {
    ($($name:ident: $tag:expr, $scenario:expr, $point:expr;)*) => {$(
        #[test]
        fn $name() {
            crash($tag, $scenario, $point);
        }
    )*};
}

crash_tests! {
    network_crash_create_after_intent: 10, "create", "network.create:after-intent";
    network_crash_create_after_pool: 11, "create", "network.create:after-pool";
    network_crash_create_after_gateway: 12, "create", "network.create:after-gateway";
    network_crash_create_after_driver: 13, "create", "network.create:after-driver";
    network_crash_delete_after_intent: 14, "delete", "network.delete:after-intent";
    network_crash_delete_after_ipam: 15, "delete", "network.delete:after-ipam";
    network_crash_connect_after_intent: 16, "connect", "endpoint.connect:after-intent";
    network_crash_connect_after_address: 17, "connect", "endpoint.connect:after-address";
    network_crash_connect_after_endpoint: 18, "connect", "endpoint.connect:after-endpoint";
    network_crash_connect_after_join: 19, "connect", "endpoint.connect:after-join";
    network_crash_connect_after_move: 20, "connect", "endpoint.connect:after-move";
    network_crash_connect_after_program: 21, "connect", "endpoint.connect:after-program";
    network_crash_disconnect_after_intent: 22, "disconnect", "endpoint.disconnect:after-intent";
    network_crash_disconnect_after_leave: 23, "disconnect", "endpoint.disconnect:after-leave";
    network_crash_sandbox_create_after_intent: 24, "sandbox-create", "sandbox.create:after-intent";
    network_crash_sandbox_create_after_netns: 25, "sandbox-create", "sandbox.create:after-netns";
    network_crash_sandbox_remove_after_intent: 26, "sandbox-remove", "sandbox.remove:after-intent";
}
