//! Containers of the CRI: each one an overlay snapshot of its image, an OCI bundle built by
//! [`crate::containerspec`], and a `peapod-shim` that owns the running process.
//!
//! Layout: `<root>/containers/<id>.json` is the durable record (survives a daemon restart);
//! `<state>/containers/<id>/` holds the bundle (`config.json`, `rootfs/` mount point), the
//! shim's socket and the exit file.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use peapod_cri_proto::v1;
use peapod_rootfs::RootfsStore;
use peapod_runtime::shim_protocol::{base64, ExitInfo};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::containerspec::{self, PodView};
use crate::records::{self, RecordError, Records};
use crate::shim::{self, ShimClient, ShimError, ShimSetup};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("image {0:?} is not present: pull it first")]
    ImageNotFound(String),
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Spec(#[from] containerspec::SpecError),
    #[error(transparent)]
    Image(#[from] peapod_rootfs::Error),
    #[error(transparent)]
    Shim(#[from] ShimError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Record(RecordError),
}

impl From<RecordError> for ContainerError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::NotFound(id) => ContainerError::NotFound(id),
            other => ContainerError::Record(other),
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContainerError {
    let context = context.into();
    move |source| ContainerError::Io { context, source }
}

/// The durable record of a container. The CRI config is kept whole (protobuf, base64) so that
/// ContainerStatus can answer from it after a restart; the fields people look for are spelled out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    /// The image as the user named it, and the image ID it resolved to.
    pub image: String,
    pub image_id: String,
    pub log_path: Option<PathBuf>,
    pub created_at: i64,
    #[serde(default)]
    pub started_at: Option<i64>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    config_pb: String,
}

impl ContainerRecord {
    pub fn config(&self) -> Result<v1::ContainerConfig, ContainerError> {
        let bytes = base64::decode(&self.config_pb)
            .map_err(|e| ContainerError::Invalid(format!("record of {}: {e}", self.id)))?;
        v1::ContainerConfig::decode(bytes.as_slice())
            .map_err(|e| ContainerError::Invalid(format!("record of {}: {e}", self.id)))
    }
}

/// What CreateContainer needs to know about the pod.
pub struct PodContext<'a> {
    pub sandbox_id: &'a str,
    pub view: &'a PodView,
    /// The pod's log_directory; the container's log_path is relative to it.
    pub log_directory: &'a str,
}

/// What peapodd knows of a container's process without asking its shim.
#[derive(Debug, Clone)]
pub enum Known {
    /// Started, and its exit not seen yet (a watcher waits for it).
    Running,
    /// Exited; final.
    Exited(ExitInfo),
}

#[derive(Clone)]
pub struct Containers {
    records: Records<ContainerRecord>,
    /// Kept by the exit watchers, stop and remove, so that listing containers (the kubelet does
    /// every second) need not ask every shim. A container missing here is asked.
    known: Arc<Mutex<HashMap<String, Known>>>,
    state: PathBuf,
    sockets: PathBuf,
    runtime_root: PathBuf,
    shim_binary: PathBuf,
    images: RootfsStore,
}

impl Containers {
    pub fn new(
        root: &Path,
        state: &Path,
        shim_binary: PathBuf,
        images: RootfsStore,
    ) -> Result<Self, ContainerError> {
        let records = Records::open(root.join("containers"))?;
        let state_dir = state.join("containers");
        let sockets = state.join("s");
        for dir in [&state_dir, &sockets] {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        Ok(Containers {
            records,
            known: Arc::default(),
            runtime_root: state.join("runtime"),
            state: state_dir,
            sockets,
            shim_binary,
            images,
        })
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.state.join(id)
    }

    fn known_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        // Every change is one insert or remove: a poisoned map is still whole.
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What is known of the container's process, if anything.
    pub fn known(&self, id: &str) -> Option<Known> {
        self.known_map().get(id).cloned()
    }

    pub fn note(&self, id: &str, known: Known) {
        // A watcher may learn of the exit only after the container was removed.
        if !self.records.contains(id) {
            return;
        }
        let mut map = self.known_map();
        // An exit is final: a late `Running` (a watcher armed after a stop) must not undo it.
        if matches!(known, Known::Running) && matches!(map.get(id), Some(Known::Exited(_))) {
            return;
        }
        map.insert(id.to_string(), known);
    }

    /// Back to asking the shim.
    pub fn forget(&self, id: &str) {
        self.known_map().remove(id);
    }

    /// An exit the shim reported, if it could tell one (else the shim is asked next time).
    pub fn note_exit(&self, id: &str, exit: Option<ExitInfo>) {
        match exit {
            Some(exit) => self.note(id, Known::Exited(exit)),
            None => self.forget(id),
        }
    }

    /// Unix socket paths are limited to 108 bytes, too few for a 64-digit id under a deep state
    /// dir; the socket is named by a hash of the id in a short directory instead.
    fn socket_path(&self, id: &str) -> PathBuf {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut hasher);
        self.sockets.join(format!("{:016x}.sock", hasher.finish()))
    }

