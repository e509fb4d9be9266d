//! `clone(2)` used like `fork(2)`, but able to create namespaces for the child.
//!
//! With a NULL stack the child runs on a copy-on-write copy of the parent's stack, exactly as after
//! fork, so the call returns twice. This is why we do not use nix's `clone`, which wants a fresh
//! stack and a callback: a fork-like call keeps the code that follows straight-line and readable.
use nix::sched::CloneFlags;
use nix::unistd::Pid;

use crate::error::{Context, Result};

/// Returns `None` in the child and the child's PID in the parent.
///
/// # Safety
/// The calling process must be single-threaded: the child gets a copy of only the calling thread,
/// and locks held by other threads (the allocator's, say) would stay locked forever.
pub unsafe fn clone(flags: CloneFlags) -> Result<Option<Pid>> {
    // SAFETY: raw clone with a NULL stack behaves like fork; the caller guarantees single-threadedness.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags.bits() | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match ret {
        0 => Ok(None),
        pid if pid > 0 => Ok(Some(Pid::from_raw(pid as i32))),
        _ => Err(nix::errno::Errno::last()).context(|| format!("clone({flags:?})")),
    }
}
