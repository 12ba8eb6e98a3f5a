//! A remote plugin under test (`--remote ADDR`): where it is, what its
//! `/Plugin.Activate` answered, and fresh clients for the driver cases.
//!
//! A remote plugin owns its storage: the init request's roots are ignored,
//! and every construction is a fresh client (`RemotePlugin::new`) of the
//! same plugin process, so a case's "restart" (VL-08, ST-19) is a daemon
//! restart against a plugin that kept running. Since the plugin's state
//! outlives every case (and every run), the storage driver of a case is
//! wrapped in [`Tagged`], which prefixes every layer id with a tag made
//! from the case root: each case gets ids no other case or run uses, and
//! the cases themselves stay unchanged.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_core::remote::{RemoteOptions, RemotePlugin};
use berth_plugin_api::remote::wire::Subsystem;
use berth_plugin_api::storage::*;
use berth_plugin_api::{DiffDriver, DriverError, DriverResult, Kind, StorageDriver, VolumeDriver};
use sha2::{Digest, Sha256};

/// How long the suite's clients keep retrying a plugin they cannot reach
/// (moby waits 15 s; a plugin under test is expected to be up already).
pub const RETRY_WINDOW: Duration = Duration::from_secs(5);

/// A remote plugin under test.
#[derive(Debug, Clone)]
pub struct RemoteTarget {
    /// The name it goes by.
    pub name: String,
    /// Its address, `unix:///…`, `tcp://…`, `http://…` or `https://…`.
    pub address: String,
    /// How the suite's clients call it.
    pub options: RemoteOptions,
    /// `Implements` of its `/Plugin.Activate` answer, as answered.
    pub implements: Vec<String>,
}

/// The options the suite's clients use by default: berth's, with a retry
/// window of [`RETRY_WINDOW`].
pub fn default_options() -> RemoteOptions {
    RemoteOptions { retry_window: RETRY_WINDOW, ..RemoteOptions::default() }
}

/// `address` as a URL: a bare absolute path is a unix socket.
pub fn normalize(address: &str) -> String {
    let a = address.trim();
    if a.starts_with('/') {
        format!("unix://{a}")
    } else {
        a.to_string()
    }
}

/// The name a plugin at `address` goes by when none is given: the socket's
/// file stem (`/run/docker/plugins/local.sock` → `local`), else `remote`.
pub fn default_name(address: &str) -> String {
    normalize(address)
        .strip_prefix("unix://")
        .and_then(|p| Path::new(p).file_stem())
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "remote".into())
}

impl RemoteTarget {
    /// Activates the plugin at `address` (the handshake, with retries for
    /// `options.retry_window`): the target, or why it cannot be used.
    pub fn connect(address: &str, name: Option<&str>, options: RemoteOptions) -> DriverResult<RemoteTarget> {
        let address = normalize(address);
        let name = name.map(str::to_string).unwrap_or_else(|| default_name(&address));
        let plugin = RemotePlugin::new(&name, &address, options.clone())?;
        plugin.activate()?;
        let implements = plugin.status().implements;
        Ok(RemoteTarget { name, address, options, implements })
    }

    /// A fresh client of the plugin.
    pub fn client(&self) -> DriverResult<Arc<RemotePlugin>> {
        RemotePlugin::new(&self.name, &self.address, self.options.clone())
    }

    /// The driver kinds `Implements` names (unknown entries left out).
    pub fn kinds(&self) -> Vec<Kind> {
        let mut kinds: Vec<Kind> =
            self.implements.iter().filter_map(|s| Subsystem::parse(s)).map(Subsystem::kind).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// A fresh client's volume driver.
    pub fn volume(&self) -> DriverResult<Arc<dyn VolumeDriver>> {
        Ok(self.client()?.volume())
    }

    /// A fresh client's storage driver, its layer ids tagged for the case
    /// whose driver root is `root`.
    pub fn storage(&self, root: &str) -> DriverResult<Arc<dyn StorageDriver>> {
        Ok(Arc::new(Tagged::new(self.client()?.storage(), &tag_of(root))))
    }
}

/// A short tag unique to a case root: `c` and 10 hex digits of its SHA-256.
pub fn tag_of(root: &str) -> String {
    let digest = Sha256::digest(root.as_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("c{hex}")
}

/// A storage driver whose layer ids (and parents) are `<tag>-<id>` at the
/// driver: the cases keep their own ids, and a plugin shared by many
/// cases and runs never sees an id twice.
pub struct Tagged {
    inner: Arc<dyn StorageDriver>,
    tag: String,
}

impl std::fmt::Debug for Tagged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tagged").field("tag", &self.tag).finish_non_exhaustive()
    }
}

