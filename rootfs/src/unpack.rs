//! Unpacks one layer tar into its own directory, ready to be an overlayfs lowerdir.
//!
//! Layers come from the network and are hostile until proven otherwise. Every path is
//! resolved with openat2(RESOLVE_IN_ROOT), which makes the layer directory behave like
//! `/` for that lookup: `..` stops at it and absolute symlinks land inside it. The final
//! component is then created relative to the already-resolved parent with the `*at`
//! calls and O_NOFOLLOW, so no entry — however it mixes `..`, absolute names, symlinks
//! or hardlinks — can write outside the layer directory.
//!
//! Whiteouts are not applied here (each layer is unpacked on its own); they are turned
//! into what overlayfs understands: `.wh.NAME` becomes a 0/0 character device `NAME`,
//! and `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fchmodat, fstatat, mkdirat, mknodat, FchmodatFlags, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::Compression;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Unpacks the (compressed) layer blob at `blob` into the existing empty directory
/// `dest` and returns the digest of the uncompressed tar (the layer's diff ID).
pub fn unpack_layer(blob: &Path, compression: &Compression, dest: &Path) -> Result<Digest> {
    let file = File::open(blob).map_err(Error::io("opening layer blob", blob))?;
    let input = BufReader::with_capacity(1 << 20, file);
    let decompressed: Box<dyn Read> = match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(input)
                .map_err(Error::io("starting zstd", blob))?,
        ),
    };
    unpack_tar(decompressed, dest)
}

/// Unpacks an uncompressed tar stream; returns the digest of the bytes read.
pub fn unpack_tar(reader: impl Read, dest: &Path) -> Result<Digest> {
    let root: OwnedFd = File::open(dest)
        .map_err(Error::io("opening layer directory", dest))?
        .into();
    let mut archive = tar::Archive::new(HashingReader {
        inner: reader,
        hasher: Sha256::new(),
    });
    let mut extractor = Extractor {
        root: root.as_fd(),
        dir_times: Vec::new(),
    };
    for entry in archive
        .entries()
        .map_err(Error::io("reading layer tar", dest))?
    {
        let entry = entry.map_err(Error::io("reading layer tar", dest))?;
        extractor.entry(entry)?;
    }
    extractor.finish()?;
    // The diff ID covers the whole stream, including the zero blocks after the last entry.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(Error::io("reading layer tar", dest))?;
    Ok(Digest::from_hasher(rest.hasher))
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

struct Extractor<'a> {
    root: BorrowedFd<'a>,
    /// Directory mtimes are set last: creating children would change them again.
    dir_times: Vec<(String, TimeSpec)>,
}

/// An entry's path made relative and `..`-free. `..` is clamped at the root, the
/// same rule RESOLVE_IN_ROOT applies, so `../../etc/x` means `etc/x`.
fn clean_path(raw: &[u8]) -> Result<Vec<String>> {
    let text = std::str::from_utf8(raw)
        .map(str::to_string)
        .unwrap_or_else(|_| OsStr::from_bytes(raw).to_string_lossy().into_owned());
    if text.contains('\0') {
        return Err(Error::UnsafeEntry {
            path: text,
            reason: "NUL byte in name".into(),
        });
    }
    let mut parts: Vec<String> = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p.to_string()),
        }
    }
    Ok(parts)
}

fn resolve_how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

