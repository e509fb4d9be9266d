//! Waiting for a process to exit, with a timeout, without polling.
//!
//! A pidfd (Linux 5.3) becomes readable the moment its process exits, so `poll` on it wakes us
//! exactly then. The alternative, `try_wait` in a sleep loop, notices an exit only at the next
//! tick: with a backoff that is milliseconds late on every CNI plugin and hook, which adds up on
//! the path of every pod. Neither std (its `PidFd` is unstable) nor nix wraps `pidfd_open`, hence
//! the raw syscall.
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::state::process_alive;

/// A handle on one process that stays valid even if the pid is reused later.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a pidfd for `pid`. ESRCH: no such process (a zombie child still has one).
    pub fn open(pid: i32) -> io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor to us and nobody else owns it.
        Ok(PidFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Waits until the process has exited (a zombie counts) or `timeout` has passed; true if it
    /// exited. `Duration::MAX` waits for ever.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
            // PollTimeout holds at most i32::MAX ms (24 days): longer waits go round the loop.
            let ms = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, ms) {
                Ok(0) if left.is_zero() => return Ok(false),
                Ok(0) => {}
                Ok(_) => return Ok(true),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Waits for a child to exit, at most `timeout` (`Duration::MAX`: for ever): `None` if it still
/// runs then. The child is reaped when it has exited; one still running is left to the caller
/// (to kill, then `wait`).
pub fn wait_child(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    // An unreaped child keeps its pid, so the pidfd cannot refer to anyone else.
    match PidFd::open(child.id() as i32) {
        Ok(pidfd) => {
            pidfd.wait(timeout)?;
            child.try_wait()
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            poll_every_ms(timeout, || child.try_wait())
        }
        Err(e) => Err(e),
    }
}

/// For kernels before 5.3 (or a pidfd that fails): asks `check` every millisecond until it has an
/// answer or `timeout` has passed.
fn poll_every_ms<T>(
    timeout: Duration,
    mut check: impl FnMut() -> io::Result<Option<T>>,
) -> io::Result<Option<T>> {
    let deadline = Instant::now().checked_add(timeout);
    loop {
        if let Some(answer) = check()? {
            return Ok(Some(answer));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until the process recorded as `pid` with `start_time` (see
/// [`crate::state::process_start_time`]) is gone (exited; a zombie counts) or `timeout` has
/// passed; true if it is gone. It may be anyone's process: nothing is reaped.
pub fn wait_gone(pid: i32, start_time: u64, timeout: Duration) -> bool {
    let pidfd = match PidFd::open(pid) {
        Ok(pidfd) => pidfd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return true,
        Err(_) => return poll_gone(pid, start_time, timeout),
    };
    // The pid may have been reused before the pidfd was opened: only if the process behind it
    // is still the one we mean does its exit answer the question.
    if !process_alive(pid, start_time) {
        return true;
    }
    match pidfd.wait(timeout) {
        Ok(gone) => gone,
        Err(_) => poll_gone(pid, start_time, timeout),
    }
}

fn poll_gone(pid: i32, start_time: u64, timeout: Duration) -> bool {
    let gone = || Ok((!process_alive(pid, start_time)).then_some(()));
    matches!(poll_every_ms(timeout, gone), Ok(Some(())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_child_is_reaped_when_it_exits() {
        let mut child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let status = wait_child(&mut child, Duration::from_secs(10)).unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(3));
    }

    #[test]
    fn a_child_still_running_at_the_timeout_is_left_running() {
        let mut child = Command::new("sleep").arg("10").spawn().unwrap();
        let status = wait_child(&mut child, Duration::from_millis(50)).unwrap();
        assert!(status.is_none());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn wait_gone_sees_a_killed_process_and_a_vanished_pid() {
        let mut child = Command::new("sleep").arg("10").spawn().unwrap();
        let pid = child.id() as i32;
        let (start, _) = crate::state::process_start_time(pid).unwrap();
        assert!(!wait_gone(pid, start, Duration::from_millis(20)));
        child.kill().unwrap();
        // A zombie is gone already: nothing runs any more.
        assert!(wait_gone(pid, start, Duration::from_secs(10)));
        child.wait().unwrap();
        assert!(wait_gone(pid, start, Duration::from_secs(10)));
    }
}
