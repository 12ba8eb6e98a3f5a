//! NW-07..NW-13: ports, deletes, firewall state, host/none, macvlan
//! parents, overlay (not implemented) and reachability.

use berth_plugin_api::network::*;
use serde_json::{json, Value};

use super::config::rule;
use super::{
    declines, host_links, link_exists, nft_ruleset, ping, require, require_interface, sandbox_links, short,
    Flavor, Net, BRIDGE_NAME, PORTMAP,
};
use crate::case::{check, describe_error, ok, CaseResult, Failure, Stop};
use crate::ctx::Ctx;

fn portmap(host_port: u16) -> Options {
    let mut o = Options::new();
    o.insert(
        PORTMAP.into(),
        json!([{ "Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": host_port, "HostPortEnd": 0 }]),
    );
    o
}

/// The host ports `endpoint_info` reports for container port 80/tcp;
/// `None` when it reports no port map at all.
fn reported(ctx: &Ctx, net: &Net, ep: &str) -> Result<Option<Vec<u16>>, Stop> {
    let info = ok(
        format!("endpoint info of {}", short(ep)),
        ctx.network().endpoint_info(EndpointInfoRequest::new(&net.id, ep)),
    )?;
    let Some(map) = info.get(PORTMAP) else { return Ok(None) };
    let ports = match map {
        Value::Array(items) => items
            .iter()
            .filter(|b| b["Port"] == 80 && b["Proto"] == 6)
            .filter_map(|b| b["HostPort"].as_u64())
            .map(|p| p as u16)
            .collect(),
        Value::Null => Vec::new(),
        other => {
            return Err(Failure::new(
                format!("endpoint info of {}", short(ep)),
                format!("{PORTMAP} as a list of bindings"),
                other.to_string(),
            )
            .into())
        }
    };
    Ok(Some(ports))
}

/// Publishes port 80/tcp of a new endpoint (address `.n`) on host port
/// `host_port` (0: any) the daemon's way: endpoint and join options, then
/// external connectivity. Answers the endpoint, its join and the host
/// ports the driver reports (`None`: it reports none, so publishes none).
fn publish(
    ctx: &mut Ctx,
    net: &Net,
    n: u8,
    host_port: u16,
) -> Result<(String, super::Joined, Option<Vec<u16>>), Stop> {
    let ep = ctx.net_id("ep");
    let skip = |e: &berth_plugin_api::DriverError| {
        Stop::Skip(format!("the driver does not publish ports: it refuses {PORTMAP} ({})", describe_error(e)))
    };
    match ctx.try_endpoint(net, &ep, n, "", portmap(host_port)) {
        Ok(_) => {}
        Err(e) if declines(&e) && host_port == 0 => return Err(skip(&e)),
        Err(e) => {
            return Err(Failure::new(
                format!("create endpoint {} publishing 80/tcp on host port {host_port}", short(&ep)),
                "success",
                describe_error(&e),
            )
            .with_kind(e.kind)
            .into())
        }
    }
    let key = ctx.sandbox()?;
    let j = ctx.join(net, &ep, n, &key, portmap(host_port))?;
    let mut req = ProgramExternalConnectivityRequest::new(&net.id, &ep);
    req.options = portmap(host_port);
    match ctx.network().program_external_connectivity(req) {
        Ok(()) => {}
        Err(e) if declines(&e) && host_port == 0 => return Err(skip(&e)),
        Err(e) => {
            return Err(Failure::new(
                format!(
                    "program external connectivity of endpoint {} (80/tcp on host port {host_port})",
                    short(&ep)
                ),
                "success (a port released by a leave is free at once)",
                describe_error(&e),
            )
            .with_kind(e.kind)
            .into())
        }
    }
    let ports = reported(ctx, net, &ep)?;
    Ok((ep, j, ports))
}

