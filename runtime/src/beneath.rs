//! Resolving paths inside the container's root filesystem without ever leaving it.
//!
//! A hostile image can plant a symlink such as `/proc -> /` or `/etc -> ../../..`; following it
//! with ordinary path operations would mount or create things on the host. Every lookup here goes
//! through `openat2(RESOLVE_IN_ROOT)`, which makes the kernel treat the rootfs directory as `/`
//! for symlinks and `..`. The result is an `O_PATH` descriptor; operations then act on
//! `/proc/self/fd/N`, which names exactly the object that was resolved.
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};

use crate::error::{Context, Result};

/// What to create when the path does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Dir,
    File,
}

/// A directory that lookups are confined to.
#[derive(Debug)]
pub struct Root {
    dir: File,
    path: PathBuf,
}

/// An `O_PATH` descriptor of an object beneath a [`Root`].
#[derive(Debug)]
pub struct Beneath {
    fd: OwnedFd,
}

impl Beneath {
    /// The magic-link path that names the resolved object, for syscalls that take paths. It is
    /// valid only while `self` (the descriptor) is alive: keep the `Beneath` in a variable.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

impl AsFd for Beneath {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Root {
    pub fn open(path: &Path) -> Result<Self> {
        let dir = File::open(path).context(|| format!("opening {}", path.display()))?;
        Ok(Root {
            dir,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lookup(&self, rel: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        openat2(self.dir.as_fd(), rel, how)
    }

    /// Resolve `path` (as seen from inside the root) to the object it names, if it exists.
    pub fn resolve(&self, path: &Path) -> Result<Option<Beneath>> {
        match self.lookup(&relative(path), OFlag::empty()) {
            Ok(fd) => Ok(Some(Beneath { fd })),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e)
                .context(|| format!("resolving {} in {}", path.display(), self.path.display())),
        }
    }

    /// Resolve `path`, creating it (and any missing parent directories) if it does not exist.
    pub fn resolve_or_create(&self, path: &Path, last: Create) -> Result<Beneath> {
        if let Some(found) = self.resolve(path)? {
            return Ok(found);
        }
        let rel = relative(path);
        let mut parent = self
            .lookup(Path::new(""), OFlag::O_DIRECTORY)
            .context(|| format!("opening {}", self.path.display()))?;
        let mut prefix = PathBuf::new();
        let names: Vec<&OsStr> = rel.iter().collect();
        for (i, name) in names.iter().enumerate() {
            prefix.push(name);
            let is_last = i + 1 == names.len();
            match self.lookup(&prefix, OFlag::empty()) {
                Ok(fd) => {
                    parent = fd;
                    continue;
                }
                Err(Errno::ENOENT) => {}
                Err(e) => {
                    return Err(e).context(|| {
                        format!("resolving {} in {}", prefix.display(), self.path.display())
                    })
                }
            }
            if is_last && last == Create::File {
                // O_PATH descriptors can't create files; go through the parent's magic link.
                let parent_path = format!("/proc/self/fd/{}", parent.as_raw_fd());
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(Path::new(&parent_path).join(name))
                    .context(|| {
                        format!("creating {} in {}", prefix.display(), self.path.display())
                    })?;
            } else {
                match mkdirat(parent.as_fd(), *name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(e).context(|| {
                            format!("creating {} in {}", prefix.display(), self.path.display())
                        })
                    }
                }
            }
            parent = self
                .lookup(&prefix, OFlag::empty())
                .context(|| format!("resolving {} in {}", prefix.display(), self.path.display()))?;
        }
        Ok(Beneath { fd: parent })
    }
}

/// `path` without its root and with `.` components dropped; `..` is kept for the kernel to clamp.
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| {
            !matches!(
                c,
                Component::RootDir | Component::CurDir | Component::Prefix(_)
            )
        })
        .collect()
}
