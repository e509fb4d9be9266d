//! Interactive sessions (`exec_session`, `attach_session`): after the `ok` response, a
//! connection carries binary frames (`shim_protocol::frame`) both ways until the process ends.
//!
//! Nothing here may make the shim buffer without limit. Input is read from the client only once
//! the previous input has been written to the process, so a process that does not read its stdin
//! slows down that one client. Output goes the other way: an exec session stops reading its
//! process's pipes while the client is behind (the process then blocks on writing, as it would
//! on a slow terminal), while an attach session drops output for a client that is behind, because
//! the container's output also feeds its log and must never wait for an attached client.
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use peapod_runtime::crilog::Stream;
use peapod_runtime::shim_protocol::frame::{self, Kind};
use peapod_runtime::shim_protocol::ExitInfo;

use crate::execs::{Ending, Spawned};
use input::Input;
use link::Link;

mod input;
mod link;

/// While this much output waits for the client, an exec session stops reading its process.
const EXEC_BACKLOG: usize = 64 * 1024;
/// An attached client this far behind loses the container's output until it catches up.
const ATTACH_BACKLOG: usize = 256 * 1024;
/// After the process exited, how long its output may stay open without anything arriving (a
/// background process it left behind may hold the pipes for ever) before the session ends.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// A connection handed over by the request side: its socket, the bytes that arrived after the
/// request line, and what is still to be sent of the response.
pub struct Handover {
    pub stream: UnixStream,
    pub received: Vec<u8>,
    pub unsent: Vec<u8>,
}

/// What a poll event of a session refers to.
#[derive(Debug, Clone, Copy)]
pub enum Part {
    Socket,
    Stdin,
    Output(usize),
}

pub struct Session {
    /// The client's id, for the shim's log.
    pub client: u64,
    link: Link,
    input: Input,
    /// The terminal's master side, when there is one to resize.
    terminal: Option<OwnedFd>,
    peer: Peer,
}

/// What the session is connected to.
enum Peer {
    Exec(ExecProcess),
    Attach { dropped: u64 },
}

/// The process of an exec session.
struct ExecProcess {
    pid: Pid,
    /// Stdout (or the terminal), then stderr; `None` once ended.
    output: [Option<OwnedFd>; 2],
    exit: Option<ExitInfo>,
    /// The last time the session's output moved (read from the process or sent to the client),
    /// for the drain grace after the exit.
    last_progress: Instant,
}

/// What is being set up before the connection is handed over.
pub enum Pending {
    Exec(Spawned),
    Attach {
        stdin: Option<OwnedFd>,
        terminal: Option<OwnedFd>,
    },
}

impl Pending {
    /// The exec'd process.
    pub fn pid(&self) -> Option<Pid> {
        match self {
            Pending::Exec(spawned) => Some(spawned.pid),
            Pending::Attach { .. } => None,
        }
    }

    /// The session will not happen after all: do not leave its process running.
    pub fn abort(self) {
        if let Pending::Exec(spawned) = self {
            let _ = kill(spawned.pid, Signal::SIGKILL);
        }
    }
}

impl Session {
    pub fn new(client: u64, conn: Handover, pending: Pending) -> Session {
        let (stdin, terminal, peer) = match pending {
            Pending::Exec(spawned) => (
                spawned.stdin,
                spawned.terminal,
                Peer::Exec(ExecProcess {
                    pid: spawned.pid,
                    output: spawned.output,
                    exit: None,
                    last_progress: Instant::now(),
                }),
            ),
            Pending::Attach { stdin, terminal } => (stdin, terminal, Peer::Attach { dropped: 0 }),
        };
        let mut session = Session {
            client,
            link: Link {
                stream: conn.stream,
                inbuf: conn.received,
                outbuf: conn.unsent,
                input_ended: false,
                gone: false,
                closing: false,
            },
            input: Input::new(stdin),
            terminal,
            peer,
        };
        // Frames may have come with the request; no poll event will announce them again.
        session.take_frames();
        session
    }