pub(super) fn nw07_ports(ctx: &mut Ctx) -> CaseResult {
    require_interface(ctx)?;
    let net = ctx.create_net(1, false, json!({}))?;
    let (ep, j, ports) = publish(ctx, &net, 2, 0)?;
    let Some(ports) = ports else {
        return Err(Stop::Skip(format!(
            "the driver does not publish ports: after external connectivity with {PORTMAP}, its endpoint info reports no {PORTMAP}"
        )));
    };
    let step = format!("host ports reported for 80/tcp of endpoint {}", short(&ep));
    check(
        ports.len() == 1 && ports[0] != 0,
        &step,
        "exactly one host port, chosen (not 0)",
        format!("{ports:?}"),
    )?;
    let port = ports[0];
    ok(
        format!("revoke external connectivity of endpoint {}", short(&ep)),
        ctx.network().revoke_external_connectivity(RevokeExternalConnectivityRequest::new(&net.id, &ep)),
    )?;
    ctx.leave(&j)?;
    let after = reported(ctx, &net, &ep)?.unwrap_or_default();
    check(
        after.is_empty(),
        format!("host ports reported for endpoint {} after leave", short(&ep)),
        "none (published ports are released on leave)",
        format!("{after:?}"),
    )?;
    let (ep2, _j2, ports2) = publish(ctx, &net, 3, port)?;
    check(
        ports2.as_deref() == Some(&[port][..]),
        format!(
            "host ports reported for 80/tcp of a new endpoint {} asking for host port {port}",
            short(&ep2)
        ),
        format!("[{port}] (the port released by the first endpoint's leave)"),
        format!("{ports2:?}"),
    )
}

pub(super) fn nw08_delete(ctx: &mut Ctx) -> CaseResult {
    ctx.flavor()?;
    let net = ctx.create_net(1, false, json!({}))?;
    let links = host_links();
    let (ep, _) = ctx.endpoint(&net, 2)?;
    let key = ctx.sandbox()?;
    let j = ctx.join(&net, &ep, 2, &key, Options::new())?;
    ctx.leave(&j)?;
    for i in 0..ctx.repeat() {
        ok(format!("delete endpoint {} (call {})", short(&ep), i + 1), ctx.delete_ep(&net.id, &ep))
            .map_err(|s| rule(s, "delete endpoint is idempotent"))?;
    }
    let never = ctx.net_id("never");
    for i in 0..ctx.repeat() {
        ok(
            format!("delete endpoint {} that was never created (call {})", short(&never), i + 1),
            ctx.delete_ep(&net.id, &never),
        )
        .map_err(|s| rule(s, "deleting an endpoint never created succeeds"))?;
    }
    let left: Vec<String> = host_links().difference(&links).cloned().collect();
    check(
        left.is_empty(),
        "links on the host after the endpoint was deleted",
        "none of the endpoint's (no veth end remains)",
        left.join(", "),
    )?;
    let inside: Vec<String> =
        sandbox_links(&key)?.into_iter().map(|l| l.name).filter(|n| n != "lo").collect();
    check(
        inside.is_empty(),
        "interfaces left in the sandbox after leave and delete",
        "only lo",
        inside.join(", "),
    )?;
    ok("delete the network", ctx.delete_net(&net.id))?;
    Ok(())
}

