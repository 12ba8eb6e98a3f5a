//! The network suite (`NW-*`), black-box through [`NetworkDriver`], with
//! berth-core's own sandbox code ([`berth_core::sandbox`]) doing what the
//! daemon does on join and leave: move the interface the driver names into
//! a network namespace, name it, address it; take it out again.
//!
//! * Every case makes its own namespaces (files under its case root, so the
//!   runner's mount check sees any left), its own links (veth pairs as
//!   macvlan parents, operator bridges) named `cn…`/`cb…` + pid + case
//!   number + a counter, and its own prefixes (`10.<200 + pid % 50>.<case *
//!   10 + k>.0/24`, `fd42:<…>::/64`), and sends traffic only between them.
//!   Network and endpoint ids are digests of the case root, so cases and
//!   runs never meet in a remote plugin that outlives them.
//! * Addresses are what IPAM would hand out for those prefixes (the suite
//!   plays the daemon and picks them: gateway `.1`, endpoints from `.2`).
//! * What the driver is decides which cases apply, found by trying
//!   ([`Flavor`]) and judged by effect: it makes or adopts the bridge
//!   named by `com.docker.network.bridge.name` — the link exists after the
//!   create (bridge-like: NW-02, NW-07, NW-09) —, it takes a `parent` link
//!   and refuses one that does not exist (macvlan-like: NW-11), it takes
//!   pools and no options, or it takes no addresses at all (host/none:
//!   NW-10). A driver that accepts options it ignores is therefore "plain".
//!   A case that does not apply skips, saying why.
//! * Teardown takes joined interfaces out of their sandboxes, leaves,
//!   deletes endpoints and networks, removes namespaces and the suite's own
//!   links — every step, reporting every failure — and then a leak check
//!   compares the host's links and nftables tables with what was there
//!   before the case.
//!
//! NW-01..NW-06 live in `config.rs`; NW-07..NW-13 in `traffic.rs`; the
//! driver slot, helpers and teardown here.

mod config;
mod traffic;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use berth_core::sandbox;
use berth_plugin_api::network::*;
use berth_plugin_api::{DriverError, ErrorKind, NetworkDriver};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::case::{describe_error, ok, Case, Failure, Stop, Suite};
use crate::ctx::Ctx;

/// Docker's key for the user's `--opt` map.
pub const GENERIC: &str = "com.docker.network.generic";
/// The bridge name option (bridge-like drivers).
pub const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// The MTU option.
pub const MTU: &str = "com.docker.network.driver.mtu";
/// The create option turning IPv6 on.
pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
/// The published-ports option of endpoints, joins and external connectivity.
pub const PORTMAP: &str = "com.docker.network.portmap";

/// Every implemented network case, in ID order.
pub fn cases() -> Vec<Case> {
    let c = |id: &'static str, description: &'static str, run: fn(&mut Ctx) -> crate::case::CaseResult| {
        Case { id, description, suite: Suite::Network, run }
    };
    vec![
        c("NW-01", "create and delete are symmetric; duplicate names or bridges conflict; of many parallel creates on one subnet exactly one wins", config::nw01_symmetric),
        c("NW-02", "an existing bridge the operator made is adopted, keeps its address and survives network removal", config::nw02_adopt),
        c("NW-03", "an endpoint's address lies in its subnet, gateway is right for v4 and v6; v6 off means no v6 at all", config::nw03_addresses),
        c("NW-04", "MTU is inherited by the container interface; 9000 works; out-of-range MTU is a clear error", config::nw04_mtu),
        c("NW-05", "a generated MAC is 6 bytes, locally administered, unicast; a requested MAC is kept", config::nw05_mac),
        c("NW-06", "bad configs are refused at create: gateway outside subnet, overlapping link-local v6, multicast ranges", config::nw06_bad),
        c("NW-07", "published host ports are reported, and released on leave; a new endpoint can bind the same port at once", traffic::nw07_ports),
        c("NW-08", "deleting an endpoint twice, or one never created, succeeds; after delete no veth end remains anywhere", traffic::nw08_delete),
        c("NW-09", "firewall state tracks live networks exactly: after create/delete of N networks, no rule or chain remains", traffic::nw09_firewall),
        c("NW-10", "host: no new links, host namespace shared; none: only loopback in the sandbox", traffic::nw10_host_none),
        c("NW-11", "macvlan: a parent sub-interface it creates (`parent.vlan`) is shared and removed with its last network; an operator's parent is never deleted", traffic::nw11_macvlan),
        c("NW-12", "overlay: one VNI per subnet, unique across networks, freed on delete; two hosts' endpoints reach each other", traffic::nw12_overlay),
        c("NW-13", "two endpoints on one network reach each other; on different networks they do not (isolation)", traffic::nw13_reach),
    ]
}