impl Extractor<'_> {
    /// Opens (creating when missing) the directory `parts` beneath the root.
    fn open_dir(&self, parts: &[String]) -> Result<OwnedFd> {
        let path = if parts.is_empty() {
            ".".to_string()
        } else {
            parts.join("/")
        };
        match openat2(
            self.root,
            path.as_str(),
            resolve_how(OFlag::O_PATH | OFlag::O_DIRECTORY),
        ) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(Error::sys(format!("resolving {path} in layer"))(e)),
        }
        // Tars may name files before (or without) their directories: make them.
        let mut dir = openat2(
            self.root,
            ".",
            resolve_how(OFlag::O_PATH | OFlag::O_DIRECTORY),
        )
        .map_err(Error::sys("opening layer root"))?;
        for i in 0..parts.len() {
            let prefix = parts[..=i].join("/");
            match openat2(
                self.root,
                prefix.as_str(),
                resolve_how(OFlag::O_PATH | OFlag::O_DIRECTORY),
            ) {
                Ok(fd) => dir = fd,
                Err(Errno::ENOENT) => {
                    match mkdirat(
                        dir.as_fd(),
                        parts[i].as_str(),
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(Error::sys(format!("creating directory {prefix}"))(e))
                        }
                    }
                    dir = openat2(
                        self.root,
                        prefix.as_str(),
                        resolve_how(OFlag::O_PATH | OFlag::O_DIRECTORY),
                    )
                    .map_err(Error::sys(format!("opening directory {prefix}")))?;
                }
                Err(e) => return Err(Error::sys(format!("resolving {prefix} in layer"))(e)),
            }
        }
        Ok(dir)
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let mut parts = clean_path(&raw_path)?;
        let Some(name) = parts.pop() else {
            // The root itself (`./`): its metadata belongs to the image's `/`, keep ours.
            return Ok(());
        };
        let parent = self.open_dir(&parts)?;
        let parent = parent.as_fd();
        let header = entry.header().clone();
        let kind = header.entry_type();

        if name == OPAQUE_MARKER {
            let dir = openat(
                parent,
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(Error::sys(format!("opening directory of {shown}")))?;
            return fsetxattr(dir.as_fd(), OPAQUE_XATTR, b"y")
                .map_err(Error::sys(format!("marking {shown} opaque")));
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(Error::UnsafeEntry {
                    path: shown,
                    reason: "malformed whiteout".into(),
                });
            }
            remove_existing(parent, hidden, false)?;
            return mknodat(parent, hidden, SFlag::S_IFCHR, Mode::empty(), 0)
                .map_err(Error::sys(format!("creating whiteout for {shown}")));
        }

        let mode = Mode::from_bits_truncate(
            header
                .mode()
                .map_err(Error::io("reading mode of", &shown))?
                & 0o7777,
        );
        let uid = header.uid().map_err(Error::io("reading uid of", &shown))? as u32;
        let gid = header.gid().map_err(Error::io("reading gid of", &shown))? as u32;
        let mtime = TimeSpec::new(
            header
                .mtime()
                .map_err(Error::io("reading mtime of", &shown))? as i64,
            0,
        );
        let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        let xattrs = read_xattrs(&mut entry, &shown)?;

        match kind {
            EntryType::Directory => {
                let is_dir = matches!(fstatat(parent, name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW),
                    Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR);
                if !is_dir {
                    remove_existing(parent, &name, true)?;
                    mkdirat(parent, name.as_str(), mode)
                        .map_err(Error::sys(format!("creating {shown}")))?;
                }
                let dir = openat(
                    parent,
                    name.as_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(Error::sys(format!("opening {shown}")))?;
                fchown(dir.as_fd(), owner.0, owner.1)
                    .map_err(Error::sys(format!("chown {shown}")))?;
                fchmod(dir.as_fd(), mode).map_err(Error::sys(format!("chmod {shown}")))?;
                set_xattrs(dir.as_fd(), &xattrs, &shown)?;
                let mut full = parts.clone();
                full.push(name);
                self.dir_times.push((full.join("/"), mtime));
                return Ok(());
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                remove_existing(parent, &name, true)?;
                let fd = openat(
                    parent,
                    name.as_str(),
                    OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_WRONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(Error::sys(format!("creating {shown}")))?;
                let mut file = File::from(fd);
                io::copy(&mut entry, &mut file).map_err(Error::io("writing layer file", &shown))?;
                // chown first: it clears setuid/setgid bits that chmod then restores.
                fchown(file.as_fd(), owner.0, owner.1)
                    .map_err(Error::sys(format!("chown {shown}")))?;
                fchmod(file.as_fd(), mode).map_err(Error::sys(format!("chmod {shown}")))?;
                set_xattrs(file.as_fd(), &xattrs, &shown)?;
                nix::sys::stat::futimens(file.as_fd(), &mtime, &mtime)
                    .map_err(Error::sys(format!("setting mtime of {shown}")))?;
                return Ok(());
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| Error::UnsafeEntry {
                    path: shown.clone(),
                    reason: "symlink without target".into(),
                })?;
                // The target is stored as written: it is resolved later inside the
                // container's root, never by us while unpacking.
                let target = OsStr::from_bytes(&target).to_owned();
                remove_existing(parent, &name, true)?;
                symlinkat(target.as_os_str(), parent, name.as_str())
                    .map_err(Error::sys(format!("creating symlink {shown}")))?;
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().ok_or_else(|| Error::UnsafeEntry {
                    path: shown.clone(),
                    reason: "hardlink without target".into(),
                })?;
                let mut target_parts = clean_path(&target)?;
                let Some(target_name) = target_parts.pop() else {
                    return Err(Error::UnsafeEntry {
                        path: shown,
                        reason: "hardlink to the layer root".into(),
                    });
                };
                let target_dir = openat2(
                    self.root,
                    dir_path(&target_parts).as_str(),
                    resolve_how(OFlag::O_PATH | OFlag::O_DIRECTORY),
                )
                .map_err(|e| Error::UnsafeEntry {
                    path: shown.clone(),
                    reason: format!("hardlink target not in this layer: {e}"),
                })?;
                let st = fstatat(
                    target_dir.as_fd(),
                    target_name.as_str(),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| Error::UnsafeEntry {
                    path: shown.clone(),
                    reason: format!("hardlink target not in this layer: {e}"),
                })?;
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
                    return Err(Error::UnsafeEntry {
                        path: shown,
                        reason: "hardlink to a directory".into(),
                    });
                }
                remove_existing(parent, &name, true)?;
                // Without AT_SYMLINK_FOLLOW a symlink target is linked as the symlink itself.
                return linkat(
                    target_dir.as_fd(),
                    target_name.as_str(),
                    parent,
                    name.as_str(),
                    AtFlags::empty(),
                )
                .map_err(Error::sys(format!("creating hardlink {shown}")));
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let file_type = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                remove_existing(parent, &name, true)?;
                mknodat(
                    parent,
                    name.as_str(),
                    file_type,
                    mode,
                    libc::makedev(major, minor),
                )
                .map_err(Error::sys(format!("creating device {shown}")))?;
                fchmodat(parent, name.as_str(), mode, FchmodatFlags::NoFollowSymlink)
                    .map_err(Error::sys(format!("chmod {shown}")))?;
            }
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => return Ok(()),
            other => {
                tracing::warn!(path = %shown, kind = ?other, "skipping unsupported tar entry type");
                return Ok(());
            }
        }
        // Symlinks and device nodes: no fd to hold, so work by name with NOFOLLOW.
        fchownat(
            parent,
            name.as_str(),
            owner.0,
            owner.1,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(Error::sys(format!("chown {shown}")))?;
        if !xattrs.is_empty() {
            let proc_path = format!("/proc/self/fd/{}/{}", parent.as_raw_fd(), name);
            for (key, value) in &xattrs {
                lsetxattr(&proc_path, key, value)
                    .map_err(Error::sys(format!("setting xattr {key} on {shown}")))?;
            }
        }
        nix::sys::stat::utimensat(
            parent,
            name.as_str(),
            &mtime,
            &mtime,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(Error::sys(format!("setting mtime of {shown}")))
    }

    fn finish(&mut self) -> Result<()> {
        for (path, mtime) in self.dir_times.iter().rev() {
            // Re-resolved beneath the root: a later entry may have replaced the dir.
            if let Ok(dir) = openat2(
                self.root,
                path.as_str(),
                resolve_how(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW),
            ) {
                nix::sys::stat::futimens(dir.as_fd(), mtime, mtime)
                    .map_err(Error::sys(format!("setting mtime of {path}")))?;
            }
        }
        Ok(())
    }
}

