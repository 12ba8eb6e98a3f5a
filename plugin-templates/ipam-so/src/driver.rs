//! The driver: address spaces, pool requests (a named subnet, a sub-pool,
//! or a free subnet from the default address pools), address requests, and
//! the state file. The allocator itself is in `pool.rs`.
//!
//! Every change is made on a copy of the state, written to
//! `<root>/ipam-state.json` (a temporary file renamed over the old one), and
//! only then answered and kept: a call that fails, or whose state cannot be
//! written, changes nothing, and a driver opened again on the same root
//! (after a restart or a crash of the daemon, or of this driver) sees every
//! live pool and address. With the `fsync` option the file and its
//! directory are also flushed to the disk before the answer, so that a power
//! loss loses nothing either; that costs a disk flush or two per call
//! (milliseconds on many disks). berth's built-in `default` IPAM driver
//! shows how to get both with a journal and group commit.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use berth_plugin_api::ipam::*;
use berth_plugin_api::{DriverError, DriverResult, Init, InitRequest, IpamDriver};
use serde::{Deserialize, Serialize};

use crate::pool::Pool;
use crate::prefix::Prefix;

/// The default address space of local-scope networks.
pub const LOCAL: &str = "local";
/// The default address space of global-scope (swarm) networks.
pub const GLOBAL: &str = "global";
/// The option that asks for the serial reuse policy: in a pool request's
/// options for every address of the pool, in an address request's options
/// for that request (where Docker passes it).
pub const SERIAL_OPTION: &str = "com.docker.network.ipam.serial";
/// The state file under the driver's root.
pub const STATE_FILE: &str = "ipam-state.json";
/// Where pools come from when a request names no subnet and the
/// configuration names no `default_address_pools`: `(base, size)`, each base
/// cut into prefixes of length `size`. Change them to ranges your hosts do
/// not route (and pick your own random IPv6 ULA prefix, RFC 4193).
pub const DEFAULT_ADDRESS_POOLS: [(&str, u8); 2] = [("172.30.0.0/16", 24), ("fd5c:7d2e:9a41::/48", 64)];

/// The driver's options (berth.toml's `options = { ... }` for the shared
/// object; flags for the remote binary). An unknown key is refused.
///
/// ```toml
/// options = { default_address_pools = [{ base = "10.200.0.0/16", size = 24 },
///                                      { base = "fd00:1234:5678::/48", size = 64 }] }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Where pools come from when a request names no subnet, IPv4 and IPv6
    /// in one list, tried in order; absent: [`DEFAULT_ADDRESS_POOLS`].
    pub default_address_pools: Option<Vec<DefaultPool>>,
    /// Flush every change to the disk before answering (survives a power
    /// loss, not only a crash), at the cost of a disk flush per call.
    pub fsync: bool,
}

/// A range of default pools: `base` cut into prefixes of length `size`
/// (Docker's `--default-address-pool base=10.200.0.0/16,size=24`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultPool {
    /// The prefix pools are cut from, e.g. `10.200.0.0/16`.
    pub base: String,
    /// The prefix length of each pool, e.g. `24`.
    pub size: u8,
}

/// Everything the driver keeps: the live pools by id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    /// Makes every pool id unique, also across restarts, so an id that
    /// was released never names a later pool.
    next_id: u64,
    pools: BTreeMap<String, Pool>,
}

/// The IPAM driver. One lock for the whole state; every call is short.
#[derive(Debug)]
pub struct SimpleIpam {
    state_file: PathBuf,
    fsync: bool,
    default_pools: Vec<(Prefix, u8)>,
    state: Mutex<State>,
}

impl SimpleIpam {
    /// Builds the driver on `req.root` (the directory berthd gives it) with
    /// the options of the configuration.
    pub fn new(req: InitRequest) -> DriverResult<Init<SimpleIpam>> {
        let opts: Options = req.decode_options()?;
        if req.root.is_empty() {
            return Err(DriverError::invalid_argument("{{driver_name}} needs a root directory"));
        }
        Ok(Init::Ready(SimpleIpam::open(&req.root, &opts)?))
    }

