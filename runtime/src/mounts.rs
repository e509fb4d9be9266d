//! The container's filesystem view: its mounts, then `pivot_root` into the rootfs, then the paths
//! that must be hidden or read-only.
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, fchdir, pivot_root};
use oci_spec::runtime::{Linux, Mount};

use crate::beneath::{Create, Root};
use crate::cgroups::{Cgroup, Hierarchy};
use crate::error::{Context, Error, Result};

/// Mount options split the way mount(2) wants them.
#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    pub flags: MsFlags,
    /// Propagation changes are separate mount(2) calls after the mount itself.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific options (`mode=755`, `size=64k`, `newinstance`…).
    pub data: Vec<String>,
}

impl Options {
    pub fn parse(options: &[String]) -> Self {
        let mut parsed = Options {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
        };
        for option in options {
            let (set, clear) = match option.as_str() {
                "defaults" | "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
                "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
                "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
                "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
                "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
                "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
                "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
                "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
                "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
                "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
                "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
                "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
                "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
                "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
                "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
                "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
                "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
                "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
                "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
                "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
                "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
                "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
                "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
                "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
                "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
                | "unbindable" | "runbindable" => {
                    if let Some(p) = propagation(option) {
                        parsed.propagation.push(p);
                    }
                    continue;
                }
                // containerd's extension for tmpfs (copy the image's content up); nothing to do here.
                "tmpcopyup" => continue,
                _ => {
                    parsed.data.push(option.clone());
                    continue;
                }
            };
            parsed.flags.insert(set);
            parsed.flags.remove(clear);
        }
        parsed
    }

