//! The firewall: one nftables table (`inet berth` by default) that holds
//! everything the bridge driver programs, changed by adding and deleting
//! only the rules of the network or endpoint that changed, and deleted
//! with the last network (NW-09). It is fed to nftables as JSON
//! (libnftables' JSON schema), in process through [`crate::libnft`] where
//! `libnftables.so.1` is installed, else through `nft -j -f <file>`.
//!
//! ```text
//! table inet berth
//!   set bridges       type ifname: every berth bridge
//!   chain forward     filter, hook forward, priority 0, policy accept
//!     internal:   iifname B oifname != B drop; oifname B iifname != B drop
//!     isolation:  iifname B oifname @bridges oifname != B drop
//!     protection: oifname B iifname != B ct state new ct status ! dnat drop
//!   chain prerouting  nat, hook prerouting, priority -100   (published ports)
//!   chain output      nat, hook output, priority -100       (the host's own)
//!     [ip daddr H | fib daddr type local] tcp dport HP dnat ip to C:P
//!   chain postrouting nat, hook postrouting, priority 100
//!     hairpin:    oifname B ip saddr S ct status dnat masquerade
//!     masquerade: ip saddr S oifname != B masquerade   (or snat to host_ipv4)
//!     loopback:   oifname B ip saddr 127.0.0.0/8 masquerade  (with ports)
//! ```
//!
//! Every chain has policy accept and only drops what berth must, so the
//! table coexists with the host's own firewall. Inter-container traffic on
//! one bridge is bridged, not routed (no `br_netfilter` is assumed); ICC
//! off is done with bridge port isolation instead (see `driver.rs`).
//!
//! # Rule groups and add-only changes
//!
//! Every rule belongs to a [`Group`] named by its comment, which is added
//! and deleted as a whole:
//!
//! * `berth network <id>`: the network's forward and postrouting rules;
//! * `berth network <id> published`: the loopback masquerade, while any
//!   endpoint of the network publishes a port;
//! * `berth network <id> endpoint <id>`: an endpoint's published ports.
//!
//! Isolation between networks goes through the set `bridges` rather than
//! naming the other bridges in each network's rule, so no network's rules
//! mention another network: creating a network is `add element` and `add
//! rule`s of its own group (plus the table, its base chains and the set
//! with the first network), publishing a port adds its endpoint's group;
//! neither touches a rule that exists. Deleting lists the table with
//! handles (`nft -j -a list table`), checks it holds exactly the groups
//! the driver expects, and deletes the groups that went by handle (or the
//! whole table with the last network). The full regeneration of the old
//! design ([`ruleset`]: `add table` + `delete table` + everything) is kept
//! for the driver's start, for recovery when the table is missing or not
//! what the driver expects, and as the fallback of a failed change.
//!
//! Why: a transaction that deletes a rule, chain or table leaves its
//! destruction to the kernel after an RCU grace period, and closing an
//! nftables netlink socket waits for pending destructions (7-17 ms on the
//! 6.18 test machine; a transaction that only adds costs well under a
//! millisecond). Every `nft` process closes its socket when it exits, and
//! the old design deleted and recreated the whole table on every change,
//! so every change paid the grace period on top of the ~3.5 ms of
//! starting `nft`. Now a create deletes nothing, and in process the one
//! long-lived libnftables socket never closes while the driver lives, so
//! even a deletion does not wait. The changes are also small: their size
//! does not grow with the number of networks, and the rules of other
//! networks (their handles and counters) are never rewritten.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

mod sync;

pub(crate) use sync::{nft_error, no_such_table};
pub use sync::{sync, Backend, Command, Outcome};

/// What the firewall needs to know of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwNetwork {
    /// The network id (in rule comments).
    pub id: String,
    /// The bridge's name.
    pub bridge: String,
    /// Its subnets.
    pub subnets: Vec<IpNet>,
    /// `--internal`.
    pub internal: bool,
    /// Masquerade (or SNAT) outgoing traffic.
    pub masquerade: bool,
    /// SNAT source for IPv4 instead of masquerade.
    pub snat_ipv4: Option<std::net::Ipv4Addr>,
    /// Published ports of its endpoints.
    pub ports: Vec<FwPort>,
}

