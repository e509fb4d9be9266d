//! Pod sandboxes without an infra container.
//!
//! A sandbox is what the containers of a pod share: network, IPC and UTS namespaces kept
//! alive by bind-mounting their nsfs files under the pod's state directory, a pod cgroup,
//! a private /dev/shm and the pod's hosts, resolv.conf and hostname files. No process
//! runs for it, except in pods whose containers share one PID namespace: that namespace
//! needs a PID 1 (see [`pid`]).
//!
//! [`create`] is a sequence of steps, each with its undo: when a step fails, the steps
//! already done are undone in reverse order (see [`rollback`]), so a failed sandbox leaves
//! no namespace mount, veth, IP lease, cgroup or file behind. [`stop`] releases the
//! network (CNI DEL); [`remove`] takes the rest apart. Both are idempotent.
//!
//! The functions are synchronous and may block (they exec CNI plugins): call them from
//! a blocking thread, e.g. tokio's `spawn_blocking`. They never fork the caller; the
//! namespaces are made in a short-lived thread of their own (see [`namespaces`]).
//!
//! Layout of a pod's directory (`<pods_dir>/<id>/`):
//! ```text
//! ns/net  ns/ipc  ns/uts     pinned namespaces (absent when shared with the host)
//! ns/pid                     the pod's PID namespace, only for pods that share one
//! shm/                       tmpfs for the containers' /dev/shm (absent with host IPC)
//! hosts  resolv.conf  hostname
//! ```

mod cgroup;
pub mod cni;
mod files;
mod namespaces;
mod pid;
mod rollback;
mod shm;
mod sysctls;

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use cni::{Cni, CniError, CniResult, DefaultNetwork, PortMapping, Protocol};
pub use peapod_runtime::cgroups::CgroupError;
pub use pid::PodInit;

use rollback::Rollback;

/// What the CRI asks for in RunPodSandbox, reduced to what the sandbox needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// The sandbox id; becomes a directory name, so it must be a plain file name.
    pub id: String,
    /// Pod metadata: passed to CNI plugins as K8S_POD_NAME/NAMESPACE/UID.
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The pod's hostname; empty means the host's. Set in the pod's UTS namespace, and
    /// written to the hostname file (only there for host-network pods).
    pub hostname: String,
    /// DNS settings for resolv.conf; `None` copies the host's /etc/resolv.conf.
    pub dns: Option<DnsConfig>,
    pub port_mappings: Vec<PortMapping>,
    /// Share the host's network and UTS namespaces (no CNI), as containerd and CRI-O do.
    pub host_network: bool,
    /// Share the host's IPC namespace and /dev/shm.
    pub host_ipc: bool,
    /// Namespaced sysctls, in dotted ("net.ipv4.ip_forward") or slashed form.
    pub sysctls: BTreeMap<String, String>,
    /// The pod cgroup (cgroupfs driver), e.g. "/kubepods/besteffort/pod<uid>"; empty
    /// means "/peapod/<id>".
    pub cgroup_parent: String,
    /// Give the pod one PID namespace for all its containers, whose PID 1 is this program
    /// (peapod-pod-init); `None` leaves each container its own.
    pub pod_init: Option<PathBuf>,
}

/// The CRI's DNSConfig.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// A sandbox that exists on the host. The daemon persists it (it is serde-friendly) and
/// hands it back to [`stop`] and [`remove`], also after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The pod's directory; everything below belongs to the sandbox.
    pub dir: PathBuf,
    /// Pinned namespaces for the containers to join; `None` means the host's.
    pub netns: Option<PathBuf>,
    pub ipcns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    /// The pod's shared PID namespace and its init; `None` when the containers have their own.
    #[serde(default)]
    pub pidns: Option<PathBuf>,
    #[serde(default)]
    pub pod_init: Option<PodInit>,
    /// The pod cgroup (cgroupfs path), the parent of the containers' cgroups.
    pub cgroup_path: String,
    /// Whether `create` made the pod cgroup (and `remove` deletes it). A cgroup the
    /// kubelet made beforehand is the kubelet's to delete.
    pub cgroup_owned: bool,
    /// The pod's IPs from CNI, IPv4 first; empty for host-network pods.
    pub ips: Vec<IpAddr>,
    pub hostname: String,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname_file: PathBuf,
    /// The tmpfs to bind-mount on the containers' /dev/shm; `None` means the host's.
    pub shm: Option<PathBuf>,
}

