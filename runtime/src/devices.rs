//! Device nodes in the container's /dev: the standard set every container gets, plus the spec's.
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chown, Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use crate::beneath::{Create, Root};
use crate::error::{Context, Result};

/// (path, major, minor): the character devices the OCI spec says every container has.
const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

const DEFAULT_LINKS: [(&str, &str); 5] = [
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
    ("/dev/ptmx", "pts/ptmx"),
];

pub fn create_default(root: &Root) -> Result<()> {
    for (path, major, minor) in DEFAULT_DEVICES {
        create(
            root,
            Path::new(path),
            SFlag::S_IFCHR,
            major,
            minor,
            0o666,
            None,
            None,
        )?;
    }
    let dev_node = root.resolve_or_create(Path::new("/dev"), Create::Dir)?;
    let dev = dev_node.proc_path();
    for (path, target) in DEFAULT_LINKS {
        let link = dev.join(
            Path::new(path)
                .strip_prefix("/dev")
                .unwrap_or(Path::new(path)),
        );
        match std::fs::symlink_metadata(&link) {
            Ok(_) => std::fs::remove_file(&link).context(|| format!("replacing {path}"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context(|| format!("checking {path}")),
        }
        symlink(target, &link).context(|| format!("linking {path} to {target}"))?;
    }
    Ok(())
}

pub fn create_from_spec(root: &Root, devices: &[LinuxDevice]) -> Result<()> {
    for d in devices {
        let kind = match d.typ() {
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        create(
            root,
            d.path(),
            kind,
            d.major() as u64,
            d.minor() as u64,
            d.file_mode().unwrap_or(0o666),
            d.uid(),
            d.gid(),
        )?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn create(
    root: &Root,
    path: &Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default();
    let dir_node = root.resolve_or_create(parent, Create::Dir)?;
    let dir = dir_node.proc_path();
    let node: PathBuf = dir.join(name);
    let _ = std::fs::remove_file(&node);
    let made = mknod(
        &node,
        kind,
        Mode::from_bits_truncate(mode),
        makedev(major, minor),
    );
    if made.is_err() {
        // Where mknod is not allowed, the host's node is bind-mounted instead, as runc does.
        std::fs::File::create(&node).context(|| format!("creating {}", path.display()))?;
        mount(
            Some(path),
            &node,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .context(|| format!("bind-mounting device {}", path.display()))?;
        return Ok(());
    }
    // mknod's mode is filtered by the umask; set it exactly.
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        &node,
        Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .context(|| format!("setting the mode of {}", path.display()))?;
    if uid.is_some() || gid.is_some() {
        chown(&node, uid.map(Uid::from_raw), gid.map(Gid::from_raw))
            .context(|| format!("setting the owner of {}", path.display()))?;
    }
    Ok(())
}
