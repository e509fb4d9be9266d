//! `exec` requests: a process run in the container whose output is collected and returned with
//! its exit code, as CRI's ExecSync wants. The process is a child of the shim; the event loop
//! reads its output and reaps it, so a long exec never holds up anything else.
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{pipe2, Pid};
use oci_spec::runtime::Process;
use peapod_runtime::shim_protocol::{base64, ExecResult, EXEC_OUTPUT_LIMIT};
use peapod_runtime::{Container, ExecOptions, Stdio};

use crate::terminal::ConsoleSocket;

/// After the process exited, how long we still wait for its output pipes to close: a background
/// process it left behind may hold them open for ever.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// How a process ended: its exit code (128 + signal when killed) and the signal, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    pub code: i32,
    pub signal: Option<i32>,
}

pub struct ExecJob {
    /// The client waiting for the answer.
    pub client: u64,
    pub pid: Pid,
    /// Standard output (or the terminal), then standard error.
    captures: [Capture; 2],
    truncated: bool,
    deadline: Option<Instant>,
    timed_out: bool,
    ending: Option<(Ending, Instant)>,
}

#[derive(Default)]
struct Capture {
    /// `None` once the stream has ended (or for a terminal's absent stderr).
    fd: Option<OwnedFd>,
    data: Vec<u8>,
}

impl ExecJob {
    pub fn start(
        container: &Container,
        mut process: Process,
        timeout: Option<Duration>,
        tty: bool,
        client: u64,
    ) -> Result<ExecJob> {
        process.set_terminal(Some(tty));
        let spawned = spawn(container, &process, false)?;
        let [stdout, stderr] = spawned.output;
        Ok(ExecJob {
            client,
            pid: spawned.pid,
            captures: [Capture::from(stdout), Capture::from(stderr)],
            truncated: false,
            deadline: timeout.map(|t| Instant::now() + t),
            timed_out: false,
            ending: None,
        })
    }

    /// The open output descriptors, by index for [`ExecJob::read`].
    pub fn fds(&self) -> impl Iterator<Item = (usize, BorrowedFd<'_>)> {
        self.captures
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.fd.as_ref().map(|fd| (i, fd.as_fd())))
    }

    pub fn read(&mut self, index: usize, buf: &mut [u8]) {
        let Some(capture) = self.captures.get_mut(index) else {
            return;
        };
        let Some(fd) = &capture.fd else { return };
        match nix::unistd::read(fd, buf) {
            Ok(n @ 1..) => {
                let keep = n.min(EXEC_OUTPUT_LIMIT.saturating_sub(capture.data.len()));
                capture.data.extend_from_slice(&buf[..keep]);
                self.truncated |= keep < n;
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            // End of file; EIO is how a terminal says its other side is closed.
            Ok(_) | Err(_) => capture.fd = None,
        }
    }

    pub fn exited(&mut self, ending: Ending) {
        self.ending = Some((ending, Instant::now()));
    }

    /// Kill the process if its time is up.
    pub fn enforce_timeout(&mut self, now: Instant) {
        if self.ending.is_none() && !self.timed_out && self.deadline.is_some_and(|d| now >= d) {
            tracing::info!(pid = self.pid.as_raw(), "exec timed out, killing it");
            let _ = kill(self.pid, Signal::SIGKILL);
            self.timed_out = true;
        }
    }

    /// The next moment something must happen without any event: a timeout or the end of the
    /// grace period for output.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.ending {
            Some((_, at)) => Some(at + DRAIN_GRACE),
            None if !self.timed_out => self.deadline,
            None => None,
        }
    }

    pub fn is_done(&self, now: Instant) -> bool {
        match self.ending {
            Some((_, at)) => self.fds().next().is_none() || now >= at + DRAIN_GRACE,
            None => false,
        }
    }

    /// Stop caring: the client went away. The process is killed; the reaper collects it.
    pub fn cancel(self) {
        if self.ending.is_none() {
            let _ = kill(self.pid, Signal::SIGKILL);
        }
    }

    pub fn result(self) -> ExecResult {
        let ending = self.ending.map(|(e, _)| e).unwrap_or(Ending {
            code: -1,
            signal: None,
        });
        let [stdout, stderr] = &self.captures;
        ExecResult {
            exit_code: ending.code,
            signal: ending.signal,
            timed_out: self.timed_out,
            stdout: base64::encode(&stdout.data),
            stderr: base64::encode(&stderr.data),
            truncated: self.truncated,
        }
    }
}