pub(super) fn nw09_firewall(ctx: &mut Ctx) -> CaseResult {
    require(
        ctx,
        &[Flavor::Bridge],
        "applies to bridge-like drivers, which program a firewall for their bridges",
    )?;
    let before = nft_ruleset();
    let mut nets = Vec::new();
    for k in 1..=3 {
        let bridge = ctx.link_name('n');
        let net = ctx.create_net(k, false, json!({ BRIDGE_NAME: bridge }))?;
        let _ = ctx.endpoint(&net, 2)?;
        nets.push((net, bridge));
    }
    let live = nft_ruleset();
    let tracks = nets.iter().any(|(_, b)| live.contains(b.as_str()));
    let (gone, gone_bridge) = nets.remove(1);
    ok(format!("delete network {}", short(&gone.id)), ctx.delete_net(&gone.id))?;
    if tracks {
        let now = nft_ruleset();
        check(
            !now.contains(gone_bridge.as_str()),
            format!("nftables ruleset after network {} (bridge {gone_bridge}) was deleted", short(&gone.id)),
            format!("no rule naming {gone_bridge}"),
            "rules naming it remain",
        )?;
        for (n, b) in &nets {
            check(
                now.contains(b.as_str()),
                format!("nftables ruleset while network {} (bridge {b}) lives", short(&n.id)),
                format!("its rules (naming {b}) still there"),
                "gone",
            )?;
        }
    }
    for (n, _) in nets {
        ok(format!("delete network {}", short(&n.id)), ctx.delete_net(&n.id))?;
    }
    let after = nft_ruleset();
    let extra: Vec<&str> = after.lines().filter(|l| !before.lines().any(|b| b == *l)).collect();
    check(
        after == before,
        "nftables ruleset after every network was deleted",
        "exactly the ruleset before the first create (no rule, chain or table left)",
        format!("{} line(s) differ, e.g. {:?}", extra.len().max(1), extra.iter().take(5).collect::<Vec<_>>()),
    )
}

pub(super) fn nw10_host_none(ctx: &mut Ctx) -> CaseResult {
    require(
        ctx,
        &[Flavor::Addressless],
        "applies to host and none drivers, which take no addresses and give no interface",
    )?;
    let net = ctx.create_net(1, false, json!({}))?;
    let links = host_links();
    let mut joins = Vec::new();
    for host in [false, true] {
        let (ep, _) = ctx.endpoint(&net, 0)?;
        let key = if host { ctx.host_sandbox()? } else { ctx.sandbox()? };
        let j = ctx.join(&net, &ep, 0, &key, Options::new())?;
        let what = if host { "the host namespace's key (host)" } else { "a sandbox of its own (none)" };
        let step = format!("join answer for endpoint {} into {what}", short(&ep));
        let iface = j.resp.interface_name.as_ref().map(|i| i.src_name.clone()).unwrap_or_default();
        check(iface.is_empty(), &step, "no interface", format!("interface {iface:?}"))?;
        check(
            j.resp.gateway.is_empty() && j.resp.gateway_ipv6.is_empty(),
            &step,
            "no gateway",
            format!("{:?} / {:?}", j.resp.gateway, j.resp.gateway_ipv6),
        )?;
        if !host {
            let inside: Vec<String> = sandbox_links(&key)?.into_iter().map(|l| l.name).collect();
            check(inside == ["lo"], "interfaces in the sandbox", "only lo", inside.join(", "))?;
        }
        joins.push((ep, j));
    }
    let made: Vec<String> = host_links().symmetric_difference(&links).cloned().collect();
    check(
        made.is_empty(),
        "links on the host after two joins",
        "no new links (and none taken)",
        made.join(", "),
    )?;
    for (ep, j) in joins {
        ctx.leave(&j)?;
        ok(format!("delete endpoint {}", short(&ep)), ctx.delete_ep(&net.id, &ep))?;
    }
    ok("delete the network", ctx.delete_net(&net.id))?;
    Ok(())
}