impl Sandbox {
    /// The record [`create`] makes for `spec`, computed without touching the host. A
    /// daemon that crashed during `create` has only the spec; [`stop`] and [`remove`] of
    /// this record clean up whatever part was made. The pod cgroup counts as owned only
    /// when it is peapod's own ("/peapod/<id>"): a cgroup_parent may be the kubelet's.
    pub fn planned(spec: &SandboxSpec, pods_dir: &Path) -> Sandbox {
        let dir = pods_dir.join(&spec.id);
        let ns = dir.join("ns");
        let mut sandbox = Sandbox::from_spec(spec, dir.clone(), spec.hostname.clone());
        sandbox.netns = (!spec.host_network).then(|| ns.join("net"));
        sandbox.ipcns = (!spec.host_ipc).then(|| ns.join("ipc"));
        sandbox.utsns = (!spec.host_network).then(|| ns.join("uts"));
        sandbox.pidns = spec.pod_init.is_some().then(|| pid::pin_path(&ns));
        sandbox.cgroup_owned = spec.cgroup_parent.is_empty();
        sandbox.shm = (!spec.host_ipc).then(|| dir.join("shm"));
        sandbox
    }

    fn from_spec(spec: &SandboxSpec, dir: PathBuf, hostname: String) -> Self {
        Sandbox {
            id: spec.id.clone(),
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            uid: spec.uid.clone(),
            netns: None,
            ipcns: None,
            utsns: None,
            pidns: None,
            pod_init: None,
            cgroup_path: cgroup::path_for(spec),
            cgroup_owned: false,
            ips: Vec::new(),
            hostname,
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
            hostname_file: dir.join("hostname"),
            shm: None,
            dir,
        }
    }
}

/// Why a sandbox operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    #[error("sandbox directory {0} already exists")]
    AlreadyExists(PathBuf),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} {path}: {source}")]
    Sys {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("setting sysctl {key}={value:?}: {source}")]
    Sysctl {
        key: String,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("the pod init {program} {what}")]
    PodInit { program: PathBuf, what: String },
    #[error("the namespace thread panicked")]
    NamespaceThread,
    #[error("pod cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("pod network: {0}")]
    Cni(#[from] CniError),
}

