//! The CRI RuntimeService: runtime identity, health and settings here; each RPC on pods
//! and containers hands over to [`lifecycle`], the usage RPCs to [`stats`].

use std::collections::HashMap;
use std::sync::Arc;

use peapod_cri_proto::v1::{self, runtime_service_server::RuntimeService};
use tonic::{Request, Response, Status};

use crate::cri::{lifecycle, stats};
use crate::daemon::Daemon;
use crate::network::{self, CniStatus};

/// `VersionResponse.version`: the version of the kubelet-runtime API wire
/// format this server speaks, which CRI fixes at 0.1.0.
pub const KUBE_API_VERSION: &str = "0.1.0";
pub const RUNTIME_NAME: &str = "peapod";
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

const RUNTIME_READY: &str = "RuntimeReady";
const NETWORK_READY: &str = "NetworkReady";

pub struct RuntimeApi {
    daemon: Arc<Daemon>,
}

impl RuntimeApi {
    pub fn new(daemon: Arc<Daemon>) -> RuntimeApi {
        RuntimeApi { daemon }
    }

    async fn cni_status(&self) -> Result<CniStatus, Status> {
        let conf_dir = self.daemon.config.cni_conf_dir.clone();
        let bin_dirs = self.daemon.config.cni_bin_dirs.clone();
        tokio::task::spawn_blocking(move || network::check(&conf_dir, &bin_dirs))
            .await
            .map_err(|e| Status::internal(format!("checking the cni configuration: {e}")))
    }

    /// The `info` map of a verbose Status: JSON documents, by topic.
    fn verbose_info(&self, cni: &CniStatus) -> Result<HashMap<String, String>, Status> {
        let settings = self.daemon.runtime_settings();
        let topics = [
            ("config", serde_json::to_value(&self.daemon.config)),
            ("cni", serde_json::to_value(cni)),
            (
                "runtime",
                Ok(serde_json::json!({
                    "name": RUNTIME_NAME,
                    "version": RUNTIME_VERSION,
                    "podCIDR": settings.pod_cidr,
                    "started": chrono::DateTime::<chrono::Utc>::from(self.daemon.started).to_rfc3339(),
                })),
            ),
        ];
        topics
            .into_iter()
            .map(|(topic, value)| {
                value
                    .and_then(|v| serde_json::to_string(&v))
                    .map(|text| (topic.to_string(), text))
                    .map_err(|e| Status::internal(format!("encoding {topic} info: {e}")))
            })
            .collect()
    }
}

/// The answer for RPCs that are not built yet.
fn not_yet<T>(rpc: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{rpc} is not implemented yet"
    )))
}

/// The stream type of streaming RPCs that are not built yet.
type Nothing<T> = tokio_stream::Empty<Result<T, Status>>;

#[tonic::async_trait]
impl RuntimeService for RuntimeApi {
    async fn version(
        &self,
        _request: Request<v1::VersionRequest>,
    ) -> Result<Response<v1::VersionResponse>, Status> {
        Ok(Response::new(v1::VersionResponse {
            version: KUBE_API_VERSION.into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: RUNTIME_VERSION.into(),
            runtime_api_version: peapod_cri_proto::CRI_API_VERSION.into(),
        }))
    }

    async fn status(
        &self,
        request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let cni = self.cni_status().await?;
        let network = v1::RuntimeCondition {
            r#type: NETWORK_READY.into(),
            status: cni.ready,
            reason: if cni.ready {
                String::new()
            } else {
                network::NOT_READY_REASON.into()
            },
            message: cni.message.clone(),
        };
        let runtime = v1::RuntimeCondition {
            r#type: RUNTIME_READY.into(),
            status: true,
            ..Default::default()
        };
        let info = if request.into_inner().verbose {
            self.verbose_info(&cni)?
        } else {
            HashMap::new()
        };
        Ok(Response::new(v1::StatusResponse {
            status: Some(v1::RuntimeStatus {
                conditions: vec![runtime, network],
            }),
            info,
            runtime_handlers: vec![v1::RuntimeHandler {
                name: String::new(),
                features: Some(v1::RuntimeHandlerFeatures::default()),
            }],
            features: Some(v1::RuntimeFeatures::default()),
        }))
    }

