//! What the runtime remembers about a container between commands: one small JSON file per
//! container, `<root>/<id>/state.json`, replaced atomically so a reader never sees half of it.
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::error::{Context, Result};

/// The runtime's lifecycle states, as `runc state` reports them (OCI's four plus `paused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The persisted record of one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// Host PID of the container's init, and its start time in clock ticks since boot: the pair
    /// identifies the process even after the PID number is reused.
    pub pid: i32,
    pub pid_start_time: u64,
    pub cgroup_path: String,
    /// RFC 3339 creation time.
    pub created: String,
    pub owner: String,
    /// The spec the container was created from; `exec` takes its defaults from here.
    pub config: Spec,
}

impl Record {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let path = Self::path(dir);
        let text = fs::read(&path).context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text).context(|| format!("parsing {}", path.display()))
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_vec(self).context(|| "serialising the container state".into())?;
        write_atomic(&Self::path(dir), &text)
    }

    pub fn annotations(&self) -> Option<&HashMap<String, String>> {
        self.config.annotations().as_ref()
    }
}

/// The OCI `state` document, with runc's extra fields (`rootfs`, `created`, `owner`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateDoc {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
}

/// Write `data` to `path` so that readers see either the old or the new content, never a mix.
///
/// No fsync: runtime state lives under /run and dies with the machine anyway, so durability
/// across a power loss buys nothing, while the rename alone already protects readers from a
/// half-written file if we crash. (On a disk-backed root an fsync costs about a millisecond,
/// a sixth of a whole container start.)
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    fs::write(&tmp, data).context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).context(|| format!("renaming {} into place", tmp.display()))
}

/// Start time (field 22 of /proc/PID/stat) and whether the process is a zombie.
pub fn process_start_time(pid: i32) -> Option<(u64, bool)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let zombie = fields.first().is_some_and(|s| *s == "Z" || *s == "X");
    let start = fields.get(19)?.parse().ok()?;
    Some((start, zombie))
}

/// Whether the process recorded as `pid` started at `start_time` is still alive (not a zombie).
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    matches!(process_start_time(pid), Some((t, false)) if t == start_time)
}
