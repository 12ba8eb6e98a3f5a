//! [`StorageDriver`] and [`DiffDriver`] over `/GraphDriver.*` (Docker's
//! experimental graph driver plugins, reference §7). Requests omit empty
//! keys, as moby's did; `Diff` answers a raw tar, `ApplyDiff` sends one.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;

use berth_plugin_api::remote::wire::Subsystem;
use berth_plugin_api::storage::*;
use berth_plugin_api::{DiffDriver, DriverResult, ErrorKind, StorageDriver};
use serde::{Deserialize, Serialize};

use super::http::{Body, Sink};
use super::RemotePlugin;

const SUB: Subsystem = Subsystem::Graph;

/// A remote plugin's storage driver (with [`DiffDriver`]).
#[derive(Debug, Clone)]
pub struct RemoteStorage {
    plugin: Arc<RemotePlugin>,
}

/// The answer of `GraphDriver.Capabilities`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct GraphCapabilities {
    /// The same layer content always gives the same diff tar.
    #[serde(rename = "ReproducesExactDiffs")]
    pub reproduces_exact_diffs: bool,
}

/// moby's `graphDriverRequest`: every key omitted when empty.
#[derive(Debug, Default, Serialize)]
struct Req<'a> {
    #[serde(rename = "ID", skip_serializing_if = "str::is_empty")]
    id: &'a str,
    #[serde(rename = "Parent", skip_serializing_if = "str::is_empty")]
    parent: &'a str,
    #[serde(rename = "MountLabel", skip_serializing_if = "str::is_empty")]
    mount_label: &'a str,
    #[serde(rename = "StorageOpt", skip_serializing_if = "Option::is_none")]
    storage_opt: Option<&'a BTreeMap<String, String>>,
}

impl<'a> Req<'a> {
    fn id(id: &'a str) -> Self {
        Req { id, ..Default::default() }
    }

    fn pair(id: &'a str, parent: &'a str) -> Self {
        Req { id, parent, ..Default::default() }
    }
}

#[derive(Debug, Serialize)]
struct InitReq<'a> {
    #[serde(rename = "Home")]
    home: &'a str,
    #[serde(rename = "Opts")]
    opts: Option<&'a [String]>,
    #[serde(rename = "UIDMaps")]
    uid_maps: Option<()>,
    #[serde(rename = "GIDMaps")]
    gid_maps: Option<()>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Reply {
    #[serde(rename = "Dir")]
    dir: String,
    #[serde(rename = "Exists")]
    exists: bool,
    #[serde(rename = "Status")]
    status: Vec<(String, String)>,
    #[serde(rename = "Metadata")]
    metadata: BTreeMap<String, String>,
    #[serde(rename = "Changes")]
    changes: Vec<Change>,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Capabilities")]
    capabilities: GraphCapabilities,
}

impl RemoteStorage {
    /// The storage driver of `plugin`.
    pub fn new(plugin: Arc<RemotePlugin>) -> Self {
        RemoteStorage { plugin }
    }

    /// The plugin behind it.
    pub fn plugin(&self) -> &Arc<RemotePlugin> {
        &self.plugin
    }

    /// `GraphDriver.Init`, which dockerd sent once at start with `home` =
    /// `<daemon root>/<plugin name>` and `opts` = the storage options.
    pub fn init(&self, home: &str, opts: &[String]) -> DriverResult<()> {
        let opts = (!opts.is_empty()).then_some(opts);
        self.call("Init", &InitReq { home, opts, uid_maps: None, gid_maps: None }).map(drop)
    }

    /// `GraphDriver.Capabilities`; a plugin without it (404) has none.
    pub fn capabilities(&self) -> DriverResult<GraphCapabilities> {
        let answer = self.plugin.call_answer(SUB, "Capabilities", Some(&Req::default()))?;
        if answer.status == 404 {
            return Ok(GraphCapabilities::default());
        }
        Ok(self.plugin.decode::<Reply>(SUB, "Capabilities", &answer)?.capabilities)
    }

    fn call<R: Serialize>(&self, method: &str, req: &R) -> DriverResult<Reply> {
        self.plugin.call(SUB, method, Some(req))
    }
}