/// What kind of network driver the subject is, found by trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Takes pools and adopts/creates the bridge named by [`BRIDGE_NAME`]
    /// (the link exists once the network does).
    Bridge,
    /// Takes pools and a `parent` link (macvlan, ipvlan), and refuses a
    /// parent that does not exist.
    Parent,
    /// Takes pools and no options.
    Plain,
    /// Takes no addresses and gives no interface (host, none).
    Addressless,
}

impl Flavor {
    /// Whether networks of this driver take IPAM pools.
    pub fn takes_addresses(self) -> bool {
        self != Flavor::Addressless
    }
}

/// One endpoint joined to a sandbox by the suite.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The network.
    pub net: String,
    /// The endpoint.
    pub ep: String,
    /// The sandbox's namespace file.
    pub key: PathBuf,
    /// The interface's name in the sandbox (empty: none moved in).
    pub name: String,
    /// Its name in the host namespace, as the driver answered.
    pub src: String,
    /// The driver made it in the sandbox (berth-core configured it there
    /// and leaves it there on leave).
    pub in_place: bool,
    /// The driver's answer.
    pub resp: JoinResponse,
}

/// A network the suite created: its id and prefixes.
#[derive(Debug, Clone)]
pub struct Net {
    /// The network id.
    pub id: String,
    /// IPv4 subnet `10.x.y.0/24` (none for addressless drivers).
    pub v4: Option<String>,
    /// IPv6 subnet `fd42:…::/64`, when IPv6 is on.
    pub v6: Option<String>,
}

impl Net {
    /// The IPv4 host address `.n` of the subnet, with its prefix length.
    pub fn addr(&self, n: u8) -> String {
        self.v4.as_deref().map(|s| format!("{}{n}/24", s.trim_end_matches("0/24"))).unwrap_or_default()
    }

    /// The IPv6 host address `::n`, with its prefix length.
    pub fn addr6(&self, n: u8) -> String {
        self.v6.as_deref().map(|s| format!("{}{n:x}/64", s.trim_end_matches("/64"))).unwrap_or_default()
    }
}

/// The network driver of a case, and everything the case made with it.
pub(crate) struct NetworkSlot {
    driver: Arc<dyn NetworkDriver>,
    flavor: Option<Flavor>,
    parent: Option<String>,
    seq: u32,
    networks: Vec<String>,
    endpoints: Vec<(String, String)>,
    joined: Vec<Joined>,
    sandboxes: Vec<PathBuf>,
    links: Vec<String>,
    links_before: BTreeSet<String>,
    tables_before: BTreeSet<String>,
}

impl NetworkSlot {
    /// Wraps a fresh driver; snapshots the host's links and nftables
    /// tables for the leak check.
    pub(crate) fn new(driver: Arc<dyn NetworkDriver>) -> Self {
        NetworkSlot {
            driver,
            flavor: None,
            parent: None,
            seq: 0,
            networks: Vec::new(),
            endpoints: Vec::new(),
            joined: Vec::new(),
            sandboxes: Vec::new(),
            links: Vec::new(),
            links_before: host_links(),
            tables_before: nft_tables(),
        }
    }
}

