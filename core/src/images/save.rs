//! `docker save`: images written as Docker 25 writes them — an OCI image
//! layout (`oci-layout`, `index.json`, `blobs/sha256/...` with an OCI
//! manifest per image) that is also a `docker save` archive
//! (`manifest.json` naming the config and layer blobs). Configs and layers
//! come byte for byte from the content store, so the image IDs and diff IDs
//! of a saved image are those it was loaded with.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;

use berth_plugin_api::{DriverError, DriverResult};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::hex;
use super::records::{full_name, hex_of, normalize_reference, repository, split_tag, ImageRecord};
use super::service::{lookup, ImageService};

/// The OCI media types written.
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The annotations Docker 25 puts on each index entry.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One image to write, with the tags it is saved under.
struct Planned {
    record: ImageRecord,
    tags: Vec<String>,
}

/// One file of the archive: from an open blob or from memory.
enum Body {
    Blob(File, u64),
    Bytes(Vec<u8>),
}

impl ImageService {
    /// Writes the images `names` refer to as a `docker save` archive to
    /// `out` (Docker 25's layout plus `index.json`, so it is also an OCI layout). A name is taken as
    /// [`ImageService::resolve`] takes it, except that a repository name
    /// without a tag saves every tag of that repository (as Docker does).
    /// Loading the archive back gives the same image IDs.
    pub fn save(&self, names: &[String], out: &mut dyn Write) -> DriverResult<()> {
        if names.is_empty() {
            return Err(DriverError::invalid_argument("no image to save: name at least one"));
        }
        // Plan and open every blob while holding the operations lock, so no
        // removal can take a blob away; the open files then outlive any
        // removal while the archive is written.
        let (planned, mut files) = {
            let _ops = self.lock_ops();
            let planned = self.plan(names)?;
            let mut files: BTreeMap<String, Body> = BTreeMap::new();
            for p in &planned {
                let wanted = std::iter::once((hex_of(&p.record.id), p.record.config_size))
                    .chain(p.record.blobs.iter().map(|b| (hex_of(&b.digest), b.size)));
                for (h, size) in wanted {
                    if let std::collections::btree_map::Entry::Vacant(slot) = files.entry(h.to_string()) {
                        slot.insert(Body::Blob(self.content().open_blob(h, size)?, size));
                    }
                }
            }
            (planned, files)
        };
        let mut index_entries = Vec::new();
        let mut manifest_json = Vec::new();
        for p in &planned {
            let r = &p.record;
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": { "mediaType": OCI_CONFIG, "digest": r.id, "size": r.config_size },
                "layers": r.blobs.iter().map(|b| json!({
                    "mediaType": b.media_type, "digest": b.digest, "size": b.size,
                })).collect::<Vec<_>>(),
            });
            let bytes = to_json(&manifest)?;
            let digest = hex(&Sha256::digest(&bytes));
            let size = bytes.len();
            files.insert(digest.clone(), Body::Bytes(bytes));
            let descriptor = |annotations: Option<serde_json::Value>| {
                let mut d =
                    json!({ "mediaType": OCI_MANIFEST, "digest": format!("sha256:{digest}"), "size": size });
                if let Some(a) = annotations {
                    d["annotations"] = a;
                }
                d
            };
            if p.tags.is_empty() {
                index_entries.push(descriptor(None));
            }
            for t in &p.tags {
                let tag = split_tag(t).1.unwrap_or("latest");
                let mut annotations = serde_json::Map::new();
                annotations.insert(CONTAINERD_NAME.into(), full_name(t).into());
                annotations.insert(OCI_REF_NAME.into(), tag.into());
                index_entries.push(descriptor(Some(serde_json::Value::Object(annotations))));
            }
            manifest_json.push(json!({
                "Config": format!("blobs/sha256/{}", hex_of(&r.id)),
                "RepoTags": if p.tags.is_empty() { serde_json::Value::Null } else { json!(p.tags) },
                "Layers": r.blobs.iter().map(|b| format!("blobs/sha256/{}", hex_of(&b.digest))).collect::<Vec<_>>(),
            }));
        }
        let index =
            to_json(&json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index_entries }))?;
        let manifest = to_json(&serde_json::Value::Array(manifest_json))?;
        let layout = to_json(&json!({ "imageLayoutVersion": "1.0.0" }))?;

        let err =
            |what: &str, e: std::io::Error| DriverError::io(format_args!("write image archive: {what}"), &e);
        let mut tar = tar::Builder::new(out);
        for dir in ["blobs/", "blobs/sha256/"] {
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            tar.append_data(&mut h, dir, std::io::empty()).map_err(|e| err(dir, e))?;
        }
        for (hex, body) in files {
            let name = format!("blobs/sha256/{hex}");
            match body {
                Body::Blob(f, size) => {
                    let mut h = header(tar::EntryType::Regular, 0o644, size);
                    tar.append_data(&mut h, &name, std::io::Read::take(f, size))
                        .map_err(|e| err(&name, e))?;
                }
                Body::Bytes(b) => {
                    let mut h = header(tar::EntryType::Regular, 0o644, b.len() as u64);
                    tar.append_data(&mut h, &name, b.as_slice()).map_err(|e| err(&name, e))?;
                }
            }
        }
        for (name, bytes) in [("index.json", index), ("manifest.json", manifest), ("oci-layout", layout)] {
            let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
            tar.append_data(&mut h, name, bytes.as_slice()).map_err(|e| err(name, e))?;
        }
        let out = tar.into_inner().map_err(|e| err("end of archive", e))?;
        out.flush().map_err(|e| err("flush", e))
    }

    /// The images `names` name, each once, in the order first named, with
    /// the tags they are saved under.
    fn plan(&self, names: &[String]) -> DriverResult<Vec<Planned>> {
        let index = self.read();
        let mut order: Vec<String> = Vec::new();
        let mut tags: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut add = |id: &str, tag: Option<String>| {
            if !tags.contains_key(id) {
                order.push(id.to_string());
            }
            let set = tags.entry(id.to_string()).or_default();
            set.extend(tag);
        };
        for name in names {
            // A repository name without tag: every tag of the repository.
            let repo_only = !name.contains('@') && split_tag(name).1.is_none();
            if repo_only {
                if let Ok(normal) = normalize_reference(name) {
                    let repo = repository(&normal).to_string();
                    let all: Vec<(String, String)> = index
                        .tags
                        .iter()
                        .filter(|(t, _)| repository(t) == repo)
                        .map(|(t, id)| (t.clone(), id.clone()))
                        .collect();
                    if !all.is_empty() {
                        for (t, id) in all {
                            add(&id, Some(t));
                        }
                        continue;
                    }
                }
            }
            let (id, tag) = lookup(&index, name)?;
            add(&id, tag);
        }
        order
            .into_iter()
            .map(|id| {
                let record = index.images.get(&id).cloned().ok_or_else(|| super::service::no_such(&id))?;
                let tags = tags.remove(&id).unwrap_or_default().into_iter().collect();
                Ok(Planned { record, tags })
            })
            .collect()
    }
}

/// A tar header for one entry of the archive (root-owned, time 0).
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

/// Compact JSON bytes.
fn to_json(v: &serde_json::Value) -> DriverResult<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| DriverError::internal(format!("encode archive JSON: {e}")))
}