/// One published port with its host port chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwPort {
    /// The endpoint that publishes it (in rule comments).
    pub endpoint: String,
    /// `tcp`, `udp` or `sctp`.
    pub proto: &'static str,
    /// The host address; `None`: every local address.
    pub host_ip: Option<IpAddr>,
    /// The host port.
    pub host_port: u16,
    /// The container's address.
    pub container_ip: IpAddr,
    /// The container's port.
    pub container_port: u16,
}

const FAMILY: &str = "inet";
/// The set of every berth bridge, for isolation.
const BRIDGES: &str = "bridges";
/// The base chains: name, type, hook, priority.
const CHAINS: [(&str, &str, &str, i32); 4] = [
    ("forward", "filter", "forward", 0),
    ("prerouting", "nat", "prerouting", -100),
    ("output", "nat", "output", -100),
    ("postrouting", "nat", "postrouting", 100),
];

fn m(op: &str, left: Value, right: Value) -> Value {
    json!({ "match": { "op": op, "left": left, "right": right } })
}

fn meta(key: &str) -> Value {
    json!({ "meta": { "key": key } })
}

fn prefix(net: &IpNet) -> Value {
    json!({ "prefix": { "addr": net.network().to_string(), "len": net.prefix_len() } })
}

fn ip_proto(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "ip"
    } else {
        "ip6"
    }
}

fn saddr(net: &IpNet) -> Value {
    let proto = if matches!(net, IpNet::V4(_)) { "ip" } else { "ip6" };
    m("==", json!({ "payload": { "protocol": proto, "field": "saddr" } }), prefix(net))
}

/// `id` as it goes into a comment: itself up to `max` bytes, else a head
/// and `~` and 12 hex digits of its SHA-256, so distinct ids never share
/// a comment (nftables keeps at most 128 bytes of comment).
fn tag(id: &str, max: usize) -> String {
    if id.len() <= max {
        return id.to_string();
    }
    let mut head = String::new();
    for c in id.chars() {
        if head.len() + c.len_utf8() > max - 13 {
            break;
        }
        head.push(c);
    }
    let digest: String = Sha256::digest(id.as_bytes())[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{head}~{digest}")
}

fn network_comment(net: &FwNetwork) -> String {
    format!("berth network {}", tag(&net.id, 64))
}

/// A set of rules added and deleted together, named by their comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The comment every rule of the group carries; unique in the table.
    pub comment: String,
    /// The rules: chain and expression.
    pub rules: Vec<(&'static str, Vec<Value>)>,
}

/// What the table holds for some networks: the members of the set
/// `bridges` and the rule groups, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Every berth bridge.
    pub bridges: Vec<String>,
    /// The rule groups.
    pub groups: Vec<Group>,
}

/// The groups of one network: its own, then (not internal, with ports)
/// the loopback group and one group per publishing endpoint.
fn network_groups(n: &FwNetwork) -> Vec<Group> {
    let b = || json!(n.bridge);
    let mut rules = Vec::new();
    if n.internal {
        rules.push((
            "forward",
            vec![m("==", meta("iifname"), b()), m("!=", meta("oifname"), b()), json!({"drop": null})],
        ));
        rules.push((
            "forward",
            vec![m("==", meta("oifname"), b()), m("!=", meta("iifname"), b()), json!({"drop": null})],
        ));
        // Internal networks get no NAT and publish nothing.
        return vec![Group { comment: network_comment(n), rules }];
    }
    // The set holds this bridge too, hence the `!=`: this is "to any other
    // berth bridge", the old rule's `oifname { other bridges }`.
    rules.push((
        "forward",
        vec![
            m("==", meta("iifname"), b()),
            m("==", meta("oifname"), json!(format!("@{BRIDGES}"))),
            m("!=", meta("oifname"), b()),
            json!({"drop": null}),
        ],
    ));
    rules.push((
        "forward",
        vec![
            m("==", meta("oifname"), b()),
            m("!=", meta("iifname"), b()),
            m("in", json!({"ct": {"key": "state"}}), json!("new")),
            m("!", json!({"ct": {"key": "status"}}), json!("dnat")),
            json!({"drop": null}),
        ],
    ));
    for s in &n.subnets {
        rules.push((
            "postrouting",
            vec![
                m("==", meta("oifname"), b()),
                saddr(s),
                m("in", json!({"ct": {"key": "status"}}), json!("dnat")),
                json!({"masquerade": null}),
            ],
        ));
    }
    if n.masquerade {
        for s in &n.subnets {
            let action = match (s, n.snat_ipv4) {
                (IpNet::V4(_), Some(a)) => json!({ "snat": { "family": "ip", "addr": a.to_string() } }),
                _ => json!({"masquerade": null}),
            };
            rules.push(("postrouting", vec![saddr(s), m("!=", meta("oifname"), b()), action]));
        }
    }
    let mut groups = vec![Group { comment: network_comment(n), rules }];
    if n.ports.is_empty() {
        return groups;
    }
    let lo: IpNet = "127.0.0.0/8".parse().expect("constant");
    groups.push(Group {
        comment: format!("{} published", network_comment(n)),
        rules: vec![(
            "postrouting",
            vec![m("==", meta("oifname"), b()), saddr(&lo), json!({"masquerade": null})],
        )],
    });
    let mut by_endpoint: BTreeMap<&str, Vec<&FwPort>> = BTreeMap::new();
    for p in &n.ports {
        by_endpoint.entry(&p.endpoint).or_default().push(p);
    }
    for (ep, ports) in by_endpoint {
        let mut rules = Vec::new();
        for p in ports {
            for chain in ["prerouting", "output"] {
                rules.push((chain, dnat(p)));
            }
        }
        groups.push(Group { comment: format!("{} endpoint {}", network_comment(n), tag(ep, 32)), rules });
    }
    groups
}

