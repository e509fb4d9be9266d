//! The state every CRI service shares: configuration, the image store, and
//! what the kubelet told us at run time. One `Daemon` lives behind an `Arc`
//! for the whole life of peapodd; pods and containers will hang off it too.

use std::fs::File;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};
use peapod_rootfs::{RootfsStore, StoreOptions};

use crate::config::Config;
use crate::containers::Containers;
use crate::pods::Pods;
use crate::sandbox::{Cni, DefaultNetwork};

/// A program peapodd runs next to itself: `$<env>` if set, else `<name>` next to peapodd
/// (where the workspace builds and installs them), else whatever `<name>` is on PATH.
fn companion_binary(name: &str, env: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("creating {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening lock file {path}")]
    LockFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another peapodd is already using root {root} (lock {lock} is held)")]
    RootInUse { root: PathBuf, lock: PathBuf },
    #[error("opening the image store")]
    Images(#[from] peapod_rootfs::Error),
    #[error("opening the pod store")]
    Pods(#[from] crate::pods::PodError),
    #[error("opening the container store")]
    Containers(#[from] crate::containers::ContainerError),
}

/// Settings the kubelet pushes with `UpdateRuntimeConfig`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeSettings {
    /// The node's pod CIDR; CNI configs generated later use it.
    pub pod_cidr: String,
}

pub struct Daemon {
    pub config: Config,
    pub images: RootfsStore,
    pub pods: Pods,
    pub containers: Containers,
    /// The server behind the Exec, Attach and PortForward URLs; set once at start-up (it
    /// needs the daemon behind an `Arc` first).
    pub streaming: std::sync::OnceLock<crate::streaming::Streaming>,
    /// Container lifecycle events for GetContainerEvents subscribers.
    pub events: tokio::sync::broadcast::Sender<peapod_cri_proto::v1::ContainerEventResponse>,
    pub started: SystemTime,
    runtime: RwLock<RuntimeSettings>,
    /// Held (flock) for as long as the daemon lives: two daemons on one root
    /// would corrupt each other's records. The kernel drops it if we die.
    _root_lock: Flock<File>,
}

impl Daemon {
    /// Creates the root and state directories, takes the root lock and opens
    /// the image store.
    pub fn open(config: Config) -> Result<Daemon, DaemonError> {
        for dir in [&config.root, &config.state] {
            std::fs::create_dir_all(dir).map_err(|source| DaemonError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        let lock_path = config.root.join("peapodd.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| DaemonError::LockFile {
                path: lock_path.clone(),
                source,
            })?;
        let root_lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            DaemonError::RootInUse {
                root: config.root.clone(),
                lock: lock_path.clone(),
            }
        })?;

        let options = StoreOptions {
            registries_conf: Some(
                config
                    .registries_conf
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(peapod_rootfs::registries::DEFAULT_PATH)),
            ),
            ..StoreOptions::default()
        };
        let images = RootfsStore::open_with(config.image_root(), options)?;
        let cni = Cni::new(
            config.cni_conf_dir.clone(),
            config.cni_bin_dirs.clone(),
            config.root.join("cni"),
        );
        if config.default_cni_network {
            // A node without any network config gets the default bridge; failing to write it
            // (a read-only /etc, say) leaves NetworkReady false with its reason, not a dead daemon.
            match cni.ensure_default_config(&DefaultNetwork::default()) {
                Ok(true) => {
                    tracing::info!(dir = %config.cni_conf_dir.display(), "wrote the default CNI network")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not write the default CNI network"),
            }
        }
        let pod_init = companion_binary("peapod-pod-init", "PEAPOD_POD_INIT");
        let pods = Pods::new(&config.root, &config.state, cni, pod_init)?;
        let shim = companion_binary("peapod-shim", "PEAPOD_SHIM");
        let containers = Containers::new(&config.root, &config.state, shim, images.clone())?;
        Ok(Daemon {
            config,
            images,
            pods,
            containers,
            streaming: std::sync::OnceLock::new(),
            events: tokio::sync::broadcast::channel(1024).0,
            started: SystemTime::now(),
            runtime: RwLock::new(RuntimeSettings::default()),
            _root_lock: root_lock,
        })
    }

    pub fn runtime_settings(&self) -> RuntimeSettings {
        // A poisoned lock only means a writer panicked mid-assignment of a
        // plain struct; the value is still usable.
        match self.runtime.read() {
            Ok(settings) => settings.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set_pod_cidr(&self, pod_cidr: String) {
        let mut settings = match self.runtime.write() {
            Ok(settings) => settings,
            Err(poisoned) => poisoned.into_inner(),
        };
        settings.pod_cidr = pod_cidr;
    }
}
