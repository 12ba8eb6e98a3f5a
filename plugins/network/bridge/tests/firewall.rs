//! The firewall's add-only changes against the real kernel, each test in
//! a private network namespace standing in for the host (see `common`):
//! a create or a publish only adds (every rule that was there keeps its
//! handle), a delete or a revoke takes exactly its own rules, the last
//! network takes the table, a table changed behind the driver's back is
//! rebuilt, and libnftables in process programs the same table as the
//! `nft` command. Needs root, `ip` and `nft`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use berth_network_bridge::BridgeDriver;
use berth_plugin_api::network::*;
use berth_plugin_api::util::command::HostRunner;
use berth_plugin_api::{Init, InitRequest, NetworkDriver};
use common::*;
use serde_json::{json, Value};

fn init(root: &Path) -> InitRequest {
    InitRequest::new("bridge", root.to_str().unwrap(), root.join("run").to_str().unwrap())
}

fn ready(init: DriverInit) -> BridgeDriver {
    match init.unwrap() {
        Init::Ready(d) => d,
        Init::Skipped(why) => panic!("the bridge driver declined: {why}"),
    }
}

type DriverInit = berth_plugin_api::DriverResult<Init<BridgeDriver>>;

/// The driver as the daemon gets it, with libnftables in process (the
/// tests need the library, installed with nftables).
fn open_library(root: &Path) -> BridgeDriver {
    let d = ready(BridgeDriver::new(init(root)));
    assert!(format!("{d:?}").contains("libnftables.so.1"), "libnftables is not in use: {d:?}");
    d
}

/// The driver running the `nft` command for every change.
fn open_command(root: &Path) -> BridgeDriver {
    let d = ready(BridgeDriver::with_runner(init(root), Arc::new(HostRunner)));
    assert!(format!("{d:?}").contains("Command"), "{d:?}");
    d
}

/// `nft -j -a list table inet berth`; `None` without the table.
fn listing() -> Option<Value> {
    let (ok, text) = run(&["nft", "-j", "-a", "list", "table", "inet", "berth"]);
    ok.then(|| serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
}

/// What the table holds, by handle.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Table {
    /// The table's own handle (a new one each time it is made).
    handle: u64,
    /// The set's members, sorted.
    bridges: Vec<String>,
    /// Rules by handle: chain and comment.
    rules: BTreeMap<u64, (String, String)>,
}

fn table() -> Option<Table> {
    let v = listing()?;
    let mut t = Table { handle: 0, bridges: Vec::new(), rules: BTreeMap::new() };
    for item in v["nftables"].as_array().unwrap() {
        if let Some(x) = item.get("table") {
            t.handle = x["handle"].as_u64().unwrap();
        } else if let Some(s) = item.get("set") {
            t.bridges = s["elem"]
                .as_array()
                .map_or(Vec::new(), |e| e.iter().map(|b| b.as_str().unwrap().to_string()).collect());
            t.bridges.sort();
        } else if let Some(r) = item.get("rule") {
            let comment = r["comment"].as_str().unwrap_or_default().to_string();
            t.rules
                .insert(r["handle"].as_u64().unwrap(), (r["chain"].as_str().unwrap().to_string(), comment));
        }
    }
    Some(t)
}

/// The rules `after` has that `before` has not; panics if a rule of
/// `before` is gone or changed, or the table was made anew.
#[track_caller]
fn added(before: &Table, after: &Table) -> Vec<(String, String)> {
    assert_eq!(before.handle, after.handle, "the table was made anew:\n{before:?}\n{after:?}");
    for (h, r) in &before.rules {
        assert_eq!(after.rules.get(h), Some(r), "rule {h} {r:?} was touched:\n{after:?}");
    }
    after.rules.iter().filter(|(h, _)| !before.rules.contains_key(h)).map(|(_, r)| r.clone()).collect()
}

fn comments(rules: &[(String, String)]) -> Vec<&str> {
    let mut c: Vec<&str> = rules.iter().map(|r| r.1.as_str()).collect();
    c.sort();
    c.dedup();
    c
}

fn portmap(ip: &str, host_port: u16) -> Options {
    let mut o = Options::new();
    o.insert(
        "com.docker.network.portmap".into(),
        json!([{"Proto": 6, "IP": ip, "Port": 80, "HostPort": host_port}, {"Proto": 17, "IP": ip, "Port": 53, "HostPort": host_port}]),
    );
    o
}

fn publish(d: &dyn NetworkDriver, net: &str, ep: &str, ip: &str, host_port: u16) {
    let mut p = ProgramExternalConnectivityRequest::new(net, ep);
    p.options = portmap(ip, host_port);
    d.program_external_connectivity(p).expect("publish");
}

