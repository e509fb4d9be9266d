//! Importing images without a registry: an OCI image layout (directory or tar) or a
//! `docker save` archive. Blobs are copied into the content store with their digests
//! checked, then layers are unpacked and records written exactly as for a pull.

use std::io::Read;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use serde::Deserialize;

use crate::digest::{chain_ids, Digest};
use crate::error::{Error, Result};
use crate::images::ImageRecord;
use crate::manifest::{parse_manifest, ConfigFile, Descriptor, ManifestKind, OCI_INDEX};
use crate::reference::Reference;
use crate::store::{blocking, RootfsStore};
use crate::unpack::unpack_tar;

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A temp directory under the store root, removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl RootfsStore {
    /// Imports every image in an OCI layout directory or tar, or a `docker save`
    /// archive. `name` names images whose layout gives only a tag
    /// (`org.opencontainers.image.ref.name = "v1"` becomes `name:v1`).
    pub async fn import(&self, path: &Path, name: Option<&str>) -> Result<Vec<ImageRecord>> {
        let (dir, _cleanup) = if path.is_dir() {
            (path.to_path_buf(), None)
        } else {
            let tmp = self
                .root()
                .join(format!("import-{}", rand::random::<u64>()));
            let (src, dest) = (path.to_path_buf(), tmp.clone());
            let cleanup = TempDir(tmp.clone());
            blocking(move || {
                std::fs::create_dir_all(&dest).map_err(Error::io("creating import dir", &dest))?;
                let file = std::fs::File::open(&src).map_err(Error::io("opening archive", &src))?;
                unpack_tar(file, &dest).map(drop)
            })
            .await?;
            (tmp, Some(cleanup))
        };
        if dir.join("index.json").is_file() {
            self.import_oci_dir(&dir, name).await
        } else if dir.join("manifest.json").is_file() {
            self.import_docker_dir(&dir).await
        } else {
            Err(Error::invalid(
                path.display().to_string(),
                "neither an OCI image layout (index.json) nor a docker archive (manifest.json)",
            ))
        }
    }

    async fn import_oci_dir(&self, dir: &Path, name: Option<&str>) -> Result<Vec<ImageRecord>> {
        let index_bytes = std::fs::read(dir.join("index.json"))
            .map_err(Error::io("reading", dir.join("index.json")))?;
        let ManifestKind::Index(index) = parse_manifest(&index_bytes, Some(OCI_INDEX))? else {
            return Err(Error::invalid("index.json", "not an image index"));
        };
        let mut out = Vec::new();
        for entry in &index.manifests {
            let tag = image_name(entry, name);
            let record = self.import_oci_manifest(dir, entry, tag).await?;
            out.push(record);
        }
        Ok(out)
    }

    async fn import_oci_manifest(
        &self,
        dir: &Path,
        entry: &Descriptor,
        tag: Option<Reference>,
    ) -> Result<ImageRecord> {
        let mut lease = self.lease();
        let blob = |d: &Digest| dir.join("blobs").join("sha256").join(d.hex());
        let content = &self.inner.content;
        content.put_file(&blob(&entry.digest), Some(&entry.digest))?;
        lease.add([entry.digest.clone()]);
        let mut manifests = vec![entry.digest.clone()];
        let manifest = match parse_manifest(&content.read(&entry.digest)?, Some(&entry.media_type))?
        {
            ManifestKind::Image(m) => m,
            ManifestKind::Index(index) => {
                let platform = &self.inner.options.platform;
                let chosen = index
                    .select(platform)
                    .ok_or_else(|| Error::NoMatchingPlatform {
                        reference: entry.digest.to_string(),
                        platform: platform.to_string(),
                    })?;
                content.put_file(&blob(&chosen.digest), Some(&chosen.digest))?;
                lease.add([chosen.digest.clone()]);
                manifests.push(chosen.digest.clone());
                match parse_manifest(&content.read(&chosen.digest)?, Some(&chosen.media_type))? {
                    ManifestKind::Image(m) => m,
                    ManifestKind::Index(_) => {
                        return Err(Error::invalid(
                            "image layout",
                            "nested indexes are not supported",
                        ))
                    }
                }
            }
        };
        content.put_file(
            &blob(&manifest.config.digest),
            Some(&manifest.config.digest),
        )?;
        lease.add([manifest.config.digest.clone()]);
        for layer in &manifest.layers {
            content.put_file(&blob(&layer.digest), Some(&layer.digest))?;
            lease.add([layer.digest.clone()]);
        }
        let repo_tags = tag
            .as_ref()
            .and_then(Reference::tagged)
            .into_iter()
            .collect();
        let repo_digests = tag.iter().map(|t| t.with_digest(&entry.digest)).collect();
        self.finish_import(
            &manifest.config.digest,
            manifest.layers,
            manifests,
            repo_tags,
            repo_digests,
        )
        .await
    }

    async fn import_docker_dir(&self, dir: &Path) -> Result<Vec<ImageRecord>> {
        let path = dir.join("manifest.json");
        let data = std::fs::read(&path).map_err(Error::io("reading", &path))?;
        let entries: Vec<DockerManifestEntry> =
            serde_json::from_slice(&data).map_err(|e| Error::invalid("docker manifest.json", e))?;
        let mut out = Vec::new();
        for entry in entries {
            let mut lease = self.lease();
            let inside = |p: &str| -> Result<PathBuf> {
                // Paths come from the archive: keep them inside it.
                if p.split('/').any(|c| c == "..") || p.starts_with('/') {
                    return Err(Error::UnsafeEntry {
                        path: p.to_string(),
                        reason: "escapes the archive".into(),
                    });
                }
                Ok(dir.join(p))
            };
            let config_digest = self.inner.content.put_file(&inside(&entry.config)?, None)?;
            lease.add([config_digest.clone()]);
            let mut layers = Vec::new();
            for layer in &entry.layers {
                let file = inside(layer)?;
                let digest = self.inner.content.put_file(&file, None)?;
                lease.add([digest.clone()]);
                let size = std::fs::metadata(&file)
                    .map(|m| m.len() as i64)
                    .unwrap_or(0);
                layers.push(Descriptor {
                    media_type: sniff_layer_type(&file)?.to_string(),
                    digest,
                    size,
                    platform: None,
                    annotations: Default::default(),
                });
            }
            let tags: Vec<Reference> = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .filter_map(|t| t.parse().ok())
                .collect();
            let repo_tags = tags.iter().filter_map(Reference::tagged).collect();
            out.push(
                self.finish_import(&config_digest, layers, Vec::new(), repo_tags, Vec::new())
                    .await?,
            );
        }
        Ok(out)
    }

    async fn finish_import(
        &self,
        config_digest: &Digest,
        layers: Vec<Descriptor>,
        manifests: Vec<Digest>,
        repo_tags: Vec<String>,
        repo_digests: Vec<String>,
    ) -> Result<ImageRecord> {
        let config: ConfigFile =
            serde_json::from_slice(&self.inner.content.read(config_digest)?)
                .map_err(|e| Error::invalid(format!("image config {config_digest}"), e))?;
        if config.rootfs.diff_ids.len() != layers.len() {
            return Err(Error::invalid(
                format!("image {config_digest}"),
                "layer count does not match its config's diff_ids",
            ));
        }
        let chains = chain_ids(&config.rootfs.diff_ids);
        let mut lease = self.lease();
        lease.add(chains.iter().cloned());
        {
            let jobs = layers
                .iter()
                .zip(&config.rootfs.diff_ids)
                .zip(&chains)
                .map(|((desc, diff_id), chain)| self.unpack(chain, diff_id, desc));
            let mut results = futures_util::stream::iter(jobs)
                .buffer_unordered(self.inner.options.max_concurrent_downloads.max(1));
            while let Some(result) = results.next().await {
                result?;
            }
        }
        let record = self
            .record_image(
                config_digest,
                config,
                layers,
                manifests,
                repo_tags,
                repo_digests,
            )
            .await?;
        drop(lease);
        Ok(record)
    }
}

/// The name an OCI layout entry is imported under, if any.
fn image_name(entry: &Descriptor, base: Option<&str>) -> Option<Reference> {
    if let Some(full) = entry.annotations.get(CONTAINERD_NAME) {
        return full.parse().ok();
    }
    let ref_name = entry.annotations.get(REF_NAME)?;
    let looks_like_tag = !ref_name.contains(['/', ':', '@']);
    match base {
        Some(base) if looks_like_tag => format!("{base}:{ref_name}").parse().ok(),
        _ => ref_name.parse().ok(),
    }
}

/// `docker save` layers carry no media type: tell compression by the magic bytes.
fn sniff_layer_type(path: &Path) -> Result<&'static str> {
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(Error::io("opening layer", path))?;
    let n = file
        .read(&mut magic)
        .map_err(Error::io("reading layer", path))?;
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => "application/vnd.oci.image.layer.v1.tar+gzip",
        [0x28, 0xb5, 0x2f, 0xfd] => "application/vnd.oci.image.layer.v1.tar+zstd",
        _ => "application/vnd.oci.image.layer.v1.tar",
    })
}
