//! NW-01..NW-06: network and endpoint configuration.

use std::sync::{Arc, Barrier};

use berth_plugin_api::network::*;
use berth_plugin_api::{DriverError, ErrorKind};
use serde_json::json;

use super::{
    declines, gateway_of, host_links, pool, require, require_interface, run_cmd, sandbox_links, short,
    Flavor, Net, BRIDGE_NAME, ENABLE_IPV6, GENERIC, MTU,
};
use crate::case::{check, describe_error, err_kind, ok, CaseResult, Failure, Stop};
use crate::ctx::Ctx;

/// How many creates race in NW-01.
const RACERS: usize = 8;

pub(super) fn nw01_symmetric(ctx: &mut Ctx) -> CaseResult {
    let flavor = ctx.flavor()?;
    let d = ctx.network();
    let before = host_links();
    let id = ctx.net_id("net");
    let req = ctx.net_req(flavor, &id, 1, false, json!({}))?;
    ok(format!("create network {}", short(&id)), ctx.try_create(req.clone()))?;
    let again = d.create_network(req.clone());
    match again {
        Err(e) if matches!(e.kind, ErrorKind::AlreadyExists | ErrorKind::Conflict) => {}
        other => {
            return Err(Failure::new(
                format!("create network {} again (same id, same config)", short(&id)),
                "error kind already_exists (or conflict): a network id names one network",
                match other {
                    Ok(()) => "success".into(),
                    Err(e) => describe_error(&e),
                },
            )
            .into())
        }
    }
    if flavor == Flavor::Bridge {
        // Another network naming the same bridge conflicts.
        let bridge = req.options[GENERIC][BRIDGE_NAME].as_str().unwrap_or_default().to_string();
        let other = ctx.net_id("net");
        let dup = ctx.net_req(flavor, &other, 2, false, json!({ BRIDGE_NAME: bridge }))?;
        let r = ctx.try_create(dup);
        err_kind(
            format!("create network {} on bridge {bridge}, which network {} uses", short(&other), short(&id)),
            ErrorKind::Conflict,
            r,
        )
        .map_err(|s| rule(s, "two networks never share a bridge: the second create is Conflict"))?;
    }
    for i in 0..ctx.repeat() {
        ok(format!("delete network {} (call {})", short(&id), i + 1), ctx.delete_net(&id))?;
    }
    let after: Vec<String> = host_links().difference(&before).cloned().collect();
    check(
        after.is_empty(),
        format!("links on the host after network {} was deleted", short(&id)),
        "none of the links its create made (create and delete are symmetric)",
        format!("left: {}", after.join(", ")),
    )?;
    ok(format!("create network {} again after delete", short(&id)), ctx.try_create(req))?;
    ok(format!("delete network {} again", short(&id)), ctx.delete_net(&id))?;

    // Many creates at once on one subnet (or, for addressless drivers, of
    // one network each): exactly one wins.
    if !flavor.takes_addresses() {
        return Ok(());
    }
    let mut reqs = Vec::new();
    for _ in 0..RACERS {
        let id = ctx.net_id("race");
        reqs.push(ctx.net_req(flavor, &id, 3, false, json!({}))?);
    }
    let gate = Arc::new(Barrier::new(RACERS));
    let handles: Vec<_> = reqs
        .iter()
        .cloned()
        .map(|r| {
            let (d, gate) = (Arc::clone(&d), Arc::clone(&gate));
            std::thread::spawn(move || {
                gate.wait();
                d.create_network(r)
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| Err(DriverError::internal("create_network panicked"))))
        .collect();
    let mut won = Vec::new();
    let mut lost = Vec::new();
    for (r, req) in results.iter().zip(&reqs) {
        match r {
            Ok(()) => {
                won.push(short(&req.network_id).to_string());
                ctx.adopt_net(&req.network_id);
            }
            Err(e) => lost.push(describe_error(e)),
        }
    }
    check(
        won.len() == 1,
        format!("{RACERS} parallel creates of networks on subnet {}", ctx.subnet(3)),
        "exactly one to succeed (the others: conflict, the subnet is taken)",
        format!("{} succeeded ({}); errors: {}", won.len(), won.join(", "), lost.join("; ")),
    )
}

pub(super) fn nw02_adopt(ctx: &mut Ctx) -> CaseResult {
    require(
        ctx,
        &[Flavor::Bridge],
        "applies to bridge-like drivers, which take com.docker.network.bridge.name",
    )?;
    let subnet = ctx.subnet(1);
    let gw = format!("{}/24", gateway_of(&subnet));
    let bridge = ctx.operator_bridge(&gw)?;
    let id = ctx.net_id("net");
    let mut req = CreateNetworkRequest::new(&id);
    req.options.insert(GENERIC.into(), json!({ BRIDGE_NAME: bridge }));
    req.ipv4_data = vec![pool(&subnet, "")];
    ok(
        format!("create network {} on the operator's bridge {bridge} ({gw})", short(&id)),
        ctx.try_create(req),
    )?;
    let net = Net { id: id.clone(), v4: Some(subnet.clone()), v6: None };
    let has_addr = |when: &str| -> CaseResult {
        let shown = run_cmd(when, &["ip", "-o", "addr", "show", "dev", &bridge])?;
        check(
            shown.contains(&format!(" {gw} ")),
            format!("addresses of bridge {bridge} {when}"),
            format!("{gw}, which the operator gave it, kept"),
            shown.trim(),
        )
    };
    has_addr("after network create")?;
    let (ep, _) = ctx.endpoint(&net, 2)?;
    let key = ctx.sandbox()?;
    let j = ctx.join(&net, &ep, 2, &key, Options::new())?;
    ctx.leave(&j)?;
    ok("delete the endpoint", ctx.delete_ep(&id, &ep))?;
    ok(format!("delete network {}", short(&id)), ctx.delete_net(&id))?;
    check(
        super::link_exists(&bridge),
        format!("bridge {bridge} after its network was deleted"),
        "still there (a bridge the operator made is never deleted)",
        "gone",
    )?;
    has_addr("after network delete")
}

pub(super) fn nw03_addresses(ctx: &mut Ctx) -> CaseResult {
    let flavor = require(
        ctx,
        &[Flavor::Bridge, Flavor::Parent, Flavor::Plain],
        "applies to drivers that take addresses",
    )?;
    // v4 and v6.
    let id = ctx.net_id("net");
    let req = ctx.net_req(flavor, &id, 1, true, json!({}))?;
    let dual = match ctx.try_create(req) {
        Ok(()) => Some(Net { id, v4: Some(ctx.subnet(1)), v6: Some(ctx.subnet6(1)) }),
        Err(e) if declines(&e) && e.message.to_lowercase().contains("ipv6") => None,
        Err(e) => {
            return Err(Failure::new(
                "create a network with an IPv4 and an IPv6 pool (com.docker.network.enable_ipv6)",
                "success, or unsupported/invalid_argument naming IPv6",
                describe_error(&e),
            )
            .with_kind(e.kind)
            .into())
        }
    };
    let v4only = ctx.create_net(2, false, json!({}))?;
    for net in dual.iter().chain([&v4only]) {
        let (ep, resp) = ctx.endpoint(net, 5)?;
        if let Some(i) = &resp.interface {
            for (field, answered, given) in
                [("Address", &i.address, net.addr(5)), ("AddressIPv6", &i.address_ipv6, net.addr6(5))]
            {
                check(
                    answered.is_empty() || *answered == given,
                    format!("create endpoint {} with {field} {given:?}", short(&ep)),
                    "the interface answer leaves the address IPAM gave alone (empty, or the same)",
                    format!("{field} {answered:?}"),
                )?;
            }
        }
        let key = ctx.sandbox()?;
        let j = ctx.join(net, &ep, 5, &key, Options::new())?;
        let step = format!(
            "join answer for endpoint {} of network on {}",
            short(&ep),
            net.v4.as_deref().unwrap_or("")
        );
        let gw4 = gateway_of(net.v4.as_deref().unwrap_or_default());
        check(
            j.resp.gateway == gw4,
            &step,
            format!("Gateway {gw4:?} (the pool's gateway)"),
            format!("{:?}", j.resp.gateway),
        )?;
        match &net.v6 {
            Some(s6) => {
                let gw6 = gateway_of(s6);
                check(
                    j.resp.gateway_ipv6 == gw6,
                    &step,
                    format!("GatewayIPv6 {gw6:?} (the IPv6 pool's gateway)"),
                    format!("{:?}", j.resp.gateway_ipv6),
                )?;
            }
            None => {
                check(
                    j.resp.gateway_ipv6.is_empty(),
                    &step,
                    "no GatewayIPv6 on a network without IPv6",
                    format!("{:?}", j.resp.gateway_ipv6),
                )?;
                let shown = sandbox_addrs(&key, 6, &j.name)?;
                check(
                    shown.trim().is_empty(),
                    format!("IPv6 addresses of {} in the sandbox of a network without IPv6", j.name),
                    "none at all (not even link-local)",
                    shown.trim(),
                )?;
            }
        }
        let shown = sandbox_addrs(&key, 4, &j.name)?;
        check(
            shown.contains(&format!(" {} ", net.addr(5))),
            format!("IPv4 address of {} in the sandbox", j.name),
            format!("{} (in the subnet {})", net.addr(5), net.v4.as_deref().unwrap_or("")),
            shown.trim(),
        )?;
        ctx.leave(&j)?;
    }
    if dual.is_none() {
        return Err(Stop::Skip(
            "IPv4 checks passed; the driver declines IPv6 networks, so the IPv6 half cannot run".into(),
        ));
    }
    Ok(())
}

pub(super) fn nw04_mtu(ctx: &mut Ctx) -> CaseResult {
    let flavor = require_interface(ctx)?;
    let net = ctx.create_net(1, false, json!({ MTU: "9000" }))?;
    let (ep, _) = ctx.endpoint(&net, 2)?;
    let key = ctx.sandbox()?;
    let j = ctx.join(&net, &ep, 2, &key, Options::new())?;
    let links = sandbox_links(&key)?;
    let link = links.iter().find(|l| l.name == j.name);
    check(
        link.is_some_and(|l| l.mtu == 9000),
        format!("MTU of {} in the sandbox of a network with {MTU}=9000", j.name),
        "9000 (the interface the driver made inherits the network's MTU)",
        link.map_or("no such interface".into(), |l| l.mtu.to_string()),
    )?;
    ctx.leave(&j)?;
    for bad in ["70000", "67"] {
        let id = ctx.net_id("bad");
        let req = ctx.net_req(flavor, &id, 2, false, json!({ MTU: bad }))?;
        let r = ctx.try_create(req);
        let e = err_kind(format!("create a network with {MTU}={bad}"), ErrorKind::InvalidArgument, r)
            .map_err(|s| rule(s, "an MTU outside 68..=65535 (or the parent's) is refused at create"))?;
        check(
            e.message.to_lowercase().contains("mtu"),
            format!("message refusing {MTU}={bad}"),
            "a message naming the MTU",
            &e.message,
        )?;
    }
    Ok(())
}

/// Whether `mac` is 6 bytes, locally administered and unicast.
fn good_mac(mac: &str) -> bool {
    let bytes: Vec<Option<u8>> = mac.split(':').map(|b| u8::from_str_radix(b, 16).ok()).collect();
    bytes.len() == 6
        && bytes.iter().all(Option::is_some)
        && bytes[0].is_some_and(|b| b & 0x02 != 0 && b & 0x01 == 0)
}

pub(super) fn nw05_mac(ctx: &mut Ctx) -> CaseResult {
    require_interface(ctx)?;
    let net = ctx.create_net(1, false, json!({}))?;
    // Generated.
    let (ep, resp) = ctx.endpoint(&net, 2)?;
    let answered = resp.interface.map(|i| i.mac_address).unwrap_or_default();
    if !answered.is_empty() {
        check(
            good_mac(&answered),
            format!("MAC answered by create endpoint {}", short(&ep)),
            "6 bytes, locally administered (0x02 set), unicast (0x01 clear)",
            &answered,
        )?;
    }
    let key = ctx.sandbox()?;
    let j = ctx.join(&net, &ep, 2, &key, Options::new())?;
    let links = sandbox_links(&key)?;
    let got = links.iter().find(|l| l.name == j.name).map(|l| l.mac.clone()).unwrap_or_default();
    check(
        good_mac(&got),
        format!("MAC of {} in the sandbox (generated by the driver)", j.name),
        "6 bytes, locally administered (0x02 set), unicast (0x01 clear)",
        &got,
    )?;
    check(
        answered.is_empty() || answered.eq_ignore_ascii_case(&got),
        format!("MAC of {} in the sandbox", j.name),
        format!("{answered} (what create endpoint answered)"),
        &got,
    )?;
    ctx.leave(&j)?;
    // Requested.
    let want = format!("02:5a:{:02x}:{:02x}:00:07", std::process::id() % 256, ctx.id().len());
    let ep2 = ctx.net_id("ep");
    let resp = ok(
        format!("create endpoint with MAC {want}"),
        ctx.try_endpoint(&net, &ep2, 3, &want, Options::new()),
    )?;
    if let Some(m) = resp.interface.map(|i| i.mac_address).filter(|m| !m.is_empty()) {
        check(
            m.eq_ignore_ascii_case(&want),
            format!("MAC answered by create endpoint with MAC {want}"),
            "none, or the requested one (a driver fills only what was left empty)",
            m,
        )?;
    }
    let key2 = ctx.sandbox()?;
    let j2 = ctx.join(&net, &ep2, 3, &key2, Options::new())?;
    let links = sandbox_links(&key2)?;
    let got = links.iter().find(|l| l.name == j2.name).map(|l| l.mac.clone()).unwrap_or_default();
    check(
        got.eq_ignore_ascii_case(&want),
        format!("MAC of {} in the sandbox", j2.name),
        format!("{want} (requested)"),
        got,
    )?;
    ctx.leave(&j2)
}

pub(super) fn nw06_bad(ctx: &mut Ctx) -> CaseResult {
    let flavor = require(
        ctx,
        &[Flavor::Bridge, Flavor::Parent, Flavor::Plain],
        "applies to drivers that take addresses",
    )?;
    let sub = ctx.subnet(1);
    let outside = gateway_of(&ctx.subnet(2));
    let bad: [(&str, Vec<IpamData>, Vec<IpamData>); 4] = [
        ("a gateway outside its subnet", vec![pool(&sub, &format!("{outside}/24"))], vec![]),
        ("an IPv6 pool overlapping link-local fe80::/10", vec![pool(&sub, "")], vec![pool("fe80::/64", "")]),
        ("an IPv6 pool containing link-local fe80::/10", vec![pool(&sub, "")], vec![pool("fe80::/9", "")]),
        ("a multicast IPv4 pool", vec![pool("239.12.0.0/24", "")], vec![]),
    ];
    let mut links_before = host_links();
    for (what, v4, v6) in bad {
        let id = ctx.net_id("bad");
        let mut req = ctx.net_req(flavor, &id, 1, false, json!({}))?;
        if !v6.is_empty() {
            req.options.insert(ENABLE_IPV6.into(), json!(true));
        }
        req.ipv4_data = v4;
        req.ipv6_data = v6;
        let r = ctx.try_create(req);
        err_kind(format!("create a network with {what}"), ErrorKind::InvalidArgument, r).map_err(|s| {
            rule(s, "a bad config is refused at create, as InvalidArgument, and makes nothing")
        })?;
        let now = host_links();
        let made: Vec<String> = now.difference(&links_before).cloned().collect();
        check(
            made.is_empty(),
            format!("links after the refused create ({what})"),
            "none made",
            made.join(", "),
        )?;
        links_before = now;
    }
    // Nothing half-registered: the good config still works.
    let net = ctx.create_net(1, false, json!({}))?;
    ok("delete the good network", ctx.delete_net(&net.id))?;
    Ok(())
}

/// Adds the rule a driver broke to what the failure expected.
pub(super) fn rule(stop: Stop, rule: &str) -> Stop {
    match stop {
        Stop::Fail(mut f) => {
            f.expected = format!("{} ({rule})", f.expected);
            Stop::Fail(f)
        }
        s => s,
    }
}

impl Ctx {
    /// Records network `id`, made by a direct driver call, for teardown.
    pub fn adopt_net(&mut self, id: &str) {
        let slot = self.network.as_mut().expect("a network case");
        if !slot.networks.iter().any(|n| n == id) {
            slot.networks.push(id.to_string());
        }
    }
}

/// `ip -<family> -o addr show dev <dev>` inside the sandbox at `key`.
fn sandbox_addrs(key: &std::path::Path, family: u8, dev: &str) -> Result<String, Stop> {
    run_cmd(
        &format!("list IPv{family} addresses in the sandbox"),
        &[
            "nsenter",
            &format!("--net={}", key.display()),
            "ip",
            &format!("-{family}"),
            "-o",
            "addr",
            "show",
            "dev",
            dev,
        ],
    )
}
