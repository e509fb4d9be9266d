//! ListMetricDescriptors and ListPodSandboxMetrics: cAdvisor-compatible metrics for the
//! kubelet's `/metrics/cadvisor` when it takes pod and container stats from the runtime
//! (feature gate PodAndContainerStatsFromCRI).
//!
//! Names, help texts, label keys and types are cAdvisor's, so dashboards keep working. Label
//! keys are those CRI-O uses: `id`, `name` and `image` (plus `cpu` or `interface` where
//! cAdvisor has them); the kubelet adds `namespace`, `pod` and `container` itself. Pod-level
//! metrics (the network) are labelled as the kubelet expects for the pod: name `POD`, no image.
//!
//! Only what peapod really measures is offered: cgroup CPU, memory, tasks and OOM kills, the
//! pod's interface counters, and times. Values are computed on request, so every metric's
//! timestamp is 0 ("live"). The CRI carries integers only: CPU seconds are whole seconds.
use peapod_cri_proto::v1;
use peapod_runtime::cgroups::CgroupStats;
use tonic::Status;

use crate::containers::ContainerRecord;
use crate::cri::lifecycle::{ctr_error, pod_error};
use crate::cri::stats::pod_interfaces;
use crate::daemon::Daemon;
use crate::netstats::InterfaceCounters;
use crate::pods::{PodRecord, PodState};

const COUNTER: v1::MetricType = v1::MetricType::Counter;
const GAUGE: v1::MetricType = v1::MetricType::Gauge;

/// The label keys of every metric, in the order of the values we send.
const BASE_LABELS: [&str; 3] = ["id", "name", "image"];

/// A metric we offer: its cAdvisor name, help text and type, and the label key it has beyond
/// [`BASE_LABELS`], if any.
struct Descriptor {
    name: &'static str,
    help: &'static str,
    kind: v1::MetricType,
    extra_label: Option<&'static str>,
}

const fn metric(name: &'static str, help: &'static str, kind: v1::MetricType) -> Descriptor {
    Descriptor {
        name,
        help,
        kind,
        extra_label: None,
    }
}

const fn network(name: &'static str, help: &'static str) -> Descriptor {
    Descriptor {
        name,
        help,
        kind: COUNTER,
        extra_label: Some("interface"),
    }
}

const CPU_USAGE: &str = "container_cpu_usage_seconds_total";
const CPU_USER: &str = "container_cpu_user_seconds_total";
const CPU_SYSTEM: &str = "container_cpu_system_seconds_total";
const MEMORY_USAGE: &str = "container_memory_usage_bytes";
const MEMORY_MAX_USAGE: &str = "container_memory_max_usage_bytes";
const MEMORY_WORKING_SET: &str = "container_memory_working_set_bytes";
const MEMORY_RSS: &str = "container_memory_rss";
const MEMORY_CACHE: &str = "container_memory_cache";
const MEMORY_LIMIT: &str = "container_spec_memory_limit_bytes";
const OOM_EVENTS: &str = "container_oom_events_total";
const PROCESSES: &str = "container_processes";
const THREADS: &str = "container_threads";
const THREADS_MAX: &str = "container_threads_max";
const START_TIME: &str = "container_start_time_seconds";
const LAST_SEEN: &str = "container_last_seen";
const RX_BYTES: &str = "container_network_receive_bytes_total";
const RX_PACKETS: &str = "container_network_receive_packets_total";
const RX_DROPPED: &str = "container_network_receive_packets_dropped_total";
const RX_ERRORS: &str = "container_network_receive_errors_total";
const TX_BYTES: &str = "container_network_transmit_bytes_total";
const TX_PACKETS: &str = "container_network_transmit_packets_total";
const TX_DROPPED: &str = "container_network_transmit_packets_dropped_total";
const TX_ERRORS: &str = "container_network_transmit_errors_total";