impl StorageDriver for RemoteStorage {
    fn create(&self, req: CreateRequest) -> DriverResult<()> {
        let opt = (!req.storage_opt.is_empty()).then_some(&req.storage_opt);
        let wire = Req { id: &req.id, parent: &req.parent, mount_label: &req.mount_label, storage_opt: opt };
        self.call("Create", &wire).map(drop)
    }

    fn create_rw(&self, req: CreateRequest) -> DriverResult<()> {
        let opt = (!req.storage_opt.is_empty()).then_some(&req.storage_opt);
        let wire = Req { id: &req.id, parent: &req.parent, mount_label: &req.mount_label, storage_opt: opt };
        self.call("CreateReadWrite", &wire).map(drop)
    }

    fn remove(&self, req: RemoveRequest) -> DriverResult<()> {
        self.call("Remove", &Req::id(&req.id)).map(drop)
    }

    fn get(&self, req: GetRequest) -> DriverResult<GetResponse> {
        let wire = Req { id: &req.id, mount_label: &req.mount_label, ..Default::default() };
        Ok(GetResponse::new(self.call("Get", &wire)?.dir))
    }

    fn put(&self, req: PutRequest) -> DriverResult<()> {
        self.call("Put", &Req::id(&req.id)).map(drop)
    }

    /// Any error is "does not exist", as in moby.
    fn exists(&self, req: ExistsRequest) -> DriverResult<bool> {
        Ok(self.call("Exists", &Req::id(&req.id)).map(|r| r.exists).unwrap_or(false))
    }

    /// Any error gives no facts, as in moby.
    fn status(&self, _req: StatusRequest) -> DriverResult<StatusResponse> {
        Ok(StatusResponse::new(self.call("Status", &Req::default()).map(|r| r.status).unwrap_or_default()))
    }

    fn metadata(&self, req: MetadataRequest) -> DriverResult<MetadataResponse> {
        Ok(MetadataResponse::new(self.call("GetMetadata", &Req::id(&req.id))?.metadata))
    }

    /// A plugin that cannot be reached has nothing left to clean up (moby
    /// ignores those errors); an error it answers is returned.
    fn cleanup(&self, _req: CleanupRequest) -> DriverResult<()> {
        match self.call("Cleanup", &Req::default()) {
            Err(e) if matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Timeout) => Ok(()),
            other => other.map(drop),
        }
    }

    fn as_diff(&self) -> Option<&dyn DiffDriver> {
        Some(self)
    }
}

impl DiffDriver for RemoteStorage {
    /// Streams the raw tar the plugin answers into `out`.
    fn diff(&self, req: DiffRequest, out: &mut (dyn Write + Send)) -> DriverResult<()> {
        let mut json = serde_json::to_vec(&Req::pair(&req.id, &req.parent)).unwrap_or_default();
        json.push(b'\n');
        let path = SUB.path("Diff");
        let answer = self.plugin.call_stream(SUB, "Diff", &path, Body::Json(&json), Sink::Writer(out))?;
        if answer.status == 200 {
            return Ok(());
        }
        self.plugin.decode::<serde_json::Value>(SUB, "Diff", &answer).map(drop)
    }

    fn changes(&self, req: ChangesRequest) -> DriverResult<Vec<Change>> {
        Ok(self.call("Changes", &Req::pair(&req.id, &req.parent))?.changes)
    }

    /// Sends `input` chunked to `ApplyDiff?id=<id>&parent=<parent>` (not
    /// escaped, as in moby: ids are hex).
    fn apply_diff(
        &self,
        req: ApplyDiffRequest,
        input: &mut (dyn Read + Send),
    ) -> DriverResult<ApplyDiffResponse> {
        let path = format!("{}?id={}&parent={}", SUB.path("ApplyDiff"), req.id, req.parent);
        let max = self.plugin.options().max_body;
        let answer =
            self.plugin.call_stream(SUB, "ApplyDiff", &path, Body::Stream(input), Sink::Buffer(max))?;
        let reply: Reply = self.plugin.decode(SUB, "ApplyDiff", &answer)?;
        Ok(ApplyDiffResponse::new(reply.size))
    }

    fn diff_size(&self, req: DiffSizeRequest) -> DriverResult<u64> {
        Ok(self.call("DiffSize", &Req::pair(&req.id, &req.parent))?.size)
    }
}
