//! Per-container copy-on-write snapshots: `snapshots/<key>/{upper,work}` plus
//! `snapshot.json`, mounted as overlayfs over the image's shared layers.
//!
//! The kernel takes overlay options in one page (4 KiB). Absolute lowerdir paths
//! would cap an image at a few dozen layers, so the mount is made from a thread whose
//! working directory (unshared from the rest of the process with CLONE_FS) is the
//! state root, with short relative names like `l/0123456789ab`.

use std::ffi::CString;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use crate::atomic::{read_json, sync_dir, write_json, write_json_unpublished};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layers::LayerStore;
use crate::usage::{dir_usage, Usage};

/// The on-disk record of one snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub key: String,
    pub image_id: Digest,
    pub readonly: bool,
    /// Chain IDs of the image's layers, bottom first.
    pub layers: Vec<Digest>,
    /// Where `mount_snapshot` last mounted it, so removal can unmount.
    pub mounted_at: Option<PathBuf>,
}

/// A mount described the way an OCI runtime spec or `mount(8)` takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub fstype: String,
    pub source: String,
    pub options: Vec<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct SnapshotStore {
    state_root: PathBuf,
    dir: PathBuf,
}

/// Container IDs and names become directory names: keep them boring.
fn validate_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && !key.starts_with('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSnapshotKey(key.to_string()))
    }
}