const DESCRIPTORS: &[Descriptor] = &[
    Descriptor {
        name: CPU_USAGE,
        help: "Cumulative cpu time consumed in seconds.",
        kind: COUNTER,
        // cAdvisor labels the sum of all CPUs cpu="total".
        extra_label: Some("cpu"),
    },
    metric(
        CPU_USER,
        "Cumulative user cpu time consumed in seconds.",
        COUNTER,
    ),
    metric(
        CPU_SYSTEM,
        "Cumulative system cpu time consumed in seconds.",
        COUNTER,
    ),
    metric(
        MEMORY_USAGE,
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        GAUGE,
    ),
    metric(
        MEMORY_MAX_USAGE,
        "Maximum memory usage recorded in bytes",
        GAUGE,
    ),
    metric(MEMORY_WORKING_SET, "Current working set in bytes.", GAUGE),
    metric(MEMORY_RSS, "Size of RSS in bytes.", GAUGE),
    metric(MEMORY_CACHE, "Number of bytes of page cache memory.", GAUGE),
    metric(MEMORY_LIMIT, "Memory limit for the container.", GAUGE),
    metric(
        OOM_EVENTS,
        "Count of out of memory events observed for the container",
        COUNTER,
    ),
    metric(
        PROCESSES,
        "Number of processes running inside the container.",
        GAUGE,
    ),
    metric(
        THREADS,
        "Number of threads running inside the container",
        GAUGE,
    ),
    metric(
        THREADS_MAX,
        "Maximum number of threads allowed inside the container, infinity if value is zero",
        GAUGE,
    ),
    metric(
        START_TIME,
        "Start time of the container since unix epoch in seconds.",
        GAUGE,
    ),
    metric(
        LAST_SEEN,
        "Last time a container was seen by the exporter",
        GAUGE,
    ),
    network(RX_BYTES, "Cumulative count of bytes received"),
    network(RX_PACKETS, "Cumulative count of packets received"),
    network(
        RX_DROPPED,
        "Cumulative count of packets dropped while receiving",
    ),
    network(
        RX_ERRORS,
        "Cumulative count of errors encountered while receiving",
    ),
    network(TX_BYTES, "Cumulative count of bytes transmitted"),
    network(TX_PACKETS, "Cumulative count of packets transmitted"),
    network(
        TX_DROPPED,
        "Cumulative count of packets dropped while transmitting",
    ),
    network(
        TX_ERRORS,
        "Cumulative count of errors encountered while transmitting",
    ),
];

/// Every metric [`list_pod_sandbox_metrics`] may send.
pub fn descriptors() -> Vec<v1::MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|d| v1::MetricDescriptor {
            name: d.name.to_string(),
            help: d.help.to_string(),
            label_keys: BASE_LABELS
                .iter()
                .chain(d.extra_label.iter())
                .map(|k| k.to_string())
                .collect(),
        })
        .collect()
}

fn descriptor(name: &str) -> Option<&'static Descriptor> {
    DESCRIPTORS.iter().find(|d| d.name == name)
}

/// Metrics of one pod or container: the label values every one of them carries.
struct Sample {
    base_labels: [String; 3],
    metrics: Vec<v1::Metric>,
}

impl Sample {
    fn new(id: &str, name: &str, image: &str) -> Sample {
        Sample {
            base_labels: [id.to_string(), name.to_string(), image.to_string()],
            metrics: Vec::new(),
        }
    }

    /// Adds metric `name` (one of [`DESCRIPTORS`]) with `extra` as its extra label's value.
    fn add(&mut self, name: &str, extra: Option<&str>, value: u64) {
        let Some(d) = descriptor(name) else {
            // A programming error, not a runtime one: the kubelet would drop it anyway.
            tracing::error!(metric = name, "metric without a descriptor left out");
            return;
        };
        let mut label_values = self.base_labels.to_vec();
        label_values.extend(extra.map(str::to_string));
        self.metrics.push(v1::Metric {
            name: d.name.to_string(),
            timestamp: 0,
            metric_type: d.kind as i32,
            label_values,
            value: Some(v1::UInt64Value { value }),
        });
    }

