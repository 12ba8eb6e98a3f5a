//! The two archive layouts: `docker save` (`manifest.json`) and the OCI image
//! layout (`index.json`), both ending in verified [`ImageEntry`] values.

use std::fs::File;
use std::io::{BufReader, Write};

use berth_plugin_api::{DriverError, DriverResult};
use oci_spec::image::{
    Descriptor, Digest, DigestAlgorithm, ImageConfiguration, ImageIndex, ImageManifest, MediaType, OciLayout,
};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::spool::{Files, Spooled};
use super::{hex, is_sha256_hex, sha256_digest, ImageEntry, LayerRef};
use crate::layers::{decompress, Compression};

/// How deep nested OCI indexes may go.
const MAX_INDEX_DEPTH: usize = 4;
/// The Docker media type of a manifest list.
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The Docker media type of an image manifest.
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The Docker media type of an image config.
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The annotation containerd and Docker put the full image name in.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation naming a reference.
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation buildx marks attestation manifests with.
const DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// One image of a `docker save` `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerImage {
    /// The config file's path in the archive.
    config: String,
    /// `name:tag` references; null for an untagged image.
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    /// The layer files' paths in the archive, base first.
    layers: Vec<String>,
}

/// Reads the images a `docker save` archive's `manifest.json` lists.
pub(super) fn docker(files: &Files) -> DriverResult<Vec<ImageEntry>> {
    verify_named_blobs(files)?;
    let (manifest, _) = files.json::<Vec<DockerImage>>("manifest.json", "docker save manifest")?;
    let mut images = Vec::with_capacity(manifest.len());
    for image in manifest {
        let (config, config_file) = files.json::<ImageConfiguration>(&image.config, "image config")?;
        // Docker names the config `<hex>.json` (older) or `blobs/sha256/<hex>`.
        let base = image.config.rsplit('/').next().unwrap_or_default();
        if let Some(named) = base.strip_suffix(".json").filter(|h| is_sha256_hex(h)) {
            check_hex(&image.config, named, &config_file.hex)?;
        }
        let layers = image
            .layers
            .iter()
            .map(|name| Ok((name.clone(), files.get(name)?.clone(), None)))
            .collect::<DriverResult<Vec<_>>>()?;
        let tags = image.repo_tags.unwrap_or_default();
        images.push(entry(&image.config, config_file, config, layers, tags)?);
    }
    Ok(images)
}

/// Reads the images an OCI image layout's `index.json` lists.
pub(super) fn oci(files: &Files) -> DriverResult<Vec<ImageEntry>> {
    verify_named_blobs(files)?;
    if !files.contains("oci-layout") {
        return Err(DriverError::invalid_argument(
            "image archive has index.json but no oci-layout file; it is not an OCI image layout",
        ));
    }
    let (layout, _) = files.json::<OciLayout>("oci-layout", "OCI layout file")?;
    if !layout.image_layout_version().starts_with("1.") {
        return Err(DriverError::unsupported(format!(
            "OCI image layout version {:?} is not supported; only 1.x is",
            layout.image_layout_version()
        )));
    }
    let (index, _) = files.json::<ImageIndex>("index.json", "OCI image index")?;
    let mut images = Vec::new();
    walk_index(files, "index.json", &index, &[], 0, &mut images)?;
    if images.is_empty() {
        return Err(DriverError::invalid_argument("OCI image layout's index.json lists no image manifests"));
    }
    Ok(images)
}

/// Adds the images `index` (found at `name`) lists, recursing into nested
/// indexes; `tags` are inherited from the entry that named this index.
fn walk_index(
    files: &Files,
    name: &str,
    index: &ImageIndex,
    tags: &[String],
    depth: usize,
    images: &mut Vec<ImageEntry>,
) -> DriverResult<()> {
    if depth > MAX_INDEX_DEPTH {
        return Err(DriverError::invalid_argument(format!(
            "OCI index {name} nests more than {MAX_INDEX_DEPTH} indexes deep"
        )));
    }
    for desc in index.manifests() {
        let annotations = desc.annotations().clone().unwrap_or_default();
        if annotations.get(DOCKER_REFERENCE_TYPE).is_some_and(|t| t == "attestation-manifest") {
            continue;
        }
        let own = annotations.get(CONTAINERD_NAME).or_else(|| annotations.get(OCI_REF_NAME));
        let tags: Vec<String> = own.map(|t| vec![t.clone()]).unwrap_or_else(|| tags.to_vec());
        let media = desc.media_type();
        if is_index(media) {
            let (blob_name, _) = blob(files, desc)?;
            let (nested, _) = files.json::<ImageIndex>(&blob_name, "OCI image index")?;
            walk_index(files, &blob_name, &nested, &tags, depth + 1, images)?;
        } else if is_manifest(media) {
            let (blob_name, _) = blob(files, desc)?;
            let (manifest, _) = files.json::<ImageManifest>(&blob_name, "OCI image manifest")?;
            if !is_config(manifest.config().media_type()) {
                continue; // an artifact, not an image
            }
            let (config_name, config_file) = blob(files, manifest.config())?;
            let (config, _) = files.json::<ImageConfiguration>(&config_name, "image config")?;
            let layers = manifest
                .layers()
                .iter()
                .map(|d| blob(files, d).map(|(n, f)| (n, f.clone(), Some(d.media_type().clone()))))
                .collect::<DriverResult<Vec<_>>>()?;
            images.push(entry(&config_name, config_file, config, layers, tags)?);
        }
    }
    Ok(())
}

