//! CRI load for `scripts/bench-cri`: start pods with one running container each against a CRI
//! endpoint, time every step, measure memory, tear everything down. Prints medians.
//!
//! Usage:
//!   bench_cri ENDPOINT IMAGE COUNT [DAEMON_PID [POD_PROCESSES]]
//!   bench_cri ENDPOINT --pull IMAGE
//!   bench_cri ENDPOINT --remove-all
//!
//! POD_PROCESSES names (comma-separated) the processes a runtime keeps per pod, whose memory is
//! the pod's overhead: `peapod-shim` for peapod (the default), `containerd-shim-runc-v2,pause`
//! for containerd. With BENCH_CRI_RESULTS=FILE the numbers are also written to FILE as
//! `key value` lines, for the script's comparison table.
//!
//! `--pull` only pulls IMAGE through CRI, e.g. the sandbox image a runtime needs, so that
//! nothing timed includes a pull. `--remove-all` stops and removes every pod of the endpoint: the clean-up after a failed run
//! against a private daemon.
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use peapod_cri_proto::v1;

const USAGE: &str = "usage: bench_cri ENDPOINT IMAGE COUNT [DAEMON_PID [POD_PROCESSES]]\n       \
                     bench_cri ENDPOINT --pull IMAGE\n       \
                     bench_cri ENDPOINT --remove-all";

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2).map(millis).unwrap_or(0.0)
}

fn millis(d: &Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A `Key:   123 kB` field of a /proc/PID file, in KiB.
fn proc_kib(pid: &str, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory of a process in KiB.
fn rss_kib(pid: &str) -> u64 {
    proc_kib(pid, "status", "VmRSS:")
}

/// Proportional set size in KiB: shared pages (the shim binary, libc) divided among the processes
/// that map them, which is what each pod really costs.
fn pss_kib(pid: &str) -> u64 {
    proc_kib(pid, "smaps_rollup", "Pss:")
}

/// Every process whose command name is one of `names`, as (pid, name).
fn processes<'a>(names: &[&'a str]) -> Vec<(String, &'a str)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let name = names.iter().find(|n| is_comm_of(n, comm.trim()))?;
            Some((pid, *name))
        })
        .collect()
}

/// The kernel keeps only the first 15 bytes of a command name: containerd's
/// `containerd-shim-runc-v2` runs as `containerd-shim`.
fn is_comm_of(name: &str, comm: &str) -> bool {
    name.as_bytes().get(..15).unwrap_or(name.as_bytes()) == comm.as_bytes()
}

/// The memory of the per-pod processes that appeared since `before` (pids), by process name.
/// Counting only new processes keeps other runtimes' shims on the machine out of the sum.
#[derive(Default)]
struct PodMemory {
    /// name -> (processes, RSS KiB, PSS KiB)
    by_name: BTreeMap<String, (usize, u64, u64)>,
}

impl PodMemory {
    fn measure(names: &[&str], before: &HashSet<String>) -> Self {
        let mut memory = PodMemory::default();
        for (pid, name) in processes(names) {
            if before.contains(&pid) {
                continue;
            }
            let entry = memory.by_name.entry(name.to_owned()).or_default();
            entry.0 += 1;
            entry.1 += rss_kib(&pid);
            entry.2 += pss_kib(&pid);
        }
        memory
    }

    fn rss(&self) -> u64 {
        self.by_name.values().map(|v| v.1).sum()
    }

    fn pss(&self) -> u64 {
        self.by_name.values().map(|v| v.2).sum()
    }
}

type Client = v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>;

