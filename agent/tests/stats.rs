//! Usage figures and the newer RuntimeService RPCs through peapodd's socket, for real: a pod's
//! network counters, cAdvisor-style metrics, resizing the pod cgroup, and the chunked Stream*
//! variants of the list RPCs.
mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use peapod_cri_proto::v1;
use tonic::transport::Channel;
use tonic::Code;

type Runtime = v1::runtime_service_client::RuntimeServiceClient<Channel>;

fn pod_config(name: &str, labels: &[(&str, &str)], host_network: bool) -> v1::PodSandboxConfig {
    let network = if host_network {
        v1::NamespaceMode::Node
    } else {
        v1::NamespaceMode::Pod
    };
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
                    network: network as i32,
                    pid: v1::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A daemon with the busybox test image pulled.
async fn daemon_with_image(
    dirs: &DaemonDirs,
    registry: &Registry,
    flags: &[(&str, PathBuf)],
) -> (Peapodd, String) {
    let image = registry.push("busybox", "test/busybox", "1");
    let daemon = Peapodd::start_with(dirs, flags);
    daemon.pull(&image).await;
    (daemon, image)
}

async fn run_pod(rt: &mut Runtime, config: &v1::PodSandboxConfig) -> String {
    rt.run_pod_sandbox(v1::RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    })
    .await
    .unwrap()
    .into_inner()
    .pod_sandbox_id
}

