//! {{driver_name}}: a small but complete berth IPAM driver, as a shared
//! object berthd loads.
//!
//! Replace what you need (where pools come from, how an address is picked,
//! where the state lives); keep the rules the conformance suite checks
//! (`berth-conformance list --kind ipam`):
//!
//! * two address spaces, `local` and `global` (empty means `local`); live
//!   pools in one space never overlap, the identical pool included:
//!   `Conflict` (IP-01, IP-03); the same prefix may be live in the other;
//! * a request naming no subnet, or `0.0.0.0/N` / `::/N`, gets the first
//!   free subnet of the default address pools (IP-02);
//! * a sub-pool (`--ip-range`) bounds where "any" address comes from; a
//!   specific address may be anywhere in the pool (IP-04, IP-07);
//! * never handed out: the IPv4 network and broadcast addresses (except in
//!   a /31 or /32), the IPv6 subnet-router anycast address, and an address
//!   already handed out, the gateway included (IP-04, IP-08);
//! * no free address is `ResourceExhausted`; an address in use is
//!   `Conflict`; one outside the pool, a reserved one or text that is no
//!   address is `InvalidArgument` (IP-05, IP-07, IP-10);
//! * reuse: first free by default, serial with
//!   `com.docker.network.ipam.serial=true` (IP-06);
//! * one gateway per pool: another while it is allocated is `Conflict`
//!   (IP-10);
//! * releasing a pool that is not live is `NotFound`; releasing an address
//!   that is not allocated succeeds (IP-03);
//! * every change is in the state file before it is answered, so pools
//!   and addresses survive a restart (IP-09).
//!
//! Layout: `prefix.rs` (CIDR arithmetic), `pool.rs` (the allocator),
//! `driver.rs` (the `IpamDriver` trait, default pools, the state file),
//! `export.rs` (the glue).

mod driver;
mod export;
mod pool;
mod prefix;

pub use driver::{
    DefaultPool, Options, SimpleIpam, DEFAULT_ADDRESS_POOLS, GLOBAL, LOCAL, SERIAL_OPTION, STATE_FILE,
};
pub use export::berth_plugin_root;