/// The DNAT expression of a published port.
fn dnat(p: &FwPort) -> Vec<Value> {
    let family = ip_proto(&p.container_ip);
    let mut e = vec![m("==", meta("nfproto"), json!(if family == "ip" { "ipv4" } else { "ipv6" }))];
    match p.host_ip.filter(|h| !h.is_unspecified()) {
        Some(h) => e.push(m(
            "==",
            json!({ "payload": { "protocol": ip_proto(&h), "field": "daddr" } }),
            json!(h.to_string()),
        )),
        None => e.push(m("==", json!({ "fib": { "result": "type", "flags": ["daddr"] } }), json!("local"))),
    }
    e.push(m("==", json!({ "payload": { "protocol": p.proto, "field": "dport" } }), json!(p.host_port)));
    e.push(
        json!({ "dnat": { "family": family, "addr": p.container_ip.to_string(), "port": p.container_port } }),
    );
    e
}

/// The bridges and rule groups for `nets`.
pub fn plan(nets: &[FwNetwork]) -> Plan {
    Plan {
        bridges: nets.iter().map(|n| n.bridge.clone()).collect(),
        groups: nets.iter().flat_map(network_groups).collect(),
    }
}

fn table_ref(table: &str) -> Value {
    json!({ "family": FAMILY, "name": table })
}

/// The table, its base chains and the empty set `bridges`.
fn skeleton(table: &str) -> Vec<Value> {
    let mut cmds = vec![json!({ "add": { "table": table_ref(table) } })];
    for (name, kind, hook, prio) in CHAINS {
        cmds.push(json!({ "add": { "chain": {
            "family": FAMILY, "table": table, "name": name,
            "type": kind, "hook": hook, "prio": prio, "policy": "accept"
        } } }));
    }
    cmds.push(json!({ "add": { "set": {
        "family": FAMILY, "table": table, "name": BRIDGES, "type": "ifname"
    } } }));
    cmds
}

fn elements(op: &str, table: &str, bridges: &[String]) -> Option<Value> {
    (!bridges.is_empty()).then(|| {
        json!({ op: { "element": { "family": FAMILY, "table": table, "name": BRIDGES, "elem": bridges } } })
    })
}

fn add_rules<'a>(
    table: &'a str,
    groups: impl IntoIterator<Item = &'a Group> + 'a,
) -> impl Iterator<Item = Value> + 'a {
    groups.into_iter().flat_map(move |g| {
        g.rules.iter().map(move |(chain, expr)| {
            json!({ "add": { "rule": {
                "family": FAMILY, "table": table, "chain": chain, "comment": g.comment, "expr": expr
            } } })
        })
    })
}

fn batch(cmds: Vec<Value>) -> Value {
    json!({ "nftables": cmds })
}

