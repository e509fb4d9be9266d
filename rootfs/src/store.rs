//! `RootfsStore`: the one handle the daemon keeps. It ties the content store, image
//! records, unpacked layers and snapshots together under one root directory and owns
//! the rules between them (an image in use by a snapshot cannot be removed, content
//! no image needs is collected).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::content::ContentStore;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::images::{ImageRecord, ImageStore};
use crate::layers::LayerStore;
use crate::manifest::{layer_compression, ConfigFile, Descriptor, Platform};
use crate::reference::Reference;
use crate::registries::{RegistriesConf, DEFAULT_PATH};
use crate::snapshots::{Mount, SnapshotInfo, SnapshotStore};
use crate::usage::{dir_usage, Usage};

/// How to open a store; `Default` reads /etc/containers/registries.conf if present.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// registries.conf to read; `None` means no registry configuration at all.
    pub registries_conf: Option<PathBuf>,
    /// Platform picked from multi-platform images; the host's by default.
    pub platform: Platform,
    /// Layers downloaded (and unpacked) at once.
    pub max_concurrent_downloads: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            registries_conf: Some(PathBuf::from(DEFAULT_PATH)),
            platform: Platform::host(),
            max_concurrent_downloads: 4,
        }
    }
}

/// Filesystem usage of the image store, for CRI ImageFsInfo.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsUsage {
    /// The store's root directory (CRI reports the mountpoint it lives on).
    pub root: PathBuf,
    pub bytes: u64,
    pub inodes: u64,
}

/// What a garbage collection freed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcStats {
    pub blobs_removed: usize,
    pub layers_removed: usize,
}

#[derive(Clone)]
pub struct RootfsStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) content: ContentStore,
    pub(crate) layers: LayerStore,
    pub(crate) images: ImageStore,
    pub(crate) snapshots: SnapshotStore,
    pub(crate) registries: RegistriesConf,
    pub(crate) options: StoreOptions,
    /// Serializes changes to records so "is it in use?" and "delete it" cannot interleave.
    pub(crate) meta: tokio::sync::Mutex<()>,
    /// Blobs and layers a pull or import in flight relies on, so GC leaves them alone.
    pub(crate) leases: Mutex<HashMap<Digest, usize>>,
    /// The transport that last worked for each registry host.
    pub(crate) transports: Mutex<HashMap<String, crate::pull::Transport>>,
}

/// Holds digests against garbage collection until dropped.
pub(crate) struct Lease {
    inner: Arc<Inner>,
    digests: Vec<Digest>,
}

impl Lease {
    pub(crate) fn add(&mut self, digests: impl IntoIterator<Item = Digest>) {
        let new: Vec<Digest> = digests.into_iter().collect();
        if let Ok(mut leases) = self.inner.leases.lock() {
            for d in &new {
                *leases.entry(d.clone()).or_default() += 1;
            }
        }
        self.digests.extend(new);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut leases) = self.inner.leases.lock() {
            for d in &self.digests {
                if let Some(count) = leases.get_mut(d) {
                    *count -= 1;
                    if *count == 0 {
                        leases.remove(d);
                    }
                }
            }
        }
    }
}

/// Runs blocking filesystem work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await?
}

impl RootfsStore {
    /// Opens (creating if needed) the store at `root` with default options.
    pub fn open(root: impl AsRef<Path>) -> Result<RootfsStore> {
        Self::open_with(root, StoreOptions::default())
    }

