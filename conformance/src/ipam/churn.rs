//! IP-08 and IP-09: many threads at once, and a restart.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use berth_plugin_api::{ErrorKind, IpamDriver};

use super::{
    allowed, any, at, bare, drain, duplicates, gateway, not_null, pool_req, refused, refused_as, release,
    release_pool, request, spaces, Arena, Cidr, IN_USE, SERIAL_OPTION,
};
use crate::case::{check, describe_error, ok, CaseResult, Failure};
use crate::ctx::Ctx;

/// Threads of IP-08, and operations each.
const THREADS: usize = 8;
const OPS: usize = 500;

/// A small, seeded generator: the same run every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One pool of IP-08: its id, how to name a random host of it, and the
/// addresses live in it (by bare address) as the threads see them.
struct Shared {
    pools: Vec<(String, String, Vec<String>)>,
    prefixes: Vec<Cidr>,
    live: Mutex<HashSet<(usize, String)>>,
    stop: AtomicBool,
    failure: Mutex<Option<Failure>>,
}

impl Shared {
    fn fail(&self, f: Failure) {
        self.stop.store(true, Ordering::SeqCst);
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(f);
    }

    /// Records an address handed out; a failure if it is live already.
    fn handed_out(&self, pool: usize, answer: &str, how: &str) {
        let address = bare(answer).to_string();
        let inside = Cidr::parse(answer).is_some_and(|c| self.prefixes[pool].contains(c.addr));
        if !inside {
            return self.fail(Failure::new(
                format!("{how} in pool {} while other threads request and release", self.pools[pool].1),
                format!("an address of {}", self.pools[pool].1),
                format!("{answer:?}"),
            ));
        }
        let fresh = self.live.lock().unwrap_or_else(|p| p.into_inner()).insert((pool, address.clone()));
        if !fresh {
            self.fail(Failure::new(
                format!("{how} in pool {} while other threads request and release", self.pools[pool].1),
                "an address no one holds (an address is never live twice)",
                format!("{address}, which another request holds and nobody released"),
            ));
        }
    }
}

fn churn(d: &dyn IpamDriver, shared: &Shared, seed: u64) {
    let mut rng = Rng(seed | 1);
    let mut held: Vec<(usize, String)> = Vec::new();
    for _ in 0..OPS {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let roll = rng.below(10);
        if !held.is_empty() && (roll < 4 || held.len() > 40) {
            let (pool, address) = held.swap_remove(rng.below(held.len() as u64) as usize);
            // Out of the book first: once released, another thread may get it.
            shared.live.lock().unwrap_or_else(|p| p.into_inner()).remove(&(pool, address.clone()));
            if let Err(e) = release(d, &shared.pools[pool].0, &address) {
                return shared.fail(
                    Failure::new(
                        format!("release {address} of pool {} among other threads", shared.pools[pool].1),
                        "success",
                        describe_error(&e),
                    )
                    .with_kind(e.kind),
                );
            }
            continue;
        }
        let pool = rng.below(shared.pools.len() as u64) as usize;
        let (id, _, hosts) = &shared.pools[pool];
        if roll < 6 {
            let host = &hosts[rng.below(hosts.len() as u64) as usize];
            match at(d, id, host) {
                Ok(a) => {
                    shared.handed_out(pool, &a, &format!("address {host}"));
                    held.push((pool, bare(&a).to_string()));
                }
                Err(e) if e.kind == ErrorKind::Conflict => {}
                Err(e) => {
                    return shared.fail(
                        Failure::new(
                            format!("address {host} of pool {} among other threads", shared.pools[pool].1),
                            "the address, or Conflict when it is in use",
                            describe_error(&e),
                        )
                        .with_kind(e.kind),
                    )
                }
            }
        } else {
            let mut req = super::addr_req(id, "", false);
            if pool == 1 {
                req.options.insert(SERIAL_OPTION.into(), "true".into());
            }
            match d.request_address(req) {
                Ok(r) => {
                    shared.handed_out(pool, &r.address, "any address");
                    held.push((pool, bare(&r.address).to_string()));
                }
                Err(e) if e.kind == ErrorKind::ResourceExhausted => {}
                Err(e) => {
                    return shared.fail(
                        Failure::new(
                            format!("any address of pool {} among other threads", shared.pools[pool].1),
                            "an address, or ResourceExhausted when the pool is full",
                            describe_error(&e),
                        )
                        .with_kind(e.kind),
                    )
                }
            }
        }
    }
}