/// The transaction that makes `table` hold exactly the rules for `nets`,
/// whatever was there before (`add table` + `delete table` + the table);
/// with no networks, the one that deletes it. The full regeneration, for
/// the driver's start and for recovery.
pub fn ruleset(table: &str, nets: &[FwNetwork]) -> Value {
    let t = table_ref(table);
    let mut cmds = vec![json!({ "add": { "table": t } }), json!({ "delete": { "table": t } })];
    if nets.is_empty() {
        return batch(cmds);
    }
    let plan = plan(nets);
    cmds.extend(skeleton(table));
    cmds.extend(elements("add", table, &plan.bridges));
    cmds.extend(add_rules(table, &plan.groups));
    batch(cmds)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use super::*;

    fn nets() -> Vec<FwNetwork> {
        vec![
            FwNetwork {
                id: "n1".into(),
                bridge: "br-a".into(),
                subnets: vec!["10.200.1.0/24".parse().unwrap()],
                internal: false,
                masquerade: true,
                snat_ipv4: None,
                ports: vec![FwPort {
                    endpoint: "e1".into(),
                    proto: "tcp",
                    host_ip: None,
                    host_port: 8080,
                    container_ip: "10.200.1.2".parse().unwrap(),
                    container_port: 80,
                }],
            },
            FwNetwork {
                id: "n2".into(),
                bridge: "br-b".into(),
                subnets: vec!["10.200.2.0/24".parse().unwrap()],
                internal: true,
                masquerade: true,
                snat_ipv4: None,
                ports: vec![],
            },
        ]
    }

    /// A plain network for tests.
    pub(crate) fn net(id: &str, bridge: &str, subnet: &str) -> FwNetwork {
        FwNetwork {
            id: id.into(),
            bridge: bridge.into(),
            subnets: vec![subnet.parse().unwrap()],
            internal: false,
            masquerade: true,
            snat_ipv4: None,
            ports: vec![],
        }
    }

    /// The generated transaction, compared with `golden/*.json`. Set
    /// `BERTH_BLESS=1` to rewrite the golden files after a deliberate change.
    fn golden(name: &str, value: &Value) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/golden").join(name);
        let text = serde_json::to_string_pretty(value).unwrap() + "\n";
        if std::env::var_os("BERTH_BLESS").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(text, want, "nftables batch differs from {}", path.display());
    }

    #[test]
    fn two_networks_golden() {
        golden("two-networks.json", &ruleset("berth", &nets()));
    }

    #[test]
    fn no_network_deletes_the_table() {
        golden("empty.json", &ruleset("berth", &[]));
    }

    #[test]
    fn snat_and_host_ip_golden() {
        let mut n = nets();
        n.truncate(1);
        n[0].snat_ipv4 = Some("192.0.2.1".parse().unwrap());
        n[0].ports[0].host_ip = Some("127.0.0.1".parse().unwrap());
        n[0].ports.push(FwPort {
            endpoint: "e1".into(),
            proto: "udp",
            host_ip: Some("0.0.0.0".parse().unwrap()),
            host_port: 5353,
            container_ip: "10.200.1.3".parse().unwrap(),
            container_port: 53,
        });
        golden("snat-host-ip.json", &ruleset("berth", &n));
    }

    #[test]
    fn internal_networks_get_no_nat_and_no_ports() {
        let mut n = nets();
        let p = n[0].ports[0].clone();
        n[1].ports.push(p);
        let text = ruleset("berth", &n[1..]).to_string();
        assert!(!text.contains("masquerade") && !text.contains("dnat\":{"), "{text}");
    }

    #[test]
    fn no_rule_names_another_network() {
        let plan = plan(&nets());
        for g in &plan.groups {
            let text = serde_json::to_string(&g.rules).unwrap();
            let own = if g.comment.starts_with("berth network n1") { "br-b" } else { "br-a" };
            assert!(!text.contains(own), "{}: {text}", g.comment);
        }
        assert_eq!(plan.bridges, ["br-a", "br-b"]);
    }

    #[test]
    fn comments_are_short_and_distinct() {
        let long = "f".repeat(64);
        assert_eq!(tag(&long, 64), long);
        let (a, b) = (format!("{long}a"), format!("{long}b"));
        assert_ne!(tag(&a, 64), tag(&b, 64));
        assert_eq!(tag(&a, 64).len(), 64);
        let wide = "é".repeat(40);
        assert!(tag(&wide, 32).len() <= 32, "{}", tag(&wide, 32));
        let mut n = net(&a, "br-x", "10.1.0.0/24");
        n.ports = vec![FwPort {
            endpoint: "e".repeat(64),
            proto: "tcp",
            host_ip: None,
            host_port: 1,
            container_ip: "10.1.0.2".parse().unwrap(),
            container_port: 1,
        }];
        for g in plan(&[n]).groups {
            assert!(g.comment.len() <= 128, "{}", g.comment);
        }
    }
}
