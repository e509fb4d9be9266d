//! Control groups for containers: create, limit, join, freeze, measure and remove,
//! on cgroup v1 (one hierarchy per controller group) and cgroup v2 (one unified tree).
//!
//! # Why the files are written here rather than by cgroups-rs
//!
//! cgroups-rs is used for what it does well: detecting the cgroup mode
//! ([`cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode`]). Its `FsManager` /
//! `fs::Cgroup` layer does not fit the container lifecycle, so the interface files are
//! written directly (they are one-line writes) in `v1.rs` and `v2.rs`:
//! - its v2 root is fixed to /sys/fs/cgroup and its v1 hierarchies come from the process's
//!   own mountinfo, so the logic cannot be exercised against a test tree;
//! - several reads silently turn errors into zeros (`memory_stat()`), and many errors do
//!   not say which file failed, while ours must name it;
//! - v1 `memory.memsw.*` absence (swap accounting off) is a hard error there, a warning here;
//! - its destroy moves processes to the root cgroup instead of killing them, its freeze
//!   does not wait for FROZEN, named v1 hierarchies other than name=systemd are ignored,
//!   and the OCI `unified` map is not supported.
//!
//! # Layout
//! A container's cgroup is named by the OCI `linux.cgroupsPath` (cgroupfs driver), always
//! taken relative to the hierarchy roots. On v1 it exists once in every mounted
//! hierarchy; on v2 once in the unified tree, whose parents get the controllers enabled
//! in their `cgroup.subtree_control`.

mod files;
mod mountinfo;
mod v1;
mod v2;

use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

/// Where the host mounts the cgroup filesystems.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How long `delete` keeps killing and retrying before it gives up.
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `freeze` waits for every task to be frozen.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a cgroup operation failed. The messages name the file or directory involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid cgroups path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("creating cgroup directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unexpected content in {path}: {content:?}")]
    Parse { path: PathBuf, content: String },
    #[error("no cgroup hierarchy is mounted (read {0})")]
    NoHierarchy(PathBuf),
    #[error("the {controller} controller is not available for cgroup {cgroup:?}")]
    ControllerMissing {
        controller: &'static str,
        cgroup: String,
    },
    #[error("invalid resources for cgroup {cgroup:?}: {reason}")]
    InvalidResources { cgroup: String, reason: String },
    #[error("{what} is not supported with cgroup {version:?}")]
    Unsupported {
        what: &'static str,
        version: CgroupVersion,
    },
    #[error(
        "cgroup {path} did not freeze within {FREEZE_TIMEOUT:?} (state {state:?}); thawed it again"
    )]
    FreezeTimeout { path: PathBuf, state: String },
    #[error("removing cgroup {path}: {source} (processes still inside after SIGKILL: {pids:?})")]
    Remove {
        path: PathBuf,
        pids: Vec<i32>,
        #[source]
        source: io::Error,
    },
}

/// The cgroup mode of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// The host's cgroup mode, detected once. Only a host whose /sys/fs/cgroup itself is a
/// cgroup2 mount counts as v2; a hybrid host (v1 controllers plus an empty cgroup2 at
/// /sys/fs/cgroup/unified) is v1.
pub fn version() -> CgroupVersion {
    static VERSION: OnceLock<CgroupVersion> = OnceLock::new();
    *VERSION.get_or_init(|| {
        if cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode() {
            CgroupVersion::V2
        } else {
            CgroupVersion::V1
        }
    })
}

/// A mounted cgroup filesystem, as the source for a container's own view of cgroupfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// On the host, e.g. /sys/fs/cgroup/cpu (v1) or /sys/fs/cgroup (v2).
    pub mountpoint: PathBuf,
    /// "cgroup" (v1) or "cgroup2".
    pub fstype: String,
    /// The mount data that selects this hierarchy: "cpu", "cpu,cpuacct", "name=systemd";
    /// empty for cgroup2.
    pub options: String,
}

/// Usage figures of a cgroup, in the units the CRI reports.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupStats {
    pub cpu_usage_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub memory_usage_bytes: u64,
    /// usage - inactive_file, as the kubelet computes it.
    pub memory_working_set_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub memory_max_usage_bytes: u64,
    pub memory_rss_bytes: u64,
    pub memory_cache_bytes: u64,
    pub pids_current: u64,
    pub pids_limit: Option<u64>,
    pub oom_kills: u64,
}

/// Where a cgroup lives: the v1 hierarchies, or the root of the unified v2 tree.
#[derive(Debug, Clone)]
pub(crate) enum Layout {
    V1(Vec<mountinfo::CgroupMount>),
    V2 { root: PathBuf },
}