impl Ctx {
    fn net_slot(&mut self) -> &mut NetworkSlot {
        self.network.as_mut().expect("a network case is always given a network driver")
    }

    /// The network driver under test.
    pub fn network(&self) -> Arc<dyn NetworkDriver> {
        Arc::clone(&self.network.as_ref().expect("a network case is always given a network driver").driver)
    }

    fn case_no(&self) -> u32 {
        self.id().rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// A fresh id (64 hex digits, as Docker's) unique to this case and run.
    pub fn net_id(&mut self, tag: &str) -> String {
        let slot = self.net_slot();
        slot.seq += 1;
        let seq = slot.seq;
        let d = Sha256::digest(format!("{}/{}/{tag}/{seq}", std::process::id(), self.dir().display()));
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A fresh link name (at most 15 bytes): `c<tag>` + pid + case + counter.
    pub fn link_name(&mut self, tag: char) -> String {
        let no = self.case_no();
        let slot = self.net_slot();
        slot.seq += 1;
        format!("c{tag}{}{no:02}{}", std::process::id() % 10_000_000, slot.seq % 100)
    }

    /// IPv4 subnet number `k` of this case, `10.a.b.0/24`.
    pub fn subnet(&self, k: u32) -> String {
        format!("10.{}.{}.0/24", 200 + std::process::id() % 50, self.case_no() * 10 + k)
    }

    /// IPv6 subnet number `k` of this case.
    pub fn subnet6(&self, k: u32) -> String {
        format!("fd42:{:x}:{:x}::/64", 200 + std::process::id() % 50, self.case_no() * 10 + k)
    }

    /// Makes a veth pair of the suite's own (both ends up, `mtu` if given)
    /// and answers the end a driver may use as a parent.
    pub fn veth(&mut self, mtu: Option<u32>) -> Result<String, Stop> {
        let a = self.link_name('p');
        let b = format!("{a}x");
        let step = format!("make veth pair {a} / {b} (the suite's own)");
        run_cmd(&step, &["ip", "link", "add", &a, "type", "veth", "peer", "name", &b])?;
        self.net_slot().links.push(a.clone());
        for end in [&a, &b] {
            if let Some(m) = mtu {
                run_cmd(&step, &["ip", "link", "set", end, "mtu", &m.to_string()])?;
            }
            run_cmd(&step, &["ip", "link", "set", end, "up"])?;
        }
        Ok(a)
    }

    /// Makes a bridge of the suite's own (an operator's), with `addr` on it.
    pub fn operator_bridge(&mut self, addr: &str) -> Result<String, Stop> {
        let name = self.link_name('b');
        let step = format!("make bridge {name} (the operator's)");
        run_cmd(&step, &["ip", "link", "add", &name, "type", "bridge"])?;
        self.net_slot().links.push(name.clone());
        run_cmd(&step, &["ip", "addr", "add", addr, "dev", &name])?;
        run_cmd(&step, &["ip", "link", "set", &name, "up"])?;
        Ok(name)
    }

    /// The parent link of this case (a veth end the suite made).
    pub fn parent(&mut self) -> Result<String, Stop> {
        if let Some(p) = self.net_slot().parent.clone() {
            return Ok(p);
        }
        let p = self.veth(Some(9000))?;
        self.net_slot().parent = Some(p.clone());
        Ok(p)
    }

    /// A fresh sandbox: a network namespace kept under the case root.
    pub fn sandbox(&mut self) -> Result<PathBuf, Stop> {
        let name = self.link_name('s');
        let key = self.dir().join("netns").join(name);
        ok(format!("create sandbox {}", key.display()), sandbox::create(&key))?;
        self.net_slot().sandboxes.push(key.clone());
        Ok(key)
    }

    /// A sandbox key for the host's own namespace (what host networks get).
    pub fn host_sandbox(&mut self) -> Result<PathBuf, Stop> {
        let key = self.dir().join("netns").join("default");
        ok("bind the host namespace as a sandbox key", sandbox::bind_host(&key))?;
        self.net_slot().sandboxes.push(key.clone());
        Ok(key)
    }

    /// What kind of driver this is; found by trying once per case, and by
    /// effect: a driver that silently ignores an option it does not know
    /// is not taken for one that uses it. Bridge-like only when the bridge
    /// it was named shows up as a link; parent-based only when it also
    /// refuses a parent that does not exist.
    pub fn flavor(&mut self) -> Result<Flavor, Stop> {
        if let Some(f) = self.net_slot().flavor {
            return Ok(f);
        }
        let d = self.network();
        let mut tried = Vec::new();
        for f in [Flavor::Bridge, Flavor::Parent, Flavor::Plain, Flavor::Addressless] {
            let id = self.net_id("probe");
            let req = self.net_req(f, &id, 9, false, json!({}))?;
            let bridge = generic_str(&req, BRIDGE_NAME);
            match d.create_network(req) {
                Ok(()) => {
                    self.net_slot().networks.push(id.clone());
                    // Looked at before the delete, which may remove it.
                    let no_bridge = f == Flavor::Bridge && !link_exists(&bridge);
                    ok("delete the network made to find what the driver takes", self.delete_net(&id))?;
                    let unproven = if no_bridge {
                        Some(format!("accepted {BRIDGE_NAME}={bridge:?}, but made no link {bridge}"))
                    } else if f == Flavor::Parent {
                        self.takes_missing_parent()?
                    } else {
                        None
                    };
                    match unproven {
                        Some(why) => tried.push(format!("{f:?}: {why}")),
                        None => {
                            self.net_slot().flavor = Some(f);
                            return Ok(f);
                        }
                    }
                }
                Err(e) => tried.push(format!("{f:?}: {}", describe_error(&e))),
            }
        }
        Err(Failure::new(
            "create a network the way some driver takes it",
            "one of: pools + com.docker.network.bridge.name (bridge-like: the bridge then exists), \
             pools + parent (macvlan-like: a missing parent is refused), pools alone, or no pools and no \
             options (host/none) to be accepted",
            tried.join("; "),
        )
        .into())
    }

    /// Whether the driver accepts a network on a parent link that does not
    /// exist (then it ignores `parent`): why it is not parent-based, or
    /// `None` when it refuses, as a parent-based driver must.
    fn takes_missing_parent(&mut self) -> Result<Option<String>, Stop> {
        let missing = self.link_name('n');
        let id = self.net_id("probe");
        let req = self.net_req(Flavor::Parent, &id, 8, false, json!({ "parent": missing }))?;
        if self.network().create_network(req).is_err() {
            return Ok(None);
        }
        self.net_slot().networks.push(id.clone());
        ok("delete the network made on a missing parent", self.delete_net(&id))?;
        Ok(Some(format!("accepted parent {missing:?}, a link that does not exist")))
    }

    /// The create request for network `id` as a driver of `flavor` takes
    /// it, on subnet `k` (with IPv6 subnet `k` when `v6`), with `extra`
    /// driver options (a JSON object).
    pub fn net_req(
        &mut self,
        flavor: Flavor,
        id: &str,
        k: u32,
        v6: bool,
        extra: Value,
    ) -> Result<CreateNetworkRequest, Stop> {
        let mut generic = extra.as_object().cloned().unwrap_or_default();
        match flavor {
            Flavor::Bridge if !generic.contains_key(BRIDGE_NAME) => {
                let name = self.link_name('n');
                generic.insert(BRIDGE_NAME.into(), Value::String(name));
            }
            Flavor::Parent if !generic.contains_key("parent") => {
                generic.insert("parent".into(), Value::String(self.parent()?));
            }
            _ => {}
        }
        let mut req = CreateNetworkRequest::new(id);
        if !generic.is_empty() {
            req.options.insert(GENERIC.into(), Value::Object(generic));
        }
        if flavor.takes_addresses() {
            req.ipv4_data = vec![pool(&self.subnet(k), "")];
            if v6 {
                req.options.insert(ENABLE_IPV6.into(), Value::Bool(true));
                req.ipv6_data = vec![pool(&self.subnet6(k), "")];
            }
        }
        Ok(req)
    }

    /// Creates network number `k` the driver's way; fails the case on error.
    pub fn create_net(&mut self, k: u32, v6: bool, extra: Value) -> Result<Net, Stop> {
        let flavor = self.flavor()?;
        let id = self.net_id("net");
        let req = self.net_req(flavor, &id, k, v6, extra)?;
        let what = describe_net(&req);
        self.try_create(req).map_err(|e| {
            Stop::from(
                Failure::new(format!("create {what}"), "success", describe_error(&e)).with_kind(e.kind),
            )
        })?;
        Ok(Net {
            id,
            v4: flavor.takes_addresses().then(|| self.subnet(k)),
            v6: (flavor.takes_addresses() && v6).then(|| self.subnet6(k)),
        })
    }

    /// Calls `create_network`, remembering the network for teardown when
    /// it succeeds.
    pub fn try_create(&mut self, req: CreateNetworkRequest) -> Result<(), DriverError> {
        let id = req.network_id.clone();
        self.network().create_network(req)?;
        self.net_slot().networks.push(id);
        Ok(())
    }

    /// Calls `delete_network`; forgets the network when it succeeds.
    pub fn delete_net(&mut self, id: &str) -> Result<(), DriverError> {
        self.network().delete_network(DeleteNetworkRequest::new(id))?;
        self.net_slot().networks.retain(|n| n != id);
        Ok(())
    }

    /// Calls `create_endpoint` for `ep` with address `.n` of `net` (none
    /// for addressless networks), `mac` (empty: the driver's choice) and
    /// endpoint `options`; remembers it for teardown.
    pub fn try_endpoint(
        &mut self,
        net: &Net,
        ep: &str,
        n: u8,
        mac: &str,
        options: Options,
    ) -> Result<CreateEndpointResponse, DriverError> {
        let mut req = CreateEndpointRequest::new(&net.id, ep);
        if net.v4.is_some() || !mac.is_empty() {
            let mut i = EndpointInterface::default();
            i.address = net.addr(n);
            i.address_ipv6 = net.addr6(n);
            i.mac_address = mac.to_string();
            req.interface = Some(i);
        }
        req.options = options;
        let resp = self.network().create_endpoint(req)?;
        self.net_slot().endpoints.push((net.id.clone(), ep.to_string()));
        Ok(resp)
    }

    /// Creates endpoint `ep` with address `.n`; fails the case on error.
    pub fn endpoint(&mut self, net: &Net, n: u8) -> Result<(String, CreateEndpointResponse), Stop> {
        let ep = self.net_id("ep");
        let resp = ok(
            format!("create endpoint with address {:?} on network {}", net.addr(n), short(&net.id)),
            self.try_endpoint(net, &ep, n, "", Options::new()),
        )?;
        Ok((ep, resp))
    }

    /// Joins `ep` (address `.n` of `net`) to the sandbox at `key` as the
    /// daemon does: the driver's `join`, then berth-core moves and
    /// configures the interface it named (MAC and MTU as the driver made
    /// them). Fails the case on error.
    pub fn join(&mut self, net: &Net, ep: &str, n: u8, key: &Path, options: Options) -> Result<Joined, Stop> {
        let mut req = JoinRequest::new(&net.id, ep);
        req.sandbox_key = key.display().to_string();
        req.options = options;
        let step =
            format!("join endpoint {} of network {} to sandbox {}", short(ep), short(&net.id), key.display());
        let resp = ok(&step, self.network().join(req))?;
        let mut j = Joined {
            net: net.id.clone(),
            ep: ep.to_string(),
            key: key.to_path_buf(),
            name: String::new(),
            src: String::new(),
            in_place: false,
            resp: resp.clone(),
        };
        let iface = resp.interface_name.clone().filter(|i| !i.src_name.is_empty());
        if let Some(i) = iface.filter(|_| sandbox::is_netns(key) && !key.ends_with("default")) {
            j.src = i.src_name.clone();
            let mut spec = sandbox::JoinSpec {
                src_name: i.src_name.clone(),
                dst_prefix: if i.dst_prefix.is_empty() { "eth".into() } else { i.dst_prefix.clone() },
                disable_ipv6: net.v6.is_none(),
                ..Default::default()
            };
            let step4 = format!("{step}: address {:?}", net.addr(n));
            spec.ipv4 = parse(&step4, &net.addr(n))?;
            spec.ipv6 = parse(&step4, &net.addr6(n))?;
            // The daemon sets the default gateways the driver answered.
            spec.gateway = resp.gateway.parse().ok();
            spec.gateway6 = resp.gateway_ipv6.parse().ok().filter(|_| spec.ipv6.is_some());
            // The index of the joined record is where teardown finds it,
            // even when the move below fails half-way.
            self.net_slot().joined.push(j.clone());
            let at = self.net_slot().joined.len() - 1;
            let joined = ok(
                format!(
                    "{step}: berth-core moves the interface {:?} the driver named into the sandbox",
                    i.src_name
                ),
                sandbox::join(key, &spec),
            )?;
            self.net_slot().joined[at].name = joined.name.clone();
            self.net_slot().joined[at].in_place = joined.in_place;
            (j.name, j.in_place) = (joined.name, joined.in_place);
        } else {
            self.net_slot().joined.push(j.clone());
        }
        Ok(j)
    }

    /// Takes `j`'s interface out of its sandbox and calls `leave`.
    pub fn leave(&mut self, j: &Joined) -> Result<(), Stop> {
        if !j.src.is_empty() {
            ok(
                format!("berth-core takes {:?} out of sandbox {}", j.name, j.key.display()),
                sandbox::leave(&j.key, &j.name, &j.src, j.in_place),
            )?;
        }
        ok(
            format!("leave endpoint {}", short(&j.ep)),
            self.network().leave(LeaveRequest::new(&j.net, &j.ep)),
        )?;
        self.net_slot().joined.retain(|x| !(x.net == j.net && x.ep == j.ep));
        Ok(())
    }

    /// Deletes endpoint `ep` of `net`; forgets it when that succeeds.
    pub fn delete_ep(&mut self, net: &str, ep: &str) -> Result<(), DriverError> {
        self.network().delete_endpoint(DeleteEndpointRequest::new(net, ep))?;
        self.net_slot().endpoints.retain(|(n, e)| !(n == net && e == ep));
        Ok(())
    }

    /// Undoes what the network case left, every step, every failure.
    pub(crate) fn network_teardown(&mut self) -> Vec<String> {
        let Some(slot) = self.network.as_mut() else { return Vec::new() };
        let d = Arc::clone(&slot.driver);
        let mut errors = Vec::new();
        let mut note = |what: String, r: Result<(), DriverError>| {
            if let Err(e) = r {
                errors.push(format!("{what}: {}", describe_error(&e)));
            }
        };
        for j in std::mem::take(&mut slot.joined).into_iter().rev() {
            if !j.src.is_empty() {
                note(
                    format!("take {:?} out of {}", j.name, j.key.display()),
                    sandbox::leave(&j.key, &j.name, &j.src, j.in_place),
                );
            }
            note(
                format!("revoke external connectivity of endpoint {}", short(&j.ep)),
                d.revoke_external_connectivity(RevokeExternalConnectivityRequest::new(&j.net, &j.ep)),
            );
            note(format!("leave endpoint {}", short(&j.ep)), d.leave(LeaveRequest::new(&j.net, &j.ep)));
        }
        for (n, e) in std::mem::take(&mut slot.endpoints).into_iter().rev() {
            note(
                format!("delete endpoint {}", short(&e)),
                d.delete_endpoint(DeleteEndpointRequest::new(&n, &e)),
            );
        }
        for n in std::mem::take(&mut slot.networks).into_iter().rev() {
            note(format!("delete network {}", short(&n)), d.delete_network(DeleteNetworkRequest::new(&n)));
        }
        for key in std::mem::take(&mut slot.sandboxes).into_iter().rev() {
            note(format!("remove sandbox {}", key.display()), sandbox::remove(&key));
        }
        for l in std::mem::take(&mut slot.links).into_iter().rev() {
            if link_exists(&l) {
                if let Err(e) = run_cmd("", &["ip", "link", "del", &l]) {
                    errors.push(format!("delete the suite's link {l}: {e:?}"));
                }
            }
        }
        errors
    }

    /// What the network case left on the host after teardown: links and
    /// nftables tables that were not there before it.
    pub(crate) fn network_leaks(&self) -> Vec<String> {
        let Some(slot) = self.network.as_ref() else { return Vec::new() };
        let new = || -> (BTreeSet<String>, BTreeSet<String>) {
            (
                host_links().difference(&slot.links_before).cloned().collect(),
                nft_tables().difference(&slot.tables_before).cloned().collect(),
            )
        };
        let (mut links, mut tables) = new();
        if !links.is_empty() || !tables.is_empty() {
            // Once more a moment later: links and tables another process
            // (a test of its own, a daemon) makes and removes meanwhile
            // are not this case's.
            std::thread::sleep(LEAK_RECHECK);
            let (l2, t2) = new();
            links.retain(|l| l2.contains(l));
            tables.retain(|t| t2.contains(t));
        }
        let mut leaks = Vec::new();
        if !links.is_empty() {
            leaks.push(format!("link(s) {}", links.into_iter().collect::<Vec<_>>().join(", ")));
        }
        if !tables.is_empty() {
            leaks.push(format!("nftables {}", tables.into_iter().collect::<Vec<_>>().join(", ")));
        }
        leaks
    }
}

/// How long a link or nftables table left after teardown must last to be
/// a leak.
pub const LEAK_RECHECK: std::time::Duration = std::time::Duration::from_millis(300);

/// A pool as IPAM hands it to the driver: gateway `.1` (or `::1`) unless
/// `gateway` names another.
pub fn pool(subnet: &str, gateway: &str) -> IpamData {
    let mut p = IpamData::default();
    p.address_space = "LocalDefault".into();
    p.pool = subnet.to_string();
    let (base, len) = subnet.split_once('/').unwrap_or((subnet, "0"));
    p.gateway = if !gateway.is_empty() {
        gateway.to_string()
    } else if base.contains(':') {
        format!("{}1/{len}", base.trim_end_matches(':').to_string() + "::")
    } else {
        format!("{}1/{len}", base.trim_end_matches('0'))
    };
    p
}

/// The bare gateway address of subnet `s` (`.1` / `::1`).
pub fn gateway_of(s: &str) -> String {
    pool(s, "").gateway.split('/').next().unwrap_or_default().to_string()
}

fn parse<T: std::str::FromStr>(step: &str, s: &str) -> Result<Option<T>, Stop> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| Failure::new(step, "an address with a prefix length", s).into())
}

