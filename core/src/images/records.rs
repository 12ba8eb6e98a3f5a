//! What the image service keeps in the state store, the in-memory index
//! mirroring it, and image references (`name:tag`) in their normal form.
//!
//! Store keys (values JSON):
//!
//! * `image/<id>` — an [`ImageRecord`]: the config JSON, the layers' chain
//!   and diff IDs, the layer blobs as loaded, tags, sizes, times;
//! * `tag/<ref>` — the image ID a reference (`name:tag`, familiar form)
//!   points at; always written in the same transaction as the image's tags;
//! * `layer/<chain id>` — a [`LayerRecord`]: diff ID, parent, size, driver
//!   and how many images use the layer.

use std::collections::{BTreeMap, HashMap};

use berth_plugin_api::{DriverError, DriverResult};
use serde::{Deserialize, Serialize};

use super::is_sha256_hex;
use crate::store::{Change, Store};

/// Store key prefix of image records.
pub(crate) const IMAGE_PREFIX: &str = "image/";
/// Store key prefix of layer records.
pub(crate) const LAYER_PREFIX: &str = "layer/";
/// Store key prefix of tags.
pub(crate) const TAG_PREFIX: &str = "tag/";

/// `image/<id>`.
pub(crate) fn image_key(id: &str) -> String {
    format!("{IMAGE_PREFIX}{id}")
}

/// `layer/<chain id>`.
pub(crate) fn layer_key(chain: &str) -> String {
    format!("{LAYER_PREFIX}{chain}")
}

/// `tag/<ref>`.
pub(crate) fn tag_key(reference: &str) -> String {
    format!("{TAG_PREFIX}{reference}")
}

/// The hex part of a `sha256:<hex>` digest (the whole string otherwise).
pub(crate) fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// A layer blob of an image, as loaded (possibly compressed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BlobRef {
    /// `sha256:<hex>` of the blob's bytes.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type (OCI or Docker).
    pub media_type: String,
}

/// The daemon's record of an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    /// `sha256:<hex>` of the config blob.
    pub id: String,
    /// The image config, as the blob holds it.
    pub config: serde_json::Value,
    /// The config blob's size in bytes.
    pub config_size: u64,
    /// Chain ID of each layer, base first.
    pub chain_ids: Vec<String>,
    /// Diff ID of each layer, base first.
    pub diff_ids: Vec<String>,
    /// The layer blobs as loaded, base first (what `save` writes).
    pub blobs: Vec<BlobRef>,
    /// References (`name:tag`, familiar form), in the order they were given.
    pub tags: Vec<String>,
    /// The config's `created`, in seconds since the epoch (0 when absent).
    pub created: i64,
    /// Bytes of content the layers add, all together.
    pub size: u64,
    /// When the image was loaded (seconds since the epoch).
    pub loaded_at: u64,
    /// When a tag was last put on the image (RFC 3339), if ever.
    pub last_tag_time: Option<String>,
}

/// The daemon's record of a stored layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LayerRecord {
    /// Its chain ID; the storage driver's layer id is the hex part.
    pub chain_id: String,
    /// The diff ID of its own content.
    pub diff_id: String,
    /// The parent layer's chain ID; none for a base layer.
    pub parent: Option<String>,
    /// Bytes of content the layer adds.
    pub size: u64,
    /// How many images use the layer (their chains include it).
    pub refs: u64,
    /// The storage driver holding it.
    pub driver: String,
    /// When it was made (seconds since the epoch).
    pub created_at: u64,
}

/// Everything the service knows, mirrored from the store.
#[derive(Debug, Default)]
pub(crate) struct Index {
    /// Image records by ID.
    pub images: BTreeMap<String, ImageRecord>,
    /// Reference → image ID.
    pub tags: BTreeMap<String, String>,
    /// Layer records by chain ID.
    pub layers: HashMap<String, LayerRecord>,
}