    pub fn open_with(root: impl AsRef<Path>, options: StoreOptions) -> Result<RootfsStore> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root).map_err(Error::io("creating store root", &root))?;
        let registries = match &options.registries_conf {
            Some(path) => RegistriesConf::load(path)?,
            None => RegistriesConf::default(),
        };
        // Archives being imported are unpacked beside the store; a crash leaves them.
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.filter_map(|e| e.ok()) {
                if entry.file_name().to_string_lossy().starts_with("import-") {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let inner = Inner {
            content: ContentStore::open(&root.join("content"))?,
            layers: LayerStore::open(&root)?,
            images: ImageStore::open(&root)?,
            snapshots: SnapshotStore::open(&root)?,
            registries,
            options,
            meta: tokio::sync::Mutex::new(()),
            leases: Mutex::new(HashMap::new()),
            transports: Mutex::new(HashMap::new()),
            root,
        };
        Ok(RootfsStore {
            inner: Arc::new(inner),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub(crate) fn lease(&self) -> Lease {
        Lease {
            inner: self.inner.clone(),
            digests: Vec::new(),
        }
    }

    pub async fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let images = self.inner.images.clone();
        blocking(move || images.list()).await
    }

    /// Finds an image by reference (`busybox`, `name@sha256:…`), full ID (with or
    /// without `sha256:`) or a unique ID prefix.
    pub async fn image_status(&self, reference_or_id: &str) -> Result<Option<ImageRecord>> {
        let inner = self.inner.clone();
        let query = reference_or_id.to_string();
        blocking(move || inner.find(&query)).await
    }

    /// Removes a name, or the whole image for an ID or digest reference. Content goes
    /// when the image's last tag does. Removing a missing image is not an error
    /// (returns false), as CRI requires. An image a snapshot uses is refused.
    pub async fn remove_image(&self, reference_or_id: &str) -> Result<bool> {
        let guard = self.inner.meta.lock().await;
        let Some(mut record) = self.inner.find(reference_or_id)? else {
            return Ok(false);
        };
        let tag = reference_or_id
            .parse::<Reference>()
            .ok()
            .filter(|r| r.digest.is_none())
            .and_then(|r| {
                self.inner
                    .name_candidates(&r)
                    .into_iter()
                    .filter_map(|c| c.tagged())
                    .find(|t| record.repo_tags.contains(t))
            });
        if let Some(tag) = tag {
            if record.repo_tags.len() > 1 {
                record.repo_tags.retain(|t| *t != tag);
                let name = tag
                    .rsplit_once(':')
                    .map(|(n, _)| n.to_string())
                    .unwrap_or_default();
                let other_tag_same_repo = record
                    .repo_tags
                    .iter()
                    .any(|t| t.starts_with(&format!("{name}:")));
                if !other_tag_same_repo {
                    record
                        .repo_digests
                        .retain(|d| !d.starts_with(&format!("{name}@")));
                }
                self.inner.images.put(&record)?;
                return Ok(true);
            }
        }
        let users: Vec<String> = self
            .inner
            .snapshots
            .list()?
            .into_iter()
            .filter(|s| s.image_id == record.id)
            .map(|s| s.key)
            .collect();
        if !users.is_empty() {
            return Err(Error::ImageInUse {
                image: reference_or_id.to_string(),
                users,
            });
        }
        self.inner.images.delete(&record.id)?;
        drop(guard);
        tracing::info!(image = %record.id, "image removed");
        self.gc().await?;
        Ok(true)
    }

    /// Deletes blobs and unpacked layers that no image, snapshot or operation in
    /// flight needs, and stale partial downloads.
    pub async fn gc(&self) -> Result<GcStats> {
        let _guard = self.inner.meta.lock().await;
        let inner = self.inner.clone();
        blocking(move || {
            let mut blobs: HashSet<Digest> = HashSet::new();
            let mut chains: HashSet<Digest> = HashSet::new();
            for image in inner.images.list()? {
                blobs.extend(image.blobs());
                chains.extend(image.chain_ids());
            }
            for snapshot in inner.snapshots.list()? {
                chains.extend(snapshot.layers);
            }
            let leased: HashSet<Digest> = inner
                .leases
                .lock()
                .map(|l| l.keys().cloned().collect())
                .unwrap_or_default();
            let mut stats = GcStats::default();
            for blob in inner.content.list()? {
                if !blobs.contains(&blob) && !leased.contains(&blob) {
                    inner.content.delete(&blob)?;
                    stats.blobs_removed += 1;
                }
            }
            for chain in inner.layers.list()? {
                if !chains.contains(&chain) && !leased.contains(&chain) {
                    inner.layers.remove(&chain)?;
                    stats.layers_removed += 1;
                }
            }
            Ok(stats)
        })
        .await
    }

    /// Bytes and inodes used by images (content and unpacked layers).
    pub async fn fs_usage(&self) -> Result<FsUsage> {
        let root = self.inner.root.clone();
        blocking(move || {
            let mut usage = Usage::default();
            for dir in ["content", "layers", "l", "images"] {
                usage += dir_usage(&root.join(dir));
            }
            Ok(FsUsage {
                root,
                bytes: usage.bytes,
                inodes: usage.inodes,
            })
        })
        .await
    }

    /// Creates the writable snapshot `key` (a container ID) of `image` (reference or
    /// ID). Fails if the key exists or the image is unknown.
    pub async fn prepare_snapshot(
        &self,
        key: &str,
        image: &str,
        readonly: bool,
    ) -> Result<SnapshotInfo> {
        self.create_snapshot(key, image, readonly, None).await
    }

    /// `prepare_snapshot` and `mount_snapshot` in one step, writing the record once.
    /// If the mount fails the snapshot is removed again.
    pub async fn prepare_and_mount_snapshot(
        &self,
        key: &str,
        image: &str,
        readonly: bool,
        target: &Path,
    ) -> Result<SnapshotInfo> {
        let target =
            std::path::absolute(target).map_err(Error::io("resolving mount target", target))?;
        let info = self
            .create_snapshot(key, image, readonly, Some(target.clone()))
            .await?;
        let snapshots = self.inner.snapshots.clone();
        let mounted = {
            let info = info.clone();
            blocking(move || snapshots.mount_overlay(&info, &target)).await
        };
        if let Err(e) = mounted {
            if let Err(undo) = self.remove_snapshot(key).await {
                tracing::warn!(key, error = %undo, "could not remove snapshot after a failed mount");
            }
            return Err(e);
        }
        Ok(info)
    }

    async fn create_snapshot(
        &self,
        key: &str,
        image: &str,
        readonly: bool,
        target: Option<PathBuf>,
    ) -> Result<SnapshotInfo> {
        let _guard = self.inner.meta.lock().await;
        let record = self
            .inner
            .find(image)?
            .ok_or_else(|| Error::ImageNotFound(image.to_string()))?;
        let chains = record.chain_ids();
        for chain in &chains {
            if !self.inner.layers.contains(chain) {
                return Err(Error::invalid(
                    format!("image {}", record.id),
                    format!("layer {chain} is not unpacked"),
                ));
            }
        }
        self.inner
            .snapshots
            .create(key, &record.id, chains, readonly, target)
    }

    /// Mounts the snapshot's overlay at `target` (an existing directory).
    pub async fn mount_snapshot(&self, key: &str, target: &Path) -> Result<()> {
        let snapshots = self.inner.snapshots.clone();
        let (key, target) = (key.to_string(), target.to_path_buf());
        blocking(move || snapshots.mount(&key, &target).map(drop)).await
    }

    /// The overlay mount (absolute paths) for callers that mount it themselves.
    pub async fn snapshot_mount(&self, key: &str) -> Result<Mount> {
        let info = self
            .snapshot(key)
            .await?
            .ok_or_else(|| Error::SnapshotNotFound(key.to_string()))?;
        Ok(self.inner.snapshots.mount_spec(&info))
    }

    pub async fn unmount_snapshot(&self, key: &str) -> Result<()> {
        let snapshots = self.inner.snapshots.clone();
        let key = key.to_string();
        blocking(move || snapshots.unmount(&key)).await
    }

    pub async fn snapshot(&self, key: &str) -> Result<Option<SnapshotInfo>> {
        self.inner.snapshots.get(key)
    }

    pub async fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let snapshots = self.inner.snapshots.clone();
        blocking(move || snapshots.list()).await
    }

    /// Unmounts and deletes the snapshot; a missing one is already removed.
    pub async fn remove_snapshot(&self, key: &str) -> Result<()> {
        let _guard = self.inner.meta.lock().await;
        let snapshots = self.inner.snapshots.clone();
        let key = key.to_string();
        blocking(move || snapshots.remove(&key)).await
    }

    /// Bytes and inodes the container wrote (its upperdir), for container stats.
    pub async fn snapshot_usage(&self, key: &str) -> Result<Usage> {
        let snapshots = self.inner.snapshots.clone();
        let key = key.to_string();
        blocking(move || snapshots.usage(&key)).await
    }

    /// Unpacks the layer blob `desc` (already in the content store) as `chain`.
    pub(crate) async fn unpack(
        &self,
        chain: &Digest,
        diff_id: &Digest,
        desc: &Descriptor,
    ) -> Result<()> {
        let compression = layer_compression(&desc.media_type)?;
        let (layers, path) = (
            self.inner.layers.clone(),
            self.inner.content.path(&desc.digest),
        );
        let (chain, diff_id, blob) = (chain.clone(), diff_id.clone(), desc.digest.clone());
        blocking(move || layers.ensure(&chain, &diff_id, &blob, &path, &compression)).await
    }

    /// Writes the record of an image whose config, layers and manifests are stored and
    /// whose layers are unpacked.
    pub(crate) async fn record_image(
        &self,
        config_digest: &Digest,
        config: ConfigFile,
        layers: Vec<Descriptor>,
        manifests: Vec<Digest>,
        repo_tags: Vec<String>,
        repo_digests: Vec<String>,
    ) -> Result<ImageRecord> {
        let manifest_bytes: u64 = manifests
            .iter()
            .filter_map(|m| std::fs::metadata(self.inner.content.path(m)).ok())
            .map(|m| m.len())
            .sum();
        let config_bytes = std::fs::metadata(self.inner.content.path(config_digest))
            .map(|m| m.len())
            .unwrap_or(0);
        let size = layers.iter().map(|l| l.size.max(0) as u64).sum::<u64>()
            + manifest_bytes
            + config_bytes;
        let record = ImageRecord {
            id: config_digest.clone(),
            repo_tags,
            repo_digests,
            size,
            config: config.config.unwrap_or_default(),
            architecture: config.architecture,
            os: config.os,
            diff_ids: config.rootfs.diff_ids,
            layers,
            manifests,
        };
        let _guard = self.inner.meta.lock().await;
        self.inner.images.add(record)
    }
}

impl Inner {
    /// The names a reference may be stored under: itself, and for a short name
    /// (`busybox`) its forms in each unqualified-search registry it may have been
    /// pulled from.
    fn name_candidates(&self, reference: &Reference) -> Vec<Reference> {
        let mut out = vec![reference.clone()];
        if reference.short_name {
            out.extend(
                self.registries
                    .search_registries()
                    .iter()
                    .map(|r| reference.in_registry(r)),
            );
        }
        out
    }

    /// Looks an image up, reading one record directly when given a full ID.
    fn find(&self, query: &str) -> Result<Option<ImageRecord>> {
        if let Ok(id) = Digest::parse_lenient(query.trim()) {
            if let Some(record) = self.images.get(&id)? {
                return Ok(Some(record));
            }
        }
        let images = self.images.list()?;
        if let Some(found) = find_image(&images, query) {
            return Ok(Some(found));
        }
        let Ok(reference) = query.trim().parse::<Reference>() else {
            return Ok(None);
        };
        Ok(self
            .name_candidates(&reference)
            .iter()
            .skip(1)
            .find_map(|candidate| find_image(&images, &candidate.to_string())))
    }
}

pub(crate) fn find_image(images: &[ImageRecord], query: &str) -> Option<ImageRecord> {
    let query = query.trim();
    if let Ok(id) = Digest::parse_lenient(query) {
        if let Some(found) = images.iter().find(|i| i.id == id) {
            return Some(found.clone());
        }
    }
    if let Ok(reference) = query.parse::<Reference>() {
        let found = match (&reference.digest, reference.tagged()) {
            (Some(digest), _) => {
                let name = reference.with_digest(digest);
                images.iter().find(|i| i.repo_digests.contains(&name))
            }
            (None, Some(tagged)) => images.iter().find(|i| i.repo_tags.contains(&tagged)),
            (None, None) => None,
        };
        if let Some(found) = found {
            return Some(found.clone());
        }
    }
    // A short ID prefix, as `crictl rmi 0123abcd` gives it.
    let hex = query.strip_prefix("sha256:").unwrap_or(query);
    if hex.len() >= 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut matches = images.iter().filter(|i| i.id.hex().starts_with(hex));
        if let (Some(only), None) = (matches.next(), matches.next()) {
            return Some(only.clone());
        }
    }
    None
}