/// Networks `fw1`..`fw3` of this test (`tag` apart from other tests'):
/// one internal, one with masquerade off.
fn create_three(d: &dyn NetworkDriver, tag: u8) {
    let mut internal = network_req(
        &format!("fw{tag}i"),
        &format!("10.24{tag}.2.0/24"),
        &format!("10.24{tag}.2.1/24"),
        Value::Null,
    );
    internal.options.insert("com.docker.network.internal".into(), json!(true));
    for req in [
        network_req(
            &format!("fw{tag}a"),
            &format!("10.24{tag}.1.0/24"),
            &format!("10.24{tag}.1.1/24"),
            Value::Null,
        ),
        internal,
        network_req(
            &format!("fw{tag}n"),
            &format!("10.24{tag}.3.0/24"),
            &format!("10.24{tag}.3.1/24"),
            json!({"com.docker.network.bridge.enable_ip_masquerade": "false"}),
        ),
    ] {
        d.create_network(req).expect("create network");
    }
}

#[test]
fn creates_and_publishes_only_add_and_deletes_take_exactly_their_rules() {
    if !can_run() {
        return;
    }
    let host = Host::new();
    let dir = tempfile::tempdir().unwrap();
    let d = open_library(dir.path());
    assert_eq!(table(), None, "no table before the first network");
    let ids = ["fw1a", "fw1i", "fw1n"];
    let mut before: Option<Table> = None;
    for (k, req) in [
        network_req("fw1a", "10.241.1.0/24", "10.241.1.1/24", Value::Null),
        {
            let mut r = network_req("fw1i", "10.241.2.0/24", "10.241.2.1/24", Value::Null);
            r.options.insert("com.docker.network.internal".into(), json!(true));
            r
        },
        network_req("fw1n", "10.241.3.0/24", "10.241.3.1/24", Value::Null),
    ]
    .into_iter()
    .enumerate()
    {
        d.create_network(req).unwrap();
        let after = table().expect("the table exists with a network");
        let new = match &before {
            Some(b) => added(b, &after),
            None => after.rules.values().cloned().collect(),
        };
        assert_eq!(comments(&new), [format!("berth network {}", ids[k])], "{after:?}");
        assert_eq!(after.bridges.len(), k + 1, "{after:?}");
        before = Some(after);
    }
    // publishing adds the endpoint's DNAT rules (2 ports × prerouting and
    // output) and the network's loopback masquerade, nothing else
    let before = before.unwrap();
    d.create_endpoint(endpoint_req("fw1a", "e1", "10.241.1.2/24")).unwrap();
    assert_eq!(table().as_ref(), Some(&before), "an endpoint without ports changes nothing");
    publish(&d, "fw1a", "e1", "10.241.1.2", 18081);
    let published = table().unwrap();
    let new = added(&before, &published);
    assert_eq!(new.len(), 5, "{new:?}");
    assert_eq!(comments(&new), ["berth network fw1a endpoint e1", "berth network fw1a published"]);
    // a second endpoint publishing adds its own group only
    d.create_endpoint(endpoint_req("fw1a", "e2", "10.241.1.3/24")).unwrap();
    publish(&d, "fw1a", "e2", "10.241.1.3", 18082);
    let two = table().unwrap();
    assert_eq!(comments(&added(&published, &two)), ["berth network fw1a endpoint e2"]);
    // revoking takes exactly what publishing added, the rest untouched
    d.revoke_external_connectivity(RevokeExternalConnectivityRequest::new("fw1a", "e2")).unwrap();
    assert_eq!(table().as_ref(), Some(&published));
    d.revoke_external_connectivity(RevokeExternalConnectivityRequest::new("fw1a", "e1")).unwrap();
    assert_eq!(table().as_ref(), Some(&before));
    for ep in ["e1", "e2"] {
        d.delete_endpoint(DeleteEndpointRequest::new("fw1a", ep)).unwrap();
    }
    // deletes in another order than the creates: each takes its own rules
    // and set member, the others keep theirs (same handles)
    let mut live = before;
    for (k, id) in ["fw1i", "fw1a"].into_iter().enumerate() {
        d.delete_network(DeleteNetworkRequest::new(id)).unwrap();
        let after = table().unwrap();
        assert_eq!(after.handle, live.handle);
        let kept: BTreeMap<_, _> = live
            .rules
            .iter()
            .filter(|(_, r)| r.1 != format!("berth network {id}"))
            .map(|(h, r)| (*h, r.clone()))
            .collect();
        assert_eq!(after.rules, kept, "deleting {id}");
        assert_eq!(after.bridges.len(), 2 - k);
        assert!(!after.bridges.contains(&format!("br-{id}")));
        live = after;
    }
    d.delete_network(DeleteNetworkRequest::new("fw1n")).unwrap();
    assert_eq!(table(), None, "the last network takes the table");
    d.delete_network(DeleteNetworkRequest::new("fw1n")).unwrap();
    assert_eq!(host.links(), Vec::<String>::new(), "links left behind");
}

