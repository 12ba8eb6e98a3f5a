//! Images end to end: archives made here with the `tar` crate (whiteouts,
//! an opaque directory, a hardlink to a lower layer's file, an xattr),
//! loaded, listed, inspected, saved and removed through `berth` and through
//! Debian's `docker` client, against a real berthd on the vfs driver.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{describe, docker, docker_ok, World, DOCKER};
use serde_json::json;
use sha2::{Digest, Sha256};

const MTIME: u64 = 1_700_000_000;

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// One layer tar, built entry by entry.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h
    }

    fn dir(mut self, path: &str) -> Layer {
        let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.0.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    fn file(mut self, path: &str, data: &[u8]) -> Layer {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }

    fn file_with_xattr(mut self, path: &str, data: &[u8], key: &str, value: &[u8]) -> Layer {
        let pax_key = format!("SCHILY.xattr.{key}");
        self.0.append_pax_extensions([(pax_key.as_str(), value)]).unwrap();
        self.file(path, data)
    }

    fn hardlink(mut self, path: &str, target: &str) -> Layer {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    /// An entry whose name is written as is, without the crate's checks
    /// (for hostile names such as `../x`).
    fn raw_file(mut self, name: &[u8], data: &[u8]) -> Layer {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// One image of an archive: its tags, layers and the config made for them.
struct Image {
    tags: Vec<String>,
    layers: Vec<Vec<u8>>,
    config: Vec<u8>,
}

impl Image {
    fn new(tags: &[&str], layers: Vec<Vec<u8>>) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(|l| format!("sha256:{}", sha256_hex(l))).collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "2024-01-02T03:04:05Z",
            "config": { "Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"], "Labels": { "made-by": "e2e" } },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": layers.iter().enumerate()
                .map(|(i, _)| json!({ "created": "2024-01-02T03:04:05Z", "created_by": format!("layer {i}") }))
                .collect::<Vec<_>>(),
        });
        Image {
            tags: tags.iter().map(|t| t.to_string()).collect(),
            layers,
            config: config.to_string().into_bytes(),
        }
    }

    fn id(&self) -> String {
        format!("sha256:{}", sha256_hex(&self.config))
    }

    fn diff_ids(&self) -> Vec<String> {
        self.layers.iter().map(|l| format!("sha256:{}", sha256_hex(l))).collect()
    }
}

/// A `docker save` archive (Docker 25 layout: `manifest.json` and
/// `blobs/sha256/<hex>`). `rename` stores a blob under another name (a
/// digest mismatch).
fn archive(images: &[&Image], rename: Option<(&[u8], &str)>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut written = BTreeSet::new();
    let mut manifest = Vec::new();
    let mut blob = |b: &mut tar::Builder<Vec<u8>>, data: &[u8]| -> String {
        let hex = match rename {
            Some((from, to)) if from == data => to.to_string(),
            _ => sha256_hex(data),
        };
        let name = format!("blobs/sha256/{hex}");
        if written.insert(name.clone()) {
            let mut h = Layer::header(tar::EntryType::Regular, 0o644, data.len() as u64);
            b.append_data(&mut h, &name, data).unwrap();
        }
        name
    };
    for image in images {
        let config = blob(&mut b, &image.config);
        let layers: Vec<String> = image.layers.iter().map(|l| blob(&mut b, l)).collect();
        manifest.push(json!({ "Config": config, "RepoTags": image.tags, "Layers": layers }));
    }
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let mut h = Layer::header(tar::EntryType::Regular, 0o644, manifest.len() as u64);
    b.append_data(&mut h, "manifest.json", manifest.as_slice()).unwrap();
    b.into_inner().unwrap()
}

/// The base layer: files a later layer whites out, a directory it makes
/// opaque, a file it hardlinks to, and a file with an xattr.
fn base_layer() -> Vec<u8> {
    Layer::new()
        .dir("etc/")
        .file("etc/config", b"v1\n")
        .dir("usr/")
        .dir("usr/bin/")
        .file("usr/bin/tool", b"#!/bin/sh\necho tool\n")
        .file("gone.txt", b"deleted above\n")
        .dir("opq/")
        .file("opq/old1", b"old\n")
        .file("opq/old2", b"old\n")
        .dir("keep/")
        .file("keep/a", b"kept\n")
        .file_with_xattr("xattr.bin", b"has an xattr\n", "user.note", b"hello")
        .finish()
}

