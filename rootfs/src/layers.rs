//! Unpacked layers, shared by every image and container: `layers/<chain-id hex>/fs`.
//!
//! A layer directory is keyed by its chain ID (the layer plus everything beneath it),
//! unpacked once into a temp dir and renamed into place, so a half-unpacked layer is
//! never used. `l/<short>` is a short symlink to each `fs` dir: overlay mount options
//! must fit in one page, and short names let hundreds of layers fit.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::{read_json, write_json};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Compression;
use crate::unpack::unpack_layer;

const SHORT_LEN: usize = 12;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerInfo {
    pub chain_id: Digest,
    pub diff_id: Digest,
    /// The compressed blob it was unpacked from.
    pub blob: Digest,
}

#[derive(Clone, Debug)]
pub struct LayerStore {
    root: PathBuf,
    links: PathBuf,
}

impl LayerStore {
    pub(crate) fn open(state_root: &Path) -> Result<LayerStore> {
        let root = state_root.join("layers");
        let links = state_root.join("l");
        for dir in [&root, &links] {
            fs::create_dir_all(dir).map_err(Error::io("creating layer dir", dir))?;
        }
        // Leftovers of unpacks a crash interrupted.
        if let Ok(entries) = fs::read_dir(&root) {
            for entry in entries.filter_map(|e| e.ok()) {
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(LayerStore { root, links })
    }

    fn dir(&self, chain: &Digest) -> PathBuf {
        self.root.join(chain.hex())
    }

    /// The unpacked tree, for use as an overlay lowerdir.
    pub fn fs_path(&self, chain: &Digest) -> PathBuf {
        self.dir(chain).join("fs")
    }

    /// The path relative to the state root through the short link (`l/<short>`).
    pub fn short_path(chain: &Digest) -> String {
        format!("l/{}", &chain.hex()[..SHORT_LEN])
    }

    pub fn contains(&self, chain: &Digest) -> bool {
        self.dir(chain).join("layer.json").is_file()
    }

    pub fn info(&self, chain: &Digest) -> Result<Option<LayerInfo>> {
        read_json(&self.dir(chain).join("layer.json"))
    }

    pub fn list(&self) -> Result<Vec<Digest>> {
        let entries = fs::read_dir(&self.root).map_err(Error::io("listing layers", &self.root))?;
        Ok(entries
            .filter_map(|e| e.ok())
            .filter_map(|e| Digest::parse_lenient(&e.file_name().to_string_lossy()).ok())
            .collect())
    }

    /// Unpacks `blob` as the layer `chain` unless it is already there. Blocking.
    pub fn ensure(
        &self,
        chain: &Digest,
        diff_id: &Digest,
        blob: &Digest,
        blob_path: &Path,
        compression: &Compression,
    ) -> Result<()> {
        if self.contains(chain) {
            return Ok(());
        }
        let tmp = self
            .root
            .join(format!(".tmp-{}-{}", chain.hex(), rand::random::<u64>()));
        let result = self.unpack_into(&tmp, chain, diff_id, blob, blob_path, compression);
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    fn unpack_into(
        &self,
        tmp: &Path,
        chain: &Digest,
        diff_id: &Digest,
        blob: &Digest,
        blob_path: &Path,
        compression: &Compression,
    ) -> Result<()> {
        let fs_dir = tmp.join("fs");
        fs::create_dir_all(&fs_dir).map_err(Error::io("creating layer dir", &fs_dir))?;
        let started = std::time::Instant::now();
        let actual = unpack_layer(blob_path, compression, &fs_dir)?;
        if actual != *diff_id {
            return Err(Error::DigestMismatch {
                expected: diff_id.to_string(),
                actual: actual.to_string(),
            });
        }
        let info = LayerInfo {
            chain_id: chain.clone(),
            diff_id: diff_id.clone(),
            blob: blob.clone(),
        };
        write_json(&tmp.join("layer.json"), &info)?;
        match fs::rename(tmp, self.dir(chain)) {
            Ok(()) => {}
            // Another pull unpacked the same layer first; theirs is as good as ours.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::AlreadyExists | ErrorKind::DirectoryNotEmpty
                ) =>
            {
                let _ = fs::remove_dir_all(tmp);
            }
            Err(e) => return Err(Error::io("publishing layer", self.dir(chain))(e)),
        }
        let link = self.links.join(&Self::short_path(chain)[2..]);
        match std::os::unix::fs::symlink(format!("../layers/{}/fs", chain.hex()), &link) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("linking layer", link)(e)),
        }
        tracing::debug!(%chain, elapsed_ms = started.elapsed().as_millis() as u64, "layer unpacked");
        Ok(())
    }

    pub fn remove(&self, chain: &Digest) -> Result<()> {
        let _ = fs::remove_file(self.links.join(&Self::short_path(chain)[2..]));
        let dir = self.dir(chain);
        // Rename first so a crash mid-delete leaves a .tmp- dir (cleaned at open),
        // never a half-deleted layer under its real name.
        let doomed = self
            .root
            .join(format!(".tmp-rm-{}-{}", chain.hex(), rand::random::<u64>()));
        match fs::rename(&dir, &doomed) {
            Ok(()) => fs::remove_dir_all(&doomed).map_err(Error::io("removing layer", doomed)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing layer", dir)(e)),
        }
    }
}
