//! Shared by the image tests: drivers on fresh roots (vfs, overlay2, a loop
//! btrfs), a counting proxy driver, archive and layer builders, and a tree
//! oracle.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::images::{ImageService, StorageDrivers};
use berth_core::store::Store;
use berth_core::Driver;
use berth_plugin_api::storage::*;
use berth_plugin_api::{DiffDriver, DriverResult, Init, InitRequest, Kind, StorageDriver};
use serde_json::json;
use sha2::{Digest as _, Sha256};

// ---------------------------------------------------------------- drivers

/// A storage driver on a fresh root, with what keeps the root alive.
pub struct Subject {
    pub driver: Driver<dyn StorageDriver>,
    pub raw: Arc<dyn StorageDriver>,
    pub root: PathBuf,
    pub _keep: Vec<Box<dyn std::any::Any>>,
}

fn init_req(name: &str, root: &Path) -> InitRequest {
    let run = root.join("run");
    fs::create_dir_all(&run).unwrap();
    let data = root.join("data");
    fs::create_dir_all(&data).unwrap();
    InitRequest::new(name, data.display().to_string(), run.display().to_string())
}

/// Wraps a driver as the daemon holds it.
pub fn wrap(d: Arc<dyn StorageDriver>, name: &str) -> Driver<dyn StorageDriver> {
    Driver::new(d, name, Kind::Storage, Duration::from_secs(120), Arc::default())
}

fn ready<T: StorageDriver + 'static>(
    name: &str,
    root: &Path,
    i: Init<T>,
) -> Option<(Driver<dyn StorageDriver>, Arc<dyn StorageDriver>)> {
    match i {
        Init::Ready(d) => {
            let raw: Arc<dyn StorageDriver> = Arc::new(d);
            Some((wrap(raw.clone(), name), raw))
        }
        Init::Skipped(reason) => {
            println!("SKIP {name}: {reason}");
            let _ = root;
            None
        }
    }
}

/// vfs on a fresh root under `/var/tmp`.
pub fn vfs() -> Option<Subject> {
    let t = tempfile::Builder::new().prefix("berth-img-vfs").tempdir_in("/var/tmp").unwrap();
    let root = t.path().to_path_buf();
    let (driver, raw) =
        ready("vfs", &root, berth_storage_vfs::VfsDriver::new(init_req("vfs", &root)).unwrap())?;
    Some(Subject { driver, raw, root: root.join("data"), _keep: vec![Box::new(t)] })
}

/// vfs on an existing root (a re-opened daemon).
pub fn vfs_at(root: &Path) -> Driver<dyn StorageDriver> {
    let parent = root.parent().unwrap();
    match berth_storage_vfs::VfsDriver::new(init_req("vfs", parent)).unwrap() {
        Init::Ready(d) => wrap(Arc::new(d), "vfs"),
        Init::Skipped(r) => panic!("vfs skipped on re-open: {r}"),
    }
}

/// overlay2 on a fresh root under `/var/tmp` (overlay needs a real
/// filesystem below it).
pub fn overlay2() -> Option<Subject> {
    let t = tempfile::Builder::new().prefix("berth-img-ovl").tempdir_in("/var/tmp").unwrap();
    let root = t.path().to_path_buf();
    let init = berth_storage_overlay2::Overlay2Driver::new(init_req("overlay2", &root)).unwrap();
    let (driver, raw) = ready("overlay2", &root, init)?;
    Some(Subject { driver, raw, root: root.join("data"), _keep: vec![Box::new(t)] })
}

/// A loop-mounted btrfs, unmounted and detached on drop.
pub struct LoopBtrfs {
    dir: tempfile::TempDir,
    dev: String,
    pub mnt: PathBuf,
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.mnt).status();
        let _ = Command::new("losetup").arg("--detach").arg(&self.dev).status();
        let _ = &self.dir;
    }
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// btrfs on a 1 GiB loop image made here, or `None` (with the reason
/// printed) when this host cannot make one.
pub fn btrfs() -> Option<Subject> {
    let made = (|| -> Result<LoopBtrfs, String> {
        run(Command::new("sh").args(["-c", "command -v mkfs.btrfs"]))
            .map_err(|_| "mkfs.btrfs is missing".to_string())?;
        let dir = tempfile::Builder::new()
            .prefix("berth-img-btrfs")
            .tempdir_in("/var/tmp")
            .map_err(|e| e.to_string())?;
        let image = dir.path().join("image");
        fs::File::create(&image).and_then(|f| f.set_len(1 << 30)).map_err(|e| e.to_string())?;
        let dev = run(Command::new("losetup").args(["--find", "--show"]).arg(&image))?;
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).map_err(|e| e.to_string())?;
        let lb = LoopBtrfs { dir, dev: dev.clone(), mnt: mnt.clone() };
        run(Command::new("mkfs.btrfs").args(["-q", &dev]))?;
        run(Command::new("mount").args(["-t", "btrfs", &dev]).arg(&mnt))?;
        Ok(lb)
    })();
    let lb = match made {
        Ok(lb) => lb,
        Err(reason) => {
            println!("SKIP btrfs: cannot make a loop btrfs: {reason}");
            return None;
        }
    };
    let root = lb.mnt.join("work");
    fs::create_dir_all(&root).unwrap();
    let (driver, raw) =
        ready("btrfs", &root, berth_storage_btrfs::BtrfsDriver::new(init_req("btrfs", &root)).unwrap())?;
    // The driver handles are dropped before `_keep` (field order), so the
    // filesystem goes last.
    Some(Subject { driver, raw, root: root.join("data"), _keep: vec![Box::new(lb)] })
}