    /// A driver keeping its state in `root` (made if missing), with what
    /// was live when it last ran.
    pub fn open(root: impl Into<PathBuf>, opts: &Options) -> DriverResult<SimpleIpam> {
        let root = root.into();
        let default_pools = match &opts.default_address_pools {
            Some(pools) => validate_default_pools(pools)?,
            None => {
                let pools = DEFAULT_ADDRESS_POOLS.map(|(base, size)| DefaultPool { base: base.into(), size });
                validate_default_pools(&pools)?
            }
        };
        fs::create_dir_all(&root)
            .map_err(|e| DriverError::io(format_args!("create {}", root.display()), &e))?;
        let state_file = root.join(STATE_FILE);
        let state = load(&state_file)?;
        Ok(SimpleIpam { state_file, fsync: opts.fsync, default_pools, state: Mutex::new(state) })
    }

    /// Runs `f` on a copy of the state; when it succeeds, writes the copy
    /// to disk and keeps it. So a failed call, or a failed write, changes
    /// nothing.
    fn change<T>(&self, f: impl FnOnce(&mut State) -> DriverResult<T>) -> DriverResult<T> {
        let mut state = self.lock();
        let mut next = state.clone();
        let answer = f(&mut next)?;
        save(&self.state_file, &next, self.fsync)?;
        *state = next;
        Ok(answer)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half change: changes
        // are made on a copy.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free subnet from the default pools of the family: of length `len`
    /// when the request gave one (`0.0.0.0/26`), else of each base's own
    /// size.
    fn pick(&self, state: &State, space: &str, v6: bool, len: Option<u8>) -> DriverResult<Prefix> {
        let family = if v6 { "IPv6" } else { "IPv4" };
        let bases: Vec<&(Prefix, u8)> = self.default_pools.iter().filter(|(b, _)| b.is_v6() == v6).collect();
        if bases.is_empty() {
            return Err(DriverError::invalid_argument(format!(
                "no default {family} address pools are configured; give the network a subnet"
            )));
        }
        if let Some(len) = len {
            if bases.iter().all(|(base, _)| len < base.prefix_len()) {
                return Err(DriverError::invalid_argument(format!(
                    "no default {family} address pool is big enough for a /{len}; ask for a longer prefix"
                )));
            }
        }
        let live: Vec<Prefix> = state.pools.values().filter(|p| p.space == space).map(|p| p.prefix).collect();
        for (base, size) in bases {
            let size = len.unwrap_or(*size);
            if size < base.prefix_len() {
                continue;
            }
            if let Some(subnet) = first_free_subnet(base, size, &live) {
                return Ok(subnet);
            }
        }
        let shown: Vec<String> = self.default_pools.iter().map(|(b, s)| format!("{b} (/{s})")).collect();
        Err(DriverError::resource_exhausted(format!(
            "no free {family} subnet left in the default address pools {} of address space {space:?}; \
             release a network, or configure more default_address_pools",
            shown.join(", ")
        )))
    }
}

/// The first prefix of length `size` inside `base` that overlaps none of
/// `live`. Candidates are walked in order; when one overlaps a live pool,
/// the walk jumps to the first candidate after that pool, so this takes at
/// most one step per live pool.
fn first_free_subnet(base: &Prefix, size: u8, live: &[Prefix]) -> Option<Prefix> {
    let block = Prefix::from_bits(base.first(), size, base.is_v6());
    let mask = block.last() - block.first(); // the host part of a candidate
    let mut at = base.first();
    loop {
        let candidate = Prefix::from_bits(at, size, base.is_v6());
        if !base.covers(&candidate) {
            return None;
        }
        match live.iter().find(|p| p.overlaps(&candidate)) {
            None => return Some(candidate),
            // The next multiple of the block size after that pool's end.
            Some(p) => at = p.last().checked_add(1)?.checked_add(mask)? & !mask,
        }
    }
}

fn validate_default_pools(pools: &[DefaultPool]) -> DriverResult<Vec<(Prefix, u8)>> {
    pools
        .iter()
        .map(|p| {
            let base = Prefix::parse(&p.base)
                .map_err(|e| DriverError::invalid_argument(format!("default_address_pools: base {e}")))?;
            let max = if base.is_v6() { 128 } else { 32 };
            if p.size < base.prefix_len() || p.size > max {
                return Err(DriverError::invalid_argument(format!(
                    "default_address_pools: size {} for base {base} must lie between {} and {max}",
                    p.size,
                    base.prefix_len()
                )));
            }
            Ok((base, p.size))
        })
        .collect()
}

/// The state in `path`; none yet is an empty state.
fn load(path: &Path) -> DriverResult<State> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            DriverError::failed_precondition(format!(
                "state file {} is corrupt ({e}); restore it, or move it away to start with no pools",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(DriverError::io(format_args!("read {}", path.display()), &e)),
    }
}

/// Writes `state` to `path` atomically: a reader (or a driver after a
/// crash) sees the old state or the new one, never a mix. With `fsync`,
/// durably too: on the disk before this returns.
fn save(path: &Path, state: &State, fsync: bool) -> DriverResult<()> {
    let io =
        |what: &str, p: &Path, e: std::io::Error| DriverError::io(format_args!("{what} {}", p.display()), &e);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(state)
        .map_err(|e| DriverError::internal(format!("encode the state for {}: {e}", path.display())))?;
    let mut file = File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
    file.write_all(&text).map_err(|e| io("write", &tmp, e))?;
    if fsync {
        file.sync_all().map_err(|e| io("sync", &tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| io("rename to", path, e))?;
    if fsync {
        // The rename is durable once the directory is synced too.
        let dir = path.parent().unwrap_or(Path::new("."));
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("sync", dir, e))?;
    }
    Ok(())
}

/// The address space a request names; empty is the local default.
fn space(name: &str) -> DriverResult<&'static str> {
    match name {
        "" | LOCAL => Ok(LOCAL),
        GLOBAL => Ok(GLOBAL),
        other => Err(DriverError::invalid_argument(format!(
            "unknown address space {other:?}: {{driver_name}} has {LOCAL:?} and {GLOBAL:?}"
        ))),
    }
}

/// A boolean option, read as Go's `strconv.ParseBool` does.
fn flag(key: &str, value: &str) -> DriverResult<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(DriverError::invalid_argument(format!("option {key}={value:?} is not true or false"))),
    }
}

