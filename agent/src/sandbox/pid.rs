//! The pod's shared PID namespace (Kubernetes' `shareProcessNamespace`).
//!
//! Unlike the network, IPC and UTS namespaces, a PID namespace cannot be kept by a bind
//! mount alone: once its first process exits, nothing can join it any more. So a pod that
//! shares one gets a process: `peapod-pod-init` (runtime/src/bin), started through a plain
//! exec (the daemon never forks itself). It joins the pod's namespaces, makes the PID
//! namespace, leaves behind a detached PID 1 and reports that process's pid. The namespace
//! is then pinned under the pod directory like the others, so containers join it by path,
//! and the init is moved into the pod cgroup, where pod stats count it as they would count
//! a pause process.
//!
//! Stopping the pod kills the init, and with it, by the kernel's rule, whatever still runs
//! in the namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use peapod_runtime::cgroups::Cgroup;
use peapod_runtime::state::{process_alive, process_start_time};
use serde::{Deserialize, Serialize};

use super::SandboxError;

/// The running init of a pod's PID namespace. The start time tells it apart from a later
/// process that happens to get the same pid (the record outlives daemon restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInit {
    pub pid: i32,
    pub start_time: u64,
}

impl PodInit {
    pub fn is_alive(&self) -> bool {
        process_alive(self.pid, self.start_time)
    }
}

/// The namespaces the init joins before it makes the PID namespace.
pub(super) struct Join<'a> {
    pub(super) net: Option<&'a Path>,
    pub(super) ipc: Option<&'a Path>,
    pub(super) uts: Option<&'a Path>,
}

/// Runs `program` (peapod-pod-init) in `join`, puts the init into the pod cgroup and pins
/// its PID namespace at `pin`. On error no init is left running and nothing is mounted.
pub(super) fn start(
    program: &Path,
    join: &Join,
    cgroup_path: &str,
    pin: &Path,
) -> Result<PodInit, SandboxError> {
    let init = launch(program, join)?;
    let setup = (|| {
        Cgroup::new(cgroup_path)?.add_process(init.pid)?;
        super::namespaces::pin_process_ns(init.pid, "pid", pin)
    })();
    if let Err(e) = setup {
        stop(&init);
        return Err(e);
    }
    tracing::debug!(pid = init.pid, "pod PID namespace started");
    Ok(init)
}

fn launch(program: &Path, join: &Join) -> Result<PodInit, SandboxError> {
    let failed = |what: String| SandboxError::PodInit {
        program: program.to_path_buf(),
        what,
    };
    let mut command = Command::new(program);
    for (flag, path) in [
        ("--net", join.net),
        ("--ipc", join.ipc),
        ("--uts", join.uts),
    ] {
        if let Some(path) = path {
            command.arg(flag).arg(path);
        }
    }
    // output() waits for the launcher, which exits as soon as its child, the init, exists;
    // the init closes its copy of stdout first, so the pipe really ends there.
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| failed(format!("cannot be run: {e}")))?;
    if !output.status.success() {
        return Err(failed(format!(
            "failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| failed(format!("printed {:?} instead of a pid", text.trim())))?;
    match process_start_time(pid) {
        Some((start_time, false)) => Ok(PodInit { pid, start_time }),
        _ => Err(failed(format!("its init (pid {pid}) is already gone"))),
    }
}

/// Kills the init, if it still runs, and waits (briefly) until it is gone; the kernel kills
/// the rest of the namespace with it. Idempotent.
pub(super) fn stop(init: &PodInit) {
    if !init.is_alive() {
        return;
    }
    // SIGKILL: the pod's containers were stopped with their own grace periods first;
    // anything still here is a leftover to end now.
    if let Err(e) = kill(Pid::from_raw(init.pid), Signal::SIGKILL) {
        tracing::warn!(pid = init.pid, error = %e, "killing the pod init");
        return;
    }
    // The kill is delivered at once but the exit takes a moment; a stopped pod promises
    // that nothing of it runs any more. A SIGKILLed process cannot linger for long, and a
    // zombie (the host's init reaps it) no longer counts as alive.
    if !peapod_runtime::pidfd::wait_gone(init.pid, init.start_time, Duration::from_secs(2)) {
        tracing::warn!(pid = init.pid, "the pod init is still exiting after 2 s");
    }
}

/// Where the pod's PID namespace is pinned.
pub(super) fn pin_path(ns_dir: &Path) -> PathBuf {
    ns_dir.join("pid")
}