/// The top layer of image A, over [`base_layer`].
fn top_layer() -> Vec<u8> {
    Layer::new()
        .file(".wh.gone.txt", b"")
        .dir("opq/")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/new", b"new\n")
        .dir("etc/")
        .file("etc/config", b"v2\n")
        .dir("usr/")
        .dir("usr/bin/")
        .hardlink("usr/bin/tool-link", "usr/bin/tool")
        .finish()
}

fn write(w: &World, name: &str, data: &[u8]) -> PathBuf {
    let path = w.dir.path().join(name);
    std::fs::write(&path, data).unwrap();
    path
}

/// The layer trees vfs keeps (`<root>/storage/vfs/dir/<id>`).
fn vfs_layers(w: &World) -> Vec<PathBuf> {
    let dir = w.root.join("storage/vfs/dir");
    match std::fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read {}: {e}", dir.display()),
    }
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and outlive the call; the
    // buffer is valid for writes of its length.
    let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    Some(buf)
}

/// `REPOSITORY:TAG` of every row of `berth image ls`, and its IDs.
fn listed(w: &World) -> Vec<String> {
    let out = w.berth_ok(&["image", "ls"]);
    let mut lines = out.lines();
    let header = lines.next().expect("a header");
    assert!(header.starts_with("REPOSITORY"), "{out}");
    for col in ["TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(col), "{out}");
    }
    lines
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            format!("{}:{}", cols[0], cols[1])
        })
        .collect()
}

