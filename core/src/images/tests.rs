//! Archives built in the test, read back and checked; one test per bad input.

use std::io::Write;

use berth_plugin_api::ErrorKind;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

use super::*;

/// An entry of a hand-built outer archive.
enum E<'a> {
    File(&'a [u8]),
    Symlink(&'a str),
    Fifo,
}

/// A tar of `entries`, names written raw (so hostile names get through).
fn outer(entries: &[(&str, E<'_>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, e) in entries {
        let mut h = Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_mode(0o644);
        let data: &[u8] = match e {
            E::File(d) => {
                h.set_entry_type(EntryType::Regular);
                d
            }
            E::Symlink(t) => {
                h.set_entry_type(EntryType::Symlink);
                h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
                &[]
            }
            E::Fifo => {
                h.set_entry_type(EntryType::Fifo);
                &[]
            }
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A layer tar holding `files`.
fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn sha(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn config(diff_ids: &[String]) -> Vec<u8> {
    let ids: Vec<String> = diff_ids.iter().map(|h| format!("sha256:{h}")).collect();
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": ids},
    }))
    .unwrap()
}

fn read(bytes: &[u8]) -> (tempfile::TempDir, DriverResult<Archive>) {
    let dir = tempfile::tempdir().unwrap();
    let got = read_archive(bytes, dir.path());
    (dir, got)
}

/// Asserts `bytes` is refused with `kind` and a message holding every `needle`.
fn refused(bytes: &[u8], kind: ErrorKind, needles: &[&str]) {
    let (_dir, got) = read(bytes);
    let err = got.expect_err("archive should be refused");
    assert_eq!(err.kind, kind, "{}", err.message);
    for n in needles {
        assert!(err.message.contains(n), "{:?} does not name {n:?}", err.message);
    }
}

/// The parts of a docker-save-style archive, so tests can break one.
struct Docker {
    l1: Vec<u8>,
    l2: Vec<u8>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

impl Docker {
    fn new() -> Docker {
        let l1 = layer(&[("etc/hostname", b"base\n")]);
        let l2 = layer(&[("bin/tool", b"#!/bin/sh\n"), ("etc/motd", b"hi\n")]);
        let config = config(&[sha(&l1), sha(&l2)]);
        let manifest = serde_json::to_vec(&json!([{
            "Config": format!("{}.json", sha(&config)),
            "RepoTags": ["demo:1"],
            "Layers": ["aaa/layer.tar", "bbb/layer.tar"],
        }]))
        .unwrap();
        Docker { l1, l2, config, manifest }
    }

    /// Layer 2 is a symlink to a shared copy, as older Docker writes them.
    fn tar(&self) -> Vec<u8> {
        let config_name = format!("{}.json", sha(&self.config));
        outer(&[
            ("repositories", E::File(br#"{"demo":{"1":"bbb"}}"#)),
            ("aaa/layer.tar", E::File(&self.l1)),
            ("shared/layer.tar", E::File(&self.l2)),
            ("bbb/layer.tar", E::Symlink("../shared/layer.tar")),
            (&config_name, E::File(&self.config)),
            ("manifest.json", E::File(&self.manifest)),
        ])
    }
}

fn check_docker(archive: &Archive, d: &Docker) {
    assert_eq!(archive.images.len(), 1);
    let img = &archive.images[0];
    assert_eq!(img.tags, vec!["demo:1".to_string()]);
    assert_eq!(img.config_digest.to_string(), format!("sha256:{}", sha(&d.config)));
    assert_eq!(img.config.rootfs().diff_ids().len(), 2);
    assert_eq!(img.layers.len(), 2);
    for (l, bytes) in img.layers.iter().zip([&d.l1, &d.l2]) {
        assert_eq!(l.diff_id.to_string(), format!("sha256:{}", sha(bytes)));
        assert_eq!(l.digest, l.diff_id);
        assert_eq!(l.compression, Compression::None);
        assert_eq!(l.media_type, MediaType::ImageLayer);
        assert_eq!(std::fs::read(&l.path).unwrap(), **bytes);
    }
    let chains = img.chain_ids();
    assert_eq!(chains[0], img.layers[0].diff_id);
    assert_eq!(chains[1], chain_id(&[img.layers[0].diff_id.clone(), img.layers[1].diff_id.clone()]).unwrap());
}

#[test]
fn images_reads_docker_save_archive() {
    let d = Docker::new();
    let (_dir, got) = read(&d.tar());
    check_docker(&got.unwrap(), &d);
}

#[test]
fn images_reads_zstd_and_gzip_compressed_outer_archives() {
    let d = Docker::new();
    let zst = zstd::encode_all(&d.tar()[..], 3).unwrap();
    let (_dir, got) = read(&zst);
    check_docker(&got.unwrap(), &d);

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&d.tar()).unwrap();
    let (_dir, got) = read(&gz.finish().unwrap());
    check_docker(&got.unwrap(), &d);
}

/// An OCI layout with one gzip layer; `corrupt` replaces the layer blob's
/// content (keeping its name), `index` replaces index.json.
fn oci_layout(corrupt: bool, index: Option<&[u8]>) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let plain = layer(&[("etc/os-release", b"ID=demo\n")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let config = config(&[sha(&plain)]);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{}", sha(&config)),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{}", sha(&gz)),
            "size": gz.len(),
        }],
    }))
    .unwrap();
    let index_json = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha(&manifest)),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": "docker.io/library/demo:2",
                "org.opencontainers.image.ref.name": "2",
            },
        }],
    }))
    .unwrap();
    let layer_name = format!("blobs/sha256/{}", sha(&gz));
    let mut bad = gz.clone();
    *bad.last_mut().unwrap() ^= 0xff;
    let tar = outer(&[
        ("oci-layout", E::File(br#"{"imageLayoutVersion":"1.0.0"}"#)),
        ("index.json", E::File(index.unwrap_or(&index_json))),
        (&format!("blobs/sha256/{}", sha(&manifest)), E::File(&manifest)),
        (&format!("blobs/sha256/{}", sha(&config)), E::File(&config)),
        (&layer_name, E::File(if corrupt { &bad } else { &gz })),
    ]);
    (tar, plain, gz)
}

#[test]
fn images_reads_oci_layout_with_gzip_layer() {
    let (tar, plain, gz) = oci_layout(false, None);
    let (_dir, got) = read(&tar);
    let archive = got.unwrap();
    assert_eq!(archive.images.len(), 1);
    let img = &archive.images[0];
    assert_eq!(img.tags, vec!["docker.io/library/demo:2".to_string()]);
    assert_eq!(img.layers.len(), 1);
    let l = &img.layers[0];
    assert_eq!(l.compression, Compression::Gzip);
    assert_eq!(l.media_type, MediaType::ImageLayerGzip);
    assert_eq!(l.digest.to_string(), format!("sha256:{}", sha(&gz)));
    assert_eq!(l.diff_id.to_string(), format!("sha256:{}", sha(&plain)));
    assert_eq!(l.size, gz.len() as u64);
    assert_eq!(std::fs::read(&l.path).unwrap(), gz);
}

#[test]
fn images_chain_id_matches_known_value() {
    let d = |s: &str| Digest::try_from(s).unwrap();
    let a = d("sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb");
    let b = d("sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d");
    let c = d("sha256:2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6");
    assert_eq!(chain_id(std::slice::from_ref(&a)).unwrap(), a);
    // Computed independently: printf '%s %s' $A $B | sha256sum, and so on.
    assert_eq!(
        chain_id(&[a.clone(), b.clone()]).unwrap(),
        d("sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676")
    );
    assert_eq!(
        chain_id(&[a, b, c]).unwrap(),
        d("sha256:2fce7f8ce91bcf0a1428b36e1024639fdbd9469eea762dba98aa749631885106")
    );
    assert_eq!(chain_id(&[]).unwrap_err().kind, ErrorKind::InvalidArgument);
}

#[test]
fn images_refuses_blob_with_wrong_digest() {
    let (tar, _, gz) = oci_layout(true, None);
    let named = sha(&gz);
    let mut bad = gz.clone();
    *bad.last_mut().unwrap() ^= 0xff;
    refused(&tar, ErrorKind::InvalidArgument, &[&format!("blobs/sha256/{named}"), &named, &sha(&bad)]);
}

#[test]
fn images_refuses_layer_not_matching_diff_id() {
    let mut d = Docker::new();
    let wrong = sha(b"something else");
    d.config = config(&[sha(&d.l1), wrong.clone()]);
    d.manifest = serde_json::to_vec(&json!([{
        "Config": format!("{}.json", sha(&d.config)),
        "RepoTags": ["demo:1"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar"],
    }]))
    .unwrap();
    refused(&d.tar(), ErrorKind::InvalidArgument, &["bbb/layer.tar", &wrong, &sha(&d.l2), "diff_ids[1]"]);
}

#[test]
fn images_refuses_malformed_manifest_json() {
    let mut d = Docker::new();
    d.manifest = b"[{\"Config\": 42".to_vec();
    refused(&d.tar(), ErrorKind::InvalidArgument, &["manifest.json", "not a valid"]);
}

#[test]
fn images_refuses_malformed_index_json() {
    let (tar, _, _) = oci_layout(false, Some(b"{\"manifests\": \"nope\"}"));
    refused(&tar, ErrorKind::InvalidArgument, &["index.json", "not a valid OCI image index"]);
}

#[test]
fn images_refuses_missing_blob() {
    let d = Docker::new();
    let config_name = format!("{}.json", sha(&d.config));
    let tar = outer(&[
        ("aaa/layer.tar", E::File(&d.l1)),
        (&config_name, E::File(&d.config)),
        ("manifest.json", E::File(&d.manifest)),
    ]);
    refused(&tar, ErrorKind::InvalidArgument, &["bbb/layer.tar", "does not contain"]);
}

#[test]
fn images_refuses_absolute_and_dotdot_paths() {
    refused(&outer(&[("/etc/evil", E::File(b"x"))]), ErrorKind::InvalidArgument, &["/etc/evil", "absolute"]);
    refused(
        &outer(&[("a/../../evil", E::File(b"x"))]),
        ErrorKind::InvalidArgument,
        &["a/../../evil", "'..'"],
    );
}

#[test]
fn images_refuses_symlink_pointing_outside() {
    for target in ["../../etc/passwd", "/etc/passwd", "a/../../../x"] {
        let tar = outer(&[("aaa/layer.tar", E::Symlink(target))]);
        refused(&tar, ErrorKind::InvalidArgument, &["aaa/layer.tar", "outside the archive", target]);
    }
}

#[test]
fn images_refuses_layer_count_not_matching_diff_ids() {
    let mut d = Docker::new();
    d.config = config(&[sha(&d.l1)]);
    d.manifest = serde_json::to_vec(&json!([{
        "Config": format!("{}.json", sha(&d.config)),
        "Layers": ["aaa/layer.tar", "bbb/layer.tar"],
    }]))
    .unwrap();
    refused(&d.tar(), ErrorKind::InvalidArgument, &["1 diff ids", "2 layers"]);
}

#[test]
fn images_refuses_device_entries_and_unknown_layouts() {
    refused(&outer(&[("fifo", E::Fifo)]), ErrorKind::InvalidArgument, &["fifo", "only files"]);
    refused(
        &outer(&[("README", E::File(b"hi"))]),
        ErrorKind::InvalidArgument,
        &["manifest.json", "index.json"],
    );
}
