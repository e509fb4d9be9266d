//! The foreground terminal of `run` and `exec -t` without `--console-socket`: like runc, we become
//! the console socket's listener ourselves and relay between our terminal and the container's.
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use nix::unistd::Pid;

pub struct Session {
    listener: Option<(UnixListener, tempdir::Dir)>,
}

mod tempdir {
    use std::path::PathBuf;
    /// A private directory for the console socket, removed on drop.
    pub struct Dir(pub PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Session {
    pub fn none() -> Self {
        Session { listener: None }
    }

    pub fn new() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("peapod-tty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = tempdir::Dir(dir);
        let listener =
            UnixListener::bind(dir.0.join("console.sock")).context("binding the console socket")?;
        Ok(Session {
            listener: Some((listener, dir)),
        })
    }

    /// A session only when the bundle asks for a terminal and we are in the foreground.
    pub fn for_run(bundle: &Path, foreground: bool) -> Result<Self> {
        if !foreground {
            return Ok(Self::none());
        }
        let text = std::fs::read(bundle.join("config.json")).unwrap_or_default();
        let wants_tty = serde_json::from_slice::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["process"]["terminal"].as_bool())
            .unwrap_or(false);
        if wants_tty {
            Self::new()
        } else {
            Ok(Self::none())
        }
    }

    pub fn socket_path(&self) -> Option<PathBuf> {
        self.listener
            .as_ref()
            .map(|(_, dir)| dir.0.join("console.sock"))
    }

    /// Relay our stdin to the container's terminal and its output to our stdout until it closes.
    pub fn relay_until_exit(self) -> Result<()> {
        let Some((listener, _dir)) = self.listener else {
            return Ok(());
        };
        let (conn, _) = listener
            .accept()
            .context("accepting the console connection")?;
        let master: OwnedFd = peapod_runtime::console::recv_fd(&conn)?;
        let stdin = std::io::stdin();
        let saved = RawMode::enter(stdin.as_fd());
        let mut buf = [0u8; 8192];
        let mut stdin_open = true;
        loop {
            let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e).context("polling the terminal"),
                Ok(_) => {}
            }
            let master_ready = fds[0].revents().unwrap_or(PollFlags::empty());
            let stdin_ready = fds
                .get(1)
                .and_then(|f| f.revents())
                .unwrap_or(PollFlags::empty());
            if !master_ready.is_empty() {
                match nix::unistd::read(&master, &mut buf) {
                    Ok(0) | Err(nix::errno::Errno::EIO) => break,
                    Ok(n) => write_all(std::io::stdout().as_fd(), &buf[..n])?,
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e).context("reading the terminal"),
                }
            }
            if !stdin_ready.is_empty() {
                match nix::unistd::read(&stdin, &mut buf) {
                    Ok(0) => stdin_open = false,
                    Ok(n) => write_all(master.as_fd(), &buf[..n])?,
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => stdin_open = false,
                }
            }
        }
        drop(saved);
        Ok(())
    }
}

fn write_all(fd: std::os::fd::BorrowedFd<'_>, mut data: &[u8]) -> Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("writing to the terminal"),
        }
    }
    Ok(())
}

/// Our terminal in raw mode for the length of the session, so keys reach the container as typed.
struct RawMode<'a> {
    fd: std::os::fd::BorrowedFd<'a>,
    saved: Option<Termios>,
}

impl<'a> RawMode<'a> {
    fn enter(fd: std::os::fd::BorrowedFd<'a>) -> Self {
        let saved = tcgetattr(fd).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            cfmakeraw(&mut raw);
            let _ = tcsetattr(fd, SetArg::TCSANOW, &raw);
        }
        RawMode { fd, saved }
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = tcsetattr(self.fd, SetArg::TCSANOW, t);
        }
    }
}

static TARGET: AtomicI32 = AtomicI32::new(0);

extern "C" fn relay(sig: libc::c_int) {
    let pid = TARGET.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Pass the signals a user sends to `run`/`exec` on to the container process, as runc does.
pub fn forward_signals(pid: Pid) -> Result<()> {
    TARGET.store(pid.as_raw(), Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::Handler(relay),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        // SAFETY: the handler only reads an atomic and calls kill.
        unsafe { sigaction(sig, &action) }
            .with_context(|| format!("installing a handler for {sig}"))?;
    }
    Ok(())
}