/// A proxy counting the calls it forwards.
pub struct Counting {
    pub inner: Arc<dyn StorageDriver>,
    pub calls: Mutex<Vec<String>>,
    pub creates: AtomicUsize,
}

impl Counting {
    pub fn new(inner: Arc<dyn StorageDriver>) -> Counting {
        Counting { inner, calls: Mutex::default(), creates: AtomicUsize::new(0) }
    }
    fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
}

impl StorageDriver for Counting {
    fn create(&self, req: CreateRequest) -> DriverResult<()> {
        self.creates.fetch_add(1, Ordering::SeqCst);
        self.log(format!("create {}", req.id));
        self.inner.create(req)
    }
    fn create_rw(&self, req: CreateRequest) -> DriverResult<()> {
        self.creates.fetch_add(1, Ordering::SeqCst);
        self.log(format!("create_rw {}", req.id));
        self.inner.create_rw(req)
    }
    fn remove(&self, req: RemoveRequest) -> DriverResult<()> {
        self.log(format!("remove {}", req.id));
        self.inner.remove(req)
    }
    fn get(&self, req: GetRequest) -> DriverResult<GetResponse> {
        self.inner.get(req)
    }
    fn put(&self, req: PutRequest) -> DriverResult<()> {
        self.inner.put(req)
    }
    fn exists(&self, req: ExistsRequest) -> DriverResult<bool> {
        self.inner.exists(req)
    }
    fn status(&self, req: StatusRequest) -> DriverResult<StatusResponse> {
        self.inner.status(req)
    }
    fn metadata(&self, req: MetadataRequest) -> DriverResult<MetadataResponse> {
        self.inner.metadata(req)
    }
    fn cleanup(&self, req: CleanupRequest) -> DriverResult<()> {
        self.inner.cleanup(req)
    }
    fn as_diff(&self) -> Option<&dyn DiffDriver> {
        self.inner.as_diff()
    }
}

/// Whether `driver` has layer `id`.
pub fn exists(driver: &Driver<dyn StorageDriver>, id: &str) -> bool {
    let req = ExistsRequest::new(id);
    driver.call("exists", move |d| d.exists(req)).unwrap()
}