    async fn save(&self, record: &ContainerRecord) -> Result<(), ContainerError> {
        Ok(self.records.save(&record.id, record).await?)
    }

    pub async fn load(&self, id: &str) -> Result<ContainerRecord, ContainerError> {
        Ok(self.records.load(id).await?)
    }

    pub async fn list(&self) -> Result<Vec<ContainerRecord>, ContainerError> {
        Ok(self.records.list().await?)
    }

    pub fn shim(&self, id: &str) -> ShimClient {
        ShimClient::new(self.socket_path(id))
    }

    pub fn exit_file(&self, id: &str) -> PathBuf {
        self.dir(id).join("exit.json")
    }

    /// Create the container (created, not started). On failure nothing is left behind.
    pub async fn create(
        &self,
        id: &str,
        pod: &PodContext<'_>,
        config: &v1::ContainerConfig,
    ) -> Result<ContainerRecord, ContainerError> {
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(ContainerError::Invalid(
                "the container config names no image".into(),
            ));
        }
        let image = self
            .images
            .image_status(&image_name)
            .await?
            .ok_or_else(|| ContainerError::ImageNotFound(image_name.clone()))?;
        let dir = self.dir(id);
        tokio::fs::create_dir(&dir)
            .await
            .map_err(io(format!("creating {}", dir.display())))?;
        let result = self
            .create_in(id, &dir, pod, config, &image_name, &image)
            .await;
        if result.is_err() {
            // Undo in reverse: the snapshot (unmounts it), then the directory.
            let _ = self.images.remove_snapshot(id).await;
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        result
    }

    async fn create_in(
        &self,
        id: &str,
        dir: &Path,
        pod: &PodContext<'_>,
        config: &v1::ContainerConfig,
        image_name: &str,
        image: &peapod_rootfs::ImageRecord,
    ) -> Result<ContainerRecord, ContainerError> {
        let began = std::time::Instant::now();
        let rootfs = dir.join("rootfs");
        tokio::fs::create_dir(&rootfs)
            .await
            .map_err(io(format!("creating {}", rootfs.display())))?;
        self.images
            .prepare_and_mount_snapshot(id, &image.id.to_string(), false, &rootfs)
            .await?;
        let spec = containerspec::build(&containerspec::Input {
            id,
            config,
            pod: pod.view,
            image: &image.config,
            rootfs: &rootfs,
            min_oom_score_adj: own_oom_score_adj(),
        })?;
        let text =
            serde_json::to_vec_pretty(&spec).map_err(|e| ContainerError::Invalid(e.to_string()))?;
        tokio::fs::write(dir.join("config.json"), text)
            .await
            .map_err(io("writing config.json"))?;

        let log_path = (!pod.log_directory.is_empty() && !config.log_path.is_empty())
            .then(|| Path::new(pod.log_directory).join(&config.log_path));
        let setup = ShimSetup {
            id: id.to_string(),
            bundle: dir.to_path_buf(),
            runtime_root: self.runtime_root.clone(),
            socket: self.socket_path(id),
            exit_file: self.exit_file(id),
            // Without a log path the output still goes somewhere a person can read it.
            log_path: log_path
                .clone()
                .unwrap_or_else(|| dir.join("container.log")),
            stdin: config.stdin,
            // As containerd: with a terminal, the kubelet's attach keeps the stdin open.
            stdin_once: config.stdin_once && !config.tty,
        };
        let bundle_ready = began.elapsed();
        shim::launch(&self.shim_binary, &setup).await?;
        let shim_ready = began.elapsed();

        let meta = config.metadata.clone().unwrap_or_default();
        let record = ContainerRecord {
            id: id.to_string(),
            sandbox_id: pod.sandbox_id.to_string(),
            name: meta.name,
            attempt: meta.attempt,
            image: image_name.to_string(),
            image_id: image.id.to_string(),
            log_path,
            created_at: now_ns(),
            started_at: None,
            labels: config.labels.clone().into_iter().collect(),
            annotations: config.annotations.clone().into_iter().collect(),
            config_pb: base64::encode(&config.encode_to_vec()),
        };
        self.save(&record).await?;
        // Where creating containers spends its time, for whoever looks into latency.
        tracing::debug!(
            container = id,
            bundle = ?bundle_ready,
            shim = ?(shim_ready - bundle_ready),
            record = ?(began.elapsed() - shim_ready),
            "container created"
        );
        Ok(record)
    }