    async fn runtime_config(
        &self,
        _request: Request<v1::RuntimeConfigRequest>,
    ) -> Result<Response<v1::RuntimeConfigResponse>, Status> {
        Ok(Response::new(v1::RuntimeConfigResponse {
            linux: Some(v1::LinuxRuntimeConfiguration {
                cgroup_driver: v1::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    async fn update_runtime_config(
        &self,
        request: Request<v1::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<v1::UpdateRuntimeConfigResponse>, Status> {
        let pod_cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        // The kubelet sends this once it knows the node's CIDR; an empty one
        // means "no change".
        if !pod_cidr.is_empty() {
            tracing::info!(%pod_cidr, "pod CIDR updated");
            self.daemon.set_pod_cidr(pod_cidr);
        }
        Ok(Response::new(v1::UpdateRuntimeConfigResponse {}))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<v1::RunPodSandboxRequest>,
    ) -> Result<Response<v1::RunPodSandboxResponse>, Status> {
        lifecycle::run_pod_sandbox(&self.daemon, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<v1::StopPodSandboxRequest>,
    ) -> Result<Response<v1::StopPodSandboxResponse>, Status> {
        lifecycle::stop_pod_sandbox(&self.daemon, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<v1::RemovePodSandboxRequest>,
    ) -> Result<Response<v1::RemovePodSandboxResponse>, Status> {
        lifecycle::remove_pod_sandbox(&self.daemon, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<v1::PodSandboxStatusRequest>,
    ) -> Result<Response<v1::PodSandboxStatusResponse>, Status> {
        lifecycle::pod_sandbox_status(&self.daemon, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<v1::ListPodSandboxRequest>,
    ) -> Result<Response<v1::ListPodSandboxResponse>, Status> {
        lifecycle::list_pod_sandbox(&self.daemon, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_container(
        &self,
        request: Request<v1::CreateContainerRequest>,
    ) -> Result<Response<v1::CreateContainerResponse>, Status> {
        let response = lifecycle::create_container(&self.daemon, request.into_inner()).await?;
        lifecycle::container_created(&self.daemon, &response.container_id).await;
        Ok(Response::new(response))
    }

    async fn start_container(
        &self,
        request: Request<v1::StartContainerRequest>,
    ) -> Result<Response<v1::StartContainerResponse>, Status> {
        let request = request.into_inner();
        let id = request.container_id.clone();
        let response = lifecycle::start_container(&self.daemon, request).await?;
        lifecycle::container_started(self.daemon.clone(), id).await;
        Ok(Response::new(response))
    }

    async fn stop_container(
        &self,
        request: Request<v1::StopContainerRequest>,
    ) -> Result<Response<v1::StopContainerResponse>, Status> {
        lifecycle::stop_container(&self.daemon, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_container(
        &self,
        request: Request<v1::RemoveContainerRequest>,
    ) -> Result<Response<v1::RemoveContainerResponse>, Status> {
        let request = request.into_inner();
        let id = request.container_id.clone();
        let response = lifecycle::remove_container(&self.daemon, request).await?;
        lifecycle::container_deleted(&self.daemon, &id).await;
        Ok(Response::new(response))
    }

    async fn list_containers(
        &self,
        request: Request<v1::ListContainersRequest>,
    ) -> Result<Response<v1::ListContainersResponse>, Status> {
        lifecycle::list_containers(&self.daemon, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn container_status(
        &self,
        request: Request<v1::ContainerStatusRequest>,
    ) -> Result<Response<v1::ContainerStatusResponse>, Status> {
        lifecycle::container_status(&self.daemon, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn update_container_resources(
        &self,
        request: Request<v1::UpdateContainerResourcesRequest>,
    ) -> Result<Response<v1::UpdateContainerResourcesResponse>, Status> {
        lifecycle::update_container_resources(&self.daemon, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn reopen_container_log(
        &self,
        request: Request<v1::ReopenContainerLogRequest>,
    ) -> Result<Response<v1::ReopenContainerLogResponse>, Status> {
        lifecycle::reopen_container_log(&self.daemon, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn exec_sync(
        &self,
        request: Request<v1::ExecSyncRequest>,
    ) -> Result<Response<v1::ExecSyncResponse>, Status> {
        lifecycle::exec_sync(&self.daemon, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn exec(
        &self,
        _request: Request<v1::ExecRequest>,
    ) -> Result<Response<v1::ExecResponse>, Status> {
        not_yet("Exec")
    }

    async fn attach(
        &self,
        _request: Request<v1::AttachRequest>,
    ) -> Result<Response<v1::AttachResponse>, Status> {
        not_yet("Attach")
    }

    async fn port_forward(
        &self,
        _request: Request<v1::PortForwardRequest>,
    ) -> Result<Response<v1::PortForwardResponse>, Status> {
        not_yet("PortForward")
    }

    async fn container_stats(
        &self,
        request: Request<v1::ContainerStatsRequest>,
    ) -> Result<Response<v1::ContainerStatsResponse>, Status> {
        stats::container_stats(&self.daemon, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_container_stats(
        &self,
        request: Request<v1::ListContainerStatsRequest>,
    ) -> Result<Response<v1::ListContainerStatsResponse>, Status> {
        stats::list_container_stats(&self.daemon, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<v1::PodSandboxStatsRequest>,
    ) -> Result<Response<v1::PodSandboxStatsResponse>, Status> {
        stats::pod_sandbox_stats(&self.daemon, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<v1::ListPodSandboxStatsRequest>,
    ) -> Result<Response<v1::ListPodSandboxStatsResponse>, Status> {
        stats::list_pod_sandbox_stats(&self.daemon, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn checkpoint_container(
        &self,
        _request: Request<v1::CheckpointContainerRequest>,
    ) -> Result<Response<v1::CheckpointContainerResponse>, Status> {
        not_yet("CheckpointContainer")
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<v1::ListMetricDescriptorsRequest>,
    ) -> Result<Response<v1::ListMetricDescriptorsResponse>, Status> {
        not_yet("ListMetricDescriptors")
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<v1::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<v1::ListPodSandboxMetricsResponse>, Status> {
        not_yet("ListPodSandboxMetrics")
    }

    async fn update_pod_sandbox_resources(
        &self,
        _request: Request<v1::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<v1::UpdatePodSandboxResourcesResponse>, Status> {
        not_yet("UpdatePodSandboxResources")
    }

    type StreamPodSandboxesStream = Nothing<v1::StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        _request: Request<v1::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        not_yet("StreamPodSandboxes")
    }

    type StreamContainersStream = Nothing<v1::StreamContainersResponse>;

    async fn stream_containers(
        &self,
        _request: Request<v1::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        not_yet("StreamContainers")
    }

    type StreamContainerStatsStream = Nothing<v1::StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        _request: Request<v1::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        not_yet("StreamContainerStats")
    }

    type StreamPodSandboxStatsStream = Nothing<v1::StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        _request: Request<v1::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        not_yet("StreamPodSandboxStats")
    }

    type GetContainerEventsStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<v1::ContainerEventResponse, Status>> + Send>,
    >;

    async fn get_container_events(
        &self,
        _request: Request<v1::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        use tokio_stream::StreamExt;
        // A subscriber that falls too far behind loses events rather than stalling the others.
        let events = tokio_stream::wrappers::BroadcastStream::new(self.daemon.events.subscribe())
            .filter_map(|event| event.ok().map(Ok));
        Ok(Response::new(Box::pin(events)))
    }

    type StreamPodSandboxMetricsStream = Nothing<v1::StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        _request: Request<v1::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        not_yet("StreamPodSandboxMetrics")
    }
}
