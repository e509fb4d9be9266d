//! Becoming a daemon without losing the create error.
//!
//! The launcher forks; the child starts a new session and forks again, so that the shim is
//! neither a child of the launcher nor a session leader (it can never get a controlling
//! terminal back). The shim creates the container, then reports through a pipe: the launcher
//! exits 0 printing the shim's pid, or 1 printing the error, which is how peapodd learns about
//! create failures synchronously although the shim lives on by itself.
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, setsid, ForkResult, Pid};

/// The first byte of the report: success (followed by the shim's pid) or failure (the error).
const SUCCESS: u8 = b'0';
const FAILURE: u8 = b'1';

/// The shim's end of the report pipe.
pub struct Reporter(std::fs::File);

impl Reporter {
    pub fn success(self) {
        self.send(SUCCESS, &std::process::id().to_string());
    }

    pub fn failure(self, error: &anyhow::Error) {
        self.send(FAILURE, &format!("{error:#}"));
    }

    fn send(mut self, kind: u8, text: &str) {
        // NUL ends the report: the pipe may stay open in the container's init until it execs.
        let mut message = vec![kind];
        message.extend_from_slice(text.as_bytes());
        message.push(0);
        if let Err(e) = self.0.write_all(&message) {
            tracing::warn!(error = %e, "reporting to the launcher");
        }
    }
}

/// Fork into the background. Returns only in the shim; the launcher exits with the report.
pub fn detach() -> Result<Reporter> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC).context("creating the report pipe")?;
    // SAFETY: the process is single-threaded (no runtime, no threads started yet).
    match unsafe { fork() }.context("forking the shim")? {
        ForkResult::Parent { child } => {
            drop(write);
            std::process::exit(launcher(read, child));
        }
        ForkResult::Child => {}
    }
    drop(read);
    setsid().context("starting a new session")?;
    // SAFETY: still single-threaded.
    match unsafe { fork() }.context("forking the shim")? {
        // SAFETY: leave at once, without running destructors that belong to the shim's copy.
        ForkResult::Parent { .. } => unsafe { libc::_exit(0) },
        ForkResult::Child => {}
    }
    Ok(Reporter(std::fs::File::from(write)))
}

/// Wait for the shim's report and turn it into the launcher's exit code and output.
fn launcher(read: OwnedFd, middle: Pid) -> i32 {
    let _ = waitpid(middle, None);
    let mut report = Vec::new();
    let mut file = std::fs::File::from(read);
    let mut byte = [0u8; 1];
    loop {
        match file.read(&mut byte) {
            Ok(1) if byte[0] != 0 => report.push(byte[0]),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(report.get(1..).unwrap_or_default());
    match report.first() {
        Some(&SUCCESS) => {
            println!("{text}");
            0
        }
        Some(_) => {
            eprintln!("peapod-shim: {text}");
            1
        }
        None => {
            eprintln!(
                "peapod-shim: the shim exited before reporting whether the container was created"
            );
            1
        }
    }
}

/// Point the shim's standard descriptors at /dev/null, so that it holds none of the launcher's.
pub fn close_stdio() -> Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    nix::unistd::dup2_stdin(&null).context("redirecting stdin")?;
    nix::unistd::dup2_stdout(&null).context("redirecting stdout")?;
    nix::unistd::dup2_stderr(&null).context("redirecting stderr")?;
    Ok(())
}