/// The blob a descriptor names (`blobs/sha256/<hex>`), checked against the
/// descriptor's digest and size.
fn blob<'a>(files: &'a Files, desc: &Descriptor) -> DriverResult<(String, &'a Spooled)> {
    let digest = desc.digest();
    if *digest.algorithm() != DigestAlgorithm::Sha256 {
        return Err(DriverError::unsupported(format!(
            "blob {digest} uses digest algorithm {}; only sha256 is supported",
            digest.algorithm()
        )));
    }
    if !is_sha256_hex(digest.digest()) {
        return Err(DriverError::invalid_argument(format!(
            "descriptor digest {digest} is not a sha256 digest"
        )));
    }
    let name = format!("blobs/sha256/{}", digest.digest());
    let file = files.get(&name)?;
    check_hex(&name, digest.digest(), &file.hex)?;
    if file.size != desc.size() {
        return Err(DriverError::invalid_argument(format!(
            "blob {name} is {} bytes but its descriptor says {}",
            file.size,
            desc.size()
        )));
    }
    Ok((name, file))
}

/// Checks every `blobs/sha256/<hex>` file of the archive hashes to `<hex>`.
fn verify_named_blobs(files: &Files) -> DriverResult<()> {
    let mut named: Vec<_> = files
        .iter()
        .filter_map(|(name, f)| name.strip_prefix("blobs/sha256/").map(|h| (name, h, f)))
        .collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    for (name, expected, f) in named {
        check_hex(name, expected, &f.hex)?;
    }
    Ok(())
}

/// An invalid-argument error unless `actual` (the content's sha256) is `expected`.
fn check_hex(name: &str, expected: &str, actual: &str) -> DriverResult<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(DriverError::invalid_argument(format!(
            "blob {name} is corrupt: its content has digest sha256:{actual} but it is named sha256:{expected}"
        )))
    }
}

/// Builds a verified image entry: as many layers as diff IDs, and each
/// layer's uncompressed content hashing to its diff ID.
fn entry(
    config_name: &str,
    config_file: &Spooled,
    config: ImageConfiguration,
    layers: Vec<(String, Spooled, Option<MediaType>)>,
    tags: Vec<String>,
) -> DriverResult<ImageEntry> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != layers.len() {
        return Err(DriverError::invalid_argument(format!(
            "image config {config_name} lists {} diff ids but the manifest names {} layers",
            diff_ids.len(),
            layers.len()
        )));
    }
    let mut refs = Vec::with_capacity(layers.len());
    for (i, ((name, file, media), expected)) in layers.into_iter().zip(diff_ids).enumerate() {
        let diff_id = Digest::try_from(expected.as_str()).map_err(|e| {
            DriverError::invalid_argument(format!(
                "image config {config_name} has a malformed rootfs.diff_ids[{i}] {expected:?}: {e}"
            ))
        })?;
        let (compression, actual) = uncompressed_sha256(&name, &file)?;
        if diff_id.to_string() != format!("sha256:{actual}") {
            return Err(DriverError::invalid_argument(format!(
                "layer {name} does not match image config {config_name}: its uncompressed content has digest \
                 sha256:{actual} but rootfs.diff_ids[{i}] is {diff_id}"
            )));
        }
        let media_type = media.unwrap_or(match compression {
            Compression::None => MediaType::ImageLayer,
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
        });
        refs.push(LayerRef {
            path: file.path.clone(),
            digest: sha256_digest(&file.hex),
            size: file.size,
            diff_id,
            media_type,
            compression,
        });
    }
    Ok(ImageEntry { tags, config, config_digest: sha256_digest(&config_file.hex), layers: refs })
}

/// The compression of a spooled layer and the sha256 of its uncompressed stream.
fn uncompressed_sha256(name: &str, file: &Spooled) -> DriverResult<(Compression, String)> {
    let f = File::open(&file.path).map_err(|e| {
        DriverError::io(format_args!("open spooled layer {name} at {}", file.path.display()), &e)
    })?;
    let (compression, mut plain) =
        decompress(BufReader::new(f)).map_err(|e| e.context(format!("layer {name}")))?;
    let mut hasher = HashWriter(Sha256::new());
    std::io::copy(&mut plain, &mut hasher).map_err(|e| {
        DriverError::invalid_argument(format!("layer {name} cannot be decompressed ({compression:?}): {e}"))
    })?;
    Ok((compression, hex(&hasher.0.finalize())))
}

/// A writer that only hashes.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether `m` is an image index (OCI) or a manifest list (Docker).
fn is_index(m: &MediaType) -> bool {
    matches!(m, MediaType::ImageIndex) || matches!(m, MediaType::Other(s) if s == DOCKER_MANIFEST_LIST)
}

/// Whether `m` is an image manifest (OCI or Docker).
fn is_manifest(m: &MediaType) -> bool {
    matches!(m, MediaType::ImageManifest) || matches!(m, MediaType::Other(s) if s == DOCKER_MANIFEST)
}

/// Whether `m` is an image config (OCI or Docker).
fn is_config(m: &MediaType) -> bool {
    matches!(m, MediaType::ImageConfig) || matches!(m, MediaType::Other(s) if s == DOCKER_CONFIG)
}
