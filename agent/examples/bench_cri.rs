//! CRI load for `scripts/bench-cri`: start pods with one running container each against a CRI
//! endpoint, time every step, measure memory, tear everything down. Prints medians.
//!
//! Usage: bench_cri ENDPOINT IMAGE COUNT [DAEMON_PID]
use std::time::{Duration, Instant};

use peapod_cri_proto::v1;

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Resident memory of a process in KiB.
fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Proportional set size in KiB: shared pages (the shim binary, libc) divided among the processes
/// that map them, which is what each pod really costs.
fn pss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Pss:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Every process whose command name is `name`.
fn processes(name: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, image, count, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: bench_cri ENDPOINT IMAGE COUNT [DAEMON_PID]");
    };
    let count: usize = count.parse()?;
    let socket = endpoint.trim_start_matches("unix://");
    let channel = peapod_cri_proto::connect_unix(std::path::Path::new(socket)).await?;
    let mut rt = v1::runtime_service_client::RuntimeServiceClient::new(channel.clone());
    let mut images = v1::image_service_client::ImageServiceClient::new(channel);
    let spec = || {
        Some(v1::ImageSpec {
            image: image.clone(),
            ..Default::default()
        })
    };
    images
        .pull_image(v1::PullImageRequest {
            image: spec(),
            ..Default::default()
        })
        .await?;
    let daemon_idle = rest.first().map(|pid| rss_kib(pid));
    let shims_before = processes("peapod-shim").len();

    let (mut pod_ready, mut ctr_start, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let mut pods = Vec::new();
    for i in 0..count {
        let t0 = Instant::now();
        let (pod, ready, started) =
            start_pod(rt.clone(), format!("bench-{i}"), image.clone()).await?;
        pod_ready.push(ready - t0);
        ctr_start.push(started - ready);
        total.push(started - t0);
        pods.push(pod);
    }
    let shims: Vec<String> = processes("peapod-shim");
    let shim_rss: Vec<u64> = shims.iter().map(|p| rss_kib(p)).collect();
    let shim_pss: u64 = shims.iter().map(|p| pss_kib(p)).sum();
    let daemon_loaded = rest.first().map(|pid| rss_kib(pid));

    let mut teardown = Vec::new();
    for pod in &pods {
        let t = Instant::now();
        rt.stop_pod_sandbox(v1::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await?;
        rt.remove_pod_sandbox(v1::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await?;
        teardown.push(t.elapsed());
    }
    // The same number of pods again, all at once, as a node does when it (re)starts.
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            tokio::spawn(start_pod(
                rt.clone(),
                format!("bench-par-{i}"),
                image.clone(),
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
        .map(|pod| {
            let mut rt = rt.clone();
            tokio::spawn(async move {
                rt.stop_pod_sandbox(v1::StopPodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                })
                .await?;
                rt.remove_pod_sandbox(v1::RemovePodSandboxRequest {
                    pod_sandbox_id: pod,
                })
                .await?;
                Ok::<_, tonic::Status>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let all_removed = t0.elapsed();

    println!("pods with one running container: {count}");
    println!(
        "  pod ready (RunPodSandbox)        median {:7.2} ms",
        median(pod_ready)
    );
    println!(
        "  container create+start           median {:7.2} ms",
        median(ctr_start)
    );
    println!(
        "  pod + container running          median {:7.2} ms",
        median(total)
    );
    println!(
        "  teardown (stop+remove pod)       median {:7.2} ms",
        median(teardown)
    );
    let n = shim_rss.len().saturating_sub(shims_before).max(1) as u64;
    println!(
        "  shim RSS per pod                 {:7} KiB ({} shims)",
        shim_rss.iter().sum::<u64>() / n,
        shims.len()
    );
    println!("  shim PSS per pod                 {:7} KiB", shim_pss / n);
    println!(
        "  {count} pods at once: all running  {:7.2} ms, all removed {:7.2} ms",
        all_running.as_secs_f64() * 1000.0,
        all_removed.as_secs_f64() * 1000.0
    );
    if let (Some(idle), Some(loaded)) = (daemon_idle, daemon_loaded) {
        println!("  peapodd RSS idle / with pods     {idle} KiB / {loaded} KiB");
    }
    Ok(())
}
