//! Image records: one small JSON file per image under `images/<id hex>.json`.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::{read_json, write_json};
use crate::digest::{chain_ids, Digest};
use crate::error::{Error, Result};
use crate::manifest::{Descriptor, ImageConfig};

/// What peapod knows about one image. The image ID is the digest of its config blob.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: Digest,
    /// `registry/repository:tag` names pointing at this image.
    pub repo_tags: Vec<String>,
    /// `registry/repository@sha256:…` names (manifest or index digests).
    pub repo_digests: Vec<String>,
    /// Bytes of content (compressed layers, config and manifests) the image needs.
    pub size: u64,
    pub config: ImageConfig,
    pub architecture: String,
    pub os: String,
    /// Layer blobs, bottom first.
    pub layers: Vec<Descriptor>,
    /// Digests of the uncompressed layers, bottom first.
    pub diff_ids: Vec<Digest>,
    /// Manifest and index blobs this image was pulled or imported through.
    pub manifests: Vec<Digest>,
}

impl ImageRecord {
    /// The unpacked layers' keys, bottom first.
    pub fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(&self.diff_ids)
    }

    /// The image's user the way CRI's `Image` reports it: `(Some(uid), "")` for a
    /// numeric user, `(None, name)` for a named one (the group part is dropped).
    pub fn user(&self) -> (Option<i64>, String) {
        let user = self.config.user.as_deref().unwrap_or_default();
        let name = user.split(':').next().unwrap_or_default();
        match name.parse::<i64>() {
            Ok(uid) => (Some(uid), String::new()),
            Err(_) => (None, name.to_string()),
        }
    }

    /// Every blob the image keeps alive in the content store.
    pub fn blobs(&self) -> Vec<Digest> {
        let mut out = vec![self.id.clone()];
        out.extend(self.layers.iter().map(|l| l.digest.clone()));
        out.extend(self.manifests.iter().cloned());
        out
    }
}

#[derive(Clone, Debug)]
pub(crate) struct ImageStore {
    dir: PathBuf,
}

impl ImageStore {
    pub(crate) fn open(root: &Path) -> Result<ImageStore> {
        let dir = root.join("images");
        fs::create_dir_all(&dir).map_err(Error::io("creating image dir", &dir))?;
        Ok(ImageStore { dir })
    }

    fn path(&self, id: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", id.hex()))
    }

    pub(crate) fn get(&self, id: &Digest) -> Result<Option<ImageRecord>> {
        read_json(&self.path(id))
    }

    pub(crate) fn list(&self) -> Result<Vec<ImageRecord>> {
        let entries = fs::read_dir(&self.dir).map_err(Error::io("listing images", &self.dir))?;
        let mut out = Vec::new();
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            let Ok(id) = Digest::parse_lenient(hex) else {
                continue;
            };
            if let Some(record) = self.get(&id)? {
                out.push(record);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    pub(crate) fn put(&self, record: &ImageRecord) -> Result<()> {
        write_json(&self.path(&record.id), record)
    }

    pub(crate) fn delete(&self, id: &Digest) -> Result<()> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("removing image record", path)(e))
            }
            _ => Ok(()),
        }
    }

    /// Saves `record`, merging names with an existing record of the same ID and taking
    /// its tags away from whichever image held them before (a tag names one image).
    pub(crate) fn add(&self, mut record: ImageRecord) -> Result<ImageRecord> {
        if let Some(old) = self.get(&record.id)? {
            for tag in old.repo_tags {
                if !record.repo_tags.contains(&tag) {
                    record.repo_tags.push(tag);
                }
            }
            for digest in old.repo_digests {
                if !record.repo_digests.contains(&digest) {
                    record.repo_digests.push(digest);
                }
            }
            for manifest in old.manifests {
                if !record.manifests.contains(&manifest) {
                    record.manifests.push(manifest);
                }
            }
        }
        for mut other in self.list()? {
            if other.id == record.id {
                continue;
            }
            let before = other.repo_tags.len();
            other.repo_tags.retain(|t| !record.repo_tags.contains(t));
            if other.repo_tags.len() != before {
                self.put(&other)?;
            }
        }
        record.repo_tags.sort();
        record.repo_digests.sort();
        self.put(&record)?;
        Ok(record)
    }
}