impl Tagged {
    /// Wraps `inner`, prefixing ids with `tag`.
    pub fn new(inner: Arc<dyn StorageDriver>, tag: &str) -> Self {
        Tagged { inner, tag: tag.to_string() }
    }

    /// `id` as the driver knows it (empty stays empty: no parent).
    pub fn wire(&self, id: &str) -> String {
        if id.is_empty() {
            String::new()
        } else {
            format!("{}-{id}", self.tag)
        }
    }

    /// The driver's message with tagged ids shown as the case's own.
    fn untag(&self, e: DriverError) -> DriverError {
        let message = e.message.replace(&format!("{}-", self.tag), "");
        DriverError::new(e.kind, message)
    }

    fn map<T>(&self, res: DriverResult<T>) -> DriverResult<T> {
        res.map_err(|e| self.untag(e))
    }
}

impl StorageDriver for Tagged {
    fn create(&self, mut req: CreateRequest) -> DriverResult<()> {
        (req.id, req.parent) = (self.wire(&req.id), self.wire(&req.parent));
        self.map(self.inner.create(req))
    }

    fn create_rw(&self, mut req: CreateRequest) -> DriverResult<()> {
        (req.id, req.parent) = (self.wire(&req.id), self.wire(&req.parent));
        self.map(self.inner.create_rw(req))
    }

    fn remove(&self, mut req: RemoveRequest) -> DriverResult<()> {
        req.id = self.wire(&req.id);
        self.map(self.inner.remove(req))
    }

    fn get(&self, mut req: GetRequest) -> DriverResult<GetResponse> {
        req.id = self.wire(&req.id);
        self.map(self.inner.get(req))
    }

    fn put(&self, mut req: PutRequest) -> DriverResult<()> {
        req.id = self.wire(&req.id);
        self.map(self.inner.put(req))
    }

    fn exists(&self, mut req: ExistsRequest) -> DriverResult<bool> {
        req.id = self.wire(&req.id);
        self.map(self.inner.exists(req))
    }

    fn status(&self, req: StatusRequest) -> DriverResult<StatusResponse> {
        self.map(self.inner.status(req))
    }

    fn metadata(&self, mut req: MetadataRequest) -> DriverResult<MetadataResponse> {
        req.id = self.wire(&req.id);
        self.map(self.inner.metadata(req))
    }

    fn cleanup(&self, req: CleanupRequest) -> DriverResult<()> {
        self.map(self.inner.cleanup(req))
    }

    fn as_diff(&self) -> Option<&dyn DiffDriver> {
        self.inner.as_diff().map(|_| self as &dyn DiffDriver)
    }
}

impl DiffDriver for Tagged {
    fn diff(&self, mut req: DiffRequest, out: &mut (dyn Write + Send)) -> DriverResult<()> {
        let d = self.inner.as_diff().expect("as_diff offered it");
        (req.id, req.parent) = (self.wire(&req.id), self.wire(&req.parent));
        self.map(d.diff(req, out))
    }

    fn changes(&self, mut req: ChangesRequest) -> DriverResult<Vec<Change>> {
        let d = self.inner.as_diff().expect("as_diff offered it");
        (req.id, req.parent) = (self.wire(&req.id), self.wire(&req.parent));
        self.map(d.changes(req))
    }

    fn apply_diff(
        &self,
        mut req: ApplyDiffRequest,
        input: &mut (dyn Read + Send),
    ) -> DriverResult<ApplyDiffResponse> {
        let d = self.inner.as_diff().expect("as_diff offered it");
        (req.id, req.parent) = (self.wire(&req.id), self.wire(&req.parent));
        self.map(d.apply_diff(req, input))
    }

    fn diff_size(&self, mut req: DiffSizeRequest) -> DriverResult<u64> {
        let d = self.inner.as_diff().expect("as_diff offered it");
        (req.id, req.parent) = (self.wire(&req.id), self.wire(&req.parent));
        self.map(d.diff_size(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_names_and_tags() {
        assert_eq!(normalize(" /run/x/local.sock "), "unix:///run/x/local.sock");
        assert_eq!(normalize("tcp://127.0.0.1:9"), "tcp://127.0.0.1:9");
        assert_eq!(default_name("/run/docker/plugins/local.sock"), "local");
        assert_eq!(default_name("unix:///run/p/vol/vol.sock"), "vol");
        assert_eq!(default_name("http://127.0.0.1:8080"), "remote");
        let (a, b) = (tag_of("/tmp/berth-conformance-ST-01-aaaa/root"), tag_of("/tmp/x/root"));
        assert_eq!((a.len(), a.starts_with('c')), (11, true));
        assert_ne!(a, b);
        assert_eq!(a, tag_of("/tmp/berth-conformance-ST-01-aaaa/root"));
    }
}