async fn create_container(
    rt: &mut Runtime,
    pod_id: &str,
    pod: &v1::PodSandboxConfig,
    name: &str,
    image: &str,
    command: &[&str],
) -> String {
    let config = v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(v1::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    rt.create_container(v1::CreateContainerRequest {
        pod_sandbox_id: pod_id.into(),
        config: Some(config),
        sandbox_config: Some(pod.clone()),
    })
    .await
    .unwrap()
    .into_inner()
    .container_id
}

/// Runs `body`, then removes every pod of the daemon (their namespaces, veths, cgroups and
/// containers), also when `body` panicked.
async fn with_cleanup<F>(rt: Runtime, body: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let result = tokio::spawn(body).await;
    let mut rt = rt;
    if let Ok(pods) = rt
        .list_pod_sandbox(v1::ListPodSandboxRequest::default())
        .await
    {
        for pod in pods.into_inner().items {
            let _ = rt
                .remove_pod_sandbox(v1::RemovePodSandboxRequest {
                    pod_sandbox_id: pod.id,
                })
                .await;
        }
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn label(m: &v1::Metric, descriptors: &[v1::MetricDescriptor], key: &str) -> String {
    let d = descriptors.iter().find(|d| d.name == m.name).unwrap();
    let i = d.label_keys.iter().position(|k| k == key).unwrap();
    m.label_values[i].clone()
}

fn value(m: &v1::Metric) -> u64 {
    m.value.as_ref().unwrap().value
}

#[tokio::test(flavor = "multi_thread")]
async fn network_stats_metrics_and_pod_resizing() {
    let dirs = DaemonDirs::new();
    let _network = PrivateNetwork::new(dirs.dir.path(), 41);
    let registry = Registry::start();
    let (daemon, image) = daemon_with_image(
        &dirs,
        &registry,
        &[("--cni-bin-dir", "/usr/lib/cni".into())],
    )
    .await;
    let rt = daemon.runtime().await;
    with_cleanup(rt.clone(), network_pod_checks(rt, image)).await;
}

async fn network_pod_checks(mut rt: Runtime, image: String) {
    let config = pod_config("net-0", &[], false);
    let pod_id = run_pod(&mut rt, &config).await;
    let ctr = create_container(
        &mut rt,
        &pod_id,
        &config,
        "sleeper",
        &image,
        &["sleep", "3600"],
    )
    .await;
    rt.start_container(v1::StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .unwrap();
    let status = rt
        .pod_sandbox_status(v1::PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let ip = status.status.unwrap().network.unwrap().ip;
    assert!(ip.starts_with("10.198.41."), "pod IP {ip}");
    let sandbox: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    let cgroup_path = sandbox["cgroup_path"].as_str().unwrap().to_string();

    // Traffic on the pod's eth0: our SYN comes in, the pod's RST (nothing listens) goes out.
    let addr = SocketAddr::new(ip.parse().unwrap(), 9);
    let refused = TcpStream::connect_timeout(&addr, Duration::from_secs(10));
    assert!(refused.is_err(), "nothing listens on port 9 of the pod");

    let stats = rt
        .pod_sandbox_stats(v1::PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let network = stats.linux.unwrap().network.expect("network stats");
    assert!(network.timestamp > 0);
    let eth0 = network.default_interface.unwrap();
    assert_eq!(eth0.name, "eth0");
    assert!(eth0.rx_bytes.unwrap().value > 0, "{eth0:?}");
    assert!(eth0.tx_bytes.unwrap().value > 0, "{eth0:?}");
    assert!(
        network
            .interfaces
            .iter()
            .all(|i| i.name != "lo" && i.name != "eth0"),
        "{:?}",
        network.interfaces
    );

    // The same through the metrics RPCs, labelled as cAdvisor labels them.
    let descriptors = rt
        .list_metric_descriptors(v1::ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    let names: BTreeSet<_> = descriptors.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names.len(),
        descriptors.len(),
        "descriptor names are unique"
    );
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_usage_bytes",
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
        "container_start_time_seconds",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    let all = rt
        .list_pod_sandbox_metrics(v1::ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    let pod = all.iter().find(|p| p.pod_sandbox_id == pod_id).unwrap();
    for m in pod
        .metrics
        .iter()
        .chain(pod.container_metrics.iter().flat_map(|c| &c.metrics))
    {
        let d = descriptors
            .iter()
            .find(|d| d.name == m.name)
            .expect("a described metric");
        assert_eq!(d.label_keys.len(), m.label_values.len(), "{}", m.name);
    }
    let rx = pod
        .metrics
        .iter()
        .find(|m| m.name == "container_network_receive_bytes_total")
        .unwrap();
    assert_eq!(label(rx, &descriptors, "interface"), "eth0");
    assert_eq!(label(rx, &descriptors, "id"), pod_id);
    assert_eq!(rx.metric_type, v1::MetricType::Counter as i32);
    assert!(value(rx) >= eth0.rx_bytes.unwrap().value);
    let container = pod
        .container_metrics
        .iter()
        .find(|c| c.container_id == ctr)
        .unwrap();
    let metric = |name: &str| {
        container
            .metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .clone()
    };
    let cpu = metric("container_cpu_usage_seconds_total");
    assert_eq!(cpu.metric_type, v1::MetricType::Counter as i32);
    assert_eq!(label(&cpu, &descriptors, "cpu"), "total");
    assert_eq!(label(&cpu, &descriptors, "id"), ctr);
    let working_set = metric("container_memory_working_set_bytes");
    assert_eq!(working_set.metric_type, v1::MetricType::Gauge as i32);
    assert!(value(&working_set) > 0);
    assert!(value(&metric("container_processes")) >= 1);
    assert!(value(&metric("container_start_time_seconds")) > 1_700_000_000);

    // Streamed, the metrics are the same pods.
    let mut stream = rt
        .stream_pod_sandbox_metrics(v1::StreamPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        streamed.extend(
            message
                .pod_sandbox_metrics
                .into_iter()
                .map(|p| p.pod_sandbox_id),
        );
    }
    assert_eq!(streamed, vec![pod_id.clone()]);

    // Resizing: the pod cgroup gets the containers' sum plus the overhead.
    rt.update_pod_sandbox_resources(v1::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: pod_id.clone(),
        resources: Some(v1::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            ..Default::default()
        }),
        overhead: Some(v1::LinuxContainerResources {
            memory_limit_in_bytes: 16 << 20,
            cpu_quota: 10_000,
            cpu_period: 100_000,
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let (memory, quota) = pod_cgroup_limits(&cgroup_path);
    assert_eq!(memory, (80u64 << 20).to_string());
    assert_eq!(quota, "60000");
}

/// The memory limit and CPU quota of cgroup `path`, as the kernel shows them.
fn pod_cgroup_limits(path: &str) -> (String, String) {
    let read =
        |file: String| std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let memory = read(format!("/sys/fs/cgroup{path}/memory.max"));
        let cpu = read(format!("/sys/fs/cgroup{path}/cpu.max"));
        let quota = cpu.split_whitespace().next().unwrap_or_default();
        (memory.trim().to_string(), quota.to_string())
    } else {
        let memory = read(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
        let quota = read(format!("/sys/fs/cgroup/cpu{path}/cpu.cfs_quota_us"));
        (memory.trim().to_string(), quota.trim().to_string())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_match_lists_and_host_network_pods_have_no_network_stats() {
    let dirs = DaemonDirs::new();
    let registry = Registry::start();
    let (daemon, image) = daemon_with_image(&dirs, &registry, &[]).await;
    let rt = daemon.runtime().await;
    with_cleanup(rt.clone(), host_network_checks(rt, image)).await;
}

async fn stream_pod_ids(
    rt: &mut Runtime,
    filter: Option<v1::PodSandboxFilter>,
) -> (Vec<String>, Vec<String>) {
    let listed = rt
        .list_pod_sandbox(v1::ListPodSandboxRequest {
            filter: filter.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect();
    let mut stream = rt
        .stream_pod_sandboxes(v1::StreamPodSandboxesRequest { filter })
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        streamed.extend(message.pod_sandboxes.into_iter().map(|p| p.id));
    }
    (listed, streamed)
}

async fn stream_container_ids(
    rt: &mut Runtime,
    filter: Option<v1::ContainerFilter>,
) -> (Vec<String>, Vec<String>) {
    let listed = rt
        .list_containers(v1::ListContainersRequest {
            filter: filter.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect();
    let mut stream = rt
        .stream_containers(v1::StreamContainersRequest { filter })
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        streamed.extend(message.containers.into_iter().map(|c| c.id));
    }
    (listed, streamed)
}

async fn host_network_checks(mut rt: Runtime, image: String) {
    let mut pods = HashMap::new();
    for (name, group) in [("alpha", "a"), ("beta", "a"), ("gamma", "b")] {
        let config = pod_config(name, &[("group", group)], true);
        let id = run_pod(&mut rt, &config).await;
        pods.insert(name, (id, config));
    }
    let (alpha, alpha_config) = pods["alpha"].clone();
    let (gamma, gamma_config) = pods["gamma"].clone();
    let a1 = create_container(
        &mut rt,
        &alpha,
        &alpha_config,
        "one",
        &image,
        &["sleep", "3600"],
    )
    .await;
    let a2 = create_container(
        &mut rt,
        &alpha,
        &alpha_config,
        "two",
        &image,
        &["sleep", "3600"],
    )
    .await;
    let g1 = create_container(
        &mut rt,
        &gamma,
        &gamma_config,
        "one",
        &image,
        &["sleep", "3600"],
    )
    .await;
    rt.start_container(v1::StartContainerRequest {
        container_id: a1.clone(),
    })
    .await
    .unwrap();

    // A host-network pod's traffic is the node's: no network stats, as with containerd.
    let stats = rt
        .pod_sandbox_stats(v1::PodSandboxStatsRequest {
            pod_sandbox_id: alpha.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(stats.linux.unwrap().network, None);

    // StreamPodSandboxes: the pods ListPodSandbox names, with the same filters.
    let (listed, streamed) = stream_pod_ids(&mut rt, None).await;
    assert_eq!(listed.len(), 3);
    assert_eq!(streamed, listed);
    let by_group = |group: &str| v1::PodSandboxFilter {
        label_selector: [("group".to_string(), group.to_string())].into(),
        ..Default::default()
    };
    let (listed, streamed) = stream_pod_ids(&mut rt, Some(by_group("a"))).await;
    assert_eq!(
        listed.iter().cloned().collect::<BTreeSet<_>>(),
        [alpha.clone(), pods["beta"].0.clone()].into()
    );
    assert_eq!(streamed, listed);
    let by_id = v1::PodSandboxFilter {
        id: gamma[..12].to_string(),
        ..Default::default()
    };
    assert_eq!(
        stream_pod_ids(&mut rt, Some(by_id)).await.1,
        vec![gamma.clone()]
    );
    let (listed, streamed) = stream_pod_ids(&mut rt, Some(by_group("none"))).await;
    assert!(listed.is_empty() && streamed.is_empty());

    // StreamContainers: likewise.
    let (listed, streamed) = stream_container_ids(&mut rt, None).await;
    assert_eq!(
        listed.iter().cloned().collect::<BTreeSet<_>>(),
        [a1.clone(), a2.clone(), g1.clone()].into()
    );
    assert_eq!(streamed, listed);
    let of_alpha = v1::ContainerFilter {
        pod_sandbox_id: alpha.clone(),
        ..Default::default()
    };
    let (listed, streamed) = stream_container_ids(&mut rt, Some(of_alpha)).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(streamed, listed);
    let running = v1::ContainerFilter {
        state: Some(v1::ContainerStateValue {
            state: v1::ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    };
    assert_eq!(
        stream_container_ids(&mut rt, Some(running)).await.1,
        vec![a1.clone()]
    );

    // The stats streams carry what their lists carry.
    let mut stream = rt
        .stream_pod_sandbox_stats(v1::StreamPodSandboxStatsRequest {
            filter: Some(v1::PodSandboxStatsFilter {
                label_selector: [("group".to_string(), "b".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        streamed.extend(
            message
                .pod_sandbox_stats
                .into_iter()
                .map(|s| s.attributes.unwrap().id),
        );
    }
    assert_eq!(streamed, vec![gamma.clone()]);
    let mut stream = rt
        .stream_container_stats(v1::StreamContainerStatsRequest {
            filter: Some(v1::ContainerStatsFilter {
                pod_sandbox_id: alpha.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut streamed = BTreeSet::new();
    while let Some(message) = stream.message().await.unwrap() {
        streamed.extend(
            message
                .container_stats
                .into_iter()
                .map(|s| s.attributes.unwrap().id),
        );
    }
    assert_eq!(streamed, [a1.clone(), a2.clone()].into());

    // UpdatePodSandboxResources refuses what it cannot do.
    let update = |id: &str| v1::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: id.to_string(),
        resources: Some(v1::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        overhead: None,
    };
    let err = rt
        .update_pod_sandbox_resources(update(""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = rt
        .update_pod_sandbox_resources(update(&"0".repeat(64)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    rt.stop_pod_sandbox(v1::StopPodSandboxRequest {
        pod_sandbox_id: gamma.clone(),
    })
    .await
    .unwrap();
    let err = rt
        .update_pod_sandbox_resources(update(&gamma))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // A stopped pod has nothing to measure any more.
    let all = rt
        .list_pod_sandbox_metrics(v1::ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics;
    assert!(all.iter().all(|p| p.pod_sandbox_id != gamma));
    assert!(all.iter().any(|p| p.pod_sandbox_id == alpha));
}