impl Index {
    /// Reads every record from `store`. A tag pointing at a missing image
    /// is ignored (and logged).
    pub fn load(store: &Store) -> DriverResult<Index> {
        let images: BTreeMap<String, ImageRecord> =
            store.list::<ImageRecord>(IMAGE_PREFIX)?.into_iter().map(|(_, r)| (r.id.clone(), r)).collect();
        let mut tags = BTreeMap::new();
        for (key, id) in store.list::<String>(TAG_PREFIX)? {
            let reference = key[TAG_PREFIX.len()..].to_string();
            if images.contains_key(&id) {
                tags.insert(reference, id);
            } else {
                tracing::warn!(%reference, %id, "tag of an image with no record: ignored");
            }
        }
        let layers = store
            .list::<LayerRecord>(LAYER_PREFIX)?
            .into_iter()
            .map(|(_, r)| (r.chain_id.clone(), r))
            .collect();
        Ok(Index { images, tags, layers })
    }

    /// Whether any layer record has `chain` as its parent.
    pub fn has_children(&self, chain: &str) -> bool {
        self.layers.values().any(|l| l.parent.as_deref() == Some(chain))
    }

    /// How many parents `chain` has (0 for a base layer).
    pub fn depth(&self, chain: &str) -> usize {
        let mut depth = 0;
        let mut cur = self.layers.get(chain).and_then(|l| l.parent.clone());
        while let Some(p) = cur {
            depth += 1;
            cur = self.layers.get(&p).and_then(|l| l.parent.clone());
            if depth > 4096 {
                break; // a loop in corrupt records; not worth more
            }
        }
        depth
    }
}

/// A set of record changes written in one store transaction and then
/// mirrored into the index, so both always agree.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// Image records to write.
    pub images_put: Vec<ImageRecord>,
    /// Image IDs to delete.
    pub images_del: Vec<String>,
    /// Layer records to write.
    pub layers_put: Vec<LayerRecord>,
    /// Tags to point at an image: (reference, id).
    pub tags_put: Vec<(String, String)>,
    /// Tags to delete.
    pub tags_del: Vec<String>,
}

impl Batch {
    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.images_put.is_empty()
            && self.images_del.is_empty()
            && self.layers_put.is_empty()
            && self.tags_put.is_empty()
            && self.tags_del.is_empty()
    }

    /// The store changes (deletes before puts, so a tag moved in the same
    /// batch ends up written).
    pub fn changes(&self) -> DriverResult<Vec<Change>> {
        let mut out = Vec::new();
        out.extend(self.tags_del.iter().map(|t| Change::Delete(tag_key(t))));
        out.extend(self.images_del.iter().map(|id| Change::Delete(image_key(id))));
        for (t, id) in &self.tags_put {
            out.push(Change::Put(tag_key(t), serde_json::Value::String(id.clone())));
        }
        for r in &self.images_put {
            out.push(Change::Put(image_key(&r.id), encode(r)?));
        }
        for l in &self.layers_put {
            out.push(Change::Put(layer_key(&l.chain_id), encode(l)?));
        }
        Ok(out)
    }

    /// Mirrors the batch into `index` (in the order of [`Batch::changes`]).
    pub fn apply(self, index: &mut Index) {
        for t in self.tags_del {
            index.tags.remove(&t);
        }
        for id in self.images_del {
            index.images.remove(&id);
        }
        for (t, id) in self.tags_put {
            index.tags.insert(t, id);
        }
        for r in self.images_put {
            index.images.insert(r.id.clone(), r);
        }
        for l in self.layers_put {
            index.layers.insert(l.chain_id.clone(), l);
        }
    }
}

/// JSON of a record.
pub(crate) fn encode<T: Serialize>(value: &T) -> DriverResult<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| DriverError::internal(format!("encode image record: {e}")))
}