/// What a pool request asks for.
enum Wanted {
    /// A free subnet from the default pools, of this length if given.
    Dynamic(Option<u8>),
    /// This subnet, with "any" addresses from this sub-pool if given.
    Named(Prefix, Option<Prefix>),
}

/// Reads and checks a pool request; nothing about it is invalid after this.
fn wanted(req: &RequestPoolRequest) -> DriverResult<Wanted> {
    let invalid = |what: String| Err(DriverError::invalid_argument(what));
    if req.pool.is_empty() {
        if !req.sub_pool.is_empty() {
            return invalid(format!("sub-pool {} needs a pool: give the subnet it lies in", req.sub_pool));
        }
        return Ok(Wanted::Dynamic(None));
    }
    let pool = Prefix::parse(&req.pool).map_err(|e| DriverError::invalid_argument(format!("pool {e}")))?;
    if pool.is_v6() != req.v6 {
        let family = if pool.is_v6() { "an IPv6" } else { "an IPv4" };
        return invalid(format!("pool {pool} is {family} prefix, but the request has V6={}", req.v6));
    }
    if pool.is_unspecified() {
        if !req.sub_pool.is_empty() {
            return invalid(format!("sub-pool {} needs a pool, not {pool}", req.sub_pool));
        }
        return Ok(Wanted::Dynamic(Some(pool.prefix_len())));
    }
    if req.sub_pool.is_empty() {
        return Ok(Wanted::Named(pool, None));
    }
    let sub =
        Prefix::parse(&req.sub_pool).map_err(|e| DriverError::invalid_argument(format!("sub-pool {e}")))?;
    if !pool.covers(&sub) {
        return invalid(format!("sub-pool {sub} is not inside pool {pool}"));
    }
    Ok(Wanted::Named(pool, Some(sub)))
}

