//! The container's stdout and stderr, copied from their pipes (or its terminal) into the CRI log.
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use peapod_runtime::crilog::{LineBuffer, LogFile, Stream};

/// How much is read from one stream at a time; also the log's longest line.
pub const READ_SIZE: usize = peapod_runtime::crilog::MAX_LINE;

/// One stream of the container's output.
pub struct Output {
    fd: OwnedFd,
    lines: LineBuffer,
    /// The stream has ended; the event loop drops it.
    pub ended: bool,
}

/// What a read left the stream in.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Open,
    Ended,
}

impl Output {
    /// `fd` must be non-blocking.
    pub fn new(fd: OwnedFd, stream: Stream) -> Output {
        Output {
            fd,
            lines: LineBuffer::new(stream),
            ended: false,
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Copy what is available (one buffer's worth, so that other work gets its turn) to the log,
    /// and hand the same bytes to `tee` (the attached clients).
    pub fn pump(
        &mut self,
        log: &mut Log,
        buf: &mut [u8],
        tee: &mut impl FnMut(Stream, &[u8]),
    ) -> Flow {
        match nix::unistd::read(&self.fd, buf) {
            Ok(0) | Err(Errno::EIO) => {
                // EIO: a terminal whose last holder of the other side closed it.
                self.lines
                    .finish(&mut |stream, tag, text| log.write(stream, tag, text));
                Flow::Ended
            }
            Ok(n) => {
                tee(self.lines.stream(), &buf[..n]);
                self.lines.push(&buf[..n], &mut |stream, tag, text| {
                    log.write(stream, tag, text)
                });
                Flow::Open
            }
            Err(Errno::EAGAIN | Errno::EINTR) => Flow::Open,
            Err(e) => {
                tracing::warn!(stream = self.lines.stream().as_str(), error = %e, "reading the container's output");
                self.lines
                    .finish(&mut |stream, tag, text| log.write(stream, tag, text));
                Flow::Ended
            }
        }
    }
}

/// The log file, and whether writing to it currently fails (so that a full disk is reported
/// once, not once per line).
pub struct Log {
    file: LogFile,
    failing: bool,
}

impl Log {
    pub fn new(file: LogFile) -> Log {
        Log {
            file,
            failing: false,
        }
    }

    pub fn write(&mut self, stream: Stream, tag: peapod_runtime::crilog::Tag, text: &[u8]) {
        match self.file.write_entry(stream, tag, text) {
            Ok(()) if self.failing => {
                tracing::info!("writing the container log works again");
                self.failing = false;
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                tracing::warn!(error = %e, "container output is being lost");
                self.failing = true;
            }
            Err(_) => {}
        }
    }

    pub fn reopen(&mut self) -> peapod_runtime::Result<()> {
        self.file.reopen()
    }
}