pub(super) fn nw11_macvlan(ctx: &mut Ctx) -> CaseResult {
    require(ctx, &[Flavor::Parent], "applies to macvlan-like drivers, which take a parent link")?;
    let parent = ctx.parent()?;
    let a = ctx.create_net(1, false, json!({ "parent": parent }))?;
    let b = ctx.create_net(2, false, json!({ "parent": parent }))?;
    let (ep, _) = ctx.endpoint(&a, 2)?;
    let key = ctx.sandbox()?;
    let j = ctx.join(&a, &ep, 2, &key, Options::new())?;
    ctx.leave(&j)?;
    ok("delete the endpoint", ctx.delete_ep(&a.id, &ep))?;
    for n in [&a, &b] {
        ok(
            format!("delete network {} on the operator's parent {parent}", short(&n.id)),
            ctx.delete_net(&n.id),
        )?;
        check(
            link_exists(&parent),
            format!("parent {parent} after network {} was deleted", short(&n.id)),
            "still there (an operator's parent is never deleted)",
            "gone",
        )?;
    }
    let vlan = format!("{parent}.7");
    let flavor = ctx.flavor()?;
    let id = ctx.net_id("vlan");
    let req = ctx.net_req(flavor, &id, 3, false, json!({ "parent": vlan }))?;
    match ctx.try_create(req) {
        Ok(()) => {}
        Err(e) if declines(&e) => {
            return Err(Stop::Skip(format!(
                "the operator's-parent half passed; the parent.vlan half cannot run here: the driver declined parent {vlan} ({})",
                describe_error(&e)
            )))
        }
        Err(e) => {
            return Err(Failure::new(format!("create a network on parent {vlan}"), "success", describe_error(&e))
                .with_kind(e.kind)
                .into())
        }
    }
    check(
        link_exists(&vlan),
        format!("link {vlan} after a network on it was created"),
        "created by the driver",
        "missing",
    )?;
    let d = ctx.create_net(4, false, json!({ "parent": vlan }))?;
    ok("delete the first network on the sub-interface", ctx.delete_net(&id))?;
    check(
        link_exists(&vlan),
        format!("link {vlan} after the first of its two networks was deleted"),
        "still there (shared by the other network)",
        "gone",
    )?;
    ok("delete the last network on the sub-interface", ctx.delete_net(&d.id))?;
    check(
        !link_exists(&vlan),
        format!("link {vlan} after its last network was deleted"),
        "gone (the driver made it, so it removes it with its last network)",
        "still there",
    )?;
    check(link_exists(&parent), format!("parent {parent}"), "still there", "gone")
}

pub(super) fn nw12_overlay(_ctx: &mut Ctx) -> CaseResult {
    Err(Stop::Skip(
        "not implemented: NW-12 is for overlay drivers (two hosts), and the overlay driver is not built yet"
            .into(),
    ))
}

/// Pings `ip` from `key`, a few times (a fresh link may need a moment).
fn reaches(key: &std::path::Path, ip: &str) -> bool {
    (0..3).any(|_| ping(key, ip))
}

pub(super) fn nw13_reach(ctx: &mut Ctx) -> CaseResult {
    require_interface(ctx)?;
    let a = ctx.create_net(1, false, json!({}))?;
    let b = ctx.create_net(2, false, json!({}))?;
    let mut keys = Vec::new();
    for (net, n) in [(&a, 2), (&a, 3), (&b, 2)] {
        let (ep, _) = ctx.endpoint(net, n)?;
        let key = ctx.sandbox()?;
        ctx.join(net, &ep, n, &key, Options::new())?;
        keys.push(key);
    }
    let bare = |s: String| s.split('/').next().unwrap_or_default().to_string();
    let (a2, a3, b2) = (bare(a.addr(2)), bare(a.addr(3)), bare(b.addr(2)));
    for (from, key, to) in [(&a2, &keys[0], &a3), (&a3, &keys[1], &a2)] {
        check(
            reaches(key, to),
            format!("ping -c1 -W2 {to} from the sandbox of {from} (same network)"),
            "an answer (two endpoints on one network reach each other)",
            "no answer",
        )?;
    }
    for (from, key, to) in [(&b2, &keys[2], &a2), (&a2, &keys[0], &b2)] {
        check(
            !ping(key, to),
            format!("ping -c1 -W2 {to} from the sandbox of {from} (another network)"),
            "no answer (networks are isolated from each other)",
            "an answer",
        )?;
    }
    Ok(())
}