pub(super) fn ip08_interleaved(ctx: &mut Ctx) -> CaseResult {
    not_null(ctx)?;
    let s = spaces(ctx)?;
    let a = Arena::of(ctx);
    let d = ctx.ipam_handle();
    // A /23 with room, and a small serial /26 that runs out and reuses.
    let (big, small) = (a.net(16, 0, 23), a.net(20, 0, 26));
    let (big_id, big_prefix) = request(ctx, pool_req(&s.local, &big, ""))?;
    let mut serial = pool_req(&s.local, &small, "");
    serial.options.insert(SERIAL_OPTION.into(), "true".into());
    let (small_id, small_prefix) = request(ctx, serial)?;
    let big_hosts: Vec<String> = (16..18)
        .flat_map(|o| (0..=255).map(move |n| (o, n)))
        .map(|(o, n)| a.ip(o, n))
        .filter(|h| *h != a.ip(16, 0) && *h != a.ip(17, 255))
        .collect();
    let small_hosts: Vec<String> = (1..=62).map(|n| a.ip(20, n)).collect();
    let (big_n, small_n) = (big_hosts.len(), small_hosts.len());
    let shared = Arc::new(Shared {
        pools: vec![(big_id.clone(), big.clone(), big_hosts), (small_id.clone(), small.clone(), small_hosts)],
        prefixes: vec![big_prefix, small_prefix],
        live: Mutex::new(HashSet::new()),
        stop: AtomicBool::new(false),
        failure: Mutex::new(None),
    });
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (d, shared, barrier) = (Arc::clone(&d), Arc::clone(&shared), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                churn(&*d, &shared, 0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) * 0x1000_0001));
            })
        })
        .collect();
    for t in threads {
        if t.join().is_err() {
            shared.fail(Failure::new("a request thread", "no panic", "it panicked"));
        }
    }
    if let Some(f) = shared.failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(f.into());
    }

    // What the threads hold is exactly what is taken: release it all, and
    // each pool yields every one of its addresses again, once.
    let held: Vec<(usize, String)> = shared.live.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
    let count = held.len();
    for (pool, address) in held {
        ok(
            format!("release {address} of {} after the run", shared.pools[pool].1),
            release(&*d, &shared.pools[pool].0, &address),
        )?;
    }
    for (id, name, want) in [(&big_id, &big, big_n), (&small_id, &small, small_n)] {
        let (got, refusal) = drain(&*d, id, want + 8);
        let dups = duplicates(&got);
        check(
            dups.is_empty(),
            format!("draining {name} after {THREADS}×{OPS} interleaved operations"),
            "each address once",
            dups.join(", "),
        )?;
        check(
            got.len() == want && refusal.as_ref().is_some_and(|e| e.kind == ErrorKind::ResourceExhausted),
            format!("draining {name} after {THREADS}×{OPS} interleaved operations and releasing the {count} addresses held"),
            format!("all {want} addresses, then ResourceExhausted (none lost, none still taken)"),
            format!("{} addresses, then {}", got.len(), refusal.map(|e| describe_error(&e)).unwrap_or_else(|| "more".into())),
        )?;
        ok(format!("release pool {name}"), release_pool(&*d, id))?;
    }
    Ok(())
}

