//! Shared helpers of the network tests: guards that remove what a test
//! made (namespaces, veth pairs) even when it fails, and read-backs of a
//! sandbox's addresses and routes through `nsenter --net=<key> ip -j`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_core::sandbox::{self, netlink::Netlink};

/// A namespace made at `key`, removed on drop.
pub struct Ns {
    pub key: PathBuf,
}

impl Ns {
    pub fn new(key: PathBuf) -> Ns {
        sandbox::create(&key).unwrap();
        Ns { key }
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = sandbox::remove(&self.key);
    }
}

/// A veth pair in the host namespace: `outer` ↔ `inner`; deleted on drop
/// (wherever its ends went).
pub struct Veth {
    pub outer: String,
    pub inner: String,
}

impl Veth {
    pub fn new(base: &str) -> Veth {
        let v = Veth { outer: format!("{base}h"), inner: format!("{base}c") };
        Netlink::open().unwrap().create_veth(&v.outer, &v.inner).unwrap();
        v
    }
}

impl Veth {
    /// A pair with `inner` made directly in the sandbox at `key` (as the
    /// bridge driver makes it for berth's core), `outer` in the host.
    pub fn new_in(base: &str, key: &Path) -> Veth {
        let v = Veth { outer: format!("{base}h"), inner: format!("{base}c") };
        let ok = std::process::Command::new("nsenter")
            .arg(format!("--net={}", key.display()))
            .args(["ip", "link", "add", &v.inner, "type", "veth", "peer", "name", &v.outer, "netns", "1"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "create veth {} in {} with its peer in the host", v.inner, key.display());
        v
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        delete_host_link(&self.outer);
        delete_host_link(&self.inner);
    }
}

/// Deletes host link `name` if it exists.
pub fn delete_host_link(name: &str) {
    if let Ok(mut nl) = Netlink::open() {
        if let Ok(Some(l)) = nl.link(name) {
            let _ = nl.delete_link(l.index);
        }
    }
}

/// Names of the host namespace's links.
pub fn host_links() -> Vec<String> {
    Netlink::open().unwrap().links().unwrap().into_iter().map(|l| l.name).collect()
}

fn ip_json(key: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", key.display()))
        .args(["ip", "-j"])
        .args(args)
        .output()
        .expect("run nsenter ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Array(Vec::new()))
}

/// `<ifname> <family> <address>/<prefix>` for every address in the
/// sandbox, link-local ones included.
pub fn addrs(key: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for iface in ip_json(key, &["addr"]).as_array().unwrap() {
        let name = iface["ifname"].as_str().unwrap_or_default();
        for a in iface["addr_info"].as_array().into_iter().flatten() {
            out.push(format!(
                "{name} {} {}/{}",
                a["family"].as_str().unwrap_or_default(),
                a["local"].as_str().unwrap_or_default(),
                a["prefixlen"]
            ));
        }
    }
    out
}

/// `<dst> [via <gw>] dev <dev>` for every route of `family` (`-4`, `-6`).
pub fn routes(key: &Path, family: &str) -> Vec<String> {
    ip_json(key, &[family, "route"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let via = r["gateway"].as_str().map(|g| format!(" via {g}")).unwrap_or_default();
            format!(
                "{}{via} dev {}",
                r["dst"].as_str().unwrap_or_default(),
                r["dev"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

// ------------------------------------------------------------ the service

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::call::{Driver, Metrics};
use berth_core::network::{DriverSet, NetworkService, NetworkSettings, PoolSpec};
use berth_core::store::Store;
use berth_core::{DriverError, DriverResult, Kind};
use berth_plugin_api::ipam::*;
use berth_plugin_api::network::*;
use berth_plugin_api::{Init, InitRequest, IpamDriver, NetworkDriver};

/// Every driver call of a test, in order: `ipam.request_pool`,
/// `net.join`, ...
pub type Log = Arc<Mutex<Vec<String>>>;

/// A network driver for tests: a veth pair per endpoint in the host
/// namespace, named from the endpoint id (`<prefix><ep[..5]>h` ↔ `…c`), so
/// it keeps no state about endpoints and any process can clean up after
/// another. Networks (their gateways) are kept in a file under `dir`.
/// Options given to `create_endpoint`, `join` and
/// `program_external_connectivity` are kept in `<ep>.<method>.json` under
/// `dir` (see [`VethDriver::options_of`]); `endpoint_info` answers the
/// programmed port map with each `HostPort: 0` resolved to 49153.
#[derive(Debug)]
pub struct VethDriver {
    pub prefix: String,
    pub dir: PathBuf,
    pub log: Log,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Gateways {
    v4: String,
    v6: String,
    /// `-o veth.routes=none`: join answers no static routes (two networks
    /// answering the same ones could not share a sandbox).
    #[serde(default)]
    no_routes: bool,
}

impl VethDriver {
    fn names(&self, ep: &str) -> (String, String) {
        let short = &ep[..5.min(ep.len())];
        (format!("{}{short}h", self.prefix), format!("{}{short}c", self.prefix))
    }
    fn file(&self, net: &str) -> PathBuf {
        self.dir.join(format!("{net}.json"))
    }
    fn keep_options(&self, ep: &str, method: &str, options: &Options) {
        if !options.is_empty() {
            std::fs::create_dir_all(&self.dir).unwrap();
            std::fs::write(Self::options_file(&self.dir, ep, method), serde_json::to_vec(options).unwrap())
                .unwrap();
        }
    }
    fn options_file(dir: &Path, ep: &str, method: &str) -> PathBuf {
        dir.join(format!("{ep}.{method}.json"))
    }
    /// The options endpoint `ep` got in `method` from the veth driver
    /// under world `dir`; `None` when it got none.
    pub fn options_of(dir: &Path, ep: &str, method: &str) -> Option<Options> {
        let b = std::fs::read(Self::options_file(&dir.join("veth"), ep, method)).ok()?;
        Some(serde_json::from_slice(&b).unwrap())
    }
    fn log(&self, s: &str) {
        self.log.lock().unwrap().push(format!("net.{s}"));
    }
}

fn nl_err(e: std::io::Error) -> DriverError {
    DriverError::internal(e.to_string())
}

impl NetworkDriver for VethDriver {
    fn capabilities(&self, _req: CapabilitiesRequest) -> DriverResult<Capabilities> {
        Ok(Capabilities::new(Scope::Local))
    }
    fn create_network(&self, req: CreateNetworkRequest) -> DriverResult<()> {
        self.log("create_network");
        let gw = Gateways {
            v4: req.ipv4_data.first().map(|d| d.gateway.clone()).unwrap_or_default(),
            v6: req.ipv6_data.first().map(|d| d.gateway.clone()).unwrap_or_default(),
            no_routes: req.options.get("com.docker.network.generic").and_then(|g| g.get("veth.routes"))
                == Some(&serde_json::Value::String("none".into())),
        };
        std::fs::create_dir_all(&self.dir).unwrap();
        std::fs::write(self.file(&req.network_id), serde_json::to_vec(&gw).unwrap()).unwrap();
        Ok(())
    }
    fn delete_network(&self, req: DeleteNetworkRequest) -> DriverResult<()> {
        self.log("delete_network");
        let _ = std::fs::remove_file(self.file(&req.network_id));
        Ok(())
    }
    fn create_endpoint(&self, req: CreateEndpointRequest) -> DriverResult<CreateEndpointResponse> {
        self.log("create_endpoint");
        self.keep_options(&req.endpoint_id, "create_endpoint", &req.options);
        let (outer, inner) = self.names(&req.endpoint_id);
        Netlink::open().and_then(|mut nl| nl.create_veth(&outer, &inner)).map_err(nl_err)?;
        let mut resp = CreateEndpointResponse::default();
        if req.interface.as_ref().map_or(true, |i| i.mac_address.is_empty()) {
            let b = req.endpoint_id.as_bytes();
            let mut i = EndpointInterface::default();
            i.mac_address = format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3]);
            resp.interface = Some(i);
        }
        Ok(resp)
    }
    fn endpoint_info(&self, req: EndpointInfoRequest) -> DriverResult<Options> {
        let mut info = Options::new();
        let file = Self::options_file(&self.dir, &req.endpoint_id, "program_external_connectivity");
        let programmed: Option<Options> =
            std::fs::read(file).ok().and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(mut map) = programmed.and_then(|mut o| o.remove("com.docker.network.portmap")) {
            for b in map.as_array_mut().into_iter().flatten() {
                if b["HostPort"] == 0 {
                    b["HostPort"] = 49153.into();
                    b["HostPortEnd"] = 49153.into();
                }
                if b["HostIP"] == "" {
                    b["HostIP"] = "0.0.0.0".into();
                }
            }
            info.insert("com.docker.network.portmap".into(), map);
        }
        Ok(info)
    }
    fn delete_endpoint(&self, req: DeleteEndpointRequest) -> DriverResult<()> {
        self.log("delete_endpoint");
        for m in ["create_endpoint", "join", "program_external_connectivity"] {
            let _ = std::fs::remove_file(Self::options_file(&self.dir, &req.endpoint_id, m));
        }
        let (outer, inner) = self.names(&req.endpoint_id);
        delete_host_link(&outer);
        delete_host_link(&inner);
        Ok(())
    }
    fn join(&self, req: JoinRequest) -> DriverResult<JoinResponse> {
        self.log("join");
        self.keep_options(&req.endpoint_id, "join", &req.options);
        let gw: Gateways = std::fs::read(self.file(&req.network_id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| DriverError::not_found(format!("network {}", req.network_id)))?;
        let bare = |s: &str| s.split('/').next().unwrap_or_default().to_string();
        let mut resp = JoinResponse::default();
        resp.interface_name = Some(InterfaceName::new(self.names(&req.endpoint_id).1, "eth"));
        resp.gateway = bare(&gw.v4);
        resp.gateway_ipv6 = bare(&gw.v6);
        let mut connected = StaticRoute::default();
        connected.destination = "192.0.2.0/24".into();
        connected.route_type = 1;
        let mut via = StaticRoute::default();
        via.destination = "198.51.100.0/24".into();
        via.next_hop = bare(&gw.v4);
        if !gw.no_routes {
            resp.static_routes = vec![connected, via];
        }
        Ok(resp)
    }
    fn leave(&self, _req: LeaveRequest) -> DriverResult<()> {
        self.log("leave");
        Ok(())
    }
    fn program_external_connectivity(&self, req: ProgramExternalConnectivityRequest) -> DriverResult<()> {
        self.log("program_external_connectivity");
        self.keep_options(&req.endpoint_id, "program_external_connectivity", &req.options);
        Ok(())
    }
    fn revoke_external_connectivity(&self, _req: RevokeExternalConnectivityRequest) -> DriverResult<()> {
        self.log("revoke_external_connectivity");
        Ok(())
    }
}

/// An IPAM driver that logs every call before handing it on.
pub struct LoggedIpam<I> {
    pub inner: I,
    pub log: Log,
}

impl<I> std::fmt::Debug for LoggedIpam<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoggedIpam")
    }
}

impl<I: IpamDriver> LoggedIpam<I> {
    fn log(&self, s: &str) {
        self.log.lock().unwrap().push(format!("ipam.{s}"));
    }
}

impl<I: IpamDriver> IpamDriver for LoggedIpam<I> {
    fn capabilities(&self, req: IpamCapabilitiesRequest) -> DriverResult<IpamCapabilities> {
        self.inner.capabilities(req)
    }
    fn default_address_spaces(&self, req: AddressSpacesRequest) -> DriverResult<AddressSpaces> {
        self.log("default_address_spaces");
        self.inner.default_address_spaces(req)
    }
    fn request_pool(&self, req: RequestPoolRequest) -> DriverResult<RequestPoolResponse> {
        self.log("request_pool");
        self.inner.request_pool(req)
    }
    fn release_pool(&self, req: ReleasePoolRequest) -> DriverResult<()> {
        self.log("release_pool");
        self.inner.release_pool(req)
    }
    fn request_address(&self, req: RequestAddressRequest) -> DriverResult<RequestAddressResponse> {
        self.log(if req.is_gateway() { "request_address(gateway)" } else { "request_address" });
        self.inner.request_address(req)
    }
    fn release_address(&self, req: ReleaseAddressRequest) -> DriverResult<()> {
        self.log("release_address");
        self.inner.release_address(req)
    }
}

pub fn wrap<T: ?Sized + Send + Sync + 'static>(d: Arc<T>, name: &str, kind: Kind) -> Driver<T> {
    Driver::new(d, name, kind, Duration::from_secs(20), Arc::new(Metrics::default()))
}

pub fn ready<T>(i: DriverResult<Init<T>>) -> T {
    match i.unwrap() {
        Init::Ready(d) => d,
        Init::Skipped(r) => panic!("skipped: {r}"),
    }
}

/// One test's world: state root, exec root, driver roots, a unique link
/// prefix. On drop, every namespace under the exec root is removed and
/// every host link with the prefix deleted.
pub struct World {
    pub dir: PathBuf,
    pub prefix: String,
    pub log: Log,
    _tmp: Option<tempfile::TempDir>,
}

impl World {
    /// A fresh world; `tag` keeps link prefixes of tests apart.
    pub fn new(tag: u32) -> World {
        let tmp = tempfile::Builder::new().prefix("berth-net-").tempdir().unwrap();
        let prefix = format!("bt{}{tag}", std::process::id() % 100_000);
        World { dir: tmp.path().to_path_buf(), prefix, log: Log::default(), _tmp: Some(tmp) }
    }

    /// The world at `dir` with `prefix` (a crash test's child process);
    /// the parent cleans up.
    pub fn at(dir: &Path, prefix: &str) -> World {
        World { dir: dir.to_path_buf(), prefix: prefix.to_string(), log: Log::default(), _tmp: None }
    }

    pub fn exec_root(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// The service over `networks` (see `builtins.rs` for none and host),
    /// the veth test driver (`veth`) and the default IPAM, on this world's
    /// state. (Each plugin crate exports the same root-module symbol, so a
    /// release build — the benchmark — links at most one of them: the
    /// built-in network drivers come from the test files.)
    pub fn service_with(
        &self,
        crash_at: Option<String>,
        networks: Vec<Driver<dyn NetworkDriver>>,
    ) -> (NetworkService, Arc<Store>) {
        let init = |name: &str| InitRequest::new(name, self.dir.join(name).display().to_string(), "");
        let ipam = ready(berth_ipam_default::DefaultIpamDriver::new(init("default")));
        let veth = VethDriver {
            prefix: self.prefix.clone(),
            dir: self.dir.join("veth"),
            log: Arc::clone(&self.log),
        };
        let ipam = LoggedIpam { inner: ipam, log: Arc::clone(&self.log) };
        let set = networks
            .into_iter()
            .fold(DriverSet::new(), DriverSet::with_network)
            .with_network(wrap(Arc::new(veth) as Arc<dyn NetworkDriver>, "veth", Kind::Network))
            .with_ipam(wrap(Arc::new(ipam) as Arc<dyn IpamDriver>, "default", Kind::Ipam));
        let store = Arc::new(Store::open(&self.dir.join("root")).unwrap());
        let settings = NetworkSettings {
            exec_root: self.exec_root(),
            default_driver: "none".into(),
            default_ipam: "default".into(),
            crash_at,
        };
        (NetworkService::new(Arc::new(set), Arc::clone(&store), settings).unwrap(), store)
    }

    /// Host links with this world's prefix.
    pub fn links(&self) -> Vec<String> {
        host_links().into_iter().filter(|l| l.starts_with(&self.prefix)).collect()
    }

    /// Namespace files under the exec root.
    pub fn namespaces(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.exec_root().join("netns"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }

    /// Takes the call log.
    pub fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if self._tmp.is_none() {
            return;
        }
        for ns in self.namespaces() {
            let _ = sandbox::remove(&ns);
        }
        for l in self.links() {
            delete_host_link(&l);
        }
    }
}

/// A create request.
pub fn create_req(name: &str, driver: &str) -> berth_core::CreateNetwork {
    berth_core::CreateNetwork { name: name.into(), driver: driver.into(), ..Default::default() }
}

/// A create request of `driver` with one subnet and gateway (and IPv6
/// with `v6`).
pub fn subnet_req(
    name: &str,
    driver: &str,
    subnet: &str,
    gateway: &str,
    v6: Option<&str>,
) -> berth_core::CreateNetwork {
    let mut r = create_req(name, driver);
    let p = PoolSpec { subnet: subnet.into(), gateway: gateway.into(), ..Default::default() };
    r.ipam.config.push(p);
    if let Some(v6) = v6 {
        r.ipam.config.push(PoolSpec { subnet: v6.into(), ..Default::default() });
        r.enable_ipv6 = Some(true);
    }
    r.options = BTreeMap::from([("com.docker.network.driver.mtu".to_string(), "1400".to_string())]);
    r
}