    /// An attach session that wrote to the container's stdin and whose input has ended: the
    /// client closed it, or went away.
    pub fn attach_input_ended(&self) -> bool {
        matches!(self.peer, Peer::Attach { .. })
            && self.input.had_stdin()
            && (self.input.is_closing() || self.link.input_ended || self.link.gone)
    }

    /// Closes an attach session's copy of the container's stdin, once what it holds is written.
    pub fn close_attach_input(&mut self) {
        if matches!(self.peer, Peer::Attach { .. }) {
            self.input.close();
            self.input.write();
        }
    }

    /// The exec session's process, until it has been reaped.
    pub fn pid(&self) -> Option<Pid> {
        match &self.peer {
            Peer::Exec(p) if p.exit.is_none() => Some(p.pid),
            _ => None,
        }
    }

    pub fn watch(&self) -> Vec<(Part, BorrowedFd<'_>, PollFlags)> {
        let mut watched = vec![(
            Part::Socket,
            self.link.stream.as_fd(),
            self.link.interest(self.input.is_idle()),
        )];
        if let Some(fd) = self.input.blocked_on() {
            watched.push((Part::Stdin, fd, PollFlags::POLLOUT));
        }
        if let Peer::Exec(process) = &self.peer {
            // Output is read only while the client keeps up.
            if self.link.outbuf.len() < EXEC_BACKLOG && !self.link.gone {
                for (k, fd) in process.output.iter().enumerate() {
                    if let Some(fd) = fd {
                        watched.push((Part::Output(k), fd.as_fd(), PollFlags::POLLIN));
                    }
                }
            }
        }
        watched
    }