/// The layer ids a vfs root holds (`meta/<id>.json`).
pub fn vfs_layers(root: &Path) -> BTreeSet<String> {
    match fs::read_dir(root.join("meta")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

// ---------------------------------------------------------------- service

/// An image service over `driver` with its state under `state`.
pub fn service(driver: &Driver<dyn StorageDriver>, state: &Path) -> (ImageService, Arc<Store>) {
    service_with(driver, state, None)
}

/// The same with a crash point.
pub fn service_with(
    driver: &Driver<dyn StorageDriver>,
    state: &Path,
    crash_at: Option<String>,
) -> (ImageService, Arc<Store>) {
    let store = Arc::new(Store::open(state).unwrap());
    let drivers: Arc<dyn StorageDrivers> = Arc::new(driver.clone());
    let svc = ImageService::new(drivers, driver.name(), Arc::clone(&store), &state.join("images"), crash_at)
        .unwrap();
    (svc, store)
}

/// Loads `bytes`, ignoring progress.
pub fn load(svc: &ImageService, bytes: &[u8]) -> DriverResult<Vec<berth_core::LoadedImage>> {
    let mut r = bytes;
    svc.load(&mut r, &mut |_| {})
}

// ---------------------------------------------------------------- archives

pub fn sha(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// Chain IDs (full digests) of diff ID hexes.
pub fn chain_ids(diff_hexes: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_hexes {
        let next = match out.last() {
            None => format!("sha256:{d}"),
            Some(prev) => format!("sha256:{}", sha(format!("{prev} sha256:{d}").as_bytes())),
        };
        out.push(next);
    }
    out
}

/// One entry of a layer tar.
pub enum Node<'a> {
    Dir,
    File(&'a [u8]),
    Symlink(&'a str),
    Hardlink(&'a str),
    Fifo,
}

/// An entry with its metadata.
pub struct Entry<'a> {
    pub path: &'a str,
    pub node: Node<'a>,
    pub mode: u32,
    pub owner: (u64, u64),
    pub mtime: u64,
    pub xattrs: Vec<(&'a str, &'a [u8])>,
}

pub fn dir(path: &str, mode: u32, owner: (u64, u64), mtime: u64) -> Entry<'_> {
    Entry { path, node: Node::Dir, mode, owner, mtime, xattrs: vec![] }
}
pub fn file<'a>(path: &'a str, data: &'a [u8], mode: u32, owner: (u64, u64), mtime: u64) -> Entry<'a> {
    Entry { path, node: Node::File(data), mode, owner, mtime, xattrs: vec![] }
}
pub fn symlink<'a>(path: &'a str, target: &'a str, mtime: u64) -> Entry<'a> {
    Entry { path, node: Node::Symlink(target), mode: 0o777, owner: (0, 0), mtime, xattrs: vec![] }
}
pub fn hardlink<'a>(path: &'a str, target: &'a str) -> Entry<'a> {
    Entry { path, node: Node::Hardlink(target), mode: 0o644, owner: (0, 0), mtime: 0, xattrs: vec![] }
}

/// A layer tar of `entries`, in order (PAX xattrs where given).
pub fn layer(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.xattrs.is_empty() {
            let pax: Vec<(String, &[u8])> =
                e.xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v)).collect();
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v))).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(e.owner.0);
        h.set_gid(e.owner.1);
        h.set_mtime(e.mtime);
        h.set_size(0);
        match &e.node {
            Node::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                b.append_data(&mut h, e.path, std::io::empty()).unwrap();
            }
            Node::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, e.path, *data).unwrap();
            }
            Node::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, e.path, t).unwrap();
            }
            Node::Hardlink(t) => {
                h.set_entry_type(tar::EntryType::Link);
                b.append_link(&mut h, e.path, t).unwrap();
            }
            Node::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                b.append_data(&mut h, e.path, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// A layer tar whose single file entry has a raw (unchecked) name, for
/// hostile names the builder refuses.
pub fn raw_layer(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    let old = h.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len() + (512 - data.len() % 512) % 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// An image config over layers with these diff ID hexes.
pub fn config(diff_hexes: &[String], created: &str, extra_labels: &[(&str, &str)]) -> Vec<u8> {
    let ids: Vec<String> = diff_hexes.iter().map(|h| format!("sha256:{h}")).collect();
    let labels: BTreeMap<&str, &str> = extra_labels.iter().copied().collect();
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "author": "berth tests",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin"], "Labels": labels, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ids},
    }))
    .unwrap()
}

/// One image for an archive: layer blobs as stored (maybe compressed),
/// their uncompressed tars, and tags.
pub struct Img {
    pub blobs: Vec<Vec<u8>>,
    pub plain: Vec<Vec<u8>>,
    pub config: Vec<u8>,
    pub tags: Vec<String>,
}

impl Img {
    /// An image of uncompressed layers.
    pub fn new(layers: Vec<Vec<u8>>, created: &str, labels: &[(&str, &str)], tags: &[&str]) -> Img {
        let diffs: Vec<String> = layers.iter().map(|l| sha(l)).collect();
        Img {
            config: config(&diffs, created, labels),
            blobs: layers.clone(),
            plain: layers,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    /// The same with gzip-compressed blobs.
    pub fn gzipped(mut self) -> Img {
        self.blobs = self.plain.iter().map(|l| gzip(l)).collect();
        self
    }

    /// `sha256:<hex>` of the config.
    pub fn id(&self) -> String {
        format!("sha256:{}", sha(&self.config))
    }

    pub fn diff_hexes(&self) -> Vec<String> {
        self.plain.iter().map(|l| sha(l)).collect()
    }

    pub fn chains(&self) -> Vec<String> {
        chain_ids(&self.diff_hexes())
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn add_file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).unwrap();
}

/// A `docker save` archive (Docker 25 layout: blobs/sha256, manifest.json).
pub fn docker_archive(images: &[&Img]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut written = BTreeSet::new();
    let mut manifest = Vec::new();
    for img in images {
        let mut layers = Vec::new();
        for blob in img.blobs.iter().chain(std::iter::once(&img.config)) {
            let h = sha(blob);
            if written.insert(h.clone()) {
                add_file(&mut b, &format!("blobs/sha256/{h}"), blob);
            }
        }
        for blob in &img.blobs {
            layers.push(format!("blobs/sha256/{}", sha(blob)));
        }
        manifest.push(json!({
            "Config": format!("blobs/sha256/{}", sha(&img.config)),
            "RepoTags": img.tags,
            "Layers": layers,
        }));
    }
    add_file(&mut b, "manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.into_inner().unwrap()
}

/// An OCI image layout (gzip layers get the gzip media type).
pub fn oci_archive(images: &[&Img]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut written = BTreeSet::new();
    let mut entries = Vec::new();
    let mut put = |b: &mut tar::Builder<Vec<u8>>, data: &[u8]| {
        let h = sha(data);
        if written.insert(h.clone()) {
            add_file(b, &format!("blobs/sha256/{h}"), data);
        }
        h
    };
    for img in images {
        let config_hex = put(&mut b, &img.config);
        let mut layers = Vec::new();
        for blob in &img.blobs {
            let h = put(&mut b, blob);
            let media = if blob.starts_with(&[0x1f, 0x8b]) {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            } else {
                "application/vnd.oci.image.layer.v1.tar"
            };
            layers.push(json!({"mediaType": media, "digest": format!("sha256:{h}"), "size": blob.len()}));
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": format!("sha256:{config_hex}"), "size": img.config.len()},
            "layers": layers,
        }))
        .unwrap();
        let mh = put(&mut b, &manifest);
        for t in &img.tags {
            entries.push(json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{mh}"), "size": manifest.len(),
                "annotations": {"io.containerd.image.name": format!("docker.io/library/{t}")},
            }));
        }
    }
    add_file(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add_file(
        &mut b,
        "index.json",
        &serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": entries})).unwrap(),
    );
    b.into_inner().unwrap()
}