/// A bare address of a request: `10.1.0.5`, not `10.1.0.5/24`.
fn address(text: &str) -> DriverResult<IpAddr> {
    text.parse().map_err(|_| {
        DriverError::invalid_argument(format!(
            "{text:?} is not an IP address (give a bare one, such as 10.1.0.5)"
        ))
    })
}

fn not_live(id: &str) -> DriverError {
    DriverError::not_found(format!("pool {id:?} is not live (never requested, or released)"))
}

impl IpamDriver for SimpleIpam {
    fn capabilities(&self, _req: IpamCapabilitiesRequest) -> DriverResult<IpamCapabilities> {
        // The state is on disk: nothing to replay after a restart. No MAC
        // address is needed to pick an address.
        Ok(IpamCapabilities::default())
    }

    fn default_address_spaces(&self, _req: AddressSpacesRequest) -> DriverResult<AddressSpaces> {
        Ok(AddressSpaces::new(LOCAL, GLOBAL))
    }

    /// Live pools of one address space never overlap (the identical pool
    /// included: conflict); the same prefix may be live in the other space.
    fn request_pool(&self, req: RequestPoolRequest) -> DriverResult<RequestPoolResponse> {
        let space = space(&req.address_space)?;
        // The user's `--ipam-opt`s: this driver knows one, and refuses the
        // rest rather than ignoring a typo.
        let mut serial = false;
        for (key, value) in &req.options {
            if key != SERIAL_OPTION {
                return Err(DriverError::invalid_argument(format!(
                    "unknown IPAM option {key:?}: {{driver_name}} knows only {SERIAL_OPTION}"
                )));
            }
            serial = flag(key, value)?;
        }
        let wanted = wanted(&req)?;
        self.change(|state| {
            let (prefix, range) = match wanted {
                Wanted::Dynamic(len) => (self.pick(state, space, req.v6, len)?, None),
                Wanted::Named(prefix, range) => {
                    let clash =
                        state.pools.iter().find(|(_, p)| p.space == space && p.prefix.overlaps(&prefix));
                    if let Some((id, p)) = clash {
                        return Err(DriverError::conflict(format!(
                            "pool {prefix} overlaps live pool {} ({id:?}) in address space {space:?}",
                            p.prefix
                        )));
                    }
                    (prefix, range)
                }
            };
            state.next_id += 1;
            let id = format!("{space}/{prefix}#{}", state.next_id);
            state.pools.insert(id.clone(), Pool::new(space, prefix, range, serial));
            Ok(RequestPoolResponse::new(id, prefix.to_string()))
        })
    }

    fn release_pool(&self, req: ReleasePoolRequest) -> DriverResult<()> {
        self.change(|state| state.pools.remove(&req.pool_id).map(drop).ok_or_else(|| not_live(&req.pool_id)))
    }

    /// A specific address (`Address`), or any; the gateway when the options
    /// say `RequestAddressType = com.docker.network.gateway`. Other options
    /// (the daemon may send the endpoint's MAC address) are ignored.
    fn request_address(&self, req: RequestAddressRequest) -> DriverResult<RequestAddressResponse> {
        let gateway = req.is_gateway();
        let serial = req.options.get(SERIAL_OPTION).map(|v| flag(SERIAL_OPTION, v)).transpose()?;
        let specific = if req.address.is_empty() { None } else { Some(address(&req.address)?) };
        self.change(|state| {
            let pool = state.pools.get_mut(&req.pool_id).ok_or_else(|| not_live(&req.pool_id))?;
            let ip = match specific {
                Some(ip) => pool.take(ip, gateway)?,
                None => pool.take_any(serial.unwrap_or(pool.serial), gateway)?,
            };
            // Answered with the pool's prefix length: `10.1.0.5/24`.
            Ok(RequestAddressResponse::new(format!("{ip}/{}", pool.prefix.prefix_len())))
        })
    }

