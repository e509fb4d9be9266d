//! UpdatePodSandboxResources (CRI 1.32+): the kubelet resizing a running pod in place.
//!
//! The request carries the sum of the containers' resources and, apart, the pod overhead its
//! RuntimeClass declares. A pod cgroup the sandbox made itself (no cgroup_parent: crictl and
//! `peapod` users) gets their total, so the containers' own limits stay the ones that bite
//! first; a pod cgroup the kubelet made is the kubelet's, which resized it before calling.
use peapod_cri_proto::v1;
use peapod_runtime::cgroups::{Cgroup, CgroupError};
use tonic::Status;

use crate::cri::lifecycle::{nonempty, pod_error};
use crate::daemon::Daemon;
use crate::pods::PodState;

/// The CFS period the kernel uses when none is set, in microseconds.
const DEFAULT_CPU_PERIOD: i64 = 100_000;

pub async fn update_pod_sandbox_resources(
    daemon: &Daemon,
    req: v1::UpdatePodSandboxResourcesRequest,
) -> Result<v1::UpdatePodSandboxResourcesResponse, Status> {
    let id = nonempty(&req.pod_sandbox_id, "pod_sandbox_id")?;
    let pod = daemon.pods.load(id).await.map_err(pod_error)?;
    if pod.state != PodState::Ready {
        return Err(Status::failed_precondition(format!(
            "pod sandbox {id} is not ready; only a running pod can be resized"
        )));
    }
    if !pod.sandbox.cgroup_owned {
        // The kubelet made this pod cgroup and has just resized it itself (the call is its
        // notification afterwards): writing our own sum over its values could only disagree.
        tracing::debug!(pod = %id, "pod resources changed by the kubelet in its own cgroup");
        return Ok(v1::UpdatePodSandboxResourcesResponse {});
    }
    let Some(limits) = pod_limits(req.resources.as_ref(), req.overhead.as_ref()) else {
        // Overhead alone says nothing about the pod's limits: nothing to change.
        return Ok(v1::UpdatePodSandboxResourcesResponse {});
    };
    let resources: oci_spec::runtime::LinuxResources =
        serde_json::from_value(crate::containerspec::linux_resources(&limits))
            .map_err(|e| Status::invalid_argument(format!("resources: {e}")))?;
    let path = pod.sandbox.cgroup_path.clone();
    tracing::info!(pod = %id, cgroup = %path, ?resources, "updating pod resources");
    // Writing cgroup files blocks; it is no clone, so a blocking thread of the daemon may do it.
    tokio::task::spawn_blocking(move || Cgroup::new(&path)?.apply(&resources))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(cgroup_error)?;
    Ok(v1::UpdatePodSandboxResourcesResponse {})
}

fn cgroup_error(e: CgroupError) -> Status {
    match e {
        CgroupError::InvalidResources { .. } | CgroupError::Unsupported { .. } => {
            Status::invalid_argument(e.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}

/// The pod cgroup's limits: the containers' sum with the overhead added to each limit the sum
/// sets. A limit the sum leaves open (no memory limit, say) stays open. `None` when the
/// request names no resources.
pub(crate) fn pod_limits(
    resources: Option<&v1::LinuxContainerResources>,
    overhead: Option<&v1::LinuxContainerResources>,
) -> Option<v1::LinuxContainerResources> {
    let mut total = resources?.clone();
    let Some(overhead) = overhead else {
        return Some(total);
    };
    if total.memory_limit_in_bytes > 0 && overhead.memory_limit_in_bytes > 0 {
        total.memory_limit_in_bytes += overhead.memory_limit_in_bytes;
        // memory+swap must stay at least memory.
        if total.memory_swap_limit_in_bytes > 0 {
            total.memory_swap_limit_in_bytes += overhead.memory_limit_in_bytes;
        }
    }
    if total.cpu_quota > 0 && overhead.cpu_quota > 0 {
        // Quotas count microseconds per period, so the overhead's is rescaled to ours.
        let period = positive_or(total.cpu_period, DEFAULT_CPU_PERIOD);
        let overhead_period = positive_or(overhead.cpu_period, DEFAULT_CPU_PERIOD);
        total.cpu_quota += overhead.cpu_quota * period / overhead_period;
    }
    if total.cpu_shares > 0 && overhead.cpu_shares > 0 {
        total.cpu_shares += overhead.cpu_shares;
    }
    Some(total)
}

fn positive_or(value: i64, default: i64) -> i64 {
    if value > 0 {
        value
    } else {
        default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(memory: i64, quota: i64, period: i64, shares: i64) -> v1::LinuxContainerResources {
        v1::LinuxContainerResources {
            memory_limit_in_bytes: memory,
            cpu_quota: quota,
            cpu_period: period,
            cpu_shares: shares,
            ..Default::default()
        }
    }

    #[test]
    fn no_resources_means_nothing_to_apply() {
        assert_eq!(pod_limits(None, Some(&limits(1, 1, 1, 1))), None);
    }

    #[test]
    fn without_overhead_the_sum_is_the_limit() {
        let sum = limits(64 << 20, 50_000, 100_000, 512);
        assert_eq!(pod_limits(Some(&sum), None), Some(sum.clone()));
    }

    #[test]
    fn overhead_is_added_to_every_set_limit() {
        let sum = limits(64 << 20, 50_000, 100_000, 512);
        // 10ms every 50ms is 20ms every 100ms.
        let overhead = limits(16 << 20, 10_000, 50_000, 2);
        assert_eq!(
            pod_limits(Some(&sum), Some(&overhead)),
            Some(limits(80 << 20, 70_000, 100_000, 514))
        );
    }

    #[test]
    fn an_open_limit_stays_open() {
        let sum = limits(0, 0, 0, 0);
        let overhead = limits(16 << 20, 10_000, 100_000, 2);
        assert_eq!(pod_limits(Some(&sum), Some(&overhead)), Some(sum.clone()));
    }
}
