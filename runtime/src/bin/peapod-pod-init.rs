//! `peapod-pod-init`: PID 1 of a pod whose containers share one PID namespace.
//!
//! A PID namespace lives only while its first process, its init, lives: when that process
//! exits the kernel kills everything else inside and no process can join any more. Pods
//! without a shared PID namespace need no process at all (their network, IPC and UTS
//! namespaces are pinned by bind mounts), but a pod with `shareProcessNamespace` needs an
//! init that outlives any of its containers — the one job of a pause container that a pod
//! without a pause image still has.
//!
//! peapodd runs this program once per such pod. It joins the pod's namespaces named on the
//! command line, unshares a new PID namespace, forks the namespace's PID 1, prints that
//! process's pid (as the host sees it) on stdout and exits. The PID 1 cuts itself off from
//! its launcher (new session, stdio on /dev/null, cwd /) and from then on only reaps: the
//! orphans of every container in the pod are re-parented to it. SIGTERM, SIGINT or SIGHUP
//! end it; the kernel then kills what is left in the namespace.
//!
//! It stays single-threaded, which is what makes the plain `fork` below safe.

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use nix::errno::Errno;
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{chdir, dup2_stderr, dup2_stdin, dup2_stdout, fork, setsid, ForkResult, Pid};

#[derive(Parser)]
#[command(
    name = "peapod-pod-init",
    version,
    about = "Be PID 1 of a pod's shared PID namespace: print its pid, then reap orphans"
)]
struct Cli {
    /// The pod's network namespace (an nsfs file) to join first.
    #[arg(long)]
    net: Option<PathBuf>,
    /// The pod's IPC namespace to join first.
    #[arg(long)]
    ipc: Option<PathBuf>,
    /// The pod's UTS namespace to join first.
    #[arg(long)]
    uts: Option<PathBuf>,
}

fn main() -> ExitCode {
    match launch(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peapod-pod-init: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs in the launcher's namespaces; returns in the parent once the init exists.
fn launch(cli: &Cli) -> Result<()> {
    // Joined before the fork, so that the init is in the pod's namespaces as a pause
    // process would be (tools that enter "the pod" through PID 1 land in the right place).
    for (path, kind) in [
        (&cli.net, CloneFlags::CLONE_NEWNET),
        (&cli.ipc, CloneFlags::CLONE_NEWIPC),
        (&cli.uts, CloneFlags::CLONE_NEWUTS),
    ] {
        if let Some(path) = path {
            let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            setns(&file, kind).with_context(|| format!("joining {}", path.display()))?;
        }
    }
    // The caller stays where it is; its next child is PID 1 of the new namespace.
    unshare(CloneFlags::CLONE_NEWPID).context("unsharing a PID namespace")?;
    // SAFETY: this process has one thread, so the child may run any code after the fork.
    match unsafe { fork() }.context("forking the pod init")? {
        ForkResult::Parent { child } => {
            println!("{child}");
            Ok(())
        }
        ForkResult::Child => {
            let code = match be_init() {
                Ok(()) => 0,
                Err(_) => 1,
            };
            std::process::exit(code)
        }
    }
}

/// PID 1: detach, then reap until told to stop. Nobody reads its errors (stdio is gone),
/// so it just exits on one; the daemon sees the pod init gone.
fn be_init() -> Result<()> {
    setsid().context("starting a session")?;
    chdir("/").context("changing to /")?;
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    // Closing the launcher's stdout is what tells it that only our pid was printed.
    dup2_stdin(&null)
        .and_then(|()| dup2_stdout(&null))
        .and_then(|()| dup2_stderr(&null))
        .context("redirecting stdio to /dev/null")?;
    drop(null);

    // Every signal this process cares about is taken synchronously: PID 1 of a namespace
    // ignores signals it has no handler for, so nothing arrives by surprise either way.
    let mut signals = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        signals.add(signal);
    }
    signals.thread_block().context("blocking signals")?;
    // From here on it only waits and reaps: let go of the pages the loader and set-up touched.
    peapod_runtime::memory::Shedder::for_current_mappings().shed();
    loop {
        match signals.wait().context("waiting for signals")? {
            Signal::SIGCHLD => reap_all(),
            _ => return Ok(()),
        }
    }
}

/// Collects every child that has ended: one SIGCHLD may stand for many exits.
fn reap_all() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}
