//! IP-11 (remote IPAM plugins) and IP-12 (the null IPAM driver).

use berth_plugin_api::ipam::*;
use berth_plugin_api::{DriverResult, ErrorKind};

use super::{
    addr_req, allowed, any, check_answer, dynamic_req, is_null, pool_req, refused, release, release_pool,
    spaces, Arena, Cidr, INVALID,
};
use crate::case::{check, describe_error, ok, CaseResult, Failure, Stop};
use crate::ctx::Ctx;

/// `data`'s gateway entry, when it has one, must be an address of `pool`.
fn check_data(
    step: &str,
    data: &std::collections::BTreeMap<String, String>,
    pool: &Cidr,
) -> Result<(), Stop> {
    if let Some(gw) = data.get(GATEWAY_REQUEST) {
        check_answer(&format!("{step}: Data[{GATEWAY_REQUEST:?}]"), gw, pool)?;
    }
    Ok(())
}

pub(super) fn ip11_remote(ctx: &mut Ctx) -> CaseResult {
    let Some(target) = ctx.remote() else {
        return Err(Stop::Skip(
            "applies to remote IPAM plugins only; this subject is not one (run with --remote ADDR)".into(),
        ));
    };
    let plugin = target.name.clone();
    if is_null(ctx.ipam()) {
        return Err(Stop::Skip(
            "not applicable to a null IPAM driver (it hands out no addresses); IP-12 checks it".into(),
        ));
    }
    let d = ctx.ipam_handle();
    // The daemon asks for the default spaces and sends those names back.
    let s = spaces(ctx)?;
    let a = Arena::of(ctx);
    let p = a.net(1, 0, 24);
    let mut ids = Vec::new();
    for space in [&s.local, &s.global] {
        if ids.iter().any(|(sp, _, _)| sp == space) {
            continue;
        }
        let r = allowed(
            format!("request of pool {p} in address space {space:?}, as plugin {plugin:?} answered it"),
            "the default address spaces a plugin answers are the ones the daemon uses",
            d.request_pool(pool_req(space, &p, "")),
        )?;
        let pool = Cidr::parse(&r.pool).ok_or_else(|| {
            Stop::from(Failure::new(
                format!("pool answered in {space:?}"),
                "a CIDR pool",
                format!("{:?}", r.pool),
            ))
        })?;
        check_data(&format!("Data of the pool answered in {space:?}"), &r.data, &pool)?;
        ids.push((space.clone(), r.pool_id, pool));
    }
    let dynamic = allowed(
        format!("request of a dynamic pool in address space {:?}", s.local),
        "the default address spaces a plugin answers are the ones the daemon uses",
        d.request_pool(dynamic_req(&s.local, false)),
    )?;
    ok("release the dynamic pool", release_pool(&*d, &dynamic.pool_id))?;

    // The pool id is opaque: echoed exactly as answered, and it alone names
    // the pool.
    for (space, id, pool) in &ids {
        let step =
            format!("any address of the pool answered in {space:?}, naming it by its id {id:?} exactly");
        let r = ok(&step, d.request_address(addr_req(id, "", false)))?;
        let got = check_answer(&step, &r.address, pool)?;
        check_data(&format!("Data of address {got}"), &r.data, pool)?;
        let altered = format!("{id}-not-this-one");
        match any(&*d, &altered) {
            Err(_) => {}
            Ok(a) => {
                return Err(Failure::new(
                    format!("any address of pool id {altered:?}, which the plugin never answered"),
                    "an error (the plugin knows its pools by the ids it answered, and the daemon echoes them verbatim)",
                    format!("success ({a})"),
                )
                .into())
            }
        }
        ok(format!("release {got} by pool id {id:?}"), release(&*d, id, &got.to_string()))?;
        ok(format!("release pool {id:?}"), release_pool(&*d, id))?;
        let after = any(&*d, id);
        check(
            after.is_err(),
            format!("any address of released pool {id:?}"),
            "an error (the id names a pool that is no longer live)",
            format!("{after:?}"),
        )?;
    }
    Ok(())
}

/// The address a null driver answers: none. Berth's remote client refuses
/// an empty `Address` (as dockerd does, `ErrNoIPReturned`), so through it
/// the answer arrives as that refusal.
fn no_address(ctx: &Ctx, step: &str, res: DriverResult<RequestAddressResponse>) -> Result<(), Stop> {
    match res {
        Ok(r) => check(
            r.address.is_empty(),
            step,
            "no address (an empty Address: a null driver hands out none)",
            &r.address,
        ),
        Err(e) if ctx.remote().is_some() && e.message.contains("answered no address") => Ok(()),
        Err(e) => {
            Err(Failure::new(step, "success with no address", describe_error(&e)).with_kind(e.kind).into())
        }
    }
}

pub(super) fn ip12_null(ctx: &mut Ctx) -> CaseResult {
    if !is_null(ctx.ipam()) {
        return Err(Stop::Skip("not a null IPAM driver".into()));
    }
    let s = spaces(ctx)?;
    let d = ctx.ipam_handle();
    let whole = [("IPv4", false, "0.0.0.0/0"), ("IPv6", true, "::/0")];
    for space in [&s.local, &s.global] {
        for (fam, v6, want) in whole {
            for i in 1..=2 {
                let step = format!("dynamic {fam} pool in address space {space:?} (#{i})");
                let r = ok(&step, d.request_pool(dynamic_req(space, v6)))?;
                let pool = Cidr::parse(&r.pool);
                check(
                    pool.is_some_and(|c| c.len == 0 && c.addr.is_ipv6() == v6),
                    &step,
                    format!("pool {want} (a null IPAM driver reports the whole space)"),
                    &r.pool,
                )?;
                check(!r.pool_id.is_empty(), format!("pool id of {step}"), "an id", "an empty id")?;
                check(
                    !r.data.contains_key(GATEWAY_REQUEST),
                    format!("Data of {step}"),
                    "no gateway",
                    format!("{:?}", r.data),
                )?;
                no_address(
                    ctx,
                    &format!("gateway of {want} (pool id {:?})", r.pool_id),
                    d.request_address(addr_req(&r.pool_id, "", true)),
                )?;
                no_address(
                    ctx,
                    &format!("any address of {want} (pool id {:?})", r.pool_id),
                    d.request_address(addr_req(&r.pool_id, "", false)),
                )?;
                for n in 1..=ctx.repeat() {
                    ok(format!("release pool {:?} (#{n})", r.pool_id), release_pool(&*d, &r.pool_id))?;
                }
            }
        }
    }
    // It does not hand out specific pools (moby's null IPAM).
    refused(
        "request of pool 10.0.0.0/24 from a null IPAM driver",
        ErrorKind::InvalidArgument,
        &format!("{INVALID}: a null IPAM driver does not handle specific pool requests"),
        d.request_pool(pool_req(&s.local, "10.0.0.0/24", "")),
    )?;
    Ok(())
}