    fn data(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

/// The propagation flags named by `rootfsPropagation` or a mount option.
pub fn propagation(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

const NONE: Option<&str> = None;

/// The cgroup hierarchies to mount for the spec's `cgroup` mounts, if it has any. Read by the
/// parent: inside a new cgroup namespace /proc/self/mountinfo no longer shows them as roots.
pub fn cgroup_hierarchies(mounts: &[Mount]) -> Result<Vec<Hierarchy>> {
    let wanted = mounts
        .iter()
        .any(|m| matches!(m.typ().as_deref(), Some("cgroup" | "cgroup2")));
    Ok(if wanted {
        Cgroup::hierarchies()?
    } else {
        Vec::new()
    })
}

/// Everything before `pivot_root`: runs in the container's new mount namespace, so nothing here
/// is seen by the host.
pub fn prepare_rootfs(
    rootfs: &Path,
    bundle: &Path,
    mounts: &[Mount],
    linux: &Linux,
    cgroups: &[Hierarchy],
) -> Result<()> {
    // Slave, not private, by default (as runc): host mounts still reach the container, but nothing
    // the container mounts travels back.
    let root_propagation = match linux.rootfs_propagation().as_deref() {
        Some(name) if !name.is_empty() => propagation(name)
            .ok_or_else(|| Error::Child(format!("unknown rootfsPropagation {name:?}")))?,
        _ => MsFlags::MS_SLAVE | MsFlags::MS_REC,
    };
    mount(NONE, "/", NONE, root_propagation, NONE).context(|| "setting / propagation".into())?;
    // pivot_root needs the new root to be a mount point.
    mount(
        Some(rootfs),
        rootfs,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    )
    .context(|| format!("bind-mounting {} onto itself", rootfs.display()))?;

    let root = Root::open(rootfs)?;
    let mut dev_is_tmpfs = false;
    for m in mounts {
        mount_one(&root, bundle, m, cgroups)?;
        if m.destination() == Path::new("/dev") && m.typ().as_deref() != Some("bind") {
            dev_is_tmpfs = true;
        }
    }
    if dev_is_tmpfs {
        crate::devices::create_default(&root)?;
    }
    crate::devices::create_from_spec(&root, linux.devices().as_deref().unwrap_or_default())?;
    Ok(())
}

fn mount_one(root: &Root, bundle: &Path, m: &Mount, cgroups: &[Hierarchy]) -> Result<()> {
    let dest = m.destination();
    let kind = m.typ().as_deref().unwrap_or("");
    let options = Options::parse(m.options().as_deref().unwrap_or_default());
    let is_bind = kind == "bind" || options.flags.contains(MsFlags::MS_BIND);

    if kind == "cgroup" || kind == "cgroup2" {
        return mount_cgroups(root, dest, &options, cgroups);
    }

    if is_bind {
        let source = m
            .source()
            .as_deref()
            .ok_or_else(|| Error::Child(format!("bind mount {} has no source", dest.display())))?;
        let source = if source.is_absolute() {
            source.to_path_buf()
        } else {
            bundle.join(source)
        };
        let meta = std::fs::metadata(&source)
            .context(|| format!("bind mount source {}", source.display()))?;
        let target = root.resolve_or_create(
            dest,
            if meta.is_dir() {
                Create::Dir
            } else {
                Create::File
            },
        )?;
        let target = target.proc_path();
        let flags = MsFlags::MS_BIND | (options.flags & MsFlags::MS_REC);
        mount(Some(&source), &target, NONE, flags, NONE)
            .context(|| format!("bind-mounting {} at {}", source.display(), dest.display()))?;
        // Bind mounts ignore every other flag until remounted.
        let rest = options.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        let mounted = resolve_mounted(root, dest)?;
        let mounted_path = mounted.proc_path();
        if !rest.is_empty() {
            mount(
                NONE,
                &mounted_path,
                NONE,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | rest,
                NONE,
            )
            .context(|| format!("applying options to bind mount {}", dest.display()))?;
        }
        return set_propagation(&mounted_path, dest, &options);
    }

    let target_node = root.resolve_or_create(dest, Create::Dir)?;
    let target = target_node.proc_path();
    let source: PathBuf = m.source().clone().unwrap_or_else(|| PathBuf::from(kind));
    let data = options.data();
    let result = mount(
        Some(&source),
        &target,
        Some(kind),
        options.flags,
        data.as_deref(),
    );
    match result {
        // Without a private network namespace the kernel refuses a new sysfs; runc falls back to
        // the host's, read-only, and so do we.
        Err(nix::errno::Errno::EPERM) if kind == "sysfs" => {
            mount(
                Some("/sys"),
                &target,
                NONE,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                NONE,
            )
            .context(|| format!("bind-mounting /sys at {}", dest.display()))?;
            mount(
                NONE,
                &target,
                NONE,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | options.flags,
                NONE,
            )
            .context(|| format!("making {} read-only", dest.display()))?;
        }
        other => other.context(|| format!("mounting {kind} at {}", dest.display()))?,
    }
    if options.propagation.is_empty() {
        return Ok(());
    }
    let mounted = resolve_mounted(root, dest)?;
    set_propagation(&mounted.proc_path(), dest, &options)
}

/// A descriptor taken before a mount names the directory underneath it; changing the new mount's
/// flags or propagation needs a fresh lookup that lands on the mount itself.
fn resolve_mounted(root: &Root, dest: &Path) -> Result<crate::beneath::Beneath> {
    root.resolve(dest)?
        .ok_or_else(|| Error::Child(format!("{} vanished after mounting", dest.display())))
}

fn set_propagation(target: &Path, dest: &Path, options: &Options) -> Result<()> {
    for flags in &options.propagation {
        mount(NONE, target, NONE, *flags, NONE)
            .context(|| format!("setting propagation of {}", dest.display()))?;
    }
    Ok(())
}

/// A container's own view of the cgroup filesystem. Inside a cgroup namespace each hierarchy's
/// root is the container's cgroup, so a plain mount shows exactly the container's subtree.
fn mount_cgroups(
    root: &Root,
    dest: &Path,
    options: &Options,
    hierarchies: &[Hierarchy],
) -> Result<()> {
    let flags = options.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
    if let [only] = hierarchies {
        if only.fstype == "cgroup2" {
            let target_node = root.resolve_or_create(dest, Create::Dir)?;
            let target = target_node.proc_path();
            return mount(Some("cgroup2"), &target, Some("cgroup2"), flags, NONE)
                .context(|| format!("mounting cgroup2 at {}", dest.display()));
        }
    }
    let target_node = root.resolve_or_create(dest, Create::Dir)?;
    let target = target_node.proc_path();
    mount(
        Some("tmpfs"),
        &target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )
    .context(|| format!("mounting tmpfs at {}", dest.display()))?;
    for h in hierarchies {
        let Some(name) = h.mountpoint.file_name() else {
            continue;
        };
        let sub = dest.join(name);
        let target_node = root.resolve_or_create(&sub, Create::Dir)?;
        let target = target_node.proc_path();
        let data = (h.fstype == "cgroup").then_some(h.options.as_str());
        mount(
            Some(h.fstype.as_str()),
            &target,
            Some(h.fstype.as_str()),
            flags,
            data,
        )
        .context(|| format!("mounting {} at {}", h.fstype, sub.display()))?;
    }
    if flags.contains(MsFlags::MS_RDONLY) {
        let mounted = resolve_mounted(root, dest)?;
        mount(
            NONE,
            &mounted.proc_path(),
            NONE,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
            NONE,
        )
        .context(|| format!("making {} read-only", dest.display()))?;
    }
    Ok(())
}

/// Make `rootfs` the container's `/` and detach the host's tree from it entirely.
pub fn pivot_into(rootfs: &Path) -> Result<()> {
    let old_root = std::fs::File::open("/").context(|| "opening /".into())?;
    let new_root =
        std::fs::File::open(rootfs).context(|| format!("opening {}", rootfs.display()))?;
    fchdir(&new_root).context(|| format!("entering {}", rootfs.display()))?;
    // pivot_root(".", ".") stacks the old root under the new one, where it can be unmounted
    // without needing a directory for it inside the image.
    pivot_root(".", ".").context(|| format!("pivot_root into {}", rootfs.display()))?;
    fchdir(&old_root).context(|| "entering the old root".into())?;
    // The unmount must not propagate to the host's mounts.
    mount(NONE, ".", NONE, MsFlags::MS_SLAVE | MsFlags::MS_REC, NONE)
        .context(|| "making the old root a slave".into())?;
    umount2(".", MntFlags::MNT_DETACH).context(|| "detaching the old root".into())?;
    chdir("/").context(|| "entering the new root".into())
}

/// What must happen after pivot_root: hidden paths, read-only paths, a read-only root.
pub fn finish_rootfs(linux: &Linux, readonly_root: bool) -> Result<()> {
    if let Some(name) = linux
        .rootfs_propagation()
        .as_deref()
        .filter(|n| !n.is_empty())
    {
        if let Some(flags) = propagation(name) {
            mount(NONE, "/", NONE, flags, NONE).context(|| "setting rootfs propagation".into())?;
        }
    }
    for path in linux.readonly_paths().iter().flatten() {
        make_readonly(Path::new(path))?;
    }
    for path in linux.masked_paths().iter().flatten() {
        mask(Path::new(path))?;
    }
    if readonly_root {
        mount(
            NONE,
            "/",
            NONE,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            NONE,
        )
        .context(|| "making the root filesystem read-only".into())?;
    }
    Ok(())
}

fn make_readonly(path: &Path) -> Result<()> {
    match mount(
        Some(path),
        path,
        NONE,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        NONE,
    ) {
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        other => other.context(|| format!("bind-mounting readonly path {}", path.display()))?,
    }
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_REC
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mount(NONE, path, NONE, flags, NONE).context(|| format!("making {} read-only", path.display()))
}

/// Hide a path: a directory gets an empty read-only tmpfs over it, anything else /dev/null.
fn mask(path: &Path) -> Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).context(|| format!("masking {}", path.display())),
    };
    if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
        )
    } else {
        mount(Some("/dev/null"), path, NONE, MsFlags::MS_BIND, NONE)
    }
    .context(|| format!("masking {}", path.display()))
}
