//! Pod sandboxes of the CRI: the records peapodd keeps about them, on top of the
//! [`crate::sandbox`] library that makes their namespaces, network, cgroup and files.
//!
//! `<root>/pods/<id>.json` is the durable record; the sandbox's kernel objects live under
//! `<state>/pods/<id>/`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use peapod_cri_proto::v1;
use peapod_runtime::shim_protocol::base64;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::records::{RecordError, Records};
use crate::sandbox::{
    self, Cni, DnsConfig, PortMapping, Protocol, Sandbox, SandboxError, SandboxSpec,
};

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("{0}")]
    Invalid(String),
    #[error("pod sandbox {0:?} does not exist")]
    NotFound(String),
    #[error("a pod sandbox named {name} (namespace {namespace}, uid {uid}, attempt {attempt}) already exists: {id}")]
    Exists {
        name: String,
        namespace: String,
        uid: String,
        attempt: u32,
        id: String,
    },
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Record(RecordError),
}

impl From<RecordError> for PodError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::NotFound(id) => PodError::NotFound(id),
            other => PodError::Record(other),
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PodError {
    let context = context.into();
    move |source| PodError::Io { context, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    Ready,
    NotReady,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub state: PodState,
    pub created_at: i64,
    pub runtime_handler: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub log_directory: String,
    pub sandbox: Sandbox,
    config_pb: String,
}

impl PodRecord {
    pub fn config(&self) -> Result<v1::PodSandboxConfig, PodError> {
        let bytes = base64::decode(&self.config_pb)
            .map_err(|e| PodError::Invalid(format!("record of {}: {e}", self.id)))?;
        v1::PodSandboxConfig::decode(bytes.as_slice())
            .map_err(|e| PodError::Invalid(format!("record of {}: {e}", self.id)))
    }
}

/// The runtime handlers peapod answers to: its own name, the empty default, and "runc", the
/// name kubelets and RuntimeClasses use for the default handler.
pub const HANDLERS: [&str; 3] = ["", "peapod", "runc"];

pub struct Pods {
    records: Records<PodRecord>,
    pods_dir: PathBuf,
    cni: Cni,
    /// peapod-pod-init, for pods that share a PID namespace.
    pod_init: PathBuf,
    /// Serialises creations, so the name check and the record write cannot interleave.
    create_lock: tokio::sync::Mutex<()>,
    /// Pods being created right now, by name/namespace/uid/attempt: the lock above covers only
    /// the duplicate check and this reservation, so creations themselves (CNI, mounts) run in
    /// parallel.
    creating: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Pods {
    pub fn new(root: &Path, state: &Path, cni: Cni, pod_init: PathBuf) -> Result<Self, PodError> {
        let records = Records::open(root.join("pods"))?;
        let pods_dir = state.join("pods");
        std::fs::create_dir_all(&pods_dir)
            .map_err(io(format!("creating {}", pods_dir.display())))?;
        Ok(Pods {
            records,
            pods_dir,
            cni,
            pod_init,
            create_lock: tokio::sync::Mutex::new(()),
            creating: std::sync::Mutex::new(std::collections::HashSet::new()),
        })
    }

    pub fn cni(&self) -> &Cni {
        &self.cni
    }

    pub async fn run(
        &self,
        config: &v1::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<PodRecord, PodError> {
        if !HANDLERS.contains(&runtime_handler) {
            return Err(PodError::Invalid(format!(
                "unknown runtime handler {runtime_handler:?}; peapod serves {:?}",
                &HANDLERS[1..]
            )));
        }
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| PodError::Invalid("pod sandbox config has no metadata".into()))?;
        for (field, value) in [
            ("name", &meta.name),
            ("namespace", &meta.namespace),
            ("uid", &meta.uid),
        ] {
            if value.is_empty() {
                return Err(PodError::Invalid(format!(
                    "pod sandbox metadata.{field} is empty"
                )));
            }
        }
        let id = new_id()?;
        let key = format!(
            "{}/{}/{}/{}",
            meta.name, meta.namespace, meta.uid, meta.attempt
        );
        {
            let _guard = self.create_lock.lock().await;
            let existing = self.list().await?.into_iter().find(|p| {
                p.name == meta.name
                    && p.namespace == meta.namespace
                    && p.uid == meta.uid
                    && p.attempt == meta.attempt
            });
            let reserved = existing.is_none() && self.reserve(&key);
            if !reserved {
                return Err(PodError::Exists {
                    name: meta.name,
                    namespace: meta.namespace,
                    uid: meta.uid,
                    attempt: meta.attempt,
                    id: existing.map_or_else(|| "(still being created)".to_string(), |p| p.id),
                });
            }
        }
        let _reservation = Reservation { pods: self, key };
        let mut spec = spec_from(config, &id)?;
        if shares_pid_namespace(config) {
            spec.pod_init = Some(self.pod_init.clone());
        }
        let cni = self.cni.clone();
        let pods_dir = self.pods_dir.clone();
        let sandbox = tokio::task::spawn_blocking(move || sandbox::create(&spec, &cni, &pods_dir))
            .await
            .map_err(|e| PodError::Invalid(format!("sandbox creation panicked: {e}")))??;
        let record = PodRecord {
            id,
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            attempt: meta.attempt,
            state: PodState::Ready,
            created_at: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            runtime_handler: runtime_handler.to_string(),
            labels: config.labels.clone().into_iter().collect(),
            annotations: config.annotations.clone().into_iter().collect(),
            log_directory: config.log_directory.clone(),
            sandbox,
            config_pb: base64::encode(&config.encode_to_vec()),
        };
        if let Err(e) = self.save(&record).await {
            let (cni, sandbox) = (self.cni.clone(), record.sandbox.clone());
            let _ = tokio::task::spawn_blocking(move || {
                sandbox::stop(&sandbox, &cni).and_then(|()| sandbox::remove(&sandbox))
            })
            .await;
            return Err(e);
        }
        Ok(record)
    }

    async fn save(&self, record: &PodRecord) -> Result<(), PodError> {
        Ok(self.records.save(&record.id, record).await?)
    }

    pub async fn load(&self, id: &str) -> Result<PodRecord, PodError> {
        Ok(self.records.load(id).await?)
    }

    pub async fn list(&self) -> Result<Vec<PodRecord>, PodError> {
        let mut pods: Vec<PodRecord> = self.records.list().await?;
        pods.sort_by_key(|p| p.created_at);
        Ok(pods)
    }

    /// Tear down the pod's network (its containers must be stopped by the caller first);
    /// idempotent.
    pub async fn stop(&self, id: &str) -> Result<PodRecord, PodError> {
        let mut record = self.load(id).await?;
        let (cni, sandbox) = (self.cni.clone(), record.sandbox.clone());
        tokio::task::spawn_blocking(move || sandbox::stop(&sandbox, &cni))
            .await
            .map_err(|e| PodError::Invalid(format!("sandbox stop panicked: {e}")))??;
        if record.state != PodState::NotReady {
            record.state = PodState::NotReady;
            self.save(&record).await?;
        }
        Ok(record)
    }

    /// At start-up: asks the CNI plugins whether each ready pod's network is still as ADD
    /// left it (CNI CHECK). A pod that fails is marked not ready, so the kubelet makes it
    /// anew, instead of running containers in a network that no longer works.
    pub async fn check_networks(&self) {
        let Ok(pods) = self.list().await else {
            return;
        };
        for pod in pods {
            if pod.state != PodState::Ready || pod.sandbox.netns.is_none() {
                continue;
            }
            let (cni, id) = (self.cni.clone(), pod.id.clone());
            let checked = tokio::task::spawn_blocking(move || cni.check(&id)).await;
            let Ok(Err(e)) = checked else {
                continue;
            };
            tracing::warn!(pod = %pod.id, error = %e, "the pod's network failed CNI CHECK; marking it not ready");
            // Read again: the kubelet may have stopped or removed the pod meanwhile, and a
            // removed pod must not come back through this write.
            let Ok(mut pod) = self.load(&pod.id).await else {
                continue;
            };
            pod.state = PodState::NotReady;
            if let Err(e) = self.save(&pod).await {
                tracing::warn!(pod = %pod.id, error = %e, "saving the pod's state");
            }
        }
    }

    /// Remove everything of the pod; a pod that does not exist is already removed.
    pub async fn remove(&self, id: &str) -> Result<(), PodError> {
        let record = match self.stop(id).await {
            Ok(r) => r,
            Err(PodError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let sandbox = record.sandbox.clone();
        tokio::task::spawn_blocking(move || sandbox::remove(&sandbox))
            .await
            .map_err(|e| PodError::Invalid(format!("sandbox removal panicked: {e}")))??;
        Ok(self.records.remove(id).await?)
    }
}

impl Pods {
    fn reserve(&self, key: &str) -> bool {
        match self.creating.lock() {
            Ok(mut set) => set.insert(key.to_string()),
            Err(poisoned) => poisoned.into_inner().insert(key.to_string()),
        }
    }
}

/// Frees a name reserved for a creation when the creation ends, however it ends.
struct Reservation<'a> {
    pods: &'a Pods,
    key: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut set = match self.pods.creating.lock() {
            Ok(set) => set,
            Err(poisoned) => poisoned.into_inner(),
        };
        set.remove(&self.key);
    }
}

/// Whether the pod asks for one PID namespace for all its containers. POD is the protobuf
/// default, so a config that says nothing shares one, as with containerd and CRI-O (the
/// kubelet always says: CONTAINER unless the pod sets `shareProcessNamespace`).
pub fn shares_pid_namespace(config: &v1::PodSandboxConfig) -> bool {
    let pid = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .map_or(v1::NamespaceMode::Pod as i32, |n| n.pid);
    pid == v1::NamespaceMode::Pod as i32
}

/// What the sandbox library needs, from the CRI's PodSandboxConfig.
pub fn spec_from(config: &v1::PodSandboxConfig, id: &str) -> Result<SandboxSpec, PodError> {
    let meta = config.metadata.clone().unwrap_or_default();
    let linux = config.linux.clone().unwrap_or_default();
    let security = linux.security_context.clone().unwrap_or_default();
    let ns = security.namespace_options.unwrap_or_default();
    let port_mappings = config
        .port_mappings
        .iter()
        .map(|p| {
            let port = |n: i32, what: &str| {
                u16::try_from(n)
                    .map_err(|_| PodError::Invalid(format!("{what} {n} is not a port number")))
            };
            Ok(PortMapping {
                protocol: match v1::Protocol::try_from(p.protocol) {
                    Ok(v1::Protocol::Udp) => Protocol::Udp,
                    Ok(v1::Protocol::Sctp) => Protocol::Sctp,
                    _ => Protocol::Tcp,
                },
                container_port: port(p.container_port, "container_port")?,
                host_port: port(p.host_port, "host_port")?,
                host_ip: p.host_ip.clone(),
            })
        })
        .collect::<Result<Vec<_>, PodError>>()?;
    Ok(SandboxSpec {
        id: id.to_string(),
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        hostname: config.hostname.clone(),
        dns: config.dns_config.as_ref().map(|d| DnsConfig {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        }),
        port_mappings,
        host_network: ns.network == v1::NamespaceMode::Node as i32,
        host_ipc: ns.ipc == v1::NamespaceMode::Node as i32,
        sysctls: linux.sysctls.into_iter().collect(),
        cgroup_parent: linux.cgroup_parent,
        pod_init: None,
    })
}

/// A 64-hex-digit id, like containerd's and CRI-O's.
pub fn new_id() -> Result<String, PodError> {
    let mut bytes = [0u8; 32];
    let mut urandom = std::fs::File::open("/dev/urandom").map_err(io("opening /dev/urandom"))?;
    std::io::Read::read_exact(&mut urandom, &mut bytes).map_err(io("reading /dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
