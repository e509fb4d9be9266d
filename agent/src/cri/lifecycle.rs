//! The pod and container RPCs of the RuntimeService, on top of [`crate::pods`] and
//! [`crate::containers`].
use std::collections::HashMap;
use std::time::Duration;

use peapod_cri_proto::v1;
use peapod_runtime::shim_protocol::ExitInfo;
use tonic::Status;

use crate::containers::{ContainerError, ContainerRecord, Known, PodContext};
use crate::containerspec::PodView;
use crate::cri::errors::missing;
use crate::daemon::Daemon;
use crate::pods::{PodError, PodRecord, PodState};

pub(crate) fn pod_error(e: PodError) -> Status {
    match e {
        PodError::Invalid(_) => Status::invalid_argument(e.to_string()),
        PodError::NotFound(_) => Status::not_found(e.to_string()),
        PodError::Exists { .. } => Status::already_exists(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

pub(crate) fn ctr_error(e: ContainerError) -> Status {
    match e {
        ContainerError::Invalid(_) | ContainerError::Spec(_) => {
            Status::invalid_argument(e.to_string())
        }
        ContainerError::NotFound(_) | ContainerError::ImageNotFound(_) => {
            Status::not_found(e.to_string())
        }
        ContainerError::Image(err) => crate::cri::errors::image_error(err),
        _ => Status::internal(e.to_string()),
    }
}

pub(crate) fn nonempty<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(missing(field))
    } else {
        Ok(value)
    }
}

pub(crate) fn labels_match(
    labels: &std::collections::BTreeMap<String, String>,
    selector: &HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub async fn run_pod_sandbox(
    daemon: &Daemon,
    req: v1::RunPodSandboxRequest,
) -> Result<v1::RunPodSandboxResponse, Status> {
    let config = req.config.ok_or_else(|| missing("config"))?;
    let pod = daemon
        .pods
        .run(&config, &req.runtime_handler)
        .await
        .map_err(pod_error)?;
    tracing::info!(id = %pod.id, name = %pod.name, namespace = %pod.namespace, "pod sandbox ready");
    Ok(v1::RunPodSandboxResponse {
        pod_sandbox_id: pod.id,
    })
}

async fn containers_of(daemon: &Daemon, pod_id: &str) -> Result<Vec<ContainerRecord>, Status> {
    Ok(daemon
        .containers
        .list()
        .await
        .map_err(ctr_error)?
        .into_iter()
        .filter(|c| c.sandbox_id == pod_id)
        .collect())
}

pub async fn stop_pod_sandbox(
    daemon: &Daemon,
    req: v1::StopPodSandboxRequest,
) -> Result<v1::StopPodSandboxResponse, Status> {
    let id = nonempty(&req.pod_sandbox_id, "pod_sandbox_id")?;
    daemon.pods.load(id).await.map_err(pod_error)?;
    // The kubelet has normally stopped them gracefully already; what is left is killed.
    for c in containers_of(daemon, id).await? {
        daemon
            .containers
            .stop(&c.id, Duration::ZERO, "SIGKILL")
            .await
            .map_err(ctr_error)?;
    }
    daemon.pods.stop(id).await.map_err(pod_error)?;
    Ok(v1::StopPodSandboxResponse {})
}

pub async fn remove_pod_sandbox(
    daemon: &Daemon,
    req: v1::RemovePodSandboxRequest,
) -> Result<v1::RemovePodSandboxResponse, Status> {
    let id = nonempty(&req.pod_sandbox_id, "pod_sandbox_id")?;
    for c in containers_of(daemon, id).await? {
        daemon.containers.remove(&c.id).await.map_err(ctr_error)?;
    }
    daemon.pods.remove(id).await.map_err(pod_error)?;
    Ok(v1::RemovePodSandboxResponse {})
}

/// A pod is ready until it is stopped, or until the init of its shared PID namespace is gone
/// (then no container can join it any more; the kubelet answers by making the pod anew, as it
/// does when containerd's pause process dies).
fn pod_state(pod: &PodRecord) -> i32 {
    let init_gone = pod.sandbox.pod_init.is_some_and(|init| !init.is_alive());
    match pod.state {
        PodState::Ready if !init_gone => v1::PodSandboxState::SandboxReady as i32,
        _ => v1::PodSandboxState::SandboxNotready as i32,
    }
}

pub(crate) fn pod_metadata(pod: &PodRecord) -> v1::PodSandboxMetadata {
    v1::PodSandboxMetadata {
        name: pod.name.clone(),
        uid: pod.uid.clone(),
        namespace: pod.namespace.clone(),
        attempt: pod.attempt,
    }
}

pub async fn pod_sandbox_status(
    daemon: &Daemon,
    req: v1::PodSandboxStatusRequest,
) -> Result<v1::PodSandboxStatusResponse, Status> {
    let id = nonempty(&req.pod_sandbox_id, "pod_sandbox_id")?;
    let pod = daemon.pods.load(id).await.map_err(pod_error)?;
    let config = pod.config().map_err(pod_error)?;
    let mut ips = pod.sandbox.ips.iter().map(|ip| ip.to_string());
    let network = v1::PodSandboxNetworkStatus {
        ip: ips.next().unwrap_or_default(),
        additional_ips: ips.map(|ip| v1::PodIp { ip }).collect(),
    };
    let namespace_options = config
        .linux
        .and_then(|l| l.security_context)
        .and_then(|s| s.namespace_options);
    let mut info = HashMap::new();
    if req.verbose {
        info.insert(
            "info".to_string(),
            serde_json::to_string(&pod.sandbox).unwrap_or_default(),
        );
    }
    Ok(v1::PodSandboxStatusResponse {
        status: Some(v1::PodSandboxStatus {
            id: pod.id.clone(),
            metadata: Some(pod_metadata(&pod)),
            state: pod_state(&pod),
            created_at: pod.created_at,
            network: Some(network),
            linux: Some(v1::LinuxPodSandboxStatus {
                namespaces: Some(v1::Namespace {
                    options: namespace_options,
                }),
            }),
            labels: pod.labels.clone().into_iter().collect(),
            annotations: pod.annotations.clone().into_iter().collect(),
            runtime_handler: pod.runtime_handler.clone(),
        }),
        info,
        ..Default::default()
    })
}

pub async fn list_pod_sandbox(
    daemon: &Daemon,
    req: v1::ListPodSandboxRequest,
) -> Result<v1::ListPodSandboxResponse, Status> {
    let filter = req.filter.unwrap_or_default();
    let items = daemon
        .pods
        .list()
        .await
        .map_err(pod_error)?
        .into_iter()
        .filter(|p| filter.id.is_empty() || p.id.starts_with(&filter.id))
        .filter(|p| {
            filter
                .state
                .as_ref()
                .is_none_or(|s| s.state == pod_state(p))
        })
        .filter(|p| labels_match(&p.labels, &filter.label_selector))
        .map(|p| v1::PodSandbox {
            id: p.id.clone(),
            metadata: Some(pod_metadata(&p)),
            state: pod_state(&p),
            created_at: p.created_at,
            labels: p.labels.clone().into_iter().collect(),
            annotations: p.annotations.clone().into_iter().collect(),
            runtime_handler: p.runtime_handler.clone(),
        })
        .collect();
    Ok(v1::ListPodSandboxResponse { items })
}

pub async fn create_container(
    daemon: &Daemon,
    req: v1::CreateContainerRequest,
) -> Result<v1::CreateContainerResponse, Status> {
    let pod_id = nonempty(&req.pod_sandbox_id, "pod_sandbox_id")?;
    let config = req.config.ok_or_else(|| missing("config"))?;
    let meta = config
        .metadata
        .clone()
        .ok_or_else(|| missing("config.metadata"))?;
    nonempty(&meta.name, "config.metadata.name")?;
    let pod = daemon.pods.load(pod_id).await.map_err(pod_error)?;
    if pod.state != PodState::Ready {
        return Err(Status::failed_precondition(format!(
            "pod sandbox {pod_id} is not ready"
        )));
    }
    if let Some(existing) = containers_of(daemon, pod_id)
        .await?
        .into_iter()
        .find(|c| c.name == meta.name && c.attempt == meta.attempt)
    {
        return Err(Status::already_exists(format!(
            "container {} (attempt {}) already exists in pod {pod_id}: {}",
            meta.name, meta.attempt, existing.id
        )));
    }
    let s = &pod.sandbox;
    let container_ns = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    let pidns = match container_ns {
        Some(ns) if ns.pid == v1::NamespaceMode::Target as i32 => {
            Some(target_pid_namespace(daemon, pod_id, &ns.target_id).await?)
        }
        _ => s.pidns.clone(),
    };
    let view = PodView {
        hostname: s.hostname.clone(),
        netns: s.netns.clone(),
        ipcns: s.ipcns.clone(),
        utsns: s.utsns.clone(),
        pidns,
        etc_hosts: Some(s.hosts.clone()),
        resolv_conf: Some(s.resolv_conf.clone()),
        hostname_file: Some(s.hostname_file.clone()),
        shm: s.shm.clone(),
        cgroup_parent: s.cgroup_path.clone(),
    };
    let id = crate::pods::new_id().map_err(pod_error)?;
    let context = PodContext {
        sandbox_id: pod_id,
        view: &view,
        log_directory: &pod.log_directory,
    };
    let record = daemon
        .containers
        .create(&id, &context, &config)
        .await
        .map_err(ctr_error)?;
    Ok(v1::CreateContainerResponse {
        container_id: record.id,
    })
}

/// The PID namespace of `target_id`, for a container that asks to join it (NamespaceMode
/// TARGET, as ephemeral debug containers do). Like containerd, the target must be a running
/// container of the same pod.
async fn target_pid_namespace(
    daemon: &Daemon,
    pod_id: &str,
    target_id: &str,
) -> Result<std::path::PathBuf, Status> {
    let target = nonempty(target_id, "namespace_options.target_id")?;
    let record = daemon.containers.load(target).await.map_err(ctr_error)?;
    if record.sandbox_id != pod_id {
        return Err(Status::invalid_argument(format!(
            "target container {target} belongs to pod {}, not to {pod_id}",
            record.sandbox_id
        )));
    }
    let running = daemon
        .containers
        .runtime_container(&record.id)
        .filter(|c| matches!(c.status(), Ok(peapod_runtime::Status::Running)));
    match running {
        Some(c) => Ok(format!("/proc/{}/ns/pid", c.pid()).into()),
        None => Err(Status::failed_precondition(format!(
            "target container {target} is not running"
        ))),
    }
}

pub async fn start_container(
    daemon: &Daemon,
    req: v1::StartContainerRequest,
) -> Result<v1::StartContainerResponse, Status> {
    let id = nonempty(&req.container_id, "container_id")?;
    daemon.containers.start(id).await.map_err(ctr_error)?;
    Ok(v1::StartContainerResponse {})
}

fn stop_signal(config: &v1::ContainerConfig) -> String {
    match v1::Signal::try_from(config.stop_signal) {
        Ok(v1::Signal::RuntimeDefault) | Err(_) => "SIGTERM".to_string(),
        Ok(signal) => signal.as_str_name().to_string(),
    }
}

pub async fn stop_container(
    daemon: &Daemon,
    req: v1::StopContainerRequest,
) -> Result<v1::StopContainerResponse, Status> {
    let id = nonempty(&req.container_id, "container_id")?;
    let record = daemon.containers.load(id).await.map_err(ctr_error)?;
    let config = record.config().map_err(ctr_error)?;
    let timeout = Duration::from_secs(req.timeout.max(0) as u64);
    daemon
        .containers
        .stop(id, timeout, &stop_signal(&config))
        .await
        .map_err(ctr_error)?;
    Ok(v1::StopContainerResponse {})
}

pub async fn remove_container(
    daemon: &Daemon,
    req: v1::RemoveContainerRequest,
) -> Result<v1::RemoveContainerResponse, Status> {
    let id = nonempty(&req.container_id, "container_id")?;
    daemon.containers.remove(id).await.map_err(ctr_error)?;
    Ok(v1::RemoveContainerResponse {})
}

/// The container's state as the CRI names it, from the shim or, if the shim is gone, the exit file.
async fn observe(daemon: &Daemon, record: &ContainerRecord) -> (i32, Option<ExitInfo>) {
    match daemon.containers.known(&record.id) {
        Some(Known::Exited(exit)) => {
            return (v1::ContainerState::ContainerExited as i32, Some(exit))
        }
        Some(Known::Running) => return (v1::ContainerState::ContainerRunning as i32, None),
        None => {}
    }
    match daemon.containers.shim(&record.id).state().await {
        Ok(state) => {
            if let Some(exit) = state.exit {
                // Final: the next listing need not ask again.
                daemon
                    .containers
                    .note(&record.id, Known::Exited(exit.clone()));
                return (v1::ContainerState::ContainerExited as i32, Some(exit));
            }
            let running = matches!(
                state.status,
                Some(peapod_runtime::Status::Running | peapod_runtime::Status::Paused)
            );
            let created = record.started_at.is_none() && !running;
            let state = if created {
                v1::ContainerState::ContainerCreated
            } else {
                v1::ContainerState::ContainerRunning
            };
            (state as i32, None)
        }
        Err(_) => match ExitInfo::read(&daemon.containers.exit_file(&record.id)) {
            Ok(Some(exit)) => {
                daemon
                    .containers
                    .note(&record.id, Known::Exited(exit.clone()));
                (v1::ContainerState::ContainerExited as i32, Some(exit))
            }
            _ => (v1::ContainerState::ContainerUnknown as i32, None),
        },
    }
}

fn rfc3339_ns(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or_default()
}

pub async fn container_status(
    daemon: &Daemon,
    req: v1::ContainerStatusRequest,
) -> Result<v1::ContainerStatusResponse, Status> {
    let id = nonempty(&req.container_id, "container_id")?;
    let record = daemon.containers.load(id).await.map_err(ctr_error)?;
    let config = record.config().map_err(ctr_error)?;
    let (state, exit) = observe(daemon, &record).await;
    let (exit_code, finished_at, reason) = match &exit {
        Some(e) if e.oom_killed => (e.exit_code, rfc3339_ns(&e.exited_at), "OOMKilled"),
        Some(e) if e.exit_code == 0 => (0, rfc3339_ns(&e.exited_at), "Completed"),
        Some(e) => (e.exit_code, rfc3339_ns(&e.exited_at), "Error"),
        None => (0, 0, ""),
    };
    let resources = config.linux.as_ref().and_then(|l| l.resources.clone());
    Ok(v1::ContainerStatusResponse {
        status: Some(v1::ContainerStatus {
            id: record.id.clone(),
            metadata: config.metadata.clone(),
            state,
            created_at: record.created_at,
            started_at: record.started_at.unwrap_or_default(),
            finished_at,
            exit_code,
            image: config.image.clone(),
            image_ref: record.image_id.clone(),
            reason: reason.to_string(),
            labels: record.labels.clone().into_iter().collect(),
            annotations: record.annotations.clone().into_iter().collect(),
            mounts: config.mounts.clone(),
            log_path: record
                .log_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            resources: resources.map(|r| v1::ContainerResources {
                linux: Some(r),
                ..Default::default()
            }),
            image_id: record.image_id.clone(),
            stop_signal: config.stop_signal,
            ..Default::default()
        }),
        info: HashMap::new(),
    })
}

pub async fn list_containers(
    daemon: &Daemon,
    req: v1::ListContainersRequest,
) -> Result<v1::ListContainersResponse, Status> {
    let filter = req.filter.unwrap_or_default();
    let records: Vec<ContainerRecord> = daemon
        .containers
        .list()
        .await
        .map_err(ctr_error)?
        .into_iter()
        .filter(|record| {
            (filter.id.is_empty() || record.id.starts_with(&filter.id))
                && (filter.pod_sandbox_id.is_empty()
                    || record.sandbox_id.starts_with(&filter.pod_sandbox_id))
                && labels_match(&record.labels, &filter.label_selector)
        })
        .collect();
    // Every container's state comes from its shim: ask them all at once, not one after the
    // other (the kubelet lists every second).
    let states =
        futures_util::future::join_all(records.iter().map(|record| observe(daemon, record))).await;
    let mut containers = Vec::new();
    for (record, (state, _)) in records.into_iter().zip(states) {
        if filter.state.as_ref().is_some_and(|s| s.state != state) {
            continue;
        }
        let config = record.config().map_err(ctr_error)?;
        containers.push(v1::Container {
            id: record.id.clone(),
            pod_sandbox_id: record.sandbox_id.clone(),
            metadata: config.metadata.clone(),
            image: config.image.clone(),
            image_ref: record.image_id.clone(),
            state,
            created_at: record.created_at,
            labels: record.labels.clone().into_iter().collect(),
            annotations: record.annotations.clone().into_iter().collect(),
            image_id: record.image_id.clone(),
        });
    }
    Ok(v1::ListContainersResponse { containers })
}

pub async fn exec_sync(
    daemon: &Daemon,
    req: v1::ExecSyncRequest,
) -> Result<v1::ExecSyncResponse, Status> {
    let id = nonempty(&req.container_id, "container_id")?;
    if req.cmd.is_empty() {
        return Err(missing("cmd"));
    }
    let mut process = daemon.containers.process(id).await.map_err(ctr_error)?;
    process.set_args(Some(req.cmd.clone()));
    process.set_terminal(Some(false));
    let timeout = (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64));
    let result = daemon
        .containers
        .shim(id)
        .exec(process, timeout, false)
        .await
        .map_err(|e| ctr_error(e.into()))?;
    if result.timed_out {
        return Err(Status::deadline_exceeded(format!(
            "command {:?} timed out after {}s",
            req.cmd, req.timeout
        )));
    }
    Ok(v1::ExecSyncResponse {
        stdout: result.stdout_bytes().unwrap_or_default(),
        stderr: result.stderr_bytes().unwrap_or_default(),
        exit_code: result.exit_code,
    })
}

pub async fn reopen_container_log(
    daemon: &Daemon,
    req: v1::ReopenContainerLogRequest,
) -> Result<v1::ReopenContainerLogResponse, Status> {
    let id = nonempty(&req.container_id, "container_id")?;
    daemon.containers.load(id).await.map_err(ctr_error)?;
    daemon
        .containers
        .shim(id)
        .reopen_log()
        .await
        .map_err(|e| ctr_error(e.into()))?;
    Ok(v1::ReopenContainerLogResponse {})
}

/// Tell GetContainerEvents subscribers; nobody listening is fine.
async fn emit(daemon: &Daemon, container_id: &str, kind: v1::ContainerEventType) {
    if daemon.events.receiver_count() == 0 {
        return;
    }
    let status = container_status(
        daemon,
        v1::ContainerStatusRequest {
            container_id: container_id.to_string(),
            verbose: false,
        },
    )
    .await
    .ok()
    .and_then(|r| r.status);
    let _ = daemon.events.send(v1::ContainerEventResponse {
        container_id: container_id.to_string(),
        container_event_type: kind as i32,
        created_at: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        pod_sandbox_status: None,
        containers_statuses: status.into_iter().collect(),
    });
}

pub async fn container_created(daemon: &Daemon, id: &str) {
    emit(daemon, id, v1::ContainerEventType::ContainerCreatedEvent).await;
}

/// After a start: the started event now, the stopped event when the shim reports the exit.
pub async fn container_started(daemon: std::sync::Arc<Daemon>, id: String) {
    emit(&daemon, &id, v1::ContainerEventType::ContainerStartedEvent).await;
    watch_exit(daemon, id);
}

/// Send the stopped event once the container's shim reports its exit; until then the container
/// is known to run, and after it known to have exited, without asking the shim.
pub fn watch_exit(daemon: std::sync::Arc<Daemon>, id: String) {
    let shim = daemon.containers.shim(&id);
    daemon.containers.note(&id, Known::Running);
    tokio::spawn(async move {
        match shim.wait().await {
            Ok(exit) => {
                daemon.containers.note_exit(&id, exit);
                emit(&daemon, &id, v1::ContainerEventType::ContainerStoppedEvent).await;
            }
            // The shim is gone (killed, or the container removed): ask again next time.
            Err(_) => daemon.containers.forget(&id),
        }
    });
}

/// At start-up: watch again every container that a previous daemon started and that still
/// runs, so its exit is announced to event subscribers of this daemon too.
pub async fn rearm_watchers(daemon: std::sync::Arc<Daemon>) {
    let Ok(records) = daemon.containers.list().await else {
        return;
    };
    for record in records {
        if observe(&daemon, &record).await.0 == v1::ContainerState::ContainerRunning as i32 {
            watch_exit(daemon.clone(), record.id);
        }
    }
}

pub async fn container_deleted(daemon: &Daemon, id: &str) {
    if daemon.events.receiver_count() > 0 {
        let _ = daemon.events.send(v1::ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: v1::ContainerEventType::ContainerDeletedEvent as i32,
            created_at: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            ..Default::default()
        });
    }
}

pub async fn update_container_resources(
    daemon: &Daemon,
    req: v1::UpdateContainerResourcesRequest,
) -> Result<v1::UpdateContainerResourcesResponse, Status> {
    let id = nonempty(&req.container_id, "container_id")?.to_string();
    daemon.containers.load(&id).await.map_err(ctr_error)?;
    let Some(linux) = req.linux else {
        return Ok(v1::UpdateContainerResourcesResponse {});
    };
    let resources: oci_spec::runtime::LinuxResources =
        serde_json::from_value(crate::containerspec::linux_resources(&linux))
            .map_err(|e| Status::invalid_argument(format!("resources: {e}")))?;
    let container = daemon
        .containers
        .runtime_container(&id)
        .ok_or_else(|| Status::failed_precondition(format!("container {id} is not running")))?;
    // Writing cgroup files blocks; it is no clone, so a blocking thread of the daemon may do it.
    tokio::task::spawn_blocking(move || container.update(&resources))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
    Ok(v1::UpdateContainerResourcesResponse {})
}