impl Layout {
    /// The layout, read once per process: hierarchies are mounted at boot, and reading
    /// /proc/self/mountinfo (hundreds of lines on a busy node) for every cgroup named would
    /// be paid by every state request to a shim and every stats call.
    fn detect() -> Result<Self, CgroupError> {
        static LAYOUT: OnceLock<Layout> = OnceLock::new();
        if let Some(layout) = LAYOUT.get() {
            return Ok(layout.clone());
        }
        let layout = Self::read()?;
        Ok(LAYOUT.get_or_init(|| layout).clone())
    }

    fn read() -> Result<Self, CgroupError> {
        match version() {
            CgroupVersion::V2 => Ok(Layout::V2 {
                root: PathBuf::from(CGROUP_ROOT),
            }),
            CgroupVersion::V1 => {
                let mounts: Vec<_> = host_mounts()?
                    .into_iter()
                    // The empty cgroup2 of a hybrid host holds no controller.
                    .filter(|m| m.fstype == "cgroup")
                    .collect();
                if mounts.is_empty() {
                    return Err(CgroupError::NoHierarchy(PathBuf::from(
                        "/proc/self/mountinfo",
                    )));
                }
                Ok(Layout::V1(mounts))
            }
        }
    }
}

fn host_mounts() -> Result<Vec<mountinfo::CgroupMount>, CgroupError> {
    let read = |path: &str| {
        std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
            path: PathBuf::from(path),
            source,
        })
    };
    let known = mountinfo::parse_proc_cgroups(&read("/proc/cgroups")?);
    Ok(mountinfo::parse(&read("/proc/self/mountinfo")?, &known))
}

#[derive(Debug, Clone)]
enum Backend {
    V1(v1::V1Cgroup),
    V2(v2::V2Cgroup),
}

/// A container's (or pod's) cgroup, named by the OCI spec's `linux.cgroupsPath`
/// (cgroupfs driver, e.g. "/kubepods/pod123/ctr1" or "peapod/ctr1"; either way relative
/// to the hierarchy roots). On v1 it spans every mounted hierarchy, named ones included.
#[derive(Debug, Clone)]
pub struct Cgroup {
    path: String,
    backend: Backend,
}

impl Cgroup {
    /// Names the cgroup; nothing is created on disk.
    pub fn new(cgroups_path: &str) -> Result<Self, CgroupError> {
        Self::with_layout(cgroups_path, Layout::detect()?)
    }

    pub(crate) fn with_layout(cgroups_path: &str, layout: Layout) -> Result<Self, CgroupError> {
        let relative = relative_path(cgroups_path)?;
        let backend = match layout {
            Layout::V1(mounts) => Backend::V1(v1::V1Cgroup::new(cgroups_path, &relative, mounts)),
            Layout::V2 { root } => Backend::V2(v2::V2Cgroup::new(cgroups_path, &root, &relative)),
        };
        Ok(Self {
            path: cgroups_path.to_string(),
            backend,
        })
    }