    pub async fn start(&self, id: &str) -> Result<(), ContainerError> {
        let mut record = self.load(id).await?;
        self.shim(id).start().await?;
        record.started_at = Some(now_ns());
        self.save(&record).await
    }

    /// The process template of the container (its spec's), for exec.
    pub async fn process(&self, id: &str) -> Result<oci_spec::runtime::Process, ContainerError> {
        let path = self.dir(id).join("config.json");
        let text = tokio::fs::read(&path)
            .await
            .map_err(io(format!("reading {}", path.display())))?;
        let spec: oci_spec::runtime::Spec = serde_json::from_slice(&text)
            .map_err(|e| ContainerError::Invalid(format!("{}: {e}", path.display())))?;
        spec.process()
            .clone()
            .ok_or_else(|| ContainerError::Invalid(format!("{} has no process", path.display())))
    }

    /// The runtime's view of the container (for stats), if it still exists.
    pub fn runtime_container(&self, id: &str) -> Option<peapod_runtime::Container> {
        peapod_runtime::Container::load(&self.runtime_root, id).ok()
    }

    /// The stop signal (or SIGTERM), then SIGKILL after `timeout`; returns once it has exited.
    pub async fn stop(
        &self,
        id: &str,
        timeout: std::time::Duration,
        signal: &str,
    ) -> Result<(), ContainerError> {
        self.load(id).await?;
        let shim = self.shim(id);
        let state = match shim.state().await {
            Ok(s) => s,
            // No shim: the container is long gone.
            Err(ShimError::Io { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if state.exit.is_some() {
            self.note_exit(id, state.exit);
            return Ok(());
        }
        if !timeout.is_zero() {
            let _ = shim.kill(signal, false).await;
            if let Ok(waited) = tokio::time::timeout(timeout, shim.wait()).await {
                self.note_exit(id, waited.ok().flatten());
                return Ok(());
            }
        }
        let _ = shim.kill("SIGKILL", true).await;
        let exit = shim.wait().await?;
        self.note_exit(id, exit);
        Ok(())
    }

    /// Remove a container (killing it if it still runs): shim, snapshot, files, record.
    pub async fn remove(&self, id: &str) -> Result<(), ContainerError> {
        // An id that cannot be a record names nothing we made: there is nothing to remove, and
        // it must never reach a path.
        if !records::valid_id(id) {
            return Ok(());
        }
        match self.shim(id).delete(true).await {
            Ok(()) | Err(ShimError::Io { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        // A shim that is gone may have left the runtime's state: remove it the runtime's way.
        if let Ok(c) = peapod_runtime::Container::load(&self.runtime_root, id) {
            let _ = tokio::task::spawn_blocking(move || c.delete(true)).await;
        }
        self.images.remove_snapshot(id).await?;
        // The shim removes its socket when it exits; its own log stays beside it until now.
        let _ = tokio::fs::remove_file(self.socket_path(id).with_extension("log")).await;
        let dir = self.dir(id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(format!("removing {}", dir.display()))(e)),
        }
        self.records.remove(id).await?;
        self.forget(id);
        Ok(())
    }
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

fn own_oom_score_adj() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}