    pub fn on_event(&mut self, part: Part, revents: PollFlags, buf: &mut [u8]) {
        match part {
            Part::Socket => {
                if revents.contains(PollFlags::POLLOUT) && self.link.flush() {
                    self.progressed();
                }
                if revents.contains(PollFlags::POLLIN) {
                    self.link.read(buf);
                    self.take_frames();
                } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                    // Both directions are closed: the client is gone.
                    self.link.gone = true;
                }
            }
            Part::Stdin => self.input.write(),
            Part::Output(k) => self.read_output(k, buf),
        }
    }

    /// Handle the complete frames received so far.
    fn take_frames(&mut self) {
        while let Some(next) = self.link.next_frame() {
            match next {
                Ok((Kind::Stdin, data)) => self.input.push(&data, self.client),
                Ok((Kind::CloseStdin, _)) => self.input.close(),
                Ok((Kind::Resize, payload)) => self.resize(&payload),
                Ok((kind, _)) => self.protocol_error(&format!("a client may not send {kind:?}")),
                Err(e) => self.protocol_error(&e.to_string()),
            }
        }
        if self.link.input_ended {
            // The client will send nothing more: the process gets end-of-file, as with stdin
            // closed.
            self.input.close();
        }
        self.input.write();
    }

    fn protocol_error(&mut self, reason: &str) {
        tracing::warn!(client = self.client, reason, "ending a session");
        self.link.gone = true;
        self.link.inbuf.clear();
    }

    fn resize(&mut self, payload: &[u8]) {
        let (width, height) = match frame::parse_resize(payload) {
            Ok(size) => size,
            Err(e) => return self.protocol_error(&e.to_string()),
        };
        let Some(terminal) = &self.terminal else {
            tracing::debug!(client = self.client, "resize without a terminal ignored");
            return;
        };
        if let Err(e) = crate::terminal::resize(terminal, width, height) {
            tracing::warn!(client = self.client, error = %e, "resizing a terminal");
        }
    }

    fn read_output(&mut self, k: usize, buf: &mut [u8]) {
        let Peer::Exec(process) = &mut self.peer else {
            return;
        };
        let Some(fd) = process.output.get(k).and_then(Option::as_ref) else {
            return;
        };
        let limit = buf.len().min(frame::MAX_PAYLOAD);
        match nix::unistd::read(fd, &mut buf[..limit]) {
            Ok(n @ 1..) => {
                let kind = if k == 0 { Kind::Stdout } else { Kind::Stderr };
                process.last_progress = Instant::now();
                self.link.send(kind, &buf[..n]);
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            // End of file; EIO is how a terminal says its other side is closed.
            Ok(_) | Err(_) => process.output[k] = None,
        }
    }

    fn progressed(&mut self) {
        if let Peer::Exec(process) = &mut self.peer {
            process.last_progress = Instant::now();
        }
    }

    /// The exec session's process has been reaped.
    pub fn exited(&mut self, ending: Ending) {
        if let Peer::Exec(process) = &mut self.peer {
            process.exit = Some(ExitInfo {
                pid: process.pid.as_raw(),
                exit_code: ending.code,
                signal: ending.signal,
                exited_at: peapod_runtime::crilog::timestamp(),
                oom_killed: false,
            });
            process.last_progress = Instant::now();
        }
    }

    /// A copy of the container's output, for an attach session.
    pub fn tee(&mut self, stream: Stream, data: &[u8]) {
        let Peer::Attach { dropped } = &mut self.peer else {
            return;
        };
        if self.link.gone || self.link.closing {
            return;
        }
        if self.link.outbuf.len() + data.len() > ATTACH_BACKLOG {
            if *dropped == 0 {
                tracing::warn!(
                    client = self.client,
                    "attached client is behind, dropping its output"
                );
            }
            *dropped += data.len() as u64;
            return;
        }
        if *dropped > 0 {
            tracing::info!(
                client = self.client,
                bytes = *dropped,
                "attached client caught up"
            );
            *dropped = 0;
        }
        let kind = match stream {
            Stream::Stdout => Kind::Stdout,
            Stream::Stderr => Kind::Stderr,
        };
        self.link.send(kind, data);
    }

    /// The container has exited (its output has reached us): the last frame of an attach.
    pub fn container_exited(&mut self, info: &ExitInfo) {
        if matches!(self.peer, Peer::Attach { .. }) {
            self.finish(info);
        }
    }

    fn finish(&mut self, info: &ExitInfo) {
        if self.link.closing {
            return;
        }
        match serde_json::to_vec(info) {
            Ok(json) => self.link.send(Kind::Exited, &json),
            Err(e) => tracing::error!(error = %e, "serialising an exit"),
        }
        self.link.closing = true;
        self.input = Input::default();
    }

    /// End an exec session whose process has exited and whose output has ended (or stayed
    /// silent for the grace period while the client was keeping up).
    pub fn tick(&mut self, now: Instant) {
        let Peer::Exec(process) = &mut self.peer else {
            return;
        };
        let Some(exit) = process.exit.clone() else {
            return;
        };
        let drained = process.output.iter().all(Option::is_none)
            || (self.link.outbuf.is_empty() && now >= process.last_progress + DRAIN_GRACE);
        if drained {
            process.output = [None, None];
            self.finish(&exit);
        }
    }

    /// The next moment `tick` may have something to do without any event.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.peer {
            Peer::Exec(p) if p.exit.is_some() && !self.link.closing => {
                Some(p.last_progress + DRAIN_GRACE)
            }
            _ => None,
        }
    }

    /// Nothing more will happen on this session: the client left, or the last frame is sent.
    pub fn finished(&self) -> bool {
        self.link.gone || (self.link.closing && self.link.outbuf.is_empty())
    }

    /// Let go of the session. An exec's process still running is killed, as when a client of
    /// containerd's streaming exec goes away; the reaper collects it.
    pub fn end(self) {
        if let Some(pid) = self.pid() {
            tracing::info!(
                client = self.client,
                pid = pid.as_raw(),
                "session client went away, killing its process"
            );
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

/// A duplicate of `fd` for a session, so that the session can close its copy by itself.
pub fn duplicate(fd: &OwnedFd, what: &str) -> Result<OwnedFd> {
    fd.try_clone()
        .with_context(|| format!("duplicating {what}"))
}