/// The first 12 characters of an id, as Docker shows them.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The string value of driver option `key` in a create request (empty
/// when unset).
fn generic_str(req: &CreateNetworkRequest, key: &str) -> String {
    req.options.get(GENERIC).and_then(|g| g.get(key)).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn describe_net(req: &CreateNetworkRequest) -> String {
    let pools: Vec<&str> = req.ipv4_data.iter().chain(&req.ipv6_data).map(|p| p.pool.as_str()).collect();
    let opts = req.options.get(GENERIC).map(|g| g.to_string()).unwrap_or_else(|| "{}".into());
    format!("network {} (pools [{}], options {opts})", short(&req.network_id), pools.join(", "))
}

/// Runs a host command of the suite's own; fails at `step` with its stderr.
pub fn run_cmd(step: &str, args: &[&str]) -> Result<String, Stop> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| {
        Stop::from(Failure::new(step, format!("`{}` to run", args.join(" ")), format!("cannot run it: {e}")))
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Failure::new(
            step,
            format!("`{}` to succeed", args.join(" ")),
            format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        )
        .into())
    }
}

/// Whether `ping -c1 -W2 ip` from the sandbox at `key` gets an answer.
pub fn ping(key: &Path, ip: &str) -> bool {
    Command::new("nsenter")
        .arg(format!("--net={}", key.display()))
        .args(["ping", "-c1", "-W2", ip])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The host's link names, leaving out the links another process running
/// this suite made for its own cases (`c<tag><its pid>…`), so runs at the
/// same time do not see each other's links as leaks.
pub fn host_links() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !foreign(n))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `name` is a link another suite process made for its cases.
fn foreign(name: &str) -> bool {
    let mut chars = name.chars();
    let suite_made = chars.next() == Some('c')
        && chars.next().is_some_and(|t| "pbns".contains(t))
        && name[2..].trim_end_matches('x').bytes().all(|b| b.is_ascii_digit())
        && name.len() > 4;
    suite_made && !name[2..].starts_with(&(std::process::id() % 10_000_000).to_string())
}

