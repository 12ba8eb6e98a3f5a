//! IP-01..IP-03 and IP-10: overlapping pools, dynamic pools, releasing
//! pools, and invalid combinations.

use std::sync::{Arc, Barrier};

use berth_plugin_api::ipam::*;
use berth_plugin_api::{DriverResult, ErrorKind, IpamDriver};

use super::{
    allowed, any, at, dynamic_req, gateway, not_null, pool_req, refused, refused_as, release, release_pool,
    request, spaces, Arena, Cidr, INVALID, NOT_LIVE, OUT_OF_RANGE, OVERLAP,
};
use crate::case::{check, ok, CaseResult, Failure, Stop};
use crate::ctx::Ctx;

pub(super) fn ip01_overlap(ctx: &mut Ctx) -> CaseResult {
    not_null(ctx)?;
    let s = spaces(ctx)?;
    let a = Arena::of(ctx);
    let d = ctx.ipam_handle();
    // (live pool, the prefixes that overlap it, its two neighbours)
    let families = [
        (
            a.net(4, 0, 22),
            vec![
                ("the identical prefix", a.net(4, 0, 22), String::new()),
                ("the identical prefix, with a sub-pool", a.net(4, 0, 22), a.net(5, 0, 24)),
                ("a superset", a.net(0, 0, 20), String::new()),
                ("a subset", a.net(5, 0, 24), String::new()),
                ("a subset sharing its first address", a.net(4, 0, 24), String::new()),
                ("a subset sharing its last address", a.net(7, 0, 24), String::new()),
                ("a single address of it", a.net(6, 9, 32), String::new()),
            ],
            [a.net(0, 0, 22), a.net(8, 0, 22)],
        ),
        (
            a.net6(0x100, 56),
            vec![
                ("the identical prefix", a.net6(0x100, 56), String::new()),
                ("the identical prefix, with a sub-pool", a.net6(0x100, 56), a.net6(0x105, 64)),
                ("a superset", a.net6(0, 52), String::new()),
                ("a subset", a.net6(0x105, 64), String::new()),
                ("a subset sharing its first address", a.net6(0x100, 64), String::new()),
                ("a subset sharing its last address", a.net6(0x1ff, 64), String::new()),
            ],
            [a.net6(0, 56), a.net6(0x200, 56)],
        ),
    ];
    for (live, overlapping, neighbours) in families {
        let (id, _) = request(ctx, pool_req(&s.local, &live, ""))?;
        for (what, pool, sub) in &overlapping {
            let shown = if sub.is_empty() { pool.clone() } else { format!("{pool} (sub-pool {sub})") };
            refused(
                format!("request of {shown}, {what} of live pool {live}, in address space {:?}", s.local),
                ErrorKind::Conflict,
                OVERLAP,
                d.request_pool(pool_req(&s.local, pool, sub)),
            )?;
        }
        for n in &neighbours {
            let r = allowed(
                format!("request of {n}, which borders live pool {live} without overlapping it"),
                "prefixes that share no address do not overlap",
                d.request_pool(pool_req(&s.local, n, "")),
            )?;
            ok(format!("release pool {n}"), release_pool(&*d, &r.pool_id))?;
        }
        if s.global != s.local {
            let r = allowed(
                format!(
                    "request of {live} in address space {:?} while it is live in {:?}",
                    s.global, s.local
                ),
                "the same prefix in another address space is allowed",
                d.request_pool(pool_req(&s.global, &live, "")),
            )?;
            let (_, pool, sub) = &overlapping[3];
            refused(
                format!(
                    "request of {pool}, a subset of {live}, in address space {:?} where {live} is live too",
                    s.global
                ),
                ErrorKind::Conflict,
                OVERLAP,
                d.request_pool(pool_req(&s.global, pool, sub)),
            )?;
            ok(
                format!("release pool {live} of address space {:?}", s.global),
                release_pool(&*d, &r.pool_id),
            )?;
        }
        ok(format!("release pool {live}"), release_pool(&*d, &id))?;
        // Once released, what overlapped it is fine.
        let (_, pool, _) = &overlapping[2];
        let (sup, _) = request(ctx, pool_req(&s.local, pool, ""))?;
        ok(format!("release pool {pool}"), release_pool(&*d, &sup))?;
    }
    Ok(())
}