fn fails(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", describe(out));
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn layered_images_load_share_layers_save_and_remove() {
    let w = World::new("");
    let _d = w.start();
    let a = Image::new(&["layered:1"], vec![base_layer(), top_layer()]);
    let b = Image::new(&["acme/other:2.0"], vec![base_layer(), Layer::new().file("b.txt", b"b\n").finish()]);

    // Load A from a file.
    let path_a = write(&w, "a.tar", &archive(&[&a], None));
    let out = w.berth_ok(&["image", "load", "-i", path_a.to_str().unwrap()]);
    assert_eq!(out, "Loaded image: layered:1\n");
    assert_eq!(listed(&w), ["layered:1"]);
    let inspect = w.berth_json(&["image", "inspect", "layered:1"]);
    assert_eq!(inspect[0]["Id"], a.id());
    assert_eq!(inspect[0]["RepoTags"], json!(["layered:1"]));
    assert_eq!(inspect[0]["RootFS"]["Layers"], json!(a.diff_ids()));
    assert_eq!(inspect[0]["GraphDriver"]["Name"], "vfs");
    assert_eq!(inspect[0]["Config"]["Labels"]["made-by"], "e2e");
    // Docker's long form of the same name, with `/` and `:` in the path.
    assert_eq!(w.berth_json(&["image", "inspect", "docker.io/library/layered:1"])[0]["Id"], a.id());
    assert_eq!(vfs_layers(&w).len(), 2);

    // The top layer holds the flat result.
    let top = vfs_layers(&w).into_iter().find(|d| d.join("opq/new").exists()).expect("a top layer");
    assert!(!top.join("gone.txt").exists(), "whiteout");
    assert!(!top.join("opq/old1").exists() && !top.join("opq/old2").exists(), "opaque dir");
    assert!(!top.join(".wh.gone.txt").exists() && !top.join("opq/.wh..wh..opq").exists());
    assert_eq!(std::fs::read(top.join("keep/a")).unwrap(), b"kept\n");
    assert_eq!(std::fs::read(top.join("etc/config")).unwrap(), b"v2\n");
    let (tool, link) =
        (top.join("usr/bin/tool").metadata().unwrap(), top.join("usr/bin/tool-link").metadata().unwrap());
    assert_eq!((tool.ino(), tool.nlink()), (link.ino(), 2), "hardlink to the lower layer's file");
    assert_eq!(xattr(&top.join("xattr.bin"), "user.note").as_deref(), Some(&b"hello"[..]));

    // B shares A's base: loaded gzip-compressed from standard input, the
    // base is stored once.
    let path_b = write(&w, "b.tar", &archive(&[&b], None));
    let gz = Command::new("gzip").arg("-k").arg(&path_b).status().unwrap();
    assert!(gz.success());
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["--host", &w.host(), "load"])
        .stdin(Stdio::from(File::open(path_b.with_extension("tar.gz")).unwrap()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Loaded image: acme/other:2.0\n");
    assert_eq!(vfs_layers(&w).len(), 3, "the shared base layer is stored once");
    let mut names = listed(&w);
    names.sort();
    assert_eq!(names, ["acme/other:2.0", "layered:1"]);
    assert_eq!(w.berth_json(&["image", "inspect", "acme/other:2.0"])[0]["Id"], b.id());
    let ls = w.berth_json(&["images", "--format", "json"]);
    assert_eq!(ls.as_array().unwrap().len(), 2);
    let ids = w.berth_ok(&["image", "ls", "-q", "--filter", "reference=layered"]);
    assert_eq!(ids.trim(), &a.id()["sha256:".len().."sha256:".len() + 12]);

    // Save, remove, load again: the same image.
    let saved = w.dir.path().join("saved.tar");
    w.berth_ok(&["image", "save", "-o", saved.to_str().unwrap(), "layered:1"]);
    let mut entries = BTreeSet::new();
    for e in tar::Archive::new(File::open(&saved).unwrap()).entries().unwrap() {
        entries.insert(e.unwrap().path().unwrap().to_string_lossy().into_owned());
    }
    assert!(entries.contains("manifest.json"), "{entries:?}");
    let out = w.berth_ok(&["image", "rm", "layered:1"]);
    assert_eq!(out.lines().next(), Some("Untagged: layered:1"), "{out}");
    assert!(out.contains(&format!("Deleted: {}", a.id())), "{out}");
    assert_eq!(listed(&w), ["acme/other:2.0"]);
    assert_eq!(vfs_layers(&w).len(), 2, "A's top layer is gone, the shared base stays");
    let out = w.berth_ok(&["image", "load", "-q", "-i", saved.to_str().unwrap()]);
    assert_eq!(out, "Loaded image: layered:1\n");
    assert_eq!(w.berth_json(&["image", "inspect", "layered:1"])[0]["Id"], a.id());

    // Save to standard output, which is not a terminal here.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["--host", &w.host(), "save", "acme/other:2.0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(&out.stdout[257..262], b"ustar", "a tar on stdout");

    // Remove by ID (a unique prefix), then what is left.
    let short = &b.id()["sha256:".len().."sha256:".len() + 12];
    let out = w.berth_ok(&["rmi", short]);
    assert!(
        out.contains("Untagged: acme/other:2.0") && out.contains(&format!("Deleted: {}", b.id())),
        "{out}"
    );
    let err = fails(&w.berth(&["image", "inspect", "acme/other:2.0"]));
    assert!(err.contains("(not_found)"), "{err}");
    w.berth_ok(&["image", "rm", "layered:1"]);
    assert!(listed(&w).is_empty());
    assert!(vfs_layers(&w).is_empty());
}

#[test]
fn several_tags_conflict_unless_forced() {
    let w = World::new("");
    let _d = w.start();
    let img =
        Image::new(&["multi:1", "multi:2", "other/multi:3"], vec![Layer::new().file("m", b"m").finish()]);
    let path = write(&w, "m.tar", &archive(&[&img], None));
    let out = w.berth_ok(&["image", "load", "-i", path.to_str().unwrap()]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let id = img.id();

    let err = fails(&w.berth(&["image", "rm", &id]));
    assert!(err.contains("(conflict)"), "{err}");
    // By tag: only that tag goes.
    assert_eq!(w.berth_ok(&["image", "rm", "multi:1"]), "Untagged: multi:1\n");
    let mut names = listed(&w);
    names.sort();
    assert_eq!(names, ["multi:2", "other/multi:3"]);
    // Forced by ID: every tag, then the image.
    let out = w.berth_ok(&["image", "rm", "-f", &id]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"Untagged: multi:2") && lines.contains(&"Untagged: other/multi:3"), "{out}");
    assert!(lines.contains(&format!("Deleted: {id}").as_str()), "{out}");
    assert!(listed(&w).is_empty());
    // An untagged image loads too, and is named by ID.
    let bare = Image::new(&[], vec![Layer::new().file("u", b"u").finish()]);
    let path = write(&w, "u.tar", &archive(&[&bare], None));
    assert_eq!(
        w.berth_ok(&["load", "-i", path.to_str().unwrap()]),
        format!("Loaded image ID: {}\n", bare.id())
    );
    assert_eq!(listed(&w), ["<none>:<none>"]);
    // Missing images: 404 for each, exit 1.
    let err = fails(&w.berth(&["image", "rm", "nope:1", "nope:2"]));
    assert_eq!(err.matches("(not_found)").count(), 2, "{err}");
}

#[test]
fn hostile_archives_are_refused_and_leave_nothing() {
    let w = World::new("");
    let _d = w.start();
    // A layer entry that climbs out of the layer root.
    let evil =
        Image::new(&["evil:1"], vec![Layer::new().file("ok", b"ok").raw_file(b"../x", b"escaped").finish()]);
    let path = write(&w, "evil.tar", &archive(&[&evil], None));
    let err = fails(&w.berth(&["image", "load", "-i", path.to_str().unwrap()]));
    assert!(err.contains("Error:") && err.contains("../x"), "{err}");
    assert!(!w.root.join("storage/vfs/x").exists() && !w.root.join("storage/vfs/dir/x").exists());
    assert!(listed(&w).is_empty());
    assert!(vfs_layers(&w).is_empty(), "{:?}", vfs_layers(&w));

    // A blob whose content does not match its name (quiet: before any
    // progress, so a plain error answer).
    let layer = Layer::new().file("f", b"f").finish();
    let img = Image::new(&["bad:1"], vec![layer.clone()]);
    let wrong = "0".repeat(64);
    let path = write(&w, "bad.tar", &archive(&[&img], Some((&layer, &wrong))));
    let err = fails(&w.berth(&["image", "load", "-q", "-i", path.to_str().unwrap()]));
    assert!(err.contains(&wrong) && err.contains("(invalid_argument)"), "{err}");
    // Not an archive at all.
    let path = write(&w, "junk.tar", b"this is not a tar archive at all");
    let err = fails(&w.berth(&["image", "load", "-i", path.to_str().unwrap()]));
    assert!(err.contains("Error:"), "{err}");
    assert!(listed(&w).is_empty());
    assert!(vfs_layers(&w).is_empty());

    // A missing file: an error naming it.
    let err = fails(&w.berth(&["image", "load", "-i", "/nonexistent/x.tar"]));
    assert!(err.contains("/nonexistent/x.tar"), "{err}");
}

#[test]
fn the_debian_docker_client_loads_lists_saves_and_removes_images() {
    assert!(
        Path::new(DOCKER).exists(),
        "{DOCKER} is missing: install Debian's client with `apt-get install -y docker.io` (.ci/test does)"
    );
    let w = World::new("");
    let _d = w.start();
    let a = Image::new(&["acme/layered:1.36"], vec![base_layer(), top_layer()]);
    let path = write(&w, "a.tar", &archive(&[&a], None));

    let out = docker_ok(&w, &["load", "-i", path.to_str().unwrap()]);
    assert!(out.contains("Loaded image: acme/layered:1.36"), "{out}");
    let images = docker_ok(&w, &["images", "--format", "{{.Repository}} {{.Tag}} {{.ID}}"]);
    assert_eq!(images.trim(), format!("acme/layered 1.36 {}", &a.id()[7..19]));
    let inspect = docker_ok(
        &w,
        &[
            "image",
            "inspect",
            "--format",
            "{{.Id}} {{.GraphDriver.Name}} {{len .RootFS.Layers}}",
            "acme/layered:1.36",
        ],
    );
    assert_eq!(inspect.trim(), format!("{} vfs 2", a.id()));

    let saved = w.dir.path().join("docker-saved.tar");
    docker_ok(&w, &["save", "-o", saved.to_str().unwrap(), "acme/layered:1.36"]);
    let mut names = BTreeSet::new();
    for e in tar::Archive::new(File::open(&saved).unwrap()).entries().unwrap() {
        names.insert(e.unwrap().path().unwrap().to_string_lossy().into_owned());
    }
    assert!(names.contains("manifest.json"), "{names:?}");

    let out = docker_ok(&w, &["rmi", "acme/layered:1.36"]);
    assert!(
        out.contains("Untagged: acme/layered:1.36") && out.contains(&format!("Deleted: {}", a.id())),
        "{out}"
    );
    assert!(docker_ok(&w, &["images", "-q"]).trim().is_empty());
    let missing = docker(&w, &["image", "inspect", "acme/layered:1.36"]);
    assert!(!missing.status.success(), "{}", describe(&missing));

    // What docker saved, berth loads back to the same image.
    let out = docker_ok(&w, &["load", "-i", saved.to_str().unwrap()]);
    assert!(out.contains("Loaded image: acme/layered:1.36"), "{out}");
    assert_eq!(w.berth_json(&["image", "inspect", "acme/layered:1.36"])[0]["Id"], a.id());
}