    /// The cgroups path this cgroup was named with.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Creates the cgroup (and missing parents) in every hierarchy. Idempotent.
    pub fn create(&self) -> Result<(), CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.create(),
            Backend::V2(c) => c.create(),
        }
    }

    /// Sets the limits; used both at creation and for `update`. Fields that are absent
    /// are left as they are.
    pub fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.apply(resources),
            Backend::V2(c) => c.apply(resources),
        }
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.add_process(pid),
            Backend::V2(c) => c.add_process(pid),
        }
    }

    /// Moves the calling process into the cgroup; it must have a single thread (a freshly
    /// cloned container or exec process).
    ///
    /// Why not the parent's [`add_process`](Self::add_process): moving another process takes
    /// the kernel's global threadgroup lock for writing, which waits for an RCU grace period —
    /// about 15 ms, on every container start. A thread that moves itself through v1's `tasks`
    /// file (writing 0) skips that lock. v2 has no such path (CLONE_INTO_CGROUP would be its
    /// answer), so there it is the same move as the parent's.
    pub fn add_self(&self) -> Result<(), CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.add_self(),
            Backend::V2(c) => c.add_process(0),
        }
    }

    /// Every process in the cgroup and its sub-cgroups, sorted. Empty if the cgroup
    /// does not exist.
    pub fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = Vec::new();
        for dir in self.dirs() {
            pids.extend(files::procs_in_tree(dir)?);
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Freezes every process of the cgroup and waits until all of them are frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.freeze(),
            Backend::V2(c) => c.freeze(),
        }
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.thaw(),
            Backend::V2(c) => c.thaw(),
        }
    }

    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.is_frozen(),
            Backend::V2(c) => c.is_frozen(),
        }
    }

    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.stats(),
            Backend::V2(c) => c.stats(),
        }
    }

    /// How many processes of the cgroup (and its sub-cgroups) the OOM killer killed.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        match &self.backend {
            Backend::V1(c) => c.oom_kills(),
            Backend::V2(c) => c.oom_kills(),
        }
    }

    /// Removes the cgroup from every hierarchy. Missing directories are fine, so this is
    /// idempotent. Processes still inside are killed with SIGKILL (after a thaw, since a
    /// frozen v1 task cannot die), and removal is retried for a bounded time.
    pub fn delete(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + DELETE_TIMEOUT;
        let mut backoff = Duration::from_millis(5);
        loop {
            let Err((path, source)) = self.remove_dirs() else {
                return Ok(());
            };
            // EBUSY: processes (or a sub-cgroup we raced with) are still there.
            if source.raw_os_error() != Some(libc::EBUSY) || Instant::now() >= deadline {
                let pids = self.procs().unwrap_or_default();
                return Err(CgroupError::Remove { path, pids, source });
            }
            self.kill_all();
            thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    /// Mount sources for a container's own view of cgroupfs: every v1 hierarchy, or the
    /// single cgroup2 mount.
    pub fn hierarchies() -> Result<Vec<Hierarchy>, CgroupError> {
        Ok(match Layout::detect()? {
            Layout::V1(mounts) => mounts.iter().map(|m| m.to_hierarchy()).collect(),
            Layout::V2 { root } => vec![Hierarchy {
                mountpoint: root,
                fstype: "cgroup2".to_string(),
                options: String::new(),
            }],
        })
    }

    /// The cgroup's directory in each hierarchy.
    fn dirs(&self) -> Vec<&Path> {
        match &self.backend {
            Backend::V1(c) => c.dirs().collect(),
            Backend::V2(c) => vec![c.dir()],
        }
    }

    fn remove_dirs(&self) -> Result<(), (PathBuf, io::Error)> {
        for dir in self.dirs() {
            files::remove_tree(dir).map_err(|e| (dir.to_path_buf(), e))?;
        }
        Ok(())
    }

    /// Best effort: what cannot be killed now is retried by the caller's loop. A frozen
    /// v1 task cannot die, so v1 cgroups are thawed first (v2 delivers SIGKILL to frozen
    /// tasks).
    fn kill_all(&self) {
        if let Backend::V2(c) = &self.backend {
            // cgroup.kill (Linux 5.14) kills the whole subtree at once, without racing
            // against forks; the per-pid loop below remains for older kernels.
            if let Err(e) = files::write_if_exists(c.dir(), "cgroup.kill", 1) {
                tracing::debug!(cgroup = %self.path, error = %e, "cgroup.kill failed");
            }
        } else if let Err(e) = self.thaw() {
            tracing::debug!(cgroup = %self.path, error = %e, "thaw before kill failed");
        }
        let pids = match self.procs() {
            Ok(pids) => pids,
            Err(e) => {
                tracing::warn!(cgroup = %self.path, error = %e, "listing processes to kill failed");
                return;
            }
        };
        for pid in pids {
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => tracing::warn!(cgroup = %self.path, pid, error = %e, "SIGKILL failed"),
            }
        }
    }
}

/// Turns "/kubepods/pod1/ctr" or "peapod/ctr" into a safe relative path.
fn relative_path(cgroups_path: &str) -> Result<PathBuf, CgroupError> {
    let invalid = |reason| CgroupError::InvalidPath {
        path: cgroups_path.to_string(),
        reason,
    };
    let mut relative = PathBuf::new();
    for component in Path::new(cgroups_path).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => relative.push(part),
            Component::ParentDir => return Err(invalid("\"..\" is not allowed")),
            Component::Prefix(_) => return Err(invalid("unexpected path prefix")),
        }
    }
    if relative.as_os_str().is_empty() {
        return Err(invalid("the root cgroup cannot be managed"));
    }
    Ok(relative)
}

/// Polls `check` until it reports done or `timeout` passes; returns the last state.
fn wait_until(
    timeout: Duration,
    mut check: impl FnMut() -> Result<(bool, String), CgroupError>,
) -> Result<(bool, String), CgroupError> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(1);
    loop {
        let (done, state) = check()?;
        if done || Instant::now() >= deadline {
            return Ok((done, state));
        }
        thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path("/kubepods/pod1/ctr").unwrap(),
            PathBuf::from("kubepods/pod1/ctr")
        );
        assert_eq!(
            relative_path("peapod/ctr").unwrap(),
            PathBuf::from("peapod/ctr")
        );
        assert!(relative_path("/a/../../etc").is_err());
        assert!(relative_path("/").is_err());
        assert!(relative_path("").is_err());
    }

    #[test]
    fn this_host_is_detected() {
        let on_v2 = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some("/sys/fs/cgroup") && l.contains(" - cgroup2 "));
        let want = if on_v2 {
            CgroupVersion::V2
        } else {
            CgroupVersion::V1
        };
        assert_eq!(version(), want);
    }
}