pub(super) fn ip09_restart(ctx: &mut Ctx) -> CaseResult {
    not_null(ctx)?;
    let s = spaces(ctx)?;
    let a = Arena::of(ctx);
    let (plain, sub_pool, sub, small, v6) =
        (a.net(1, 0, 24), a.net(4, 0, 22), a.net(5, 0, 24), a.net(8, 0, 29), a.net6(0x100, 64));
    let (plain_id, _) = request(ctx, pool_req(&s.local, &plain, ""))?;
    let (sub_id, _) = request(ctx, pool_req(&s.local, &sub_pool, &sub))?;
    let mut serial = pool_req(&s.local, &small, "");
    serial.options.insert(SERIAL_OPTION.into(), "true".into());
    let (small_id, _) = request(ctx, serial)?;
    let (v6_id, _) = request(ctx, pool_req(&s.local, &v6, ""))?;
    let global_id =
        if s.global != s.local { Some(request(ctx, pool_req(&s.global, &plain, ""))?.0) } else { None };

    let (taken, freed) = {
        let d = ctx.ipam();
        let gw = bare(&ok(format!("gateway of {plain}"), gateway(d, &plain_id, ""))?).to_string();
        let mut taken = vec![(plain_id.clone(), plain.clone(), gw)];
        for i in 1..=5 {
            let got = ok(format!("any address of {plain} (#{i})"), any(d, &plain_id))?;
            taken.push((plain_id.clone(), plain.clone(), bare(&got).to_string()));
        }
        let released = taken.remove(3).2;
        ok(format!("release {released}"), release(d, &plain_id, &released))?;
        ok(format!("address {} of {plain}", a.ip(1, 200)), at(d, &plain_id, &a.ip(1, 200)))?;
        taken.push((plain_id.clone(), plain.clone(), a.ip(1, 200)));
        let got = ok(format!("any address of {sub_pool} (sub-pool {sub})"), any(d, &sub_id))?;
        taken.push((sub_id.clone(), sub_pool.clone(), bare(&got).to_string()));
        let first = bare(&ok(format!("any address of {small}"), any(d, &small_id))?).to_string();
        let second = bare(&ok(format!("any address of {small}"), any(d, &small_id))?).to_string();
        ok(format!("release {first}"), release(d, &small_id, &first))?;
        taken.push((small_id.clone(), small.clone(), second));
        let got = ok(format!("any address of {v6}"), any(d, &v6_id))?;
        taken.push((v6_id.clone(), v6.clone(), bare(&got).to_string()));
        ok(format!("address {} of {v6}", a.ip6(0x100, "ffff")), at(d, &v6_id, &a.ip6(0x100, "ffff")))?;
        taken.push((v6_id.clone(), v6.clone(), a.ip6(0x100, "ffff")));
        if let Some(g) = &global_id {
            let got = ok(format!("any address of {plain} in address space {:?}", s.global), any(d, g))?;
            taken.push((g.clone(), format!("{plain} ({})", s.global), bare(&got).to_string()));
        }
        (taken, [(plain_id.clone(), plain.clone(), released), (small_id.clone(), small.clone(), first)])
    };

    let ids = ctx.restart_ipam()?;
    let d = ctx.ipam_handle();
    let id = |old: &String| ids.get(old).cloned().unwrap_or_else(|| old.clone());
    let survive = "pools and allocations survive a daemon restart";
    let mut pools = vec![
        (s.local.clone(), plain.clone(), String::new()),
        (s.local.clone(), sub_pool.clone(), sub.clone()),
        (s.local.clone(), small.clone(), String::new()),
        (s.local.clone(), v6.clone(), String::new()),
    ];
    if global_id.is_some() {
        pools.push((s.global.clone(), plain.clone(), String::new()));
    }
    for (space, p, sp) in pools {
        refused(
            format!(
                "request of {p}{} in address space {space:?} after the restart",
                if sp.is_empty() { String::new() } else { format!(" (sub-pool {sp})") }
            ),
            ErrorKind::Conflict,
            &format!("{survive}: the pool is still live"),
            d.request_pool(pool_req(&space, &p, &sp)),
        )?;
    }
    for (pool_id, name, address) in &taken {
        refused(
            format!("address {address} of {name} after the restart, allocated before it"),
            ErrorKind::Conflict,
            &format!("{survive}; {IN_USE}"),
            at(&*d, &id(pool_id), address),
        )?;
    }
    for (pool_id, name, address) in &freed {
        allowed(
            format!("address {address} of {name} after the restart, released before it"),
            "a release survives the restart too",
            at(&*d, &id(pool_id), address),
        )?;
    }
    refused_as(
        format!("a second gateway of {plain} after the restart"),
        &[ErrorKind::Conflict, ErrorKind::InvalidArgument],
        "the pool's gateway survives the restart, still allocated, and a pool has one gateway",
        gateway(&*d, &id(&plain_id), ""),
    )?;
    for old in [&plain_id, &sub_id, &small_id, &v6_id].into_iter().chain(global_id.as_ref()) {
        ok(format!("release pool {:?} after the restart", id(old)), release_pool(&*d, &id(old)))?;
    }
    Ok(())
}