impl SandboxError {
    fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SandboxError + 'a {
        move |source| SandboxError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Creates the sandbox of `spec` under `pods_dir/<id>` (pods_dir is e.g.
/// /run/peapod/pods). On error nothing of it is left behind.
pub fn create(spec: &SandboxSpec, cni: &Cni, pods_dir: &Path) -> Result<Sandbox, SandboxError> {
    validate(spec)?;
    let sysctls = sysctls::plan(&spec.sysctls, spec.host_network, spec.host_ipc)?;
    // A host-network pod keeps the host's UTS namespace; its hostname file still says
    // what the kubelet asked for (the node's name, normally), as with containerd.
    let hostname = if spec.hostname.is_empty() {
        files::host_hostname()?
    } else {
        spec.hostname.clone()
    };
    let dir = pods_dir.join(&spec.id);
    let mut sandbox = Sandbox::from_spec(spec, dir.clone(), hostname);
    let mut rollback = Rollback::new(&spec.id);

    std::fs::create_dir_all(pods_dir).map_err(SandboxError::io("creating", pods_dir))?;
    match std::fs::create_dir(&dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(SandboxError::AlreadyExists(dir));
        }
        result => result.map_err(SandboxError::io("creating", &dir))?,
    }
    rollback.push("remove the pod directory", || files::remove_dir(&dir));

    let pinned = namespaces::create(&namespaces::Request {
        dir: &dir.join("ns"),
        net: !spec.host_network,
        ipc: !spec.host_ipc,
        // For host-network pods the UTS namespace is the host's too (kubelet expects
        // the node's hostname there), as in containerd and CRI-O.
        uts: !spec.host_network,
        hostname: &sandbox.hostname,
        sysctls: &sysctls,
    })?;
    let unpin = pinned.clone();
    rollback.push("unpin the namespaces", move || unpin.unpin());
    sandbox.netns = pinned.net;
    sandbox.ipcns = pinned.ipc;
    sandbox.utsns = pinned.uts;

    sandbox.cgroup_owned = cgroup::create(&sandbox.cgroup_path)?;
    if sandbox.cgroup_owned {
        let path = sandbox.cgroup_path.clone();
        rollback.push("delete the pod cgroup", move || cgroup::delete(&path));
    }

    if let Some(program) = &spec.pod_init {
        let join = pid::Join {
            net: sandbox.netns.as_deref(),
            ipc: sandbox.ipcns.as_deref(),
            uts: sandbox.utsns.as_deref(),
        };
        let pin = pid::pin_path(&dir.join("ns"));
        let init = pid::start(program, &join, &sandbox.cgroup_path, &pin)?;
        sandbox.pidns = Some(pin.clone());
        sandbox.pod_init = Some(init);
        rollback.push("stop the pod init", move || {
            pid::stop(&init);
            namespaces::unpin(&pin)
        });
    }

    if !spec.host_ipc {
        let shm = dir.join("shm");
        shm::mount(&shm)?;
        sandbox.shm = Some(shm.clone());
        rollback.push("unmount /dev/shm", move || shm::unmount(&shm));
    }

    if let Some(netns) = &sandbox.netns {
        let result = cni.add(&cni::PodNetwork {
            container_id: &spec.id,
            netns,
            name: &spec.name,
            namespace: &spec.namespace,
            uid: &spec.uid,
            port_mappings: &spec.port_mappings,
        })?;
        rollback.push("release the pod network", || {
            let deleted = cni.del(&spec.id);
            // Whether or not DEL worked, the sandbox is being given up: nobody will
            // call stop for it, so its cache entry must not outlive it.
            cni.forget(&spec.id);
            Ok(deleted?)
        });
        sandbox.ips = result.pod_ips();
    }

    files::write_etc_files(&sandbox, spec)?;

    rollback.disarm();
    tracing::info!(sandbox = %sandbox.id, ips = ?sandbox.ips, "pod sandbox created");
    Ok(sandbox)
}

/// Ends the pod init, if the pod has one (and with it anything left in the pod's PID
/// namespace), and releases the sandbox's network (CNI DEL, with the configuration and
/// result cached at ADD). Idempotent: a sandbox whose network is already released, or
/// never had one, is fine. The namespaces stay until [`remove`].
pub fn stop(sandbox: &Sandbox, cni: &Cni) -> Result<(), SandboxError> {
    if let Some(init) = &sandbox.pod_init {
        pid::stop(init);
    }
    if sandbox.netns.is_some() {
        cni.del(&sandbox.id)?;
    }
    tracing::info!(sandbox = %sandbox.id, "pod sandbox stopped");
    Ok(())
}

/// Removes what is left of a sandbox: namespace mounts, /dev/shm, the pod cgroup (when
/// [`create`] made it) and the pod directory. Idempotent. Call [`stop`] first, so the
/// network is released while the network namespace still exists.
pub fn remove(sandbox: &Sandbox) -> Result<(), SandboxError> {
    if let Some(shm) = &sandbox.shm {
        shm::unmount(shm)?;
    }
    namespaces::Pinned {
        net: sandbox.netns.clone(),
        ipc: sandbox.ipcns.clone(),
        uts: sandbox.utsns.clone(),
    }
    .unpin()?;
    if let Some(pidns) = &sandbox.pidns {
        namespaces::unpin(pidns)?;
    }
    if sandbox.cgroup_owned {
        cgroup::delete(&sandbox.cgroup_path)?;
    }
    files::remove_dir(&sandbox.dir)?;
    tracing::info!(sandbox = %sandbox.id, "pod sandbox removed");
    Ok(())
}

fn validate(spec: &SandboxSpec) -> Result<(), SandboxError> {
    let invalid = |msg: String| Err(SandboxError::InvalidSpec(msg));
    let id = &spec.id;
    if id.is_empty() || id == "." || id == ".." || id.len() > 128 {
        return invalid(format!("sandbox id {id:?} is empty or not a file name"));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return invalid(format!(
            "sandbox id {id:?} may only contain letters, digits, '-', '_' and '.'"
        ));
    }
    if !spec.hostname.is_empty() && !files::is_valid_hostname(&spec.hostname) {
        return invalid(format!(
            "hostname {:?} is not a valid host name",
            spec.hostname
        ));
    }
    if spec.host_network && !spec.port_mappings.is_empty() {
        // Ports of a host-network pod are the host's already; the kubelet sends the
        // mappings for information only, so they are not an error, just unused.
        tracing::debug!(sandbox = %id, "ignoring port mappings of a host-network pod");
    }
    Ok(())
}
