//! IP-04..IP-07: how many addresses a pool yields, exhaustion, the reuse
//! policy, and specific addresses.

use std::collections::BTreeSet;
use std::net::IpAddr;

use berth_plugin_api::ipam::*;
use berth_plugin_api::{ErrorKind, IpamDriver};

use super::{
    allowed, any, at, bare, check_answer, drain, duplicates, gateway, not_null, pool_req, refused, release,
    release_pool, request, spaces, Arena, Cidr, EXHAUSTED, IN_USE, OUT_OF_RANGE, SERIAL_OPTION,
};
use crate::case::{check, ok, CaseResult, Failure, Stop};
use crate::ctx::Ctx;

/// Drains pool `id` (`pool`, or its sub-pool `range`) and checks the
/// answers: exactly `want` distinct addresses of `range`, none of `never`,
/// then ResourceExhausted. Answers the addresses in the order handed out.
fn yields(
    d: &dyn IpamDriver,
    id: &str,
    what: &str,
    pool: &Cidr,
    range: &Cidr,
    want: usize,
    never: &[IpAddr],
) -> Result<Vec<IpAddr>, Stop> {
    let (got, refusal) = drain(d, id, want + 8);
    let mut out = Vec::new();
    for (i, a) in got.iter().enumerate() {
        let ip = check_answer(&format!("{what}: address #{}", i + 1), a, pool)?;
        check(
            range.contains(ip) && !never.contains(&ip),
            format!("{what}: address #{} ({a})", i + 1),
            format!(
                "an address of {range}{}",
                if never.is_empty() {
                    String::new()
                } else {
                    format!(
                        " other than {}",
                        never.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
                    )
                }
            ),
            a,
        )?;
        out.push(ip);
    }
    let dups = duplicates(&got);
    check(
        dups.is_empty(),
        format!("{what}: the addresses handed out"),
        "each address once",
        dups.join(", "),
    )?;
    check(
        got.len() == want,
        format!("{what}: addresses handed out before the pool ran out"),
        want,
        format!("{} ({})", got.len(), got.iter().map(|a| bare(a)).collect::<Vec<_>>().join(" ")),
    )?;
    match refusal {
        Some(e) if e.kind == ErrorKind::ResourceExhausted => Ok(out),
        Some(e) => Err(Failure::new(
            format!("{what}: any address once all {want} are taken"),
            format!("error kind {} ({EXHAUSTED})", ErrorKind::ResourceExhausted),
            crate::case::describe_error(&e),
        )
        .with_kind(e.kind)
        .into()),
        None => Err(Failure::new(
            format!("{what}: any address once all {want} are taken"),
            "ResourceExhausted",
            "more addresses",
        )
        .into()),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("the suite's own addresses parse")
}

pub(super) fn ip04_counts(ctx: &mut Ctx) -> CaseResult {
    not_null(ctx)?;
    let s = spaces(ctx)?;
    let a = Arena::of(ctx);
    let d = ctx.ipam_handle();

    // A /24: the gateway and 253 more; never the network or broadcast.
    let p = a.net(1, 0, 24);
    let (id, pool) = request(ctx, pool_req(&s.local, &p, ""))?;
    let (net, broadcast) = (ip(&a.ip(1, 0)), ip(&a.ip(1, 255)));
    let gw = ok(format!("gateway of {p}"), gateway(&*d, &id, ""))?;
    let gw = check_answer(&format!("gateway of {p}"), &gw, &pool)?;
    check(
        gw != net && gw != broadcast,
        format!("gateway of {p}"),
        "a host address (not the network or broadcast address)",
        gw,
    )?;
    let rest = yields(&*d, &id, &format!("{p} after its gateway"), &pool, &pool, 253, &[net, broadcast, gw])?;
    check(rest.len() + 1 == 254, format!("host addresses of {p}"), "254, gateway included", rest.len() + 1)?;
    ok(format!("release pool {p}"), release_pool(&*d, &id))?;

    // A /31: both (RFC 3021); a /32: its one address.
    for (p, want) in [(a.net(2, 0, 31), 2), (a.net(2, 9, 32), 1)] {
        let (id, pool) = request(ctx, pool_req(&s.local, &p, ""))?;
        yields(&*d, &id, &p, &pool, &pool, want, &[])?;
        ok(format!("release pool {p}"), release_pool(&*d, &id))?;
    }

    // Sub-pools: at the start of the pool its network address is lost, at
    // the end its broadcast address; inside, every address is a host.
    let edges = [
        (a.net(3, 0, 24), a.net(3, 0, 25), 127, vec![ip(&a.ip(3, 0))], "at the start of the pool"),
        (a.net(4, 0, 24), a.net(4, 128, 25), 127, vec![ip(&a.ip(4, 255))], "at the end of the pool"),
        (
            a.net(8, 0, 21),
            a.net(10, 0, 24),
            256,
            vec![],
            "inside the pool (its first and last addresses are hosts)",
        ),
    ];
    for (p, sub, want, never, where_) in edges {
        let (id, pool) = request(ctx, pool_req(&s.local, &p, &sub))?;
        let range = Cidr::parse(&sub).expect("the suite's own prefixes parse");
        yields(&*d, &id, &format!("{p} with sub-pool {sub} {where_}"), &pool, &range, want, &never)?;
        ok(format!("release pool {p}"), release_pool(&*d, &id))?;
    }

    // IPv6 reserves only the subnet-router anycast address.
    let p = a.net6(0x100, 125);
    let (id, pool) = request(ctx, pool_req(&s.local, &p, ""))?;
    let anycast = ip(&a.ip6(0x100, "0"));
    yields(
        &*d,
        &id,
        &format!("{p} (its subnet-router anycast address is reserved)"),
        &pool,
        &pool,
        7,
        &[anycast],
    )?;
    ok(format!("release pool {p}"), release_pool(&*d, &id))?;
    Ok(())
}

pub(super) fn ip05_exhaustion(ctx: &mut Ctx) -> CaseResult {
    not_null(ctx)?;
    let s = spaces(ctx)?;
    let a = Arena::of(ctx);
    let d = ctx.ipam_handle();
    let p = a.net(1, 0, 28);
    let (id, pool) = request(ctx, pool_req(&s.local, &p, ""))?;
    let all = yields(&*d, &id, &p, &pool, &pool, 14, &[])?;
    for i in 1..=ctx.repeat() {
        refused(
            format!("any address of full pool {p} (#{i})"),
            ErrorKind::ResourceExhausted,
            EXHAUSTED,
            any(&*d, &id),
        )?;
    }

    // One released: exactly that one comes back, then the pool is full.
    let one = all[5].to_string();
    ok(format!("release {one} of full pool {p}"), release(&*d, &id, &one))?;
    let got = ok(format!("any address of {p} after releasing {one}"), any(&*d, &id))?;
    check(bare(&got) == one, format!("any address of {p} after releasing only {one}"), &one, &got)?;
    refused(
        format!("any address of {p}, full again"),
        ErrorKind::ResourceExhausted,
        EXHAUSTED,
        any(&*d, &id),
    )?;

    // Two released: exactly those two, in any order.
    let two: BTreeSet<String> = [all[2].to_string(), all[11].to_string()].into();
    for r in &two {
        ok(format!("release {r} of full pool {p}"), release(&*d, &id, r))?;
    }
    let mut back = BTreeSet::new();
    for _ in 0..2 {
        let got = ok(format!("any address of {p} after releasing {two:?}"), any(&*d, &id))?;
        back.insert(bare(&got).to_string());
    }
    check(
        back == two,
        format!("the two addresses handed out after releasing {two:?}"),
        format!("{two:?}"),
        format!("{back:?}"),
    )?;
    refused(
        format!("any address of {p}, full once more"),
        ErrorKind::ResourceExhausted,
        EXHAUSTED,
        any(&*d, &id),
    )?;

    // A full sub-pool is exhausted even where its pool has room.
    let (p2, sub) = (a.net(2, 0, 24), a.net(2, 16, 30));
    let (id2, pool2) = request(ctx, pool_req(&s.local, &p2, &sub))?;
    let range = Cidr::parse(&sub).expect("the suite's own prefixes parse");
    yields(&*d, &id2, &format!("{p2} with sub-pool {sub}"), &pool2, &range, 4, &[])?;
    ok(format!("release pool {p2}"), release_pool(&*d, &id2))?;
    ok(format!("release pool {p}"), release_pool(&*d, &id))?;
    Ok(())
}

/// A pool request asking for the serial policy, and the same option for
/// its address requests (Docker passes it with each address request).
fn serial_any(d: &dyn IpamDriver, id: &str) -> berth_plugin_api::DriverResult<String> {
    let mut req = RequestAddressRequest::new(id);
    req.options.insert(SERIAL_OPTION.into(), "true".into());
    d.request_address(req).map(|r| r.address)
}

pub(super) fn ip06_reuse(ctx: &mut Ctx) -> CaseResult {
    not_null(ctx)?;
    let s = spaces(ctx)?;
    let a = Arena::of(ctx);
    let d = ctx.ipam_handle();
    let host = |off: u8, n: u8| a.ip(off, n);

    // First free, by default: ascending, and a released address comes
    // back first (the lowest first).
    let p = a.net(1, 0, 29);
    let (id, pool) = request(ctx, pool_req(&s.local, &p, ""))?;
    let first_free = "first free by default: the lowest free address is handed out";
    for n in 1..=5u8 {
        let got = ok(format!("any address of {p} (#{n})"), any(&*d, &id))?;
        check_answer(&format!("any address of {p}"), &got, &pool)?;
        check(
            bare(&got) == host(1, n),
            format!("any address of {p} (#{n})"),
            format!("{} ({first_free})", host(1, n)),
            &got,
        )?;
    }
    for n in [4, 2] {
        ok(format!("release {}", host(1, n)), release(&*d, &id, &host(1, n)))?;
    }
    for n in [2, 4, 6] {
        let got = ok(format!("any address of {p} after releasing .2 and .4"), any(&*d, &id))?;
        check(
            bare(&got) == host(1, n),
            format!("any address of {p} after releasing {} and {}", host(1, 2), host(1, 4)),
            format!("{} ({first_free})", host(1, n)),
            &got,
        )?;
    }
    ok(format!("release pool {p}"), release_pool(&*d, &id))?;

    // Serial on request: the next address after the last one handed out,
    // wrapping at the end; a released address comes back last.
    let q = a.net(2, 0, 29);
    let mut req = pool_req(&s.local, &q, "");
    req.options.insert(SERIAL_OPTION.into(), "true".into());
    let (sid, _) = request(ctx, req)?;
    let serial = format!(
        "serial on request ({SERIAL_OPTION}=true in the pool's and the address requests' options): \
         the next free address after the last one handed out, wrapping at the end"
    );
    let mut order = Vec::new();
    for _ in 0..3 {
        order.push(bare(&ok(format!("serial address of {q}"), serial_any(&*d, &sid))?).to_string());
    }
    ok(format!("release {}", host(2, 2)), release(&*d, &sid, &host(2, 2)))?;
    for _ in 0..4 {
        let got = serial_any(&*d, &sid);
        order.push(got.map(|a| bare(&a).to_string()).unwrap_or_else(|e| format!("<{}>", e.kind)));
    }
    let want: Vec<String> = [1, 2, 3, 4, 5, 6, 2].iter().map(|n| host(2, *n)).collect();
    check(
        order == want,
        format!("serial addresses of {q}, releasing {} after the third", host(2, 2)),
        format!("{} ({serial})", want.join(" ")),
        order.join(" "),
    )?;
    refused(
        format!("serial address of full pool {q}"),
        ErrorKind::ResourceExhausted,
        EXHAUSTED,
        serial_any(&*d, &sid),
    )?;
    ok(format!("release pool {q}"), release_pool(&*d, &sid))?;
    Ok(())
}

pub(super) fn ip07_specific(ctx: &mut Ctx) -> CaseResult {
    not_null(ctx)?;
    let s = spaces(ctx)?;
    let a = Arena::of(ctx);
    let d = ctx.ipam_handle();
    let p = a.net(1, 0, 24);
    let (id, pool) = request(ctx, pool_req(&s.local, &p, ""))?;
    let ten = a.ip(1, 10);
    let got = ok(format!("address {ten} of {p}"), at(&*d, &id, &ten))?;
    let got = check_answer(&format!("address {ten} of {p}"), &got, &pool)?;
    check(got.to_string() == ten, format!("address {ten} of {p}"), &ten, got)?;
    for i in 1..=ctx.repeat().min(3) {
        refused(
            format!("address {ten} of {p} again (#{i})"),
            ErrorKind::Conflict,
            IN_USE,
            at(&*d, &id, &ten),
        )?;
    }
    for (what, outside) in [("the next /24", a.ip(2, 10)), ("another family", a.ip6(1, "a"))] {
        refused(
            format!("address {outside} ({what}) of {p}"),
            ErrorKind::InvalidArgument,
            OUT_OF_RANGE,
            at(&*d, &id, &outside),
        )?;
    }

    // Mixed: specific ones first, then "any" must step around them.
    let specific: Vec<String> = [1, 3, 5].iter().map(|n| a.ip(1, *n)).collect();
    for sp in &specific {
        ok(format!("address {sp} of {p}"), at(&*d, &id, sp))?;
    }
    let mut held: BTreeSet<String> = specific.iter().cloned().chain([ten.clone()]).collect();
    for i in 1..=6 {
        let got = ok(format!("any address of {p} (#{i}) after specific ones"), any(&*d, &id))?;
        let got = bare(&got).to_string();
        check(
            held.insert(got.clone()),
            format!("any address of {p} (#{i})"),
            format!("an address not already held ({})", held.iter().cloned().collect::<Vec<_>>().join(", ")),
            &got,
        )?;
        refused(
            format!("address {got} of {p}, just handed out as any"),
            ErrorKind::Conflict,
            IN_USE,
            at(&*d, &id, &got),
        )?;
    }
    let three = a.ip(1, 3);
    ok(format!("release {three}"), release(&*d, &id, &three))?;
    held.remove(&three);
    allowed(
        format!("address {three} of {p} once released"),
        "a released address can be asked for",
        at(&*d, &id, &three),
    )?;
    let got = ok(format!("any address of {p}"), any(&*d, &id))?;
    check(
        !held.contains(bare(&got)) && bare(&got) != three,
        format!("any address of {p} after {three} was taken again"),
        "a free address",
        &got,
    )?;
    ok(format!("release pool {p}"), release_pool(&*d, &id))?;

    // With a sub-pool: any comes from it; a specific address may be
    // anywhere in the pool (Docker's static addresses outside --ip-range),
    // not outside it.
    let (q, sub) = (a.net(4, 0, 24), a.net(4, 64, 26));
    let (qid, qpool) = request(ctx, pool_req(&s.local, &q, &sub))?;
    let range = Cidr::parse(&sub).expect("the suite's own prefixes parse");
    let inside = a.ip(4, 70);
    ok(format!("address {inside} of {q}, inside sub-pool {sub}"), at(&*d, &qid, &inside))?;
    let outside_sub = a.ip(4, 10);
    allowed(
        format!("address {outside_sub} of {q}, outside sub-pool {sub}"),
        "a specific address may be anywhere in the pool; the sub-pool only bounds \"any\" (as Docker's --ip-range)",
        at(&*d, &qid, &outside_sub),
    )?;
    refused(
        format!("address {outside_sub} of {q} again"),
        ErrorKind::Conflict,
        IN_USE,
        at(&*d, &qid, &outside_sub),
    )?;
    refused(
        format!("address {} of {q} (sub-pool {sub}), outside the pool", a.ip(5, 70)),
        ErrorKind::InvalidArgument,
        OUT_OF_RANGE,
        at(&*d, &qid, &a.ip(5, 70)),
    )?;
    for i in 1..=4 {
        let got = ok(format!("any address of {q} (#{i})"), any(&*d, &qid))?;
        let ip = check_answer(&format!("any address of {q}"), &got, &qpool)?;
        check(
            range.contains(ip) && ip.to_string() != inside,
            format!("any address of {q} with sub-pool {sub} (#{i})"),
            format!("a free address of the sub-pool {sub}"),
            &got,
        )?;
    }
    ok(format!("release pool {q}"), release_pool(&*d, &qid))?;
    Ok(())
}
