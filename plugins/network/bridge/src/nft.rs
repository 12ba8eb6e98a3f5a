//! The firewall: one nftables table (`inet berth` by default) that holds
//! everything the bridge driver programs, generated from the live networks
//! and replaced whole in one atomic transaction on every change, deleted
//! when the last network goes (NW-09).
//!
//! The table is fed to `nft -j -f <file>` as JSON (libnftables' JSON
//! schema); the batch is `add table` + `delete table` + `add table` and the
//! chains and rules, so it always leaves exactly the generated table,
//! whatever was there before, and never touches another table.
//!
//! ```text
//! table inet berth
//!   chain forward     filter, hook forward, priority 0, policy accept
//!     internal:   iifname B oifname != B drop; oifname B iifname != B drop
//!     isolation:  iifname B oifname { other berth bridges } drop
//!     protection: oifname B iifname != B ct state new ct status ! dnat drop
//!   chain prerouting  nat, hook prerouting, priority -100   (published ports)
//!   chain output      nat, hook output, priority -100       (the host's own)
//!     [ip daddr H | fib daddr type local] tcp dport HP dnat ip to C:P
//!   chain postrouting nat, hook postrouting, priority 100
//!     hairpin:    oifname B ip saddr S ct status dnat masquerade
//!     loopback:   oifname B ip saddr 127.0.0.0/8 masquerade
//!     masquerade: ip saddr S oifname != B masquerade   (or snat to host_ipv4)
//! ```
//!
//! Every chain has policy accept and only drops what berth must, so the
//! table coexists with the host's own firewall. Inter-container traffic on
//! one bridge is bridged, not routed (no `br_netfilter` is assumed); ICC
//! off is done with bridge port isolation instead (see `driver.rs`).

use std::net::IpAddr;
use std::path::Path;

use berth_plugin_api::util::command::{Cmd, Runner};
use berth_plugin_api::{DriverError, DriverResult};
use ipnet::IpNet;
use serde_json::{json, Value};

/// What the firewall needs to know of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwNetwork {
    /// The network id (a rule comment).
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

fn comment(net: &FwNetwork) -> String {
    let short: String = net.id.chars().take(64).collect();
    format!("berth network {short}")
}

/// The rules of every chain, in order, for `nets`.
fn rules(nets: &[FwNetwork]) -> Vec<(&'static str, String, Vec<Value>)> {
    let mut out = Vec::new();
    for n in nets {
        let c = comment(n);
        let b = || json!(n.bridge);
        // forward
        if n.internal {
            out.push((
                "forward",
                c.clone(),
                vec![m("==", meta("iifname"), b()), m("!=", meta("oifname"), b()), json!({"drop": null})],
            ));
            out.push((
                "forward",
                c.clone(),
                vec![m("==", meta("oifname"), b()), m("!=", meta("iifname"), b()), json!({"drop": null})],
            ));
        } else {
            let others: Vec<&str> =
                nets.iter().filter(|o| o.bridge != n.bridge).map(|o| o.bridge.as_str()).collect();
            if !others.is_empty() {
                out.push((
                    "forward",
                    c.clone(),
                    vec![
                        m("==", meta("iifname"), b()),
                        m("==", meta("oifname"), json!({ "set": others })),
                        json!({"drop": null}),
                    ],
                ));
            }
            out.push((
                "forward",
                c.clone(),
                vec![
                    m("==", meta("oifname"), b()),
                    m("!=", meta("iifname"), b()),
                    m("in", json!({"ct": {"key": "state"}}), json!("new")),
                    m("!", json!({"ct": {"key": "status"}}), json!("dnat")),
                    json!({"drop": null}),
                ],
            ));
        }
        // published ports (never on internal networks)
        if !n.internal {
            for p in &n.ports {
                for chain in ["prerouting", "output"] {
                    let family = ip_proto(&p.container_ip);
                    let mut e =
                        vec![m("==", meta("nfproto"), json!(if family == "ip" { "ipv4" } else { "ipv6" }))];
                    match p.host_ip.filter(|h| !h.is_unspecified()) {
                        Some(h) => e.push(m(
                            "==",
                            json!({ "payload": { "protocol": ip_proto(&h), "field": "daddr" } }),
                            json!(h.to_string()),
                        )),
                        None => e.push(m(
                            "==",
                            json!({ "fib": { "result": "type", "flags": ["daddr"] } }),
                            json!("local"),
                        )),
                    }
                    e.push(m(
                        "==",
                        json!({ "payload": { "protocol": p.proto, "field": "dport" } }),
                        json!(p.host_port),
                    ));
                    e.push(json!({ "dnat": { "family": family, "addr": p.container_ip.to_string(), "port": p.container_port } }));
                    out.push((chain, c.clone(), e));
                }
            }
        }
        // postrouting
        if !n.internal {
            for s in &n.subnets {
                out.push((
                    "postrouting",
                    c.clone(),
                    vec![
                        m("==", meta("oifname"), b()),
                        saddr(s),
                        m("in", json!({"ct": {"key": "status"}}), json!("dnat")),
                        json!({"masquerade": null}),
                    ],
                ));
            }
            if !n.ports.is_empty() {
                let lo: IpNet = "127.0.0.0/8".parse().expect("constant");
                out.push((
                    "postrouting",
                    c.clone(),
                    vec![m("==", meta("oifname"), b()), saddr(&lo), json!({"masquerade": null})],
                ));
            }
            if n.masquerade {
                for s in &n.subnets {
                    let action = match (s, n.snat_ipv4) {
                        (IpNet::V4(_), Some(a)) => {
                            json!({ "snat": { "family": "ip", "addr": a.to_string() } })
                        }
                        _ => json!({"masquerade": null}),
                    };
                    out.push((
                        "postrouting",
                        c.clone(),
                        vec![saddr(s), m("!=", meta("oifname"), b()), action],
                    ));
                }
            }
        }
    }
    out
}

