//! Which namespaces a container gets: new ones are created by `clone(2)`, existing ones (a pod's
//! network namespace, say) are joined with `setns(2)` through a file descriptor opened up front so
//! that a bad path fails before anything has been created.
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::sched::{setns, CloneFlags};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use crate::error::{Context, Error, Result};

pub fn clone_flag(kind: LinuxNamespaceType) -> CloneFlags {
    match kind {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The name of the namespace's file under /proc/PID/ns.
pub fn proc_name(kind: LinuxNamespaceType) -> &'static str {
    match kind {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// A namespace to enter, already opened.
#[derive(Debug)]
pub struct Joined {
    pub kind: LinuxNamespaceType,
    pub file: File,
}

impl Joined {
    pub fn open(kind: LinuxNamespaceType, path: &Path) -> Result<Self> {
        let err = |reason: String| Error::Namespace {
            kind: proc_name(kind).into(),
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(|e| err(e.to_string()))?;
        // NS_GET_NSTYPE tells what kind of namespace a file is, so a wrong path (a regular file, or
        // a net namespace given as ipc) is refused here rather than half-way through creation.
        // SAFETY: the ioctl takes no argument and only reads the descriptor's inode.
        let actual = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&file), NS_GET_NSTYPE) };
        if actual < 0 {
            return Err(err("not a namespace file".into()));
        }
        if actual != clone_flag(kind).bits() {
            return Err(err(format!("is not a {} namespace", proc_name(kind))));
        }
        Ok(Joined { kind, file })
    }

    pub fn enter(&self) -> Result<()> {
        setns(self.file.as_fd(), clone_flag(self.kind))
            .context(|| format!("joining the {} namespace", proc_name(self.kind)))
    }
}

const NS_GET_NSTYPE: libc::c_ulong = 0xb703; // _IO(0xb7, 0x3)

/// The namespace plan of a container.
#[derive(Debug)]
pub struct Plan {
    /// Namespaces `clone(2)` creates. A new cgroup namespace is not among them: it is unshared by
    /// the child only after it has been placed in its cgroup, so that cgroup becomes its root.
    pub clone_flags: CloneFlags,
    pub new_cgroup_ns: bool,
    /// A PID namespace to join: entered by the parent, since setns(CLONE_NEWPID) only affects
    /// children created afterwards.
    pub join_pid: Option<Joined>,
    /// Other namespaces to join, entered by the child; the mount namespace comes last.
    pub join: Vec<Joined>,
}

impl Plan {
    pub fn new(namespaces: &[LinuxNamespace]) -> Result<Self> {
        let mut plan = Plan {
            clone_flags: CloneFlags::empty(),
            new_cgroup_ns: false,
            join_pid: None,
            join: Vec::new(),
        };
        for ns in namespaces {
            match ns.path() {
                Some(path) if !path.as_os_str().is_empty() => {
                    let joined = Joined::open(ns.typ(), path)?;
                    if ns.typ() == LinuxNamespaceType::Pid {
                        plan.join_pid = Some(joined);
                    } else {
                        plan.join.push(joined);
                    }
                }
                _ if ns.typ() == LinuxNamespaceType::Cgroup => plan.new_cgroup_ns = true,
                _ => plan.clone_flags |= clone_flag(ns.typ()),
            }
        }
        plan.join
            .sort_by_key(|j| j.kind == LinuxNamespaceType::Mount);
        Ok(plan)
    }

    pub fn creates(&self, kind: LinuxNamespaceType) -> bool {
        if kind == LinuxNamespaceType::Cgroup {
            return self.new_cgroup_ns;
        }
        self.clone_flags.contains(clone_flag(kind))
    }

    pub fn joins(&self, kind: LinuxNamespaceType) -> bool {
        self.join.iter().any(|j| j.kind == kind)
            || (kind == LinuxNamespaceType::Pid && self.join_pid.is_some())
    }
}