    fn add_interface(&mut self, i: &InterfaceCounters) {
        let name = Some(i.name.as_str());
        for (metric, value) in [
            (RX_BYTES, i.rx_bytes),
            (RX_PACKETS, i.rx_packets),
            (RX_DROPPED, i.rx_dropped),
            (RX_ERRORS, i.rx_errors),
            (TX_BYTES, i.tx_bytes),
            (TX_PACKETS, i.tx_packets),
            (TX_DROPPED, i.tx_dropped),
            (TX_ERRORS, i.tx_errors),
        ] {
            self.add(metric, name, value);
        }
    }
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// What the container's cgroup says right now.
struct ContainerUsage {
    cgroup: CgroupStats,
    processes: u64,
}

async fn container_usage(daemon: &Daemon, id: &str) -> Option<ContainerUsage> {
    let container = daemon.containers.runtime_container(id)?;
    let read = tokio::task::spawn_blocking(move || {
        let cgroup = container.stats()?;
        let processes = container.processes()?.len() as u64;
        Ok::<_, peapod_runtime::Error>(ContainerUsage { cgroup, processes })
    })
    .await;
    match read {
        Ok(Ok(usage)) => Some(usage),
        Ok(Err(e)) => {
            tracing::debug!(container = %id, error = %e, "no metrics for the container");
            None
        }
        Err(e) => {
            tracing::warn!(container = %id, error = %e, "container metrics reader failed");
            None
        }
    }
}

/// The container's name as the kubelet named Docker containers, which cAdvisor's `name`
/// label shows: `k8s_<container>_<pod>_<namespace>_<pod uid>_<attempt>`.
fn kubelet_name(record: &ContainerRecord, pod: &PodRecord) -> String {
    format!(
        "k8s_{}_{}_{}_{}_{}",
        record.name, pod.name, pod.namespace, pod.uid, record.attempt
    )
}

async fn container_metrics(
    daemon: &Daemon,
    pod: &PodRecord,
    record: &ContainerRecord,
    now_seconds: u64,
) -> Option<v1::ContainerMetrics> {
    // A container that has no cgroup (created, exited, removed meanwhile) has nothing to show.
    let usage = container_usage(daemon, &record.id).await?;
    let s = &usage.cgroup;
    let mut sample = Sample::new(&record.id, &kubelet_name(record, pod), &record.image);
    sample.add(CPU_USAGE, Some("total"), s.cpu_usage_ns / NANOS_PER_SECOND);
    sample.add(CPU_USER, None, s.cpu_user_ns / NANOS_PER_SECOND);
    sample.add(CPU_SYSTEM, None, s.cpu_system_ns / NANOS_PER_SECOND);
    sample.add(MEMORY_USAGE, None, s.memory_usage_bytes);
    sample.add(MEMORY_MAX_USAGE, None, s.memory_max_usage_bytes);
    sample.add(MEMORY_WORKING_SET, None, s.memory_working_set_bytes);
    sample.add(MEMORY_RSS, None, s.memory_rss_bytes);
    sample.add(MEMORY_CACHE, None, s.memory_cache_bytes);
    // cAdvisor reports an unlimited container as 0.
    sample.add(MEMORY_LIMIT, None, s.memory_limit_bytes.unwrap_or(0));
    sample.add(OOM_EVENTS, None, s.oom_kills);
    sample.add(PROCESSES, None, usage.processes);
    // The pids controller counts tasks, that is threads.
    sample.add(THREADS, None, s.pids_current);
    sample.add(THREADS_MAX, None, s.pids_limit.unwrap_or(0));
    let start = record.started_at.unwrap_or(record.created_at);
    sample.add(
        START_TIME,
        None,
        u64::try_from(start).unwrap_or(0) / NANOS_PER_SECOND,
    );
    sample.add(LAST_SEEN, None, now_seconds);
    Some(v1::ContainerMetrics {
        container_id: record.id.clone(),
        metrics: sample.metrics,
    })
}

async fn pod_metrics(
    daemon: &Daemon,
    pod: &PodRecord,
    containers: &[ContainerRecord],
    now_seconds: u64,
) -> v1::PodSandboxMetrics {
    let mut sample = Sample::new(&pod.id, "POD", "");
    for interface in pod_interfaces(pod).await.unwrap_or_default() {
        sample.add_interface(&interface);
    }
    let mut per_container = Vec::new();
    for record in containers.iter().filter(|c| c.sandbox_id == pod.id) {
        per_container.extend(container_metrics(daemon, pod, record, now_seconds).await);
    }
    v1::PodSandboxMetrics {
        pod_sandbox_id: pod.id.clone(),
        metrics: sample.metrics,
        container_metrics: per_container,
    }
}

/// Metrics of every ready pod and its containers (a stopped pod has nothing left to measure,
/// as with containerd).
pub async fn list_pod_sandbox_metrics(
    daemon: &Daemon,
) -> Result<Vec<v1::PodSandboxMetrics>, Status> {
    let now_seconds = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
    let containers = daemon.containers.list().await.map_err(ctr_error)?;
    let mut metrics = Vec::new();
    for pod in daemon.pods.list().await.map_err(pod_error)? {
        if pod.state == PodState::Ready {
            metrics.push(pod_metrics(daemon, &pod, &containers, now_seconds).await);
        }
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_names_are_unique() {
        let mut names: Vec<_> = DESCRIPTORS.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DESCRIPTORS.len());
    }

    #[test]
    fn counters_are_the_totals() {
        // cAdvisor's convention: every *_total is a counter, nothing else is.
        for d in DESCRIPTORS {
            assert_eq!(d.name.ends_with("_total"), d.kind == COUNTER, "{}", d.name);
        }
    }

    #[test]
    fn label_values_match_the_descriptor_keys() {
        let mut sample = Sample::new("abc", "POD", "");
        sample.add_interface(&InterfaceCounters {
            name: "eth0".into(),
            rx_bytes: 7,
            ..Default::default()
        });
        sample.add(CPU_USAGE, Some("total"), 1);
        sample.add(MEMORY_RSS, None, 2);
        let descriptors = descriptors();
        for m in &sample.metrics {
            let d = descriptors.iter().find(|d| d.name == m.name).unwrap();
            assert_eq!(d.label_keys.len(), m.label_values.len(), "{}", m.name);
        }
        let rx = sample.metrics.iter().find(|m| m.name == RX_BYTES).unwrap();
        assert_eq!(rx.label_values, ["abc", "POD", "", "eth0"]);
        assert_eq!(rx.value, Some(v1::UInt64Value { value: 7 }));
    }
}
