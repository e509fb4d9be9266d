//! The pod's network, IPC and UTS namespaces, made without a process to hold them.
//!
//! A dedicated thread unshares the namespaces (unshare of these three affects only the
//! calling thread), sets the hostname and the sysctls while it is inside them, and
//! bind-mounts its /proc/thread-self/ns/* files onto empty files in the pod directory.
//! The mounts keep the namespaces alive after the thread ends; containers join them by
//! path. Doing this in a fresh thread keeps the daemon's own threads, and its async
//! runtime, in the host namespaces, and nothing is forked.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use super::sysctls::{Namespace, Sysctl};
use super::SandboxError;

/// What to make.
pub(super) struct Request<'a> {
    /// Where the ns files go, e.g. /run/peapod/pods/<id>/ns.
    pub(super) dir: &'a Path,
    pub(super) net: bool,
    pub(super) ipc: bool,
    pub(super) uts: bool,
    /// Set in the new UTS namespace (ignored without one).
    pub(super) hostname: &'a str,
    pub(super) sysctls: &'a [Sysctl],
}

/// The pinned namespace files; `None` for a namespace shared with the host.
#[derive(Debug, Clone, Default)]
pub(super) struct Pinned {
    pub(super) net: Option<PathBuf>,
    pub(super) ipc: Option<PathBuf>,
    pub(super) uts: Option<PathBuf>,
}

impl Pinned {
    /// Unmounts and deletes the ns files. Idempotent; the namespace itself goes away
    /// once no process and no other mount holds it.
    pub(super) fn unpin(&self) -> Result<(), SandboxError> {
        let mut first_error = None;
        for path in [&self.net, &self.ipc, &self.uts].into_iter().flatten() {
            if let Err(e) = unpin(path) {
                tracing::warn!(path = %path.display(), error = %e, "unpinning namespace failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn all(&self) -> impl Iterator<Item = (&'static str, &PathBuf)> {
        [("net", &self.net), ("ipc", &self.ipc), ("uts", &self.uts)]
            .into_iter()
            .filter_map(|(name, path)| path.as_ref().map(|p| (name, p)))
    }
}

/// Makes and pins the requested namespaces. On error nothing stays mounted.
pub(super) fn create(request: &Request) -> Result<Pinned, SandboxError> {
    let file = |wanted: bool, name: &str| wanted.then(|| request.dir.join(name));
    let pinned = Pinned {
        net: file(request.net, "net"),
        ipc: file(request.ipc, "ipc"),
        uts: file(request.uts, "uts"),
    };
    if pinned.all().next().is_none() {
        return Ok(pinned);
    }
    let result = make_and_pin(request, &pinned);
    if result.is_err() {
        if let Err(e) = pinned.unpin() {
            tracing::warn!(error = %e, "cleaning up namespaces after a failure");
        }
    }
    result.map(|()| pinned)
}

fn make_and_pin(request: &Request, pinned: &Pinned) -> Result<(), SandboxError> {
    fs::create_dir_all(request.dir).map_err(SandboxError::io("creating", request.dir))?;
    for (_, path) in pinned.all() {
        // A bind mount needs an existing file to mount onto.
        fs::File::create(path).map_err(SandboxError::io("creating", path))?;
    }

    let mut flags = CloneFlags::empty();
    flags.set(CloneFlags::CLONE_NEWNET, request.net);
    flags.set(CloneFlags::CLONE_NEWIPC, request.ipc);
    flags.set(CloneFlags::CLONE_NEWUTS, request.uts);
    let hostname = request.uts.then(|| request.hostname.to_string());
    // Only the sysctls of namespaces this thread is about to own; plan() refused the rest.
    let sysctls: Vec<Sysctl> = request
        .sysctls
        .iter()
        .filter(|s| match s.namespace {
            Namespace::Net => request.net,
            Namespace::Ipc => request.ipc,
            Namespace::Uts => request.uts,
        })
        .cloned()
        .collect();
    let targets: Vec<(&'static str, PathBuf)> = pinned
        .all()
        .map(|(name, path)| (name, path.clone()))
        .collect();

    thread::Builder::new()
        .name("peapod-pod-ns".to_string())
        .spawn(move || in_new_namespaces(flags, hostname, &sysctls, &targets))
        .map_err(|source| SandboxError::Io {
            what: "starting the namespace thread for",
            path: request.dir.to_path_buf(),
            source,
        })?
        .join()
        .map_err(|_| SandboxError::NamespaceThread)?
}

/// Runs in the dedicated thread; its namespaces die with it unless pinned.
fn in_new_namespaces(
    flags: CloneFlags,
    hostname: Option<String>,
    sysctls: &[Sysctl],
    targets: &[(&'static str, PathBuf)],
) -> Result<(), SandboxError> {
    let self_ns = Path::new("/proc/thread-self/ns");
    unshare(flags).map_err(|source| SandboxError::Sys {
        what: "unsharing namespaces for",
        path: self_ns.to_path_buf(),
        source,
    })?;
    if let Some(hostname) = hostname {
        nix::unistd::sethostname(&hostname).map_err(|source| SandboxError::Sys {
            what: "setting the hostname in",
            path: self_ns.join("uts"),
            source,
        })?;
    }
    for sysctl in sysctls {
        sysctl.write()?;
    }
    for (name, target) in targets {
        bind(&self_ns.join(name), target)?;
    }
    Ok(())
}

/// Pins the namespace of the nsfs file `source` at `target` (an existing file).
fn bind(source: &Path, target: &Path) -> Result<(), SandboxError> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| SandboxError::Sys {
        what: "bind-mounting the namespace onto",
        path: target.to_path_buf(),
        source,
    })
}

/// Pins the `kind` namespace of process `pid` (e.g. "pid") by bind-mounting its nsfs file
/// onto `target`. On error nothing is left at `target`.
pub(super) fn pin_process_ns(pid: i32, kind: &str, target: &Path) -> Result<(), SandboxError> {
    fs::File::create(target).map_err(SandboxError::io("creating", target))?;
    bind(Path::new(&format!("/proc/{pid}/ns/{kind}")), target).inspect_err(|_| {
        let _ = fs::remove_file(target);
    })
}

pub(super) fn unpin(path: &Path) -> Result<(), SandboxError> {
    // MNT_DETACH: a container that is just joining may hold the file open.
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (never mounted, or unmounted before).
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(source) => {
            return Err(SandboxError::Sys {
                what: "unmounting namespace",
                path: path.to_path_buf(),
                source,
            })
        }
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(SandboxError::io("removing", path)(e)),
        _ => Ok(()),
    }
}