/// RunPodSandbox, then CreateContainer and StartContainer of a `sleep`; returns the pod id and
/// the moments the pod was ready and the container started.
async fn start_pod(
    mut rt: Client,
    name: String,
    image: String,
) -> anyhow::Result<(String, Instant, Instant)> {
    let config = v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.clone(),
            uid: format!("{name}-{}", std::process::id()),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: name,
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(kubelet_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = rt
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let ready = Instant::now();
    let container = rt
        .create_container(v1::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(v1::ContainerConfig {
                metadata: Some(v1::ContainerMetadata {
                    name: "sleep".into(),
                    attempt: 0,
                }),
                image: Some(v1::ImageSpec {
                    image,
                    ..Default::default()
                }),
                command: vec!["sleep".into(), "3600".into()],
                linux: Some(v1::LinuxContainerConfig {
                    security_context: Some(v1::LinuxContainerSecurityContext {
                        namespace_options: Some(kubelet_namespaces()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: Some(config),
        })
        .await?
        .into_inner()
        .container_id;
    rt.start_container(v1::StartContainerRequest {
        container_id: container,
    })
    .await?;
    Ok((pod, ready, Instant::now()))
}

/// What the kubelet sends for a pod without hostNetwork, hostIPC or shareProcessNamespace:
/// pod network and IPC, and a PID namespace per container.
fn kubelet_namespaces() -> v1::NamespaceOption {
    v1::NamespaceOption {
        network: v1::NamespaceMode::Pod as i32,
        pid: v1::NamespaceMode::Container as i32,
        ipc: v1::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The median time of what the kubelet's PLEG asks every second: all pods, all containers.
async fn relist(mut rt: Client) -> Result<f64, tonic::Status> {
    let mut times = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        rt.list_pod_sandbox(v1::ListPodSandboxRequest::default())
            .await?;
        rt.list_containers(v1::ListContainersRequest::default())
            .await?;
        times.push(t.elapsed());
    }
    Ok(median(times))
}

async fn remove_pod(mut rt: Client, pod: String) -> Result<(), tonic::Status> {
    rt.stop_pod_sandbox(v1::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await?;
    rt.remove_pod_sandbox(v1::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    Ok(())
}

/// Stops and removes every pod the endpoint knows; returns how many there were.
async fn remove_all(rt: Client) -> anyhow::Result<usize> {
    let pods = rt
        .clone()
        .list_pod_sandbox(v1::ListPodSandboxRequest::default())
        .await?
        .into_inner()
        .items;
    for pod in &pods {
        remove_pod(rt.clone(), pod.id.clone())
            .await
            .with_context(|| format!("removing pod {}", pod.id))?;
    }
    Ok(pods.len())
}

async fn pull(channel: tonic::transport::Channel, image: &str) -> anyhow::Result<()> {
    let mut images = v1::image_service_client::ImageServiceClient::new(channel);
    images
        .pull_image(v1::PullImageRequest {
            image: Some(v1::ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .with_context(|| format!("pulling {image}"))?;
    Ok(())
}

/// What one run measured.
struct Results {
    count: usize,
    pod_ready: f64,
    ctr_start: f64,
    total: f64,
    teardown: f64,
    /// ListPodSandbox + ListContainers with every pod running: the kubelet's relist, which it
    /// does every second.
    relist: f64,
    all_running: f64,
    all_removed: f64,
    memory: PodMemory,
    daemon_idle: Option<u64>,
    daemon_loaded: Option<u64>,
}

impl Results {
    fn print(&self) {
        let count = self.count;
        let per_pod = |kib: u64| kib / count.max(1) as u64;
        println!("pods with one running container: {count}");
        println!(
            "  pod ready (RunPodSandbox)        median {:7.2} ms",
            self.pod_ready
        );
        println!(
            "  container create+start           median {:7.2} ms",
            self.ctr_start
        );
        println!(
            "  pod + container running          median {:7.2} ms",
            self.total
        );
        println!(
            "  teardown (stop+remove pod)       median {:7.2} ms",
            self.teardown
        );
        println!(
            "  relist ({count} pods, kubelet's PLEG) median {:7.2} ms",
            self.relist
        );
        for (name, (n, rss, pss)) in &self.memory.by_name {
            println!(
                "  {name:<24} {n:3} processes, RSS {:6} KiB, PSS {:6} KiB per pod",
                per_pod(*rss),
                per_pod(*pss)
            );
        }
        println!(
            "  per-pod processes                RSS {:6} KiB, PSS {:6} KiB per pod",
            per_pod(self.memory.rss()),
            per_pod(self.memory.pss())
        );
        println!(
            "  {count} pods at once: all running  {:7.2} ms, all removed {:7.2} ms",
            self.all_running, self.all_removed
        );
        if let (Some(idle), Some(loaded)) = (self.daemon_idle, self.daemon_loaded) {
            println!("  daemon RSS idle / with pods      {idle} KiB / {loaded} KiB");
        }
    }

    /// `key value` lines, one per metric.
    fn key_values(&self) -> String {
        let per_pod = |kib: u64| kib / self.count.max(1) as u64;
        let mut out = String::new();
        let mut line = |key: &str, value: String| {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{key} {value}");
        };
        line("count", self.count.to_string());
        line("pod_ready_ms", format!("{:.2}", self.pod_ready));
        line("ctr_start_ms", format!("{:.2}", self.ctr_start));
        line("total_ms", format!("{:.2}", self.total));
        line("teardown_ms", format!("{:.2}", self.teardown));
        line("relist_ms", format!("{:.2}", self.relist));
        line("all_running_ms", format!("{:.2}", self.all_running));
        line("all_removed_ms", format!("{:.2}", self.all_removed));
        line("pod_rss_kib", per_pod(self.memory.rss()).to_string());
        line("pod_pss_kib", per_pod(self.memory.pss()).to_string());
        if let (Some(idle), Some(loaded)) = (self.daemon_idle, self.daemon_loaded) {
            line("daemon_idle_kib", idle.to_string());
            line("daemon_loaded_kib", loaded.to_string());
        }
        out
    }
}

async fn bench(
    rt: Client,
    image: &str,
    count: usize,
    daemon_pid: Option<&String>,
    pod_processes: &[&str],
) -> anyhow::Result<Results> {
    let daemon_idle = daemon_pid.map(|pid| rss_kib(pid));
    let before: HashSet<String> = processes(pod_processes)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();

    let (mut pod_ready, mut ctr_start, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut pods = Vec::new();
    for i in 0..count {
        let t0 = Instant::now();
        let (pod, ready, started) =
            start_pod(rt.clone(), format!("bench-{i}"), image.to_owned()).await?;
        pod_ready.push(ready - t0);
        ctr_start.push(started - ready);
        total.push(started - t0);
        pods.push(pod);
    }
    let memory = PodMemory::measure(pod_processes, &before);
    let daemon_loaded = daemon_pid.map(|pid| rss_kib(pid));
    let relist = relist(rt.clone()).await?;

    let mut teardown = Vec::new();
    for pod in pods {
        let t = Instant::now();
        remove_pod(rt.clone(), pod).await?;
        teardown.push(t.elapsed());
    }
    // The same number of pods again, all at once, as a node does when it (re)starts.
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            tokio::spawn(start_pod(
                rt.clone(),
                format!("bench-par-{i}"),
                image.to_owned(),
            ))
        })
        .collect();
    let mut parallel = Vec::new();
    for task in tasks {
        parallel.push(task.await??.0);
    }
    let all_running = t0.elapsed();
    let t0 = Instant::now();
    let tasks: Vec<_> = parallel
        .into_iter()
        .map(|pod| tokio::spawn(remove_pod(rt.clone(), pod)))
        .collect();
    for task in tasks {
        task.await??;
    }
    let all_removed = t0.elapsed();

    Ok(Results {
        count,
        pod_ready: median(pod_ready),
        ctr_start: median(ctr_start),
        total: median(total),
        teardown: median(teardown),
        relist,
        all_running: millis(&all_running),
        all_removed: millis(&all_removed),
        memory,
        daemon_idle,
        daemon_loaded,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(endpoint) = args.get(1) else {
        anyhow::bail!("{USAGE}");
    };
    let socket = endpoint.trim_start_matches("unix://");
    let channel = peapod_cri_proto::connect_unix(std::path::Path::new(socket))
        .await
        .with_context(|| format!("connecting to {socket}"))?;
    let rt = v1::runtime_service_client::RuntimeServiceClient::new(channel.clone());
    let (image, count, rest) = match &args[2..] {
        [flag] if flag == "--remove-all" => {
            let removed = remove_all(rt).await?;
            println!("removed {removed} pods");
            return Ok(());
        }
        [flag, image] if flag == "--pull" => return pull(channel, image).await,
        [image, count, rest @ ..] if rest.len() <= 2 => (image, count, rest),
        _ => anyhow::bail!("{USAGE}"),
    };
    let count: usize = count.parse().context("COUNT")?;
    let daemon_pid = rest.first();
    let pod_processes: Vec<&str> = rest
        .get(1)
        .map_or("peapod-shim", String::as_str)
        .split(',')
        .collect();

    // The image is in the runtime's store before anything is timed.
    pull(channel, image).await?;
    let results = bench(rt, image, count, daemon_pid, &pod_processes).await?;
    results.print();
    if let Ok(path) = std::env::var("BENCH_CRI_RESULTS") {
        std::fs::write(&path, results.key_values()).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}
