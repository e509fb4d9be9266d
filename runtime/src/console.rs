//! Terminals: a container with `process.terminal` gets a pseudo-terminal whose master side is
//! handed to whoever listens on `--console-socket`, as runc does, so that containerd-style callers
//! can hold the terminal while the runtime exits.
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt, Winsize};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, setsid};

use crate::error::{Context, Result};

pub fn connect(path: &Path) -> Result<UnixStream> {
    UnixStream::connect(path).context(|| format!("connecting to console socket {}", path.display()))
}

/// Open a new pseudo-terminal in the container's /dev/pts, make its slave side this process's
/// controlling terminal and stdio, and send the master side over `socket`.
pub fn setup(socket: &UnixStream, size: Option<(u16, u16)>) -> Result<()> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .context(|| "opening /dev/ptmx".into())?;
    grantpt(&master).context(|| "grantpt".into())?;
    unlockpt(&master).context(|| "unlockpt".into())?;
    let name = ptsname_r(&master).context(|| "ptsname".into())?;
    let slave: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&name)
        .context(|| format!("opening {name}"))?
        .into();
    if let Some((rows, cols)) = size {
        let ws = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct that lives for the duration of the call.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
    send_fd(socket, &name, master.as_fd().as_raw_fd())?;
    setsid().context(|| "setsid".into())?;
    // SAFETY: TIOCSCTTY takes an integer argument; the descriptor is valid.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(std::io::Error::last_os_error())
            .context(|| "making the terminal controlling".into());
    }
    dup2_stdin(&slave).context(|| "terminal as stdin".into())?;
    dup2_stdout(&slave).context(|| "terminal as stdout".into())?;
    dup2_stderr(&slave).context(|| "terminal as stderr".into())?;
    Ok(())
}

/// Send one descriptor with SCM_RIGHTS; the payload is the terminal's name, as runc sends it.
pub fn send_fd(socket: &UnixStream, name: &str, fd: i32) -> Result<()> {
    let fds = [fd];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .context(|| "sending the terminal over the console socket".into())?;
    Ok(())
}

/// Receive one descriptor sent with [`send_fd`].
pub fn recv_fd(socket: &UnixStream) -> Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([i32; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context(|| "receiving a descriptor".into())?;
    for cmsg in msg.cmsgs().context(|| "reading control messages".into())? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor in our table for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(crate::error::Error::Child(
        "no descriptor received on the console socket".into(),
    ))
}

use std::os::unix::fs::OpenOptionsExt;