/// Requests `n` pools at once from `n` threads; the answers in thread
/// order.
fn parallel(
    d: &Arc<dyn IpamDriver>,
    n: usize,
    req: RequestPoolRequest,
) -> Vec<DriverResult<RequestPoolResponse>> {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (d, b, req) = (Arc::clone(d), Arc::clone(&barrier), req.clone());
            std::thread::spawn(move || {
                b.wait();
                d.request_pool(req)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| {
            t.join()
                .unwrap_or_else(|_| Err(berth_plugin_api::DriverError::internal("request thread panicked")))
        })
        .collect()
}

/// Checks that parallel answers all succeeded with distinct ids and
/// pairwise disjoint prefixes of length `len` (when given); the pools.
fn distinct(
    what: &str,
    answers: Vec<DriverResult<RequestPoolResponse>>,
    len: Option<u8>,
    also_disjoint_from: &[Cidr],
) -> Result<Vec<(String, Cidr)>, Stop> {
    let mut got: Vec<(String, Cidr)> = Vec::new();
    for (i, r) in answers.into_iter().enumerate() {
        let r = ok(format!("{what}: request #{}", i + 1), r)?;
        let c = Cidr::parse(&r.pool).ok_or_else(|| {
            Stop::from(Failure::new(
                format!("{what}: answer #{}", i + 1),
                "a CIDR pool",
                format!("{:?}", r.pool),
            ))
        })?;
        if let Some(len) = len {
            check(
                c.len == len,
                format!("{what}: prefix length of {c}"),
                format!("/{len} (the length asked for)"),
                format!("/{}", c.len),
            )?;
        }
        let clash =
            got.iter().map(|(_, o)| *o).chain(also_disjoint_from.iter().copied()).find(|o| o.overlaps(&c));
        if let Some(other) = clash {
            return Err(Failure::new(
                format!("{what}: answer #{} ({c})", i + 1),
                "a subnet no other live pool overlaps (parallel requests get distinct subnets)",
                format!("{c}, which overlaps live pool {other}"),
            )
            .into());
        }
        if got.iter().any(|(id, _)| *id == r.pool_id) {
            return Err(Failure::new(
                format!("{what}: pool id of answer #{}", i + 1),
                "an id of its own",
                format!("{:?} again", r.pool_id),
            )
            .into());
        }
        got.push((r.pool_id, c));
    }
    Ok(got)
}

pub(super) fn ip02_dynamic(ctx: &mut Ctx) -> CaseResult {
    not_null(ctx)?;
    let s = spaces(ctx)?;
    let d = ctx.ipam_handle();
    let v4 =
        distinct("8 parallel dynamic IPv4 pools", parallel(&d, 8, dynamic_req(&s.local, false)), None, &[])?;
    let v6 =
        distinct("4 parallel dynamic IPv6 pools", parallel(&d, 4, dynamic_req(&s.local, true)), None, &[])?;
    for (_, c) in &v6 {
        check(c.addr.is_ipv6(), format!("family of dynamic pool {c}"), "IPv6 (V6 was set)", "IPv4")?;
    }
    for (_, c) in &v4 {
        check(c.addr.is_ipv4(), format!("family of dynamic pool {c}"), "IPv4 (V6 was not set)", "IPv6")?;
        // Dynamic pools are live like any other.
        refused(
            format!("request of {c} by name while it is live as a dynamic pool"),
            ErrorKind::Conflict,
            OVERLAP,
            d.request_pool(pool_req(&s.local, &c.to_string(), "")),
        )?;
    }

    // A requested prefix length: the unspecified address with that length.
    let live: Vec<Cidr> = v4.iter().chain(&v6).map(|(_, c)| *c).collect();
    distinct(
        "4 parallel dynamic pools of length /28 (pool 0.0.0.0/28)",
        parallel(&d, 4, pool_req(&s.local, "0.0.0.0/28", "")),
        Some(28),
        &live,
    )?;
    let (_, c) = request(ctx, pool_req(&s.local, "0.0.0.0/26", ""))?;
    check(
        c.len == 26,
        "prefix length of the pool answered to 0.0.0.0/26",
        "/26 (the length asked for)",
        format!("/{}", c.len),
    )?;
    let (_, c6) = request(ctx, pool_req(&s.local, "::/80", ""))?;
    check(
        c6.len == 80 && c6.addr.is_ipv6(),
        "the pool answered to ::/80",
        "an IPv6 /80 (the length asked for)",
        c6.to_string(),
    )?;

    // Lengths no family has, or of the wrong family, reserve nothing.
    let mut wrong_family = pool_req(&s.local, "0.0.0.0/24", "");
    wrong_family.v6 = true;
    let mut wrong_family6 = pool_req(&s.local, "::/64", "");
    wrong_family6.v6 = false;
    for (what, req) in [
        ("pool 0.0.0.0/33 (no IPv4 prefix is longer than /32)", pool_req(&s.local, "0.0.0.0/33", "")),
        ("pool ::/129 (no IPv6 prefix is longer than /128)", pool_req(&s.local, "::/129", "")),
        ("pool 0.0.0.0/24 with V6 set", wrong_family),
        ("pool ::/64 with V6 not set", wrong_family6),
    ] {
        refused(format!("request of {what}"), ErrorKind::InvalidArgument, INVALID, d.request_pool(req))?;
    }
    for id in ctx.ipam_ledger().pools() {
        ok(format!("release dynamic pool {id:?}"), release_pool(&*d, &id))?;
    }
    Ok(())
}

pub(super) fn ip03_release(ctx: &mut Ctx) -> CaseResult {
    not_null(ctx)?;
    let s = spaces(ctx)?;
    let a = Arena::of(ctx);
    let d = ctx.ipam_handle();
    let p = a.net(1, 0, 24);
    let (id, pool) = request(ctx, pool_req(&s.local, &p, ""))?;
    let first = ok(format!("any address of {p}"), any(&*d, &id))?;
    refused(
        format!("request of {p} again while it is live"),
        ErrorKind::Conflict,
        "no pool is ever live twice",
        d.request_pool(pool_req(&s.local, &p, "")),
    )?;
    ok(format!("release pool {p}"), release_pool(&*d, &id))?;
    for i in 1..=ctx.repeat() {
        refused(
            format!("release of released pool {p} (#{i})"),
            ErrorKind::NotFound,
            NOT_LIVE,
            release_pool(&*d, &id),
        )?;
    }
    refused(
        format!("any address of released pool {p}"),
        ErrorKind::NotFound,
        "a pool that is not live has no addresses: NotFound",
        any(&*d, &id),
    )?;

    // Requested again: live once more, with every address free.
    let (again, pool2) = request(ctx, pool_req(&s.local, &p, ""))?;
    check(
        pool2.same_prefix(&pool),
        format!("pool answered to {p} again"),
        pool.to_string(),
        pool2.to_string(),
    )?;
    let got = ok(format!("any address of {p}, requested again"), any(&*d, &again))?;
    check(
        super::bare(&got) == super::bare(&first),
        format!("first address of {p} after it was released and requested again"),
        format!("{} (a released pool comes back with nothing allocated)", super::bare(&first)),
        &got,
    )?;
    ok(format!("release pool {p} again"), release_pool(&*d, &again))?;

    // Many at once: exactly one wins.
    let n = 8;
    let answers = parallel(&d, n, pool_req(&s.local, &p, ""));
    let won: Vec<&RequestPoolResponse> = answers.iter().filter_map(|r| r.as_ref().ok()).collect();
    let kinds: Vec<String> =
        answers.iter().filter_map(|r| r.as_ref().err()).map(|e| e.kind.to_string()).collect();
    check(
        won.len() == 1 && kinds.iter().all(|k| k == "conflict"),
        format!("{n} parallel requests of {p}"),
        "exactly one success, Conflict for the rest (no pool is ever live twice)",
        format!("{} successes, errors {kinds:?}", won.len()),
    )?;
    let winner = won[0].pool_id.clone();
    ok(format!("release pool {p}"), release_pool(&*d, &winner))?;
    refused(
        format!("release of released pool {p}"),
        ErrorKind::NotFound,
        NOT_LIVE,
        release_pool(&*d, &winner),
    )?;
    Ok(())
}

pub(super) fn ip10_invalid(ctx: &mut Ctx) -> CaseResult {
    not_null(ctx)?;
    let s = spaces(ctx)?;
    let a = Arena::of(ctx);
    let d = ctx.ipam_handle();
    let p = a.net(1, 0, 24);

    // Ranges outside the subnet, and other pools that cannot be.
    let mut v6_flag = pool_req(&s.local, &p, "");
    v6_flag.v6 = true;
    for (what, req) in [
        (
            format!("pool {p} with sub-pool {} outside it", a.net(2, 0, 25)),
            pool_req(&s.local, &p, &a.net(2, 0, 25)),
        ),
        (
            format!("pool {p} with sub-pool {}, bigger than the pool", a.net(0, 0, 20)),
            pool_req(&s.local, &p, &a.net(0, 0, 20)),
        ),
        (format!("pool {p} with IPv6 sub-pool {}", a.net6(1, 64)), pool_req(&s.local, &p, &a.net6(1, 64))),
        (format!("sub-pool {} without a pool", a.net(1, 0, 25)), pool_req(&s.local, "", &a.net(1, 0, 25))),
        (format!("pool {} (host bits set)", a.net(1, 1, 24)), pool_req(&s.local, &a.net(1, 1, 24), "")),
        ("pool \"banana\"".to_string(), pool_req(&s.local, "banana", "")),
        (format!("pool {p} with V6 set"), v6_flag),
    ] {
        refused(format!("request of {what}"), ErrorKind::InvalidArgument, INVALID, d.request_pool(req))?;
    }
    // The refusals reserved nothing.
    let (id, _) = request(ctx, pool_req(&s.local, &p, ""))?;

    // Aux addresses (and gateways) outside the subnet.
    for (what, ip) in
        [("auxiliary address", a.ip(2, 5)), ("auxiliary address", a.ip6(1, "5")), ("gateway", a.ip(2, 1))]
    {
        let res = if what == "gateway" { gateway(&*d, &id, &ip) } else { at(&*d, &id, &ip) };
        refused(format!("{what} {ip}, outside pool {p}"), ErrorKind::InvalidArgument, OUT_OF_RANGE, res)?;
    }
    for (what, text) in [
        ("an address with a prefix length", format!("{}/24", a.ip(1, 7))),
        ("text that is no address", "ten".to_string()),
    ] {
        refused(
            format!("address {text:?} ({what})"),
            ErrorKind::InvalidArgument,
            INVALID,
            at(&*d, &id, &text),
        )?;
    }
    // Two gateways.
    let gw = ok(format!("gateway of {p}"), gateway(&*d, &id, ""))?;
    let rule = "a pool has one gateway: asking for another while it is allocated is refused";
    refused_as(
        format!("a second gateway of {p} (the driver's pick) while {gw} is its gateway"),
        &[ErrorKind::Conflict, ErrorKind::InvalidArgument],
        rule,
        gateway(&*d, &id, ""),
    )?;
    refused_as(
        format!("a second gateway {} of {p} while {gw} is its gateway", a.ip(1, 200)),
        &[ErrorKind::Conflict, ErrorKind::InvalidArgument],
        rule,
        gateway(&*d, &id, &a.ip(1, 200)),
    )?;
    ok(format!("release gateway {gw} of {p}"), release(&*d, &id, super::bare(&gw)))?;
    allowed(
        format!("gateway {} of {p} once the old one is released", a.ip(1, 200)),
        "the gateway may change once the old one is released",
        gateway(&*d, &id, &a.ip(1, 200)),
    )?;

    ok(format!("release pool {p}"), release_pool(&*d, &id))?;
    Ok(())
}
