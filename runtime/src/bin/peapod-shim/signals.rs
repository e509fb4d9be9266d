//! Signals as readable events: a handler writes the signal's number into a pipe that the event
//! loop polls (the self-pipe trick).
//!
//! We do not block signals and read a signalfd instead, because the signal mask survives fork
//! and execve: the container's processes would start with SIGCHLD and SIGTERM blocked. Caught
//! signals, in contrast, go back to their default action in a new program.
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::pipe2;

static PIPE: AtomicI32 = AtomicI32::new(-1);
static SHIM_PID: AtomicI32 = AtomicI32::new(0);

pub struct Signals {
    read: OwnedFd,
    _write: OwnedFd,
}

extern "C" fn report(signo: libc::c_int) {
    // A copy of the shim between clone and execve (a container's init, an exec) runs this handler
    // too, on the shared pipe: only the shim itself may report.
    // SAFETY: getpid, write and errno access are async-signal-safe.
    unsafe {
        if libc::getpid() != SHIM_PID.load(Ordering::Relaxed) {
            return;
        }
        let saved = *libc::__errno_location();
        let byte = signo as u8;
        libc::write(PIPE.load(Ordering::Relaxed), (&byte as *const u8).cast(), 1);
        *libc::__errno_location() = saved;
    }
}

/// SIGPIPE must not kill the shim when a client goes away, but ignoring it (SIG_IGN) would be
/// inherited by every container process; a handler that does nothing is reset by execve.
extern "C" fn nothing(_: libc::c_int) {}

impl Signals {
    pub fn install() -> Result<Signals> {
        let (read, write) =
            pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).context("creating the signal pipe")?;
        PIPE.store(write.as_raw_fd(), Ordering::Relaxed);
        SHIM_PID.store(std::process::id() as i32, Ordering::Relaxed);
        // Signals ignored by whoever launched us would stay ignored in every container process
        // (execve keeps SIG_IGN): start from the defaults.
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        for signal in Signal::iterator().filter(|s| !matches!(s, Signal::SIGKILL | Signal::SIGSTOP))
        {
            // SAFETY: installing the default action runs no code of ours.
            unsafe { sigaction(signal, &default) }
                .with_context(|| format!("resetting {signal}"))?;
        }
        let flags = SaFlags::SA_RESTART | SaFlags::SA_NOCLDSTOP;
        let on = SigAction::new(SigHandler::Handler(report), flags, SigSet::empty());
        let quiet = SigAction::new(
            SigHandler::Handler(nothing),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for (signal, action) in [
            (Signal::SIGCHLD, &on),
            (Signal::SIGTERM, &on),
            (Signal::SIGINT, &on),
            (Signal::SIGHUP, &quiet),
            (Signal::SIGPIPE, &quiet),
        ] {
            // SAFETY: the handlers only call async-signal-safe functions.
            unsafe { sigaction(signal, action) }.with_context(|| format!("handling {signal}"))?;
        }
        Ok(Signals {
            read,
            _write: write,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    /// The signals received since the last call.
    pub fn drain(&self) -> Vec<Signal> {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = nix::unistd::read(&self.read, &mut buf) {
            got.extend(
                buf[..n]
                    .iter()
                    .filter_map(|b| Signal::try_from(i32::from(*b)).ok()),
            );
        }
        got
    }
}
