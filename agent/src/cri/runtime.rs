//! The CRI RuntimeService: runtime identity, health and settings here; each RPC on pods
//! and containers hands over to [`lifecycle`], the usage RPCs to [`stats`] and [`metrics`],
//! pod resizing to [`podresources`]. The chunked Stream* variants of the list RPCs send what
//! the List* RPCs answer, split into messages of bounded size.

use std::collections::HashMap;
use std::sync::Arc;

use peapod_cri_proto::v1::{self, runtime_service_server::RuntimeService};
use tonic::{Request, Response, Status};

use crate::cri::{lifecycle, metrics, podresources, stats};
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

impl RuntimeApi {
    /// The streaming server, which peapodd starts right after the daemon.
    fn streaming(&self) -> Result<&crate::streaming::Streaming, Status> {
        self.daemon
            .streaming
            .get()
            .ok_or_else(|| Status::unavailable("the streaming server is not running"))
    }
}

/// The most one message of a Stream* RPC carries, encoded: far below the 4 MiB a tonic
/// client accepts by default and the kubelet's 16 MiB, yet thousands of small items.
const STREAM_CHUNK_BYTES: usize = 1 << 20;

/// The answer of a Stream* RPC: its messages, computed up front.
type Chunks<T> = tokio_stream::Iter<std::vec::IntoIter<Result<T, Status>>>;

/// `items` split, in order, into runs whose encoded size stays within `budget`; an item
/// larger than the budget travels alone. No items, no runs (the stream just ends).
fn chunks<T: prost::Message>(items: Vec<T>, budget: usize) -> Vec<Vec<T>> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    let mut run_size = 0;
    for item in items {
        // In a repeated field an item costs a tag byte and a length prefix besides itself.
        let len = item.encoded_len();
        let cost = 1 + prost::length_delimiter_len(len) + len;
        if !run.is_empty() && run_size + cost > budget {
            runs.push(std::mem::take(&mut run));
            run_size = 0;
        }
        run_size += cost;
        run.push(item);
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// The stream of messages `wrap` makes of `items`, chunk by chunk.
fn stream_of<T: prost::Message, M>(
    items: Vec<T>,
    wrap: impl Fn(Vec<T>) -> M,
) -> Response<Chunks<M>> {
    let messages: Vec<_> = chunks(items, STREAM_CHUNK_BYTES)
        .into_iter()
        .map(|run| Ok(wrap(run)))
        .collect();
    Response::new(tokio_stream::iter(messages))
}

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
        request: Request<v1::ExecRequest>,
    ) -> Result<Response<v1::ExecResponse>, Status> {
        self.streaming()?
            .exec(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn attach(
        &self,
        request: Request<v1::AttachRequest>,
    ) -> Result<Response<v1::AttachResponse>, Status> {
        self.streaming()?
            .attach(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn port_forward(
        &self,
        request: Request<v1::PortForwardRequest>,
    ) -> Result<Response<v1::PortForwardResponse>, Status> {
        self.streaming()?
            .port_forward(request.into_inner())
            .await
            .map(Response::new)
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
        // The kubelet reads UNIMPLEMENTED as "this runtime cannot checkpoint", as it does from
        // runtimes without CRIU.
        Err(Status::unimplemented(
            "CheckpointContainer is not supported: peapod has no checkpoint/restore (CRIU) support",
        ))
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<v1::ListMetricDescriptorsRequest>,
    ) -> Result<Response<v1::ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(v1::ListMetricDescriptorsResponse {
            descriptors: metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<v1::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<v1::ListPodSandboxMetricsResponse>, Status> {
        let pod_metrics = metrics::list_pod_sandbox_metrics(&self.daemon).await?;
        Ok(Response::new(v1::ListPodSandboxMetricsResponse {
            pod_metrics,
        }))
    }

    async fn update_pod_sandbox_resources(
        &self,
        request: Request<v1::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<v1::UpdatePodSandboxResourcesResponse>, Status> {
        podresources::update_pod_sandbox_resources(&self.daemon, request.into_inner())
            .await
            .map(Response::new)
    }

    type StreamPodSandboxesStream = Chunks<v1::StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(
        &self,
        request: Request<v1::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        let list = v1::ListPodSandboxRequest {
            filter: request.into_inner().filter,
        };
        let items = lifecycle::list_pod_sandbox(&self.daemon, list).await?.items;
        Ok(stream_of(items, |pod_sandboxes| {
            v1::StreamPodSandboxesResponse { pod_sandboxes }
        }))
    }

    type StreamContainersStream = Chunks<v1::StreamContainersResponse>;

    async fn stream_containers(
        &self,
        request: Request<v1::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        let list = v1::ListContainersRequest {
            filter: request.into_inner().filter,
        };
        let items = lifecycle::list_containers(&self.daemon, list)
            .await?
            .containers;
        Ok(stream_of(items, |containers| {
            v1::StreamContainersResponse { containers }
        }))
    }

    type StreamContainerStatsStream = Chunks<v1::StreamContainerStatsResponse>;

    async fn stream_container_stats(
        &self,
        request: Request<v1::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        let list = v1::ListContainerStatsRequest {
            filter: request.into_inner().filter,
        };
        let items = stats::list_container_stats(&self.daemon, list).await?.stats;
        Ok(stream_of(items, |container_stats| {
            v1::StreamContainerStatsResponse { container_stats }
        }))
    }

    type StreamPodSandboxStatsStream = Chunks<v1::StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(
        &self,
        request: Request<v1::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        let list = v1::ListPodSandboxStatsRequest {
            filter: request.into_inner().filter,
        };
        let items = stats::list_pod_sandbox_stats(&self.daemon, list)
            .await?
            .stats;
        Ok(stream_of(items, |pod_sandbox_stats| {
            v1::StreamPodSandboxStatsResponse { pod_sandbox_stats }
        }))
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

    type StreamPodSandboxMetricsStream = Chunks<v1::StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(
        &self,
        _request: Request<v1::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        let items = metrics::list_pod_sandbox_metrics(&self.daemon).await?;
        Ok(stream_of(items, |pod_sandbox_metrics| {
            v1::StreamPodSandboxMetricsResponse {
                pod_sandbox_metrics,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(id: &str) -> v1::PodSandbox {
        v1::PodSandbox {
            id: id.to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn chunks_keep_order_and_stay_within_the_budget() {
        let items: Vec<_> = (0..100).map(|n| pod(&format!("pod-{n:03}"))).collect();
        // pod-NNN encodes to 9 bytes, 11 in the list: 5 of them fit into 60 bytes.
        let runs = chunks(items.clone(), 60);
        assert_eq!(runs.len(), 20);
        assert!(runs.iter().all(|r| r.len() == 5));
        assert_eq!(runs.concat(), items);
        for run in &runs {
            let message = v1::StreamPodSandboxesResponse {
                pod_sandboxes: run.clone(),
            };
            assert!(prost::Message::encoded_len(&message) <= 60);
        }
    }

    #[test]
    fn an_oversized_item_travels_alone_and_nothing_sends_nothing() {
        let big = pod(&"x".repeat(100));
        let runs = chunks(vec![pod("a"), big.clone(), pod("b")], 50);
        assert_eq!(runs, vec![vec![pod("a")], vec![big], vec![pod("b")]]);
        assert!(chunks(Vec::<v1::PodSandbox>::new(), 50).is_empty());
    }
}