/// Whether host link `name` exists.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The host's nftables tables (`inet berth`, …); empty without `nft`.
pub fn nft_tables() -> BTreeSet<String> {
    Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(|l| l.trim().to_string()).collect())
        .unwrap_or_default()
}

/// The whole nftables ruleset, as `nft list ruleset` prints it.
pub fn nft_ruleset() -> String {
    Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The interfaces of the sandbox at `key`, or the case fails.
pub fn sandbox_links(key: &Path) -> Result<Vec<sandbox::netlink::Link>, Stop> {
    ok(format!("list the interfaces of sandbox {}", key.display()), sandbox::links(key))
}

/// Skips unless the driver is of one of `flavors`.
pub fn require(ctx: &mut Ctx, flavors: &[Flavor], why: &str) -> Result<Flavor, Stop> {
    let f = ctx.flavor()?;
    if flavors.contains(&f) {
        Ok(f)
    } else {
        Err(Stop::Skip(format!("{why} (this driver is {})", describe_flavor(f))))
    }
}

/// Skips unless the driver gives sandboxes an interface (bridge-like,
/// parent-based or plain).
pub fn require_interface(ctx: &mut Ctx) -> Result<Flavor, Stop> {
    require(
        ctx,
        &[Flavor::Bridge, Flavor::Parent, Flavor::Plain],
        "applies to drivers that give sandboxes an interface",
    )
}

/// How a flavor reads in a skip reason.
pub fn describe_flavor(f: Flavor) -> &'static str {
    match f {
        Flavor::Bridge => "bridge-like: it takes com.docker.network.bridge.name",
        Flavor::Parent => "macvlan-like: it takes a parent link",
        Flavor::Plain => "an interface driver taking pools and no bridge or parent option",
        Flavor::Addressless => {
            "addressless: it takes no pools and gives sandboxes no interface, as host and none"
        }
    }
}

/// Whether an error says "this driver does not do that".
pub fn declines(e: &DriverError) -> bool {
    matches!(e.kind, ErrorKind::Unsupported | ErrorKind::InvalidArgument)
}
