//! The socket side of a session: frames parsed from what the client sends, frames queued for it
//! and written as fast as it reads.
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;

use nix::poll::PollFlags;
use peapod_runtime::shim_protocol::frame::{self, FrameError, Kind};

/// After a burst, a send buffer larger than this is given back rather than kept.
const KEEP_CAPACITY: usize = 512 * 1024;

/// The socket side of a session: frames in, frames out.
pub struct Link {
    pub stream: UnixStream,
    pub inbuf: Vec<u8>,
    pub outbuf: Vec<u8>,
    /// The client shut down its sending side (it may still read).
    pub input_ended: bool,
    /// The client is gone or broke the protocol: nothing more is sent or received.
    pub gone: bool,
    /// The last frame is queued; the session ends once it is sent.
    pub closing: bool,
}

impl Link {
    /// What to poll for; input only when the process has taken the previous input.
    pub fn interest(&self, want_input: bool) -> PollFlags {
        let mut flags = PollFlags::empty();
        if want_input && !self.input_ended && !self.gone && !self.closing {
            flags |= PollFlags::POLLIN;
        }
        if !self.outbuf.is_empty() {
            flags |= PollFlags::POLLOUT;
        }
        flags
    }

    pub fn read(&mut self, buf: &mut [u8]) {
        match self.stream.read(buf) {
            Ok(0) => self.input_ended = true,
            Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(_) => self.gone = true,
        }
    }

    /// The next complete frame received, if any.
    pub fn next_frame(&mut self) -> Option<Result<(Kind, Vec<u8>), FrameError>> {
        if self.gone {
            return None;
        }
        let header: [u8; frame::HEADER_LEN] =
            self.inbuf.get(..frame::HEADER_LEN)?.try_into().ok()?;
        let (kind, len) = match frame::parse_header(header) {
            Ok(parsed) => parsed,
            Err(e) => return Some(Err(e)),
        };
        if self.inbuf.len() < frame::HEADER_LEN + len {
            return None;
        }
        let payload = self.inbuf[frame::HEADER_LEN..frame::HEADER_LEN + len].to_vec();
        self.inbuf.drain(..frame::HEADER_LEN + len);
        Some(Ok((kind, payload)))
    }

    /// Queue `data` as frames of at most `MAX_PAYLOAD` bytes and send what the socket takes.
    pub fn send(&mut self, kind: Kind, data: &[u8]) {
        if self.gone {
            return;
        }
        let mut chunks = data.chunks(frame::MAX_PAYLOAD).peekable();
        if chunks.peek().is_none() {
            frame::encode(kind, &[], &mut self.outbuf);
        }
        for chunk in chunks {
            frame::encode(kind, chunk, &mut self.outbuf);
        }
        self.flush();
    }

    /// Send what the socket takes now; true if anything was sent.
    pub fn flush(&mut self) -> bool {
        let mut sent = false;
        while !self.outbuf.is_empty() && !self.gone {
            match self.stream.write(&self.outbuf) {
                Ok(n) => {
                    self.outbuf.drain(..n);
                    sent = true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => self.gone = true,
            }
        }
        if self.outbuf.is_empty() && self.outbuf.capacity() > KEEP_CAPACITY {
            self.outbuf = Vec::new();
        }
        sent
    }
}
