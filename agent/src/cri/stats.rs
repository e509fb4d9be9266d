//! Resource usage RPCs: container and pod stats from the cgroups, the writable layer, the
//! pod cgroup's totals and the pod network namespace's interface counters.
use peapod_cri_proto::v1;
use tonic::Status;

use crate::containers::ContainerRecord;
use crate::cri::lifecycle::{ctr_error, labels_match, nonempty, pod_error, pod_metadata};
use crate::daemon::Daemon;
use crate::netstats::{self, InterfaceCounters};
use crate::pods::PodRecord;

/// The interface CNI makes in every pod (peapod asks for this name, as containerd and CRI-O
/// do): the pod's default interface.
pub(crate) const DEFAULT_INTERFACE: &str = "eth0";

/// The counters of the pod's interfaces, loopback left out. `None` for a host-network pod
/// (its traffic is the node's, as with containerd) and when the namespace cannot be read.
pub(crate) async fn pod_interfaces(pod: &PodRecord) -> Option<Vec<InterfaceCounters>> {
    let netns = pod.sandbox.netns.clone()?;
    match tokio::task::spawn_blocking(move || netstats::read_netns(&netns)).await {
        Ok(Ok(interfaces)) => Some(interfaces.into_iter().filter(|i| i.name != "lo").collect()),
        Ok(Err(e)) => {
            tracing::debug!(pod = %pod.id, error = %e, "no network stats for the pod");
            None
        }
        Err(e) => {
            tracing::warn!(pod = %pod.id, error = %e, "network stats reader failed");
            None
        }
    }
}

fn interface_usage(i: &InterfaceCounters) -> v1::NetworkInterfaceUsage {
    let value = |v: u64| Some(v1::UInt64Value { value: v });
    v1::NetworkInterfaceUsage {
        name: i.name.clone(),
        rx_bytes: value(i.rx_bytes),
        rx_errors: value(i.rx_errors),
        tx_bytes: value(i.tx_bytes),
        tx_errors: value(i.tx_errors),
    }
}

/// The CRI's view of the pod's interfaces: the default one apart, the others in `interfaces`.
/// A pod whose network is already torn down (only loopback left) has no network usage.
fn network_usage(interfaces: &[InterfaceCounters], now: i64) -> Option<v1::NetworkUsage> {
    let default = interfaces
        .iter()
        .find(|i| i.name == DEFAULT_INTERFACE)
        .or_else(|| interfaces.first())?;
    Some(v1::NetworkUsage {
        timestamp: now,
        default_interface: Some(interface_usage(default)),
        interfaces: interfaces
            .iter()
            .filter(|i| i.name != default.name)
            .map(interface_usage)
            .collect(),
    })
}

async fn stats_of(daemon: &Daemon, record: &ContainerRecord) -> Result<v1::ContainerStats, Status> {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let config = record.config().map_err(ctr_error)?;
    let cgroup = match daemon.containers.runtime_container(&record.id) {
        Some(c) => tokio::task::spawn_blocking(move || c.stats())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .ok(),
        None => None,
    };
    let layer = daemon.images.snapshot_usage(&record.id).await.ok();
    let value = |v: u64| Some(v1::UInt64Value { value: v });
    Ok(v1::ContainerStats {
        attributes: Some(v1::ContainerAttributes {
            id: record.id.clone(),
            metadata: config.metadata.clone(),
            labels: record.labels.clone().into_iter().collect(),
            annotations: record.annotations.clone().into_iter().collect(),
        }),
        cpu: cgroup.as_ref().map(|s| v1::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: value(s.cpu_usage_ns),
            ..Default::default()
        }),
        memory: cgroup.as_ref().map(|s| v1::MemoryUsage {
            timestamp: now,
            working_set_bytes: value(s.memory_working_set_bytes),
            usage_bytes: value(s.memory_usage_bytes),
            rss_bytes: value(s.memory_rss_bytes),
            available_bytes: s.memory_limit_bytes.map(|l| v1::UInt64Value {
                value: l.saturating_sub(s.memory_working_set_bytes),
            }),
            ..Default::default()
        }),
        writable_layer: layer.map(|u| v1::FilesystemUsage {
            timestamp: now,
            fs_id: Some(v1::FilesystemIdentifier {
                mountpoint: daemon.images.root().display().to_string(),
            }),
            used_bytes: value(u.bytes),
            inodes_used: value(u.inodes),
        }),
        ..Default::default()
    })
}

pub async fn container_stats(
    daemon: &Daemon,
    req: v1::ContainerStatsRequest,
) -> Result<v1::ContainerStatsResponse, Status> {
    let id = nonempty(&req.container_id, "container_id")?;
    let record = daemon.containers.load(id).await.map_err(ctr_error)?;
    Ok(v1::ContainerStatsResponse {
        stats: Some(stats_of(daemon, &record).await?),
    })
}

