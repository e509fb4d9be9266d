//! The client's input on its way into the process's stdin pipe (or terminal).
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;

/// What the client sends for the process's stdin, on its way into the pipe (or terminal).
#[derive(Default)]
pub struct Input {
    /// `None` without stdin, or once closed.
    fd: Option<OwnedFd>,
    /// Received, not yet written. The client is not read while this is not empty.
    pending: Vec<u8>,
    /// Close the stdin once `pending` is written.
    close_when_written: bool,
    /// Whether there was a stdin to write to at all.
    had_stdin: bool,
}

impl Input {
    /// Input for `fd` (non-blocking), or none at all.
    pub fn new(fd: Option<OwnedFd>) -> Input {
        Input {
            had_stdin: fd.is_some(),
            fd,
            ..Default::default()
        }
    }

    pub fn had_stdin(&self) -> bool {
        self.had_stdin
    }

    /// The client closed its input (what it sent may still be on its way into the pipe).
    pub fn is_closing(&self) -> bool {
        self.close_when_written
    }

    /// Everything received has been written (or dropped): the client may be read again.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// The descriptor to wait on until it takes the pending input.
    pub fn blocked_on(&self) -> Option<BorrowedFd<'_>> {
        match &self.fd {
            Some(fd) if !self.pending.is_empty() => Some(fd.as_fd()),
            _ => None,
        }
    }

    pub fn push(&mut self, data: &[u8], client: u64) {
        if self.fd.is_none() || self.close_when_written {
            tracing::debug!(
                client,
                bytes = data.len(),
                "stdin without a stdin to write to dropped"
            );
            return;
        }
        self.pending.extend_from_slice(data);
    }

    pub fn close(&mut self) {
        self.close_when_written = true;
        if self.pending.is_empty() {
            self.fd = None;
        }
    }

    /// Write what the pipe takes without blocking.
    pub fn write(&mut self) {
        let Some(fd) = &self.fd else {
            self.pending.clear();
            return;
        };
        while !self.pending.is_empty() {
            match nix::unistd::write(fd, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(e) => {
                    // The process closed its stdin (EPIPE): what it did not read is lost, as it
                    // would be on any pipe.
                    tracing::debug!(error = %e, "writing stdin");
                    self.pending.clear();
                    self.fd = None;
                    return;
                }
            }
        }
        if self.close_when_written {
            self.fd = None;
        }
    }
}