/// The transaction that makes `table` hold exactly the rules for `nets`
/// (`{"nftables": [...]}`); with no networks, the one that deletes it.
pub fn ruleset(table: &str, nets: &[FwNetwork]) -> Value {
    let t = json!({ "family": FAMILY, "name": table });
    let mut cmds = vec![json!({ "add": { "table": t } }), json!({ "delete": { "table": t } })];
    if nets.is_empty() {
        return json!({ "nftables": cmds });
    }
    cmds.push(json!({ "add": { "table": t } }));
    for (name, kind, hook, prio) in [
        ("forward", "filter", "forward", 0),
        ("prerouting", "nat", "prerouting", -100),
        ("output", "nat", "output", -100),
        ("postrouting", "nat", "postrouting", 100),
    ] {
        cmds.push(json!({ "add": { "chain": {
            "family": FAMILY, "table": table, "name": name,
            "type": kind, "hook": hook, "prio": prio, "policy": "accept"
        } } }));
    }
    for (chain, comment, expr) in rules(nets) {
        cmds.push(json!({ "add": { "rule": {
            "family": FAMILY, "table": table, "chain": chain, "comment": comment, "expr": expr
        } } }));
    }
    json!({ "nftables": cmds })
}

/// Applies a transaction from [`ruleset`]: writes it to `file` and runs
/// `nft -j -f file`. A failure names the command and what nft said.
pub fn apply(runner: &dyn Runner, file: &Path, batch: &Value) -> DriverResult<()> {
    let text = serde_json::to_vec(batch)
        .map_err(|e| DriverError::internal(format!("encode nftables batch: {e}")))?;
    std::fs::write(file, text)
        .map_err(|e| DriverError::io(format_args!("write nftables batch {}", file.display()), &e))?;
    let cmd = Cmd::new(["nft".to_string(), "-j".into(), "-f".into(), file.display().to_string()]);
    let out = runner.run(&cmd).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DriverError::unavailable(format!(
            "`{cmd}`: {e}; install nftables (the bridge driver programs NAT and isolation with nft)"
        )),
        _ => DriverError::io(format_args!("`{cmd}`"), &e),
    })?;
    let _ = std::fs::remove_file(file);
    if out.success() {
        Ok(())
    } else {
        let msg = format!("`{cmd}` failed: {}", out.stderr.trim());
        Err(if out.stderr.contains("Operation not permitted") {
            DriverError::permission_denied(msg)
        } else {
            DriverError::internal(msg)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::util::command::script::Script;

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
    fn apply_runs_nft_and_reports_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("batch.json");
        let f = file.to_str().unwrap();
        let script = Script::new();
        script.ok(&["nft", "-j", "-f", f], "");
        script.fail(&["nft", "-j", "-f", f], 1, "Error: Could not process rule: Operation not permitted\n");
        apply(&*script, &file, &ruleset("t", &[])).unwrap();
        let e = apply(&*script, &file, &ruleset("t", &[])).unwrap_err();
        assert_eq!(e.kind, berth_plugin_api::ErrorKind::PermissionDenied);
        assert!(e.message.contains("nft -j -f"), "{}", e.message);
        script.assert_done();
    }
}