    fn release_address(&self, req: ReleaseAddressRequest) -> DriverResult<()> {
        let ip = address(&req.address)?;
        self.change(|state| {
            let pool = state.pools.get_mut(&req.pool_id).ok_or_else(|| not_live(&req.pool_id))?;
            pool.release(ip)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_plugin_api::ErrorKind;

    fn driver(root: &Path) -> SimpleIpam {
        SimpleIpam::open(root, &Options::default()).unwrap()
    }

    fn pool(d: &SimpleIpam, space: &str, pool: &str, sub_pool: &str) -> DriverResult<RequestPoolResponse> {
        let mut req = RequestPoolRequest::new(space, pool);
        req.sub_pool = sub_pool.to_string();
        req.v6 = pool.contains(':');
        d.request_pool(req)
    }

    fn addr(d: &SimpleIpam, id: &str, address: &str, gateway: bool) -> DriverResult<String> {
        let mut req = RequestAddressRequest::new(id);
        req.address = address.to_string();
        if gateway {
            req.options.insert(REQUEST_ADDRESS_TYPE.into(), GATEWAY_REQUEST.into());
        }
        d.request_address(req).map(|r| r.address)
    }

    #[test]
    fn pools_never_overlap_within_a_space() {
        let tmp = tempfile::tempdir().unwrap();
        let d = driver(tmp.path());
        let live = pool(&d, "", "10.1.4.0/22", "").unwrap();
        assert_eq!(live.pool, "10.1.4.0/22");
        for clash in ["10.1.4.0/22", "10.1.0.0/16", "10.1.5.0/24", "10.1.7.255/32"] {
            assert_eq!(pool(&d, LOCAL, clash, "").unwrap_err().kind, ErrorKind::Conflict, "{clash}");
        }
        pool(&d, GLOBAL, "10.1.4.0/22", "").unwrap();
        pool(&d, LOCAL, "10.1.8.0/22", "").unwrap();
        d.release_pool(ReleasePoolRequest::new(&live.pool_id)).unwrap();
        let again = d.release_pool(ReleasePoolRequest::new(&live.pool_id));
        assert_eq!(again.unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(addr(&d, &live.pool_id, "", false).unwrap_err().kind, ErrorKind::NotFound);
        pool(&d, LOCAL, "10.1.0.0/22", "").unwrap();
    }

    #[test]
    fn bad_requests_are_invalid_arguments() {
        let tmp = tempfile::tempdir().unwrap();
        let d = driver(tmp.path());
        for (p, sub) in [
            ("10.1.0.0/24", "10.1.1.0/25"),
            ("10.1.0.0/24", "10.1.0.0/16"),
            ("10.1.0.0/24", "fd00::/64"),
            ("", "10.1.0.0/25"),
            ("10.1.0.1/24", ""),
            ("banana", ""),
        ] {
            assert_eq!(pool(&d, LOCAL, p, sub).unwrap_err().kind, ErrorKind::InvalidArgument, "{p} {sub}");
        }
        let mut wrong_family = RequestPoolRequest::new(LOCAL, "10.1.0.0/24");
        wrong_family.v6 = true;
        assert_eq!(d.request_pool(wrong_family).unwrap_err().kind, ErrorKind::InvalidArgument);
        let mut typo = RequestPoolRequest::new(LOCAL, "10.1.0.0/24");
        typo.options.insert("com.docker.network.ipam.seriall".into(), "true".into());
        assert_eq!(d.request_pool(typo).unwrap_err().kind, ErrorKind::InvalidArgument);
        assert_eq!(pool(&d, "elsewhere", "10.1.0.0/24", "").unwrap_err().kind, ErrorKind::InvalidArgument);
        let id = pool(&d, LOCAL, "10.1.0.0/24", "").unwrap().pool_id;
        for bad in ["10.1.0.7/24", "ten", "10.1.1.7", "fd00::7"] {
            assert_eq!(addr(&d, &id, bad, false).unwrap_err().kind, ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn dynamic_pools_come_from_the_default_pools() {
        let tmp = tempfile::tempdir().unwrap();
        let d = driver(tmp.path());
        let a = pool(&d, LOCAL, "", "").unwrap();
        let b = pool(&d, LOCAL, "", "").unwrap();
        assert_eq!((a.pool.as_str(), b.pool.as_str()), ("172.30.0.0/24", "172.30.1.0/24"));
        assert_ne!(a.pool_id, b.pool_id);
        assert_eq!(pool(&d, LOCAL, "0.0.0.0/28", "").unwrap().pool, "172.30.2.0/28");
        assert_eq!(pool(&d, LOCAL, "0.0.0.0/28", "").unwrap().pool, "172.30.2.16/28");
        assert_eq!(pool(&d, LOCAL, "::/80", "").unwrap().pool, "fd5c:7d2e:9a41::/80");
        let mut v6 = RequestPoolRequest::new(LOCAL, "");
        v6.v6 = true;
        assert_eq!(d.request_pool(v6).unwrap().pool, "fd5c:7d2e:9a41:1::/64");
        assert_eq!(pool(&d, LOCAL, "0.0.0.0/8", "").unwrap_err().kind, ErrorKind::InvalidArgument);
        assert_eq!(pool(&d, GLOBAL, "", "").unwrap().pool, "172.30.0.0/24", "spaces are independent");

        let small = Options {
            default_address_pools: Some(vec![DefaultPool { base: "10.9.0.0/23".into(), size: 24 }]),
            ..Options::default()
        };
        let d = SimpleIpam::open(tmp.path().join("small"), &small).unwrap();
        pool(&d, LOCAL, "10.9.0.0/25", "").unwrap();
        assert_eq!(pool(&d, LOCAL, "", "").unwrap().pool, "10.9.1.0/24", "steps over a live pool");
        assert_eq!(pool(&d, LOCAL, "", "").unwrap_err().kind, ErrorKind::ResourceExhausted);
    }

    #[test]
    fn everything_survives_a_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let d = SimpleIpam::open(tmp.path(), &Options { fsync: true, ..Options::default() }).unwrap();
        let id = pool(&d, LOCAL, "10.1.0.0/24", "10.1.0.128/25").unwrap().pool_id;
        assert_eq!(addr(&d, &id, "", true).unwrap(), "10.1.0.128/24");
        assert_eq!(addr(&d, &id, "", false).unwrap(), "10.1.0.129/24");
        assert_eq!(addr(&d, &id, "10.1.0.5", false).unwrap(), "10.1.0.5/24");
        d.release_address(ReleaseAddressRequest::new(&id, "10.1.0.5")).unwrap();
        drop(d);

        let d = driver(tmp.path());
        assert_eq!(pool(&d, LOCAL, "10.1.0.0/24", "").unwrap_err().kind, ErrorKind::Conflict);
        assert_eq!(addr(&d, &id, "10.1.0.129", false).unwrap_err().kind, ErrorKind::Conflict);
        assert_eq!(addr(&d, &id, "", true).unwrap_err().kind, ErrorKind::Conflict, "one gateway");
        assert_eq!(addr(&d, &id, "10.1.0.5", false).unwrap(), "10.1.0.5/24");
        assert_eq!(addr(&d, &id, "", false).unwrap(), "10.1.0.130/24");
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(STATE_FILE), "{").unwrap();
        let e = SimpleIpam::open(tmp.path(), &Options::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::FailedPrecondition);
        assert!(e.message.contains(STATE_FILE), "{}", e.message);
    }

    #[test]
    fn options_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let mut init = InitRequest::new("x", tmp.path().display().to_string(), "");
        init.options = serde_json::json!({ "default_address_pools": [{ "base": "10.9.0.0/16", "size": 8 }] });
        assert_eq!(SimpleIpam::new(init.clone()).unwrap_err().kind, ErrorKind::InvalidArgument);
        init.options = serde_json::json!({ "default_pools": [] });
        assert_eq!(SimpleIpam::new(init.clone()).unwrap_err().kind, ErrorKind::InvalidArgument);
        init.options = serde_json::json!({
            "default_address_pools": [{ "base": "10.9.0.0/16", "size": 24 }],
            "fsync": true,
        });
        assert!(matches!(SimpleIpam::new(init).unwrap(), Init::Ready(_)));
    }
}
