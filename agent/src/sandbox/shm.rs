//! The pod's /dev/shm: one tmpfs that every container of the pod bind-mounts, so they
//! share POSIX shared memory the way they share the IPC namespace.

use std::fs;
use std::io;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags, MsFlags};

use super::SandboxError;

/// Kubernetes' and Docker's default /dev/shm size.
const SHM_OPTIONS: &str = "mode=1777,size=65536k";

pub(super) fn mount(dir: &Path) -> Result<(), SandboxError> {
    fs::create_dir_all(dir).map_err(SandboxError::io("creating", dir))?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if let Err(source) =
        nix::mount::mount(Some("shm"), dir, Some("tmpfs"), flags, Some(SHM_OPTIONS))
    {
        let _ = fs::remove_dir(dir);
        return Err(SandboxError::Sys {
            what: "mounting tmpfs on",
            path: dir.to_path_buf(),
            source,
        });
    }
    Ok(())
}

/// Unmounts and removes the directory. Idempotent.
pub(super) fn unmount(dir: &Path) -> Result<(), SandboxError> {
    match umount2(dir, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(source) => {
            return Err(SandboxError::Sys {
                what: "unmounting",
                path: dir.to_path_buf(),
                source,
            })
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(SandboxError::io("removing", dir)(e)),
        _ => Ok(()),
    }
}