/// The normal (Docker "familiar") form of a reference used as a tag:
/// `name:tag`, with `latest` when no tag is given and the `docker.io/`
/// (and `docker.io/library/`) prefix dropped. A malformed reference, one
/// with a digest (`name@sha256:...`) or a name of 64 hex digits (an image
/// ID) is an invalid-argument error.
pub(crate) fn normalize_reference(raw: &str) -> DriverResult<String> {
    let bad = |why: &str| DriverError::invalid_argument(format!("invalid reference format {raw:?}: {why}"));
    if raw.contains('@') {
        return Err(bad("a reference by digest cannot be used as a tag"));
    }
    let (name, tag) = split_tag(raw);
    let tag = tag.unwrap_or("latest");
    if !valid_tag(tag) {
        return Err(bad("a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-'"));
    }
    let name = familiar_name(name);
    if !valid_name(name) {
        return Err(bad(
            "a repository name is lower-case path components of [a-z0-9] joined by '.', '_', '__' or '-', \
             optionally after a registry host",
        ));
    }
    if is_sha256_hex(name) {
        return Err(bad("a 64-digit hexadecimal name is an image id, not a repository name"));
    }
    Ok(format!("{name}:{tag}"))
}

/// `(name, Some(tag))` or `(name, None)`: the tag is what follows the last
/// `:` after the last `/` (a `:` before it is a registry port).
pub(crate) fn split_tag(raw: &str) -> (&str, Option<&str>) {
    match raw.rfind(':') {
        Some(i) if !raw[i + 1..].contains('/') => (&raw[..i], Some(&raw[i + 1..])),
        _ => (raw, None),
    }
}

/// The repository part of a normalized reference (`a/b` of `a/b:1`).
pub(crate) fn repository(reference: &str) -> &str {
    split_tag(reference).0
}

/// `name` without Docker Hub's `docker.io/` and `library/` prefixes.
fn familiar_name(name: &str) -> &str {
    let mut n = name;
    for hub in ["docker.io/", "index.docker.io/", "registry-1.docker.io/"] {
        if let Some(rest) = n.strip_prefix(hub) {
            n = rest;
            break;
        }
    }
    match n.strip_prefix("library/") {
        Some(rest) if !rest.contains('/') => rest,
        _ => n,
    }
}

/// The fully qualified form of a familiar reference, as containerd's
/// `io.containerd.image.name` annotation holds it.
pub(crate) fn full_name(reference: &str) -> String {
    let first = reference.split('/').next().unwrap_or_default();
    if reference.contains('/') && looks_like_domain(first) {
        reference.to_string()
    } else if reference.contains('/') {
        format!("docker.io/{reference}")
    } else {
        format!("docker.io/library/{reference}")
    }
}

/// Docker's tag grammar: `[\w][\w.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// Whether the first component of a name is a registry host.
fn looks_like_domain(s: &str) -> bool {
    s.contains('.') || s.contains(':') || s == "localhost" || s.bytes().any(|b| b.is_ascii_uppercase())
}

/// Docker's repository name grammar (close enough: domain, then path
/// components of lower-case alphanumerics joined by `.`, `_`, `__` or
/// dashes).
fn valid_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && looks_like_domain(parts[0]) {
        if !valid_domain(parts[0]) {
            return false;
        }
        parts.remove(0);
    }
    parts.iter().all(|p| valid_component(p))
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    host_ok && port.map_or(true, |p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn valid_component(p: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = p.as_bytes();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_references_normalize_to_the_familiar_form() {
        for (raw, want) in [
            ("busybox", "busybox:latest"),
            ("busybox:1.36", "busybox:1.36"),
            ("docker.io/library/busybox:1", "busybox:1"),
            ("docker.io/acme/app", "acme/app:latest"),
            ("library/alpine:3", "alpine:3"),
            ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
            ("reg.example.com:443/x-y/z__w:v1.0_rc-1", "reg.example.com:443/x-y/z__w:v1.0_rc-1"),
        ] {
            assert_eq!(normalize_reference(raw).unwrap(), want, "{raw}");
        }
        let id = "a".repeat(64);
        for bad in ["", "Busybox", "a:", "a:-x", "a/../b", "a..b", "-a", "a@sha256:00", id.as_str(), "a b"] {
            assert!(normalize_reference(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(full_name("busybox:1"), "docker.io/library/busybox:1");
        assert_eq!(full_name("acme/app:1"), "docker.io/acme/app:1");
        assert_eq!(full_name("localhost:5000/a:1"), "localhost:5000/a:1");
        assert_eq!(repository("localhost:5000/a:1"), "localhost:5000/a");
    }
}
