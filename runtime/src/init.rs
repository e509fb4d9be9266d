//! The container's first process, from `clone(2)` to `execve(2)`.
//!
//! This code runs in the child right after clone, in the new namespaces, while the parent waits on
//! the sync socket. It is plain sequential code: the child is a copy of a single-threaded parent,
//! so ordinary Rust (allocation included) is safe here.
use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::Mode;
use nix::unistd::sethostname;
use oci_spec::runtime::LinuxNamespaceType;

use crate::error::{Context, Error, Result};
use crate::mounts;
use crate::namespaces::Plan;
use crate::process;
use crate::seccomp::SeccompFilter;
use crate::spec::Bundle;
use crate::stdio::Stdio;
use crate::sync::{Channel, GO, IN_CGROUP, READY};

/// The name of the FIFO that holds a created container's init until `start`.
pub const EXEC_FIFO: &str = "exec.fifo";

pub struct Init<'a> {
    pub bundle: &'a Bundle,
    pub plan: &'a Plan,
    /// The container's state directory; holds the exec FIFO when `wait_for_start` is set.
    pub state_dir: &'a Path,
    pub wait_for_start: bool,
    pub console: Option<UnixStream>,
    pub stdio: Stdio,
    pub cgroup_mounts: Vec<crate::cgroups::Hierarchy>,
    /// The container's cgroup, which the init moves itself into first.
    pub cgroup: &'a crate::cgroups::Cgroup,
}

/// Run the init to its `execve`; never returns.
pub fn run(init: Init, sync: Channel) -> ! {
    let mut ready_sent = false;
    let err = match setup(init, &sync, &mut ready_sent) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    if ready_sent {
        // The parent is gone; the best we can do is tell the container's own stderr.
        let _ = writeln!(std::io::stderr(), "peapod: {err}");
    } else {
        sync.send_error(&err);
    }
    // SAFETY: _exit skips atexit handlers and destructors that belong to the parent's copy.
    unsafe { libc::_exit(127) }
}

fn setup(init: Init, sync: &Channel, ready_sent: &mut bool) -> Result<Infallible> {
    let spec = &init.bundle.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Child("no process".into()))?;
    let linux = spec.linux().clone().unwrap_or_default();
    init.stdio.install()?;

    // Into the cgroup before anything else; the parent runs its hooks once we are there.
    init.cgroup.add_self()?;
    sync.send(IN_CGROUP)?;
    sync.expect(GO)?;
    if init.plan.new_cgroup_ns {
        unshare(CloneFlags::CLONE_NEWCGROUP).context(|| "creating the cgroup namespace".into())?;
    }
    for joined in &init.plan.join {
        joined.enter()?;
    }

    if let Some(hostname) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        sethostname(hostname).context(|| format!("setting hostname {hostname:?}"))?;
    }
    if let Some(domain) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        set_domainname(domain)?;
    }
    // /proc/sys shows the namespaces of whoever reads it, so the host's /proc still works here.
    for (key, value) in linux.sysctl().iter().flatten() {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).context(|| format!("setting sysctl {key}={value}"))?;
    }
    if let Some(adj) = process.oom_score_adj() {
        process::set_oom_score_adj(adj)?;
    }

    // Descriptors that must outlive pivot_root, since the paths they name will be unreachable.
    let state_dir = if init.wait_for_start {
        Some(
            File::open(init.state_dir)
                .context(|| format!("opening {}", init.state_dir.display()))?,
        )
    } else {
        None
    };
    let seccomp = linux
        .seccomp()
        .as_ref()
        .map(SeccompFilter::from_spec)
        .transpose()?;

    if !init.plan.joins(LinuxNamespaceType::Mount) {
        let mounts = spec.mounts().clone().unwrap_or_default();
        mounts::prepare_rootfs(
            &init.bundle.rootfs,
            &init.bundle.path,
            &mounts,
            &linux,
            &init.cgroup_mounts,
        )?;
        mounts::pivot_into(&init.bundle.rootfs)?;
        let readonly = spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false);
        mounts::finish_rootfs(&linux, readonly)?;
    }
    let (program, seccomp) = process::become_process(process, init.console.as_ref(), seccomp)?;
    drop(init.console);

    sync.send(READY)?;
    *ready_sent = true;
    if let Some(dir) = state_dir {
        wait_for_start(dir.as_fd())?;
    }
    if let Some(filter) = seccomp {
        filter.load()?;
    }
    Err(program.exec())
}

/// Block until `start` opens the FIFO for reading. The FIFO is reached through a descriptor of
/// the state directory opened before pivot_root, so no /proc is needed inside the container.
fn wait_for_start(state_dir: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    let fifo: OwnedFd = openat(
        state_dir,
        EXEC_FIFO,
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .context(|| "opening the exec FIFO".into())?;
    File::from(fifo)
        .write_all(b"0")
        .context(|| "writing the exec FIFO".into())
}

fn set_domainname(name: &str) -> Result<()> {
    let c =
        CString::new(name).map_err(|_| Error::Child("domainname contains a NUL byte".into()))?;
    // SAFETY: the pointer and length describe a valid, live buffer.
    if unsafe { libc::setdomainname(c.as_ptr(), name.len()) } < 0 {
        return Err(std::io::Error::last_os_error())
            .context(|| format!("setting domainname {name:?}"));
    }
    Ok(())
}
