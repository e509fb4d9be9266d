//! Serves a tiny RuntimeService on a unix socket and calls it through the
//! generated client, the same plumbing the daemon and the `peapod` CLI use.

use std::path::Path;

use peapod_cri_proto::v1::{
    self,
    runtime_service_client::RuntimeServiceClient,
    runtime_service_server::{RuntimeService, RuntimeServiceServer},
};
use peapod_cri_proto::{connect_unix, CRI_API_VERSION};
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Server;
use tonic::{Code, Request, Response, Status};

/// A runtime that answers Version, RuntimeConfig and GetContainerEvents and
/// reports every other RPC as unimplemented.
struct FakeRuntime;

type Events = tokio_stream::Iter<std::vec::IntoIter<Result<v1::ContainerEventResponse, Status>>>;
type NoItems<T> = tokio_stream::Empty<Result<T, Status>>;

/// Writes the `RuntimeService` impl for [`FakeRuntime`]: the given items
/// verbatim, plus an UNIMPLEMENTED answer for every listed RPC. The whole
/// impl comes out of the macro because `async_trait` must see the expanded
/// methods.
macro_rules! fake_runtime_service {
    (
        answered { $($answered:item)* }
        unary { $($unary:ident($req:ident) -> $resp:ident;)* }
        streams { $($streaming:ident($sreq:ident) -> $stream:ident of $item:ident;)* }
    ) => {
        #[tonic::async_trait]
        impl RuntimeService for FakeRuntime {
            $($answered)*

            $(
                async fn $unary(&self, _: Request<v1::$req>) -> Result<Response<v1::$resp>, Status> {
                    Err(Status::unimplemented(stringify!($unary)))
                }
            )*

            $(
                type $stream = NoItems<v1::$item>;
                async fn $streaming(
                    &self,
                    _: Request<v1::$sreq>,
                ) -> Result<Response<Self::$stream>, Status> {
                    Err(Status::unimplemented(stringify!($streaming)))
                }
            )*
        }
    };
}

fake_runtime_service! {
    answered {
        async fn version(
            &self,
            request: Request<v1::VersionRequest>,
        ) -> Result<Response<v1::VersionResponse>, Status> {
            Ok(Response::new(v1::VersionResponse {
                version: request.into_inner().version,
                runtime_name: "peapod-test".into(),
                runtime_version: "0.0.1".into(),
                runtime_api_version: CRI_API_VERSION.into(),
            }))
        }

        async fn runtime_config(
            &self,
            _: Request<v1::RuntimeConfigRequest>,
        ) -> Result<Response<v1::RuntimeConfigResponse>, Status> {
            Ok(Response::new(v1::RuntimeConfigResponse {
                linux: Some(v1::LinuxRuntimeConfiguration {
                    cgroup_driver: v1::CgroupDriver::Cgroupfs as i32,
                }),
            }))
        }

        type GetContainerEventsStream = Events;

        async fn get_container_events(
            &self,
            _: Request<v1::GetEventsRequest>,
        ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
            let events = [
                v1::ContainerEventType::ContainerCreatedEvent,
                v1::ContainerEventType::ContainerStartedEvent,
            ]
            .into_iter()
            .enumerate()
            .map(|(n, kind)| {
                Ok(v1::ContainerEventResponse {
                    container_id: format!("c{n}"),
                    container_event_type: kind as i32,
                    ..Default::default()
                })
            })
            .collect::<Vec<_>>();
            Ok(Response::new(tokio_stream::iter(events)))
        }
    }
    unary {
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse;
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse;
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse;
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse;
        create_container(CreateContainerRequest) -> CreateContainerResponse;
        start_container(StartContainerRequest) -> StartContainerResponse;
        stop_container(StopContainerRequest) -> StopContainerResponse;
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse;
        list_containers(ListContainersRequest) -> ListContainersResponse;
        container_status(ContainerStatusRequest) -> ContainerStatusResponse;
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse;
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
        exec_sync(ExecSyncRequest) -> ExecSyncResponse;
        exec(ExecRequest) -> ExecResponse;
        attach(AttachRequest) -> AttachResponse;
        port_forward(PortForwardRequest) -> PortForwardResponse;
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse;
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse;
        status(StatusRequest) -> StatusResponse;
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse;
        update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest) -> UpdatePodSandboxResourcesResponse;
    }
    streams {
        stream_pod_sandboxes(StreamPodSandboxesRequest) -> StreamPodSandboxesStream of StreamPodSandboxesResponse;
        stream_containers(StreamContainersRequest) -> StreamContainersStream of StreamContainersResponse;
        stream_container_stats(StreamContainerStatsRequest) -> StreamContainerStatsStream of StreamContainerStatsResponse;
        stream_pod_sandbox_stats(StreamPodSandboxStatsRequest) -> StreamPodSandboxStatsStream of StreamPodSandboxStatsResponse;
        stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest) -> StreamPodSandboxMetricsStream of StreamPodSandboxMetricsResponse;
    }
}