pub async fn list_container_stats(
    daemon: &Daemon,
    req: v1::ListContainerStatsRequest,
) -> Result<v1::ListContainerStatsResponse, Status> {
    let filter = req.filter.unwrap_or_default();
    let mut stats = Vec::new();
    for record in daemon.containers.list().await.map_err(ctr_error)? {
        if (!filter.id.is_empty() && !record.id.starts_with(&filter.id))
            || (!filter.pod_sandbox_id.is_empty()
                && !record.sandbox_id.starts_with(&filter.pod_sandbox_id))
            || !labels_match(&record.labels, &filter.label_selector)
        {
            continue;
        }
        stats.push(stats_of(daemon, &record).await?);
    }
    Ok(v1::ListContainerStatsResponse { stats })
}

/// `containers`: the container records (all of them, or at least the pod's), read once by the
/// caller however many pods it asks about.
async fn pod_stats_of(
    daemon: &Daemon,
    pod: &PodRecord,
    containers: &[ContainerRecord],
) -> Result<v1::PodSandboxStats, Status> {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let path = pod.sandbox.cgroup_path.clone();
    // The pod cgroup holds every container's cgroup, so its counters are the pod's totals.
    let cgroup = tokio::task::spawn_blocking(move || {
        let cgroup = peapod_runtime::cgroups::Cgroup::new(&path).ok()?;
        Some((
            cgroup.stats().ok()?,
            cgroup.procs().map(|p| p.len() as u64).unwrap_or(0),
        ))
    })
    .await
    .map_err(|e| Status::internal(e.to_string()))?;
    let mut container_stats = Vec::new();
    for record in containers.iter().filter(|c| c.sandbox_id == pod.id) {
        container_stats.push(stats_of(daemon, record).await?);
    }
    let network = pod_interfaces(pod)
        .await
        .and_then(|interfaces| network_usage(&interfaces, now));
    let value = |v: u64| Some(v1::UInt64Value { value: v });
    Ok(v1::PodSandboxStats {
        attributes: Some(v1::PodSandboxAttributes {
            id: pod.id.clone(),
            metadata: Some(pod_metadata(pod)),
            labels: pod.labels.clone().into_iter().collect(),
            annotations: pod.annotations.clone().into_iter().collect(),
        }),
        linux: Some(v1::LinuxPodSandboxStats {
            cpu: cgroup.as_ref().map(|(s, _)| v1::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: value(s.cpu_usage_ns),
                ..Default::default()
            }),
            memory: cgroup.as_ref().map(|(s, _)| v1::MemoryUsage {
                timestamp: now,
                working_set_bytes: value(s.memory_working_set_bytes),
                usage_bytes: value(s.memory_usage_bytes),
                rss_bytes: value(s.memory_rss_bytes),
                ..Default::default()
            }),
            process: cgroup.as_ref().map(|(_, n)| v1::ProcessUsage {
                timestamp: now,
                process_count: value(*n),
            }),
            network,
            containers: container_stats,
            ..Default::default()
        }),
        windows: None,
    })
}

pub async fn pod_sandbox_stats(
    daemon: &Daemon,
    req: v1::PodSandboxStatsRequest,
) -> Result<v1::PodSandboxStatsResponse, Status> {
    let id = nonempty(&req.pod_sandbox_id, "pod_sandbox_id")?;
    let pod = daemon.pods.load(id).await.map_err(pod_error)?;
    Ok(v1::PodSandboxStatsResponse {
        stats: Some(pod_stats_of(daemon, &pod, &all_containers(daemon).await?).await?),
    })
}

pub async fn list_pod_sandbox_stats(
    daemon: &Daemon,
    req: v1::ListPodSandboxStatsRequest,
) -> Result<v1::ListPodSandboxStatsResponse, Status> {
    let filter = req.filter.unwrap_or_default();
    let containers = all_containers(daemon).await?;
    let mut stats = Vec::new();
    for pod in daemon.pods.list().await.map_err(pod_error)? {
        if (!filter.id.is_empty() && !pod.id.starts_with(&filter.id))
            || !labels_match(&pod.labels, &filter.label_selector)
        {
            continue;
        }
        stats.push(pod_stats_of(daemon, &pod, &containers).await?);
    }
    Ok(v1::ListPodSandboxStatsResponse { stats })
}

async fn all_containers(daemon: &Daemon) -> Result<Vec<ContainerRecord>, Status> {
    daemon.containers.list().await.map_err(ctr_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interface(name: &str, rx_bytes: u64) -> InterfaceCounters {
        InterfaceCounters {
            name: name.into(),
            rx_bytes,
            ..Default::default()
        }
    }

    #[test]
    fn eth0_is_the_default_and_the_others_are_listed() {
        let usage = network_usage(&[interface("net1", 1), interface("eth0", 2)], 7).unwrap();
        assert_eq!(usage.timestamp, 7);
        let default = usage.default_interface.unwrap();
        assert_eq!(
            (default.name.as_str(), default.rx_bytes),
            ("eth0", Some(v1::UInt64Value { value: 2 }))
        );
        let others: Vec<_> = usage.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(others, ["net1"]);
    }

    #[test]
    fn without_eth0_the_first_interface_is_the_default() {
        let usage = network_usage(&[interface("net1", 1)], 7).unwrap();
        assert_eq!(usage.default_interface.unwrap().name, "net1");
        assert!(usage.interfaces.is_empty());
    }

    #[test]
    fn no_interfaces_no_network_usage() {
        assert_eq!(network_usage(&[], 7), None);
    }
}