fn dir_path(parts: &[String]) -> String {
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

/// Removes whatever `name` is in `parent`, so an entry can replace it (tar semantics:
/// the last entry for a path wins).
fn remove_existing(parent: BorrowedFd<'_>, name: &str, recursive: bool) -> Result<()> {
    match unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) | Err(Errno::EPERM) if recursive => {
            // The /proc path names the already-resolved parent; remove_dir_all never
            // follows symlinks inside the tree it removes.
            let path = format!("/proc/self/fd/{}/{}", parent.as_raw_fd(), name);
            std::fs::remove_dir_all(&path).map_err(Error::io("replacing directory", path))
        }
        Err(Errno::EISDIR) | Err(Errno::EPERM) => Ok(()),
        Err(e) => Err(Error::sys(format!("removing {name}"))(e)),
    }
}

/// Extended attributes from PAX `SCHILY.xattr.*` records, minus overlayfs' own:
/// a layer that set trusted.overlay.redirect or .metacopy could make the overlay
/// serve files from elsewhere, so only the unpacker itself may write those.
fn read_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    shown: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(exts) = entry
        .pax_extensions()
        .map_err(Error::io("reading pax headers of", shown))?
    {
        for ext in exts {
            let ext = ext.map_err(Error::io("reading pax headers of", shown))?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if name.starts_with("trusted.overlay.") {
                    tracing::warn!(
                        path = shown,
                        xattr = name,
                        "dropping overlayfs xattr from layer"
                    );
                    continue;
                }
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

fn set_xattrs(fd: BorrowedFd<'_>, xattrs: &[(String, Vec<u8>)], shown: &str) -> Result<()> {
    for (key, value) in xattrs {
        fsetxattr(fd, key, value).map_err(Error::sys(format!("setting xattr {key} on {shown}")))?;
    }
    Ok(())
}

fn fsetxattr(fd: BorrowedFd<'_>, key: &str, value: &[u8]) -> nix::Result<()> {
    let key = CString::new(key).map_err(|_| Errno::EINVAL)?;
    // SAFETY: valid fd, NUL-terminated name, and a pointer/length pair from a slice.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

fn lsetxattr(path: &str, key: &str, value: &[u8]) -> nix::Result<()> {
    let path = CString::new(path).map_err(|_| Errno::EINVAL)?;
    let key = CString::new(key).map_err(|_| Errno::EINVAL)?;
    // SAFETY: NUL-terminated strings and a pointer/length pair from a slice.
    let rc = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

/// Reads an xattr without following symlinks (used by tests and usage reports).
pub fn get_xattr(path: &Path, key: &str) -> Option<Vec<u8>> {
    let path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let key = CString::new(key).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: NUL-terminated strings and a buffer we own with its true length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            key.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}
