//! Terminals for processes that ask for one: the runtime library hands the master side of a new
//! pseudo-terminal to whoever listens on a console socket, so the shim listens on a private one
//! for the duration of one create or exec.
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};

pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    pub fn bind() -> Result<ConsoleSocket> {
        static N: AtomicUsize = AtomicUsize::new(0);
        // In the temporary directory rather than beside the control socket: socket paths are
        // limited to 108 bytes.
        let name = format!(
            "peapod-shim-{}-{}.console",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        Ok(ConsoleSocket { listener, path })
    }

    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The terminal's master side. Call after the library returned from create or exec: by then
    /// the process has connected and sent it, so neither accept nor receive blocks.
    pub fn receive(&self) -> Result<OwnedFd> {
        self.listener
            .set_nonblocking(true)
            .context("configuring the console socket")?;
        let (conn, _) = self.listener.accept().context("accepting the terminal")?;
        Ok(peapod_runtime::console::recv_fd(&conn)?)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Set a terminal's size through its master side (the process gets SIGWINCH).
pub fn resize(master: &OwnedFd, width: u16, height: u16) -> Result<()> {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives for the duration of the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(std::io::Error::last_os_error()).context("TIOCSWINSZ");
    }
    Ok(())
}