// ---------------------------------------------------------------- oracle

/// The facts about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub kind: char,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub digest: Option<String>,
    pub target: Option<PathBuf>,
    pub mtime: (i64, i64),
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// A tree: relative path → facts, and the sets of paths sharing an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub entries: BTreeMap<PathBuf, Facts>,
    pub links: BTreeSet<Vec<PathBuf>>,
}

fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut buf = vec![0u8; 1 << 16];
    let n = match rustix::fs::llistxattr(p, &mut buf[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => 0,
        Err(e) => panic!("llistxattr {}: {e}", p.display()),
    };
    let mut out = BTreeMap::new();
    for name in buf[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8(name.to_vec()).unwrap();
        // Labels the host's security module adds are not layer content.
        if name.starts_with("security.selinux") {
            continue;
        }
        let mut v = vec![0u8; 1 << 16];
        let len = rustix::fs::lgetxattr(p, name.as_str(), &mut v[..]).unwrap();
        v.truncate(len);
        out.insert(name, v);
    }
    out
}

/// Reads the tree at `root`, without the root's own entry.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut entries = BTreeMap::new();
    let mut inodes: HashMap<(u64, u64), Vec<PathBuf>> = HashMap::new();
    let mut stack: Vec<PathBuf> =
        fs::read_dir(root).unwrap().map(|e| PathBuf::from(e.unwrap().file_name())).collect();
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let md = fs::symlink_metadata(&full).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_file() {
            'f'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_fifo() {
            'p'
        } else if ft.is_char_device() {
            'c'
        } else {
            '?'
        };
        entries.insert(
            rel.clone(),
            Facts {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if kind == 'd' { 0 } else { md.size() },
                digest: (kind == 'f').then(|| sha(&fs::read(&full).unwrap())),
                target: (kind == 'l').then(|| fs::read_link(&full).unwrap()),
                mtime: (md.mtime(), md.mtime_nsec()),
                xattrs: xattrs(&full),
            },
        );
        if kind != 'd' && md.nlink() > 1 {
            inodes.entry((md.dev(), md.ino())).or_default().push(rel.clone());
        }
        if kind == 'd' {
            for e in fs::read_dir(&full).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        }
    }
    let links = inodes
        .into_values()
        .filter(|v| v.len() > 1)
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    Snapshot { entries, links }
}

/// Every difference between two trees.
pub fn differences(want: &Snapshot, got: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    let keys: BTreeSet<&PathBuf> = want.entries.keys().chain(got.entries.keys()).collect();
    for k in keys {
        match (want.entries.get(k), got.entries.get(k)) {
            (Some(a), Some(b)) if a != b => out.push(format!("{}: want {a:?}\n    got {b:?}", k.display())),
            (Some(_), None) => out.push(format!("{}: missing", k.display())),
            (None, Some(_)) => out.push(format!("{}: unexpected", k.display())),
            _ => {}
        }
    }
    if want.links != got.links {
        out.push(format!("hardlink groups: want {:?}, got {:?}", want.links, got.links));
    }
    out
}

/// Every file or directory under `dir` whose name is `name`.
pub fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name() == name {
                out.push(p.clone());
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    out
}
