//! One connection on the control socket: bytes in, request lines out, response lines back.
//!
//! Every socket is non-blocking and buffered here, so a client that stops reading (or sends half
//! a line and hangs) only ever delays itself. A client's requests are answered in order, one at a
//! time: while one waits for something (an exec, the container's exit), later lines stay unread.
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use nix::poll::PollFlags;
use peapod_runtime::shim_protocol::{Request, Response};

use crate::sessions::Handover;

/// The longest request line accepted (an exec's process with a large environment fits).
const MAX_REQUEST: usize = 1024 * 1024;

pub struct Client {
    pub id: u64,
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// A request answered later (exec, wait, delete) is in progress.
    pub busy: bool,
    read_closed: bool,
    broken: bool,
    /// The connection now belongs to a session (`hand_over`).
    handed_over: bool,
}

impl Client {
    pub fn new(id: u64, stream: UnixStream) -> std::io::Result<Client> {
        stream.set_nonblocking(true)?;
        Ok(Client {
            id,
            stream,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            busy: false,
            read_closed: false,
            broken: false,
            handed_over: false,
        })
    }

    /// Nothing to answer or send now: the client is gone quiet, or waits for something to happen
    /// (a `wait` for the exit parks a connection for the container's whole life).
    pub fn is_idle(&self) -> bool {
        self.outbuf.is_empty() && !self.has_line()
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// What to poll for. Hang-ups are always reported, even for an empty set.
    pub fn interest(&self) -> PollFlags {
        let mut flags = PollFlags::empty();
        if self.handed_over {
            return flags;
        }
        if !self.read_closed && !self.busy && self.outbuf.is_empty() && !self.has_line() {
            flags |= PollFlags::POLLIN;
        }
        if !self.outbuf.is_empty() {
            flags |= PollFlags::POLLOUT;
        }
        flags
    }

    pub fn on_event(&mut self, revents: PollFlags, buf: &mut [u8]) {
        if self.handed_over {
            return;
        }
        if revents.contains(PollFlags::POLLIN) {
            self.read(buf);
        } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            // The peer is gone for good: nothing we would still send can arrive.
            self.broken = true;
        }
        if revents.contains(PollFlags::POLLOUT) {
            self.flush();
        }
    }

    fn read(&mut self, buf: &mut [u8]) {
        match self.stream.read(buf) {
            Ok(0) => self.read_closed = true,
            Ok(n) => {
                self.inbuf.extend_from_slice(&buf[..n]);
                if self.inbuf.len() > MAX_REQUEST && !self.has_line() {
                    self.inbuf.clear();
                    self.read_closed = true;
                    self.respond(&Response::error(format!(
                        "request longer than {MAX_REQUEST} bytes"
                    )));
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(_) => self.broken = true,
        }
    }

    fn has_line(&self) -> bool {
        self.inbuf.contains(&b'\n')
    }

    /// The next request to handle, unless one is still in progress. A line that is not a valid
    /// request comes back as the error to answer with.
    pub fn next_request(&mut self) -> Option<Result<Request, String>> {
        if self.busy || self.broken || self.handed_over {
            return None;
        }
        let end = self.inbuf.iter().position(|b| *b == b'\n')?;
        let line: Vec<u8> = self.inbuf.drain(..=end).collect();
        let line = line.trim_ascii();
        if line.is_empty() {
            return self.next_request();
        }
        Some(serde_json::from_slice(line).map_err(|e| format!("invalid request: {e}")))
    }

    pub fn respond(&mut self, response: &Response) {
        // Straight into the output buffer: an exec's answer can be megabytes.
        let start = self.outbuf.len();
        match serde_json::to_writer(&mut self.outbuf, response) {
            Ok(()) => self.outbuf.push(b'\n'),
            Err(e) => {
                tracing::error!(error = %e, "serialising a response");
                self.outbuf.truncate(start);
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        while !self.outbuf.is_empty() {
            match self.stream.write(&self.outbuf) {
                Ok(n) if n == self.outbuf.len() => {
                    // Do not keep a large exec answer's buffer for the life of the connection.
                    let large = self.outbuf.capacity() > 256 * 1024;
                    self.outbuf = Vec::new();
                    if large {
                        peapod_runtime::memory::release_free_memory();
                    }
                }
                Ok(n) => {
                    self.outbuf.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.broken = true;
                    return;
                }
            }
        }
    }

    /// Give the connection to a session (after its `ok` response): the socket, what arrived
    /// after the request line, and what is still unsent of the response. This client is then
    /// finished; its own descriptor closes with it, the session's copy keeps the connection.
    pub fn hand_over(&mut self) -> std::io::Result<Handover> {
        let stream = self.stream.try_clone()?;
        self.handed_over = true;
        Ok(Handover {
            stream,
            received: std::mem::take(&mut self.inbuf),
            unsent: std::mem::take(&mut self.outbuf),
        })
    }

    /// Nothing more will happen on this connection.
    pub fn finished(&self) -> bool {
        self.broken
            || self.handed_over
            || (self.read_closed && !self.busy && self.outbuf.is_empty() && !self.has_line())
    }
}