impl SnapshotStore {
    pub(crate) fn open(state_root: &Path) -> Result<SnapshotStore> {
        let dir = state_root.join("snapshots");
        let empty = state_root.join("empty");
        for d in [&dir, &empty] {
            fs::create_dir_all(d).map_err(Error::io("creating snapshot dir", d))?;
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries.filter_map(|e| e.ok()) {
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(SnapshotStore {
            state_root: state_root.to_path_buf(),
            dir,
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    pub(crate) fn get(&self, key: &str) -> Result<Option<SnapshotInfo>> {
        validate_key(key)?;
        read_json(&self.path(key).join("snapshot.json"))
    }

    pub(crate) fn list(&self) -> Result<Vec<SnapshotInfo>> {
        let entries = fs::read_dir(&self.dir).map_err(Error::io("listing snapshots", &self.dir))?;
        let mut out = Vec::new();
        for entry in entries.filter_map(|e| e.ok()) {
            let key = entry.file_name().to_string_lossy().into_owned();
            if validate_key(&key).is_err() {
                continue;
            }
            if let Some(info) = read_json::<SnapshotInfo>(&entry.path().join("snapshot.json"))? {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Creates the snapshot's private dirs; the directory appears under its key only
    /// once complete. `mount_target` records where the caller is about to mount it,
    /// so a crash right after still lets `remove` unmount.
    pub(crate) fn create(
        &self,
        key: &str,
        image_id: &Digest,
        layers: Vec<Digest>,
        readonly: bool,
        mount_target: Option<PathBuf>,
    ) -> Result<SnapshotInfo> {
        validate_key(key)?;
        let dest = self.path(key);
        if dest.exists() {
            return Err(Error::SnapshotExists(key.to_string()));
        }
        let tmp = self
            .dir
            .join(format!(".tmp-{key}-{}", rand::random::<u64>()));
        let info = SnapshotInfo {
            key: key.to_string(),
            image_id: image_id.clone(),
            readonly,
            layers,
            mounted_at: mount_target,
        };
        let result = (|| {
            for sub in ["upper", "work"] {
                let d = tmp.join(sub);
                fs::create_dir_all(&d).map_err(Error::io("creating snapshot dir", &d))?;
            }
            write_json_unpublished(&tmp.join("snapshot.json"), &info)?;
            match fs::rename(&tmp, &dest) {
                Ok(()) => sync_dir(&self.dir),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::AlreadyExists | ErrorKind::DirectoryNotEmpty
                    ) =>
                {
                    Err(Error::SnapshotExists(key.to_string()))
                }
                Err(e) => Err(Error::io("creating snapshot", &dest)(e)),
            }
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result.map(|_| info)
    }

    /// Overlay options with paths relative to the state root (top layer first).
    fn relative_options(&self, info: &SnapshotInfo) -> String {
        let mut lowers: Vec<String> = info
            .layers
            .iter()
            .rev()
            .map(LayerStore::short_path)
            .collect();
        // An image without layers, or a read-only view (overlay wants two lowers when
        // it has no upper), gets the always-empty dir at the bottom.
        if lowers.is_empty() || info.readonly {
            lowers.push("empty".to_string());
        }
        let mut options = format!("lowerdir={}", lowers.join(":"));
        if !info.readonly {
            options.push_str(&format!(
                ",upperdir=snapshots/{0}/upper,workdir=snapshots/{0}/work",
                info.key
            ));
        }
        options
    }

    /// The same mount with absolute paths, for callers that mount it themselves. Very
    /// deep images may exceed the kernel's one-page option limit this way; prefer
    /// `mount`, which does not.
    pub(crate) fn mount_spec(&self, info: &SnapshotInfo) -> Mount {
        let root = self.state_root.display().to_string();
        let absolute = |p: &str| format!("{root}/{p}");
        let options = self
            .relative_options(info)
            .split(',')
            .map(|opt| {
                let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
                let paths: Vec<String> = value.split(':').map(absolute).collect();
                format!("{key}={}", paths.join(":"))
            })
            .chain(info.readonly.then(|| "ro".to_string()))
            .collect();
        Mount {
            fstype: "overlay".into(),
            source: "overlay".into(),
            options,
        }
    }

    pub(crate) fn mount(&self, key: &str, target: &Path) -> Result<SnapshotInfo> {
        let mut info = self
            .get(key)?
            .ok_or_else(|| Error::SnapshotNotFound(key.to_string()))?;
        self.mount_overlay(&info, target)?;
        info.mounted_at =
            Some(std::path::absolute(target).unwrap_or_else(|_| target.to_path_buf()));
        write_json(&self.path(key).join("snapshot.json"), &info)?;
        Ok(info)
    }

    /// Mounts the overlay of `info` on `target` without touching the record.
    pub(crate) fn mount_overlay(&self, info: &SnapshotInfo, target: &Path) -> Result<()> {
        let options = self.relative_options(info);
        let flags = if info.readonly {
            MsFlags::MS_RDONLY
        } else {
            MsFlags::empty()
        };
        let root = self.state_root.clone();
        let target_abs =
            std::path::absolute(target).map_err(Error::io("resolving mount target", target))?;
        let target_c = CString::new(target_abs.as_os_str().as_bytes())
            .map_err(|_| Error::invalid("mount target", "contains NUL"))?;
        // chdir is per process unless the thread unshares its fs context first; a
        // short-lived thread keeps the daemon's own working directory untouched.
        std::thread::spawn(move || -> Result<()> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS)
                .map_err(Error::sys("unshare(CLONE_FS)"))?;
            nix::unistd::chdir(&root).map_err(Error::sys(format!("chdir {}", root.display())))?;
            mount(
                Some("overlay"),
                target_c.as_c_str(),
                Some("overlay"),
                flags,
                Some(options.as_str()),
            )
            .map_err(Error::sys(format!(
                "mounting overlay ({options}) on {}",
                target_abs.display()
            )))
        })
        .join()
        .map_err(|_| Error::Task("overlay mount thread panicked".into()))?
    }

    pub(crate) fn unmount(&self, key: &str) -> Result<()> {
        let Some(mut info) = self.get(key)? else {
            return Ok(());
        };
        if let Some(target) = info.mounted_at.take() {
            unmount_all(&target)?;
            write_json(&self.path(key).join("snapshot.json"), &info)?;
        }
        Ok(())
    }

    /// Unmounts (if mounted) and deletes; removing a missing snapshot succeeds.
    pub(crate) fn remove(&self, key: &str) -> Result<()> {
        let Some(info) = self.get(key)? else {
            return Ok(());
        };
        if let Some(target) = &info.mounted_at {
            unmount_all(target)?;
        }
        let dir = self.path(key);
        let doomed = self
            .dir
            .join(format!(".tmp-rm-{key}-{}", rand::random::<u64>()));
        match fs::rename(&dir, &doomed) {
            Ok(()) => fs::remove_dir_all(&doomed).map_err(Error::io("removing snapshot", doomed)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing snapshot", dir)(e)),
        }
    }

    pub(crate) fn usage(&self, key: &str) -> Result<Usage> {
        self.get(key)?
            .ok_or_else(|| Error::SnapshotNotFound(key.to_string()))?;
        Ok(dir_usage(&self.path(key).join("upper")))
    }
}

/// Unmounts every mount stacked on `target`; "not mounted" counts as done.
fn unmount_all(target: &Path) -> Result<()> {
    loop {
        match umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(Errno::EBUSY) => {
                // Something still has files open: detach now, the kernel frees it later.
                return umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
                    .or_else(|e| if e == Errno::EINVAL { Ok(()) } else { Err(e) })
                    .map_err(Error::sys(format!("unmounting {}", target.display())));
            }
            Err(e) => return Err(Error::sys(format!("unmounting {}", target.display()))(e)),
        }
    }
}