/// A test server task; `shutdown` stops it and surfaces any serve error.
struct TestServer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl TestServer {
    /// Binds before returning, so clients can connect straight away.
    fn start(socket: &Path) -> Self {
        let listener = UnixListener::bind(socket).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            Server::builder()
                .add_service(RuntimeServiceServer::new(FakeRuntime))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    // An Err only means the sender was dropped: stop as well.
                    let _ = stopped.await;
                }),
        );
        TestServer { stop, task }
    }

    async fn shutdown(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn version_over_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("cri.sock");
    let server = TestServer::start(&socket);

    let channel = connect_unix(&socket).await.unwrap();
    let mut client = RuntimeServiceClient::new(channel);
    let version = client
        .version(v1::VersionRequest {
            version: "0.1.0".into(),
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(
        version,
        v1::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "peapod-test".into(),
            runtime_version: "0.0.1".into(),
            runtime_api_version: "v1".into(),
        }
    );

    let unanswered = client
        .checkpoint_container(v1::CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(unanswered.code(), Code::Unimplemented);

    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn container_events_stream_over_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("cri.sock");
    let server = TestServer::start(&socket);

    let mut client = RuntimeServiceClient::new(connect_unix(&socket).await.unwrap());
    let events: Vec<_> = client
        .get_container_events(v1::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner()
        .map(|event| {
            let event = event.unwrap();
            (event.container_id.clone(), event.container_event_type())
        })
        .collect()
        .await;

    assert_eq!(
        events,
        [
            (
                "c0".to_string(),
                v1::ContainerEventType::ContainerCreatedEvent
            ),
            (
                "c1".to_string(),
                v1::ContainerEventType::ContainerStartedEvent
            ),
        ]
    );

    drop(client);
    server.shutdown().await;
}

/// Calls RuntimeConfig by its literal upstream path rather than through the
/// generated client, so a renamed service or method on our side would fail
/// to route here even though our own client and server would still agree.
#[tokio::test]
async fn upstream_method_path_routes_to_generated_server() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("cri.sock");
    let server = TestServer::start(&socket);

    let mut grpc = tonic::client::Grpc::new(connect_unix(&socket).await.unwrap());
    grpc.ready().await.unwrap();
    let response: Response<v1::RuntimeConfigResponse> = grpc
        .unary(
            Request::new(v1::RuntimeConfigRequest {}),
            PathAndQuery::from_static("/runtime.v1.RuntimeService/RuntimeConfig"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap();

    let linux = response.into_inner().linux.unwrap();
    assert_eq!(linux.cgroup_driver(), v1::CgroupDriver::Cgroupfs);

    drop(grpc);
    server.shutdown().await;
}

#[tokio::test]
async fn connecting_to_a_missing_socket_fails() {
    let dir = tempfile::tempdir().unwrap();
    let error = connect_unix(&dir.path().join("absent.sock")).await;
    assert!(error.is_err());
}