#[test]
fn a_table_changed_behind_the_drivers_back_is_rebuilt() {
    if !can_run() {
        return;
    }
    let host = Host::new();
    let dir = tempfile::tempdir().unwrap();
    let d = open_library(dir.path());
    d.create_network(network_req("fw2a", "10.242.1.0/24", "10.242.1.1/24", Value::Null)).unwrap();
    d.create_network(network_req("fw2b", "10.242.2.0/24", "10.242.2.1/24", Value::Null)).unwrap();
    let two = table().unwrap();
    // the table is gone: the next create regenerates it whole
    sh(&["nft", "delete", "table", "inet", "berth"]);
    d.create_network(network_req("fw2c", "10.242.3.0/24", "10.242.3.1/24", Value::Null)).unwrap();
    let three = table().expect("table rebuilt");
    assert_eq!(three.bridges, ["br-fw2a", "br-fw2b", "br-fw2c"]);
    assert_eq!(three.rules.len(), two.rules.len() * 3 / 2, "{three:?}");
    // a rule is gone: the next delete sees it and regenerates
    let (h, _) = three.rules.iter().find(|(_, r)| r.1 == "berth network fw2b").unwrap();
    sh(&["nft", "delete", "rule", "inet", "berth", "forward", "handle", &h.to_string()]);
    d.delete_network(DeleteNetworkRequest::new("fw2a")).unwrap();
    let rebuilt = table().unwrap();
    assert_ne!(rebuilt.handle, three.handle, "regenerated");
    assert_eq!(rebuilt.bridges, ["br-fw2b", "br-fw2c"]);
    assert_eq!(rebuilt.rules.len(), two.rules.len(), "{rebuilt:?}");
    for id in ["fw2b", "fw2c"] {
        d.delete_network(DeleteNetworkRequest::new(id)).unwrap();
    }
    assert_eq!(table(), None);
    assert_eq!(host.links(), Vec::<String>::new());
}

/// The table without handles or metainfo, rules sorted within their
/// chain when `sort`, set members sorted.
fn normalized(mut v: Value, sort: bool) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(o) => {
                o.remove("handle");
                o.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    let mut items: Vec<Value> =
        v["nftables"].as_array().unwrap().iter().filter(|i| i.get("metainfo").is_none()).cloned().collect();
    for i in &mut items {
        if let Some(e) = i.pointer_mut("/set/elem").and_then(Value::as_array_mut) {
            e.sort_by_key(|x| x.to_string());
        }
    }
    if sort {
        items.sort_by_key(|i| {
            (i.get("rule").is_some(), i.pointer("/rule/chain").map(|c| c.to_string()), i.to_string())
        });
    }
    json!({ "nftables": items })
}

/// Three networks, one publishing, one deleted: the table after these
/// incremental changes and after a restart (the full regeneration);
/// everything deleted after.
fn scenario(open: fn(&Path) -> BridgeDriver) -> (Value, Value) {
    let host = Host::new();
    let dir = tempfile::tempdir().unwrap();
    let d = open(dir.path());
    create_three(&d, 3);
    d.create_endpoint(endpoint_req("fw3a", "e1", "10.243.1.2/24")).unwrap();
    publish(&d, "fw3a", "e1", "10.243.1.2", 18083);
    d.create_network(network_req("fw3x", "10.243.9.0/24", "10.243.9.1/24", Value::Null)).unwrap();
    d.delete_network(DeleteNetworkRequest::new("fw3i")).unwrap();
    let incremental = listing().unwrap();
    drop(d);
    let d = open(dir.path());
    let regenerated = listing().unwrap();
    d.delete_endpoint(DeleteEndpointRequest::new("fw3a", "e1")).unwrap();
    for id in ["fw3a", "fw3n", "fw3x"] {
        d.delete_network(DeleteNetworkRequest::new(id)).unwrap();
    }
    assert_eq!(listing(), None);
    assert_eq!(host.links(), Vec::<String>::new());
    (incremental, regenerated)
}

#[test]
fn the_library_and_the_nft_command_program_the_same_table() {
    if !can_run() {
        return;
    }
    let lib = std::thread::spawn(|| scenario(open_library)).join().unwrap();
    let cmd = std::thread::spawn(|| scenario(open_command)).join().unwrap();
    assert_eq!(normalized(lib.0.clone(), false), normalized(cmd.0.clone(), false), "incremental");
    assert_eq!(normalized(lib.1.clone(), false), normalized(cmd.1, false), "regenerated");
    // and the incremental changes left what a regeneration makes, up to
    // the order of rules in their chain (disjoint matches: order is free)
    assert_eq!(normalized(lib.0, true), normalized(lib.1, true));
}
