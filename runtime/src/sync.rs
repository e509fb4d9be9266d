//! The parent/child handshake over a socketpair. Messages are single datagrams: `cgroup` from
//! the child once it has moved itself into its cgroup, `go` from the parent (after the hooks
//! that want the process there), then `ready` or `E<error text>` from the child.
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

use crate::error::{Context, Error, Result};

pub struct Channel(OwnedFd);

pub fn pair() -> Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context(|| "creating the sync socketpair".into())?;
    Ok((Channel(a), Channel(b)))
}

pub const IN_CGROUP: &[u8] = b"cgroup";
pub const GO: &[u8] = b"go";
pub const READY: &[u8] = b"ready";

impl Channel {
    pub fn send(&self, msg: &[u8]) -> Result<()> {
        send(self.0.as_raw_fd(), msg, MsgFlags::MSG_NOSIGNAL)
            .context(|| "sync socket send".into())?;
        Ok(())
    }

    pub fn send_error(&self, err: &Error) {
        let text = format!("E{err}");
        let _ = send(self.0.as_raw_fd(), text.as_bytes(), MsgFlags::MSG_NOSIGNAL);
    }

    /// The next message; `None` when the other side closed without sending.
    pub fn recv(&self) -> Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match recv(self.0.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(Some(buf));
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e).context(|| "sync socket receive".into()),
            }
        }
    }

    /// Wait for `expected`, turning an error message from the child into an [`Error::Child`].
    pub fn expect(&self, expected: &[u8]) -> Result<()> {
        match self.recv()? {
            Some(msg) if msg == expected => Ok(()),
            Some(msg) if msg.first() == Some(&b'E') => Err(Error::Child(format!(
                "container process: {}",
                String::from_utf8_lossy(&msg[1..])
            ))),
            Some(msg) => Err(Error::Child(format!(
                "unexpected sync message {:?}",
                String::from_utf8_lossy(&msg)
            ))),
            None => Err(Error::Child(
                "the container process exited during setup".into(),
            )),
        }
    }
}
