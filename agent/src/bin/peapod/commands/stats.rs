//! `stats`: resource usage of containers (ListContainerStats) or, with `--pods`, of pod
//! sandboxes (ListPodSandboxStats), as `crictl stats` and `crictl statsp` show it.
//!
//! The runtime reports CPU as a counter (core-nanoseconds used so far), so CPU % needs two
//! samples: (used between them) / (time between them) × 100, as crictl computes it. 100 %
//! is one core busy all the time.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use peapod_cri_proto::v1;
use serde_json::{json, Map, Value};

use super::workloads::{container_list, pod_id, pod_list, short, unique};
use crate::client::{rpc_error, Cri};
use crate::output::{self, human_size, Format, Table};

/// Time between the two CPU samples.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// What to show stats of.
pub struct Selection<'a> {
    /// Stopped containers (or pods) too, not only running (ready) ones.
    pub all: bool,
    /// Only the containers of this pod (by unique ID prefix).
    pub pod: Option<&'a str>,
    /// Only these containers or pods (by unique ID prefix); shown whatever their state.
    pub ids: &'a [String],
}

pub async fn containers(
    cri: &mut Cri,
    selection: Selection<'_>,
    format: Format,
) -> anyhow::Result<()> {
    let filter = v1::ContainerStatsFilter {
        pod_sandbox_id: match selection.pod {
            Some(prefix) => pod_id(cri, prefix).await?,
            None => String::new(),
        },
        ..Default::default()
    };
    let first = list_containers(cri, &filter).await?;
    let shown: HashSet<String> = if selection.ids.is_empty() {
        let running: Option<HashSet<String>> = if selection.all {
            None
        } else {
            let listed = container_list(cri).await?;
            Some(
                listed
                    .into_iter()
                    .filter(|c| c.state == v1::ContainerState::ContainerRunning as i32)
                    .map(|c| c.id)
                    .collect(),
            )
        };
        first
            .iter()
            .map(|s| container_id(s).to_string())
            .filter(|id| running.as_ref().is_none_or(|r| r.contains(id)))
            .collect()
    } else {
        resolve("container", selection.ids, first.iter().map(container_id))?
    };
    if format != Format::Table {
        let stats: Vec<Value> = first
            .iter()
            .filter(|s| shown.contains(container_id(s)))
            .map(container_json)
            .collect();
        return output::structured(&json!({ "stats": stats }), format);
    }

    tokio::time::sleep(SAMPLE_INTERVAL).await;
    let earlier: HashMap<&str, &v1::ContainerStats> =
        first.iter().map(|s| (container_id(s), s)).collect();
    let second = list_containers(cri, &filter).await?;
    let mut table = Table::new(&["CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES"]);
    for stats in second.iter().filter(|s| shown.contains(container_id(s))) {
        let id = container_id(stats);
        let name = stats
            .attributes
            .as_ref()
            .and_then(|a| a.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let cpu = earlier
            .get(id)
            .and_then(|before| cpu_percent(before.cpu.as_ref(), stats.cpu.as_ref()));
        let layer = stats.writable_layer.as_ref();
        table.row(vec![
            short(id).into(),
            name,
            cpu.map_or("-".into(), |p| format!("{p:.2}")),
            bytes(
                stats
                    .memory
                    .as_ref()
                    .and_then(|m| m.working_set_bytes.as_ref()),
            ),
            bytes(layer.and_then(|l| l.used_bytes.as_ref())),
            count(layer.and_then(|l| l.inodes_used.as_ref())),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

pub async fn pods(cri: &mut Cri, selection: Selection<'_>, format: Format) -> anyhow::Result<()> {
    let first = list_pods(cri).await?;
    let shown: HashSet<String> = if selection.ids.is_empty() {
        let listed = pod_list(cri).await?;
        let listed: HashSet<String> = listed
            .into_iter()
            .filter(|p| selection.all || p.state == v1::PodSandboxState::SandboxReady as i32)
            .map(|p| p.id)
            .collect();
        first
            .iter()
            .map(|s| pod_stats_id(s).to_string())
            .filter(|id| listed.contains(id))
            .collect()
    } else {
        resolve("pod", selection.ids, first.iter().map(pod_stats_id))?
    };
    if format != Format::Table {
        let stats: Vec<Value> = first
            .iter()
            .filter(|s| shown.contains(pod_stats_id(s)))
            .map(pod_json)
            .collect();
        return output::structured(&json!({ "stats": stats }), format);
    }

    tokio::time::sleep(SAMPLE_INTERVAL).await;
    let earlier: HashMap<&str, &v1::PodSandboxStats> =
        first.iter().map(|s| (pod_stats_id(s), s)).collect();
    let second = list_pods(cri).await?;
    let mut table = Table::new(&["POD", "NAME", "CPU %", "MEM"]);
    for stats in second.iter().filter(|s| shown.contains(pod_stats_id(s))) {
        let id = pod_stats_id(stats);
        let name = stats
            .attributes
            .as_ref()
            .and_then(|a| a.metadata.as_ref())
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let linux = stats.linux.as_ref();
        let before = earlier.get(id).and_then(|s| s.linux.as_ref());
        let cpu =
            before.and_then(|b| cpu_percent(b.cpu.as_ref(), linux.and_then(|l| l.cpu.as_ref())));
        table.row(vec![
            short(id).into(),
            name,
            cpu.map_or("-".into(), |p| format!("{p:.2}")),
            bytes(
                linux
                    .and_then(|l| l.memory.as_ref())
                    .and_then(|m| m.working_set_bytes.as_ref()),
            ),
        ]);
    }
    print!("{}", table.render());
    Ok(())
}

async fn list_containers(
    cri: &mut Cri,
    filter: &v1::ContainerStatsFilter,
) -> anyhow::Result<Vec<v1::ContainerStats>> {
    let mut stats = cri
        .runtime
        .list_container_stats(v1::ListContainerStatsRequest {
            filter: Some(filter.clone()),
        })
        .await
        .map_err(|s| rpc_error("ListContainerStats", s))?
        .into_inner()
        .stats;
    stats.sort_by(|a, b| container_id(a).cmp(container_id(b)));
    Ok(stats)
}

async fn list_pods(cri: &mut Cri) -> anyhow::Result<Vec<v1::PodSandboxStats>> {
    let mut stats = cri
        .runtime
        .list_pod_sandbox_stats(v1::ListPodSandboxStatsRequest::default())
        .await
        .map_err(|s| rpc_error("ListPodSandboxStats", s))?
        .into_inner()
        .stats;
    stats.sort_by(|a, b| pod_stats_id(a).cmp(pod_stats_id(b)));
    Ok(stats)
}

fn container_id(stats: &v1::ContainerStats) -> &str {
    stats.attributes.as_ref().map_or("", |a| a.id.as_str())
}

fn pod_stats_id(stats: &v1::PodSandboxStats) -> &str {
    stats.attributes.as_ref().map_or("", |a| a.id.as_str())
}

/// The full IDs the given prefixes name, each of which must match exactly one.
fn resolve<'a>(
    what: &str,
    prefixes: &[String],
    ids: impl Iterator<Item = &'a str> + Clone,
) -> anyhow::Result<HashSet<String>> {
    prefixes
        .iter()
        .map(|prefix| unique(what, prefix, ids.clone()))
        .collect()
}

/// CPU use between two samples, in percent of one core; `None` without two usable samples.
fn cpu_percent(before: Option<&v1::CpuUsage>, after: Option<&v1::CpuUsage>) -> Option<f64> {
    let (before, after) = (before?, after?);
    let used = after
        .usage_core_nano_seconds
        .as_ref()?
        .value
        .checked_sub(before.usage_core_nano_seconds.as_ref()?.value)?;
    let elapsed = after.timestamp.checked_sub(before.timestamp)?;
    // Nanosecond counts: far below f64's exact range for any real uptime.
    (elapsed > 0).then(|| used as f64 / elapsed as f64 * 100.0)
}

fn bytes(value: Option<&v1::UInt64Value>) -> String {
    value.map_or("-".into(), |v| human_size(v.value))
}

fn count(value: Option<&v1::UInt64Value>) -> String {
    value.map_or("-".into(), |v| v.value.to_string())
}

// The answers as JSON, with the protobuf field names (camelCase) crictl prints; only the Linux
// fields, and only those that are set.

/// An object of the fields that are set.
fn object(fields: impl IntoIterator<Item = (&'static str, Option<Value>)>) -> Value {
    Value::Object(
        fields
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect::<Map<_, _>>(),
    )
}

fn uint(value: &Option<v1::UInt64Value>) -> Option<Value> {
    value.as_ref().map(|v| json!({ "value": v.value }))
}

fn cpu_json(cpu: &v1::CpuUsage) -> Value {
    object([
        ("timestamp", Some(json!(cpu.timestamp))),
        ("usageCoreNanoSeconds", uint(&cpu.usage_core_nano_seconds)),
        ("usageNanoCores", uint(&cpu.usage_nano_cores)),
    ])
}

fn memory_json(memory: &v1::MemoryUsage) -> Value {
    object([
        ("timestamp", Some(json!(memory.timestamp))),
        ("workingSetBytes", uint(&memory.working_set_bytes)),
        ("availableBytes", uint(&memory.available_bytes)),
        ("usageBytes", uint(&memory.usage_bytes)),
        ("rssBytes", uint(&memory.rss_bytes)),
        ("pageFaults", uint(&memory.page_faults)),
        ("majorPageFaults", uint(&memory.major_page_faults)),
    ])
}

fn container_json(stats: &v1::ContainerStats) -> Value {
    let attributes = stats.attributes.as_ref().map(|a| {
        json!({
            "id": a.id,
            "metadata": a.metadata.as_ref().map(|m| json!({"name": m.name, "attempt": m.attempt})),
            "labels": a.labels,
            "annotations": a.annotations,
        })
    });
    let writable_layer = stats.writable_layer.as_ref().map(|l| {
        object([
            ("timestamp", Some(json!(l.timestamp))),
            (
                "fsId",
                l.fs_id
                    .as_ref()
                    .map(|f| json!({ "mountpoint": f.mountpoint })),
            ),
            ("usedBytes", uint(&l.used_bytes)),
            ("inodesUsed", uint(&l.inodes_used)),
        ])
    });
    let swap = stats.swap.as_ref().map(|s| {
        object([
            ("timestamp", Some(json!(s.timestamp))),
            ("swapAvailableBytes", uint(&s.swap_available_bytes)),
            ("swapUsageBytes", uint(&s.swap_usage_bytes)),
        ])
    });
    object([
        ("attributes", attributes),
        ("cpu", stats.cpu.as_ref().map(cpu_json)),
        ("memory", stats.memory.as_ref().map(memory_json)),
        ("writableLayer", writable_layer),
        ("swap", swap),
    ])
}

fn pod_json(stats: &v1::PodSandboxStats) -> Value {
    let attributes = stats.attributes.as_ref().map(|a| {
        json!({
            "id": a.id,
            "metadata": a.metadata.as_ref().map(|m| json!({
                "name": m.name, "uid": m.uid, "namespace": m.namespace, "attempt": m.attempt,
            })),
            "labels": a.labels,
            "annotations": a.annotations,
        })
    });
    let linux = stats.linux.as_ref().map(|l| {
        object([
            ("cpu", l.cpu.as_ref().map(cpu_json)),
            ("memory", l.memory.as_ref().map(memory_json)),
            (
                "process",
                l.process.as_ref().map(|p| {
                    object([
                        ("timestamp", Some(json!(p.timestamp))),
                        ("processCount", uint(&p.process_count)),
                    ])
                }),
            ),
            (
                "containers",
                Some(l.containers.iter().map(container_json).collect()),
            ),
        ])
    });
    object([("attributes", attributes), ("linux", linux)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(timestamp: i64, used: u64) -> v1::CpuUsage {
        v1::CpuUsage {
            timestamp,
            usage_core_nano_seconds: Some(v1::UInt64Value { value: used }),
            ..Default::default()
        }
    }

    #[test]
    fn cpu_percent_is_used_time_over_elapsed_time() {
        let second = 1_000_000_000;
        // Half a core for one second.
        let p = cpu_percent(Some(&cpu(0, 0)), Some(&cpu(second, second as u64 / 2)));
        assert_eq!(p, Some(50.0));
        // Two cores busy: 200 %, as crictl shows it.
        let p = cpu_percent(Some(&cpu(0, 0)), Some(&cpu(second, 2 * second as u64)));
        assert_eq!(p, Some(200.0));
        // No time passed, a counter reset, or a missing sample: nothing to say.
        assert_eq!(cpu_percent(Some(&cpu(5, 0)), Some(&cpu(5, 10))), None);
        assert_eq!(cpu_percent(Some(&cpu(0, 10)), Some(&cpu(5, 0))), None);
        assert_eq!(cpu_percent(None, Some(&cpu(5, 0))), None);
    }

    #[test]
    fn json_leaves_out_unset_fields() {
        let stats = v1::ContainerStats {
            attributes: Some(v1::ContainerAttributes {
                id: "abc".into(),
                ..Default::default()
            }),
            cpu: Some(cpu(7, 42)),
            ..Default::default()
        };
        let value = container_json(&stats);
        assert_eq!(value["attributes"]["id"], "abc");
        assert_eq!(value["cpu"]["usageCoreNanoSeconds"]["value"], 42);
        assert!(value["cpu"].get("usageNanoCores").is_none());
        assert!(value.get("memory").is_none());
    }
}