impl From<Option<OwnedFd>> for Capture {
    fn from(fd: Option<OwnedFd>) -> Capture {
        Capture {
            fd,
            data: Vec::new(),
        }
    }
}

/// A process started in the container, with the shim's (non-blocking) ends of its stdio.
pub struct Spawned {
    pub pid: Pid,
    /// Where its stdin is written: a pipe, or the terminal's master side. `None` when it reads
    /// /dev/null.
    pub stdin: Option<OwnedFd>,
    /// Its stdout (or the terminal's master side), then its stderr (`None` with a terminal).
    pub output: [Option<OwnedFd>; 2],
    /// The terminal's master side, for resizing.
    pub terminal: Option<OwnedFd>,
}

/// Start `process` in the container as a child of the shim, with a terminal when
/// `process.terminal` says so, and a stdin the shim writes when `stdin` (else /dev/null). Both
/// ExecSync's `exec` and interactive exec sessions go through here.
pub fn spawn(container: &Container, process: &Process, stdin: bool) -> Result<Spawned> {
    if process.terminal().unwrap_or(false) {
        spawn_with_terminal(container, process, stdin)
    } else {
        spawn_with_pipes(container, process, stdin)
    }
}

fn spawn_with_terminal(container: &Container, process: &Process, stdin: bool) -> Result<Spawned> {
    let console = ConsoleSocket::bind()?;
    let opts = ExecOptions {
        console_socket: Some(console.path()),
        ..Default::default()
    };
    let pid = container.exec(process, opts)?;
    // Input, output and resizing all use the one master side; separate descriptors let each
    // be closed on its own.
    let fds = console.receive().and_then(|master| {
        set_nonblocking(&master)?;
        let input = match stdin {
            true => Some(master.try_clone().context("duplicating the terminal")?),
            false => None,
        };
        let resize = master.try_clone().context("duplicating the terminal")?;
        Ok((master, input, resize))
    });
    match fds {
        Ok((master, stdin, terminal)) => Ok(Spawned {
            pid,
            stdin,
            output: [Some(master), None],
            terminal: Some(terminal),
        }),
        Err(e) => {
            // Nobody would read its terminal: do not leave it running. The reaper collects it.
            let _ = kill(pid, Signal::SIGKILL);
            Err(e)
        }
    }
}

fn spawn_with_pipes(container: &Container, process: &Process, stdin: bool) -> Result<Spawned> {
    let (out_read, out_write) = pipe(Ours::Read)?;
    let (err_read, err_write) = pipe(Ours::Read)?;
    let (stdin_read, stdin_write) = match stdin {
        true => {
            let (read, write) = pipe(Ours::Write)?;
            (read, Some(write))
        }
        false => (
            std::fs::File::open("/dev/null")
                .context("opening /dev/null")?
                .into(),
            None,
        ),
    };
    let stdio = Stdio {
        stdin: Some(stdin_read),
        stdout: Some(out_write),
        stderr: Some(err_write),
    };
    let pid = container.exec(
        process,
        ExecOptions {
            stdio,
            ..Default::default()
        },
    )?;
    Ok(Spawned {
        pid,
        stdin: stdin_write,
        output: [Some(out_read), Some(err_read)],
        terminal: None,
    })
}

/// Which end of a pipe the shim keeps (and makes non-blocking).
enum Ours {
    Read,
    Write,
}

/// A pipe whose end for the shim is non-blocking; the process gets an ordinary one.
fn pipe(ours: Ours) -> Result<(OwnedFd, OwnedFd)> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC).context("creating a pipe")?;
    set_nonblocking(match ours {
        Ours::Read => &read,
        Ours::Write => &write,
    })?;
    Ok((read, write))
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .context("making a descriptor non-blocking")?;
    Ok(())
}
