//! Pods and containers through peapodd's CRI socket, for real: a pod with CNI networking and two
//! containers that share its network, exec, logs, stop, removal, and bad requests.
mod common;

use std::time::Duration;

use common::*;
use peapod_cri_proto::v1;
use peapod_cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_with_two_containers() {
    let dirs = DaemonDirs::new();
    let _network = PrivateNetwork::new(dirs.dir.path(), 1);
    let registry = Registry::start();
    let image = registry.push("busybox", "test/busybox", "1");
    let daemon = Peapodd::start_with(&dirs, &[("--cni-bin-dir", "/usr/lib/cni".into())]);
    let mut rt = daemon.runtime().await;
    let mut images = daemon.images().await;
    images
        .pull_image(v1::PullImageRequest {
            image: Some(v1::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();

    let logs = dirs.path("logs");
    let config = pod_config("web-0", &logs);
    let pod_id = rt
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    // Whatever the assertions do, the pod's netns, veth, iptables rules and cgroup go again.
    let body = tokio::spawn(pod_lifecycle(
        rt.clone(),
        pod_id.clone(),
        config,
        image,
        logs,
        dirs.path("state"),
        dirs.endpoint(),
    ));
    let result = body.await;
    let _ = rt
        .remove_pod_sandbox(v1::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id,
        })
        .await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn pod_lifecycle(
    mut rt: v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    pod_id: String,
    config: v1::PodSandboxConfig,
    image: String,
    logs: std::path::PathBuf,
    state_dir: std::path::PathBuf,
    endpoint: String,
) {
    let status = rt
        .pod_sandbox_status(v1::PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.state, v1::PodSandboxState::SandboxReady as i32);
    let ip = status.network.unwrap().ip;
    assert!(ip.starts_with("10.198.1."), "pod IP {ip}");

    // The same pod again is refused, naming the existing one.
    let err = rt
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains(&pod_id));

    let create = |name: &str, command: &[&str]| v1::CreateContainerRequest {
        pod_sandbox_id: pod_id.clone(),
        config: Some(container(name, &image, command)),
        sandbox_config: Some(config.clone()),
    };
    let server = rt
        .create_container(create(
            "server",
            &[
                "sh",
                "-c",
                "echo started; busybox nc -l -p 8080 -e echo hello-over-localhost",
            ],
        ))
        .await
        .unwrap()
        .into_inner()
        .container_id;
    let client = rt
        .create_container(create("client", &["sleep", "1000"]))
        .await
        .unwrap()
        .into_inner()
        .container_id;
    let state = |s: v1::ContainerStatusResponse| s.status.unwrap();
    let st = state(
        rt.container_status(v1::ContainerStatusRequest {
            container_id: server.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner(),
    );
    assert_eq!(st.state, v1::ContainerState::ContainerCreated as i32);
    for id in [&server, &client] {
        rt.start_container(v1::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    }
    let st = state(
        rt.container_status(v1::ContainerStatusRequest {
            container_id: client.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner(),
    );
    assert_eq!(st.state, v1::ContainerState::ContainerRunning as i32);
    assert!(st.started_at > 0);

    let exec = |cmd: &[&str]| v1::ExecSyncRequest {
        container_id: client.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 10,
    };
    // The two containers share the pod's network: localhost reaches the other one.
    let mut reply = String::new();
    for _ in 0..50 {
        let out = rt
            .exec_sync(exec(&["busybox", "nc", "127.0.0.1", "8080"]))
            .await
            .unwrap()
            .into_inner();
        reply = String::from_utf8_lossy(&out.stdout).into_owned();
        if reply.contains("hello-over-localhost") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reply.contains("hello-over-localhost"), "{reply:?}");
    let out = rt
        .exec_sync(exec(&[
            "sh",
            "-c",
            "hostname; cat /etc/hostname; echo err >&2; exit 3",
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "web\nweb\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.exit_code, 3);

    // The same through the `peapod` command line, with ids shortened to a prefix.
    let cli = |args: &[&str]| {
        let out = peapod(&endpoint, args);
        assert!(out.status.success(), "peapod {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let pods = cli(&["pods"]);
    assert!(pods.contains("web-0") && pods.contains("Ready"), "{pods}");
    let ps = cli(&["ps"]);
    assert!(ps.contains("client") && ps.contains("Running"), "{ps}");
    assert_eq!(
        cli(&["exec", &client[..12], "--", "sh", "-c", "hostname"]),
        "web\n"
    );
    assert_eq!(cli(&["logs", &server[..12]]), "started\n");
    assert!(cli(&["inspectp", &pod_id[..12]]).contains(&ip));

    let log = std::fs::read_to_string(logs.join("server.log")).unwrap();
    assert!(
        log.lines().any(|l| l.ends_with(" stdout F started")),
        "{log}"
    );

    rt.stop_container(v1::StopContainerRequest {
        container_id: client.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    let st = state(
        rt.container_status(v1::ContainerStatusRequest {
            container_id: client.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner(),
    );
    assert_eq!(st.state, v1::ContainerState::ContainerExited as i32);
    assert_eq!(
        st.exit_code, 137,
        "sleep as PID 1 ignores SIGTERM; SIGKILL after the timeout"
    );
    assert_eq!(st.reason, "Error");
    let listed = rt
        .list_containers(v1::ListContainersRequest {
            filter: Some(v1::ContainerFilter {
                pod_sandbox_id: pod_id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 2);

    // Removal through the command line, by id prefix.
    let cli = |args: &[&str]| {
        let out = peapod(&endpoint, args);
        assert!(out.status.success(), "peapod {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    assert_eq!(cli(&["rm", &client[..12]]), format!("{client}\n"));
    assert!(!cli(&["ps", "-a"]).contains("client"));

    rt.stop_pod_sandbox(v1::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(v1::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    assert!(rt
        .list_pod_sandbox(v1::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
        .is_empty());
    assert!(rt
        .list_containers(v1::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .is_empty());
    assert!(
        !peapod_tests::host_mounts().contains(state_dir.to_str().unwrap()),
        "mounts left under {}",
        state_dir.display()
    );
    // Removal is idempotent.
    rt.remove_pod_sandbox(v1::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_pod_and_container_requests() {
    let dirs = DaemonDirs::new();
    let daemon = Peapodd::start(&dirs);
    let mut rt = daemon.runtime().await;
    let err = rt
        .run_pod_sandbox(v1::RunPodSandboxRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = rt
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(pod_config("x", &dirs.path("logs"))),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("kata"));
    let err = rt
        .create_container(v1::CreateContainerRequest {
            pod_sandbox_id: "nope".into(),
            config: Some(container("c", "busybox", &["true"])),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = rt
        .container_status(v1::ContainerStatusRequest {
            container_id: "nope".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = rt
        .start_container(v1::StartContainerRequest {
            container_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = rt
        .pod_sandbox_status(v1::PodSandboxStatusRequest {
            pod_sandbox_id: "../../etc".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Two RunPodSandbox of one pod at the same moment: exactly one wins.
    let twin = host_network_pod("twin", &dirs.path("logs"));
    let request = || v1::RunPodSandboxRequest {
        config: Some(twin.clone()),
        runtime_handler: String::new(),
    };
    let (mut rt1, mut rt2) = (rt.clone(), rt.clone());
    let (a, b) = tokio::join!(
        rt1.run_pod_sandbox(request()),
        rt2.run_pod_sandbox(request())
    );
    let (won, lost) = match (a, b) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w.into_inner().pod_sandbox_id, l),
        other => panic!("exactly one of two identical pods must be created: {other:?}"),
    };
    assert_eq!(lost.code(), Code::AlreadyExists);
    rt.remove_pod_sandbox(v1::RemovePodSandboxRequest {
        pod_sandbox_id: won,
    })
    .await
    .unwrap();

    // Ids that are paths never reach the filesystem.
    for hostile in ["../containers", "..", "/etc", "../../state"] {
        rt.remove_container(v1::RemoveContainerRequest {
            container_id: hostile.into(),
        })
        .await
        .unwrap();
        rt.remove_pod_sandbox(v1::RemovePodSandboxRequest {
            pod_sandbox_id: hostile.into(),
        })
        .await
        .unwrap();
        let err = rt
            .container_status(v1::ContainerStatusRequest {
                container_id: hostile.into(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
    assert!(dirs.path("root/containers").is_dir() && dirs.path("state").is_dir());
    // Removing what does not exist succeeds, as the CRI asks.
    rt.remove_container(v1::RemoveContainerRequest {
        container_id: "nope".into(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(v1::RemovePodSandboxRequest {
        pod_sandbox_id: "nope".into(),
    })
    .await
    .unwrap();
}

/// The next event from the stream, within a few seconds.
async fn next_event(
    stream: &mut tonic::Streaming<v1::ContainerEventResponse>,
) -> v1::ContainerEventResponse {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("an event in time")
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_stats_update_and_restart() {
    let dirs = DaemonDirs::new();
    let registry = Registry::start();
    let image = registry.push("busybox", "test/busybox", "1");
    let daemon = Peapodd::start(&dirs);
    let mut rt = daemon.runtime().await;
    daemon.pull(&image).await;
    let mut events = rt
        .get_container_events(v1::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();

    // A host-network pod: no CNI needed.
    let config = host_network_pod("hostnet", &dirs.path("logs"));
    let pod_id = rt
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let create = |name: &str, command: &[&str]| v1::CreateContainerRequest {
        pod_sandbox_id: pod_id.clone(),
        config: Some(container(name, &image, command)),
        sandbox_config: Some(config.clone()),
    };

    let quick = rt
        .create_container(create("quick", &["true"]))
        .await
        .unwrap()
        .into_inner()
        .container_id;
    let e = next_event(&mut events).await;
    assert_eq!(
        (e.container_id.as_str(), e.container_event_type),
        (
            quick.as_str(),
            v1::ContainerEventType::ContainerCreatedEvent as i32
        )
    );
    rt.start_container(v1::StartContainerRequest {
        container_id: quick.clone(),
    })
    .await
    .unwrap();
    assert_eq!(
        next_event(&mut events).await.container_event_type,
        v1::ContainerEventType::ContainerStartedEvent as i32
    );
    let stopped = next_event(&mut events).await;
    assert_eq!(
        stopped.container_event_type,
        v1::ContainerEventType::ContainerStoppedEvent as i32
    );
    let status = stopped.containers_statuses[0].clone();
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));

    let sleeper = rt
        .create_container(create("sleeper", &["sleep", "1000"]))
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(v1::StartContainerRequest {
        container_id: sleeper.clone(),
    })
    .await
    .unwrap();
    let stats = rt
        .container_stats(v1::ContainerStatsRequest {
            container_id: sleeper.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(stats.memory.unwrap().working_set_bytes.unwrap().value > 0);
    assert!(stats.writable_layer.is_some());
    rt.update_container_resources(v1::UpdateContainerResourcesRequest {
        container_id: sleeper.clone(),
        linux: Some(v1::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let stats = rt
        .list_container_stats(v1::ListContainerStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats;
    let sleeper_stats = stats
        .iter()
        .find(|s| s.attributes.as_ref().unwrap().id == sleeper)
        .unwrap();
    assert!(
        sleeper_stats
            .memory
            .as_ref()
            .unwrap()
            .available_bytes
            .unwrap()
            .value
            <= 64 << 20
    );

    let pod_stats = rt
        .pod_sandbox_stats(v1::PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
        .linux
        .unwrap();
    assert_eq!(pod_stats.containers.len(), 2, "both containers of the pod");
    assert_eq!(
        pod_stats.process.unwrap().process_count.unwrap().value,
        1,
        "only sleep still runs"
    );
    assert!(pod_stats.memory.unwrap().usage_bytes.unwrap().value > 0);
    let all = rt
        .list_pod_sandbox_stats(v1::ListPodSandboxStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(all.len(), 1);

    // kill -9 the daemon: the container lives on in its shim, and a new daemon finds it all again.
    drop(events);
    daemon.stop_with(nix::sys::signal::Signal::SIGKILL);
    let daemon = Peapodd::start(&dirs);
    let mut rt = daemon.runtime().await;
    let pods = rt
        .list_pod_sandbox(v1::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    let status = rt
        .container_status(v1::ContainerStatusRequest {
            container_id: sleeper.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.state, v1::ContainerState::ContainerRunning as i32);
    let out = rt
        .exec_sync(v1::ExecSyncRequest {
            container_id: sleeper.clone(),
            cmd: vec!["sh".into(), "-c".into(), "echo still-here".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still-here\n");
    // The new daemon watches the running container again: its exit becomes an event.
    let mut events = rt
        .get_container_events(v1::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    rt.stop_container(v1::StopContainerRequest {
        container_id: sleeper.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let stopped = next_event(&mut events).await;
    assert_eq!(
        (stopped.container_id.as_str(), stopped.container_event_type),
        (
            sleeper.as_str(),
            v1::ContainerEventType::ContainerStoppedEvent as i32
        )
    );

    rt.stop_pod_sandbox(v1::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    rt.remove_pod_sandbox(v1::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap();
    assert!(rt
        .list_containers(v1::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_cni_dir_gets_the_default_network() {
    let dirs = DaemonDirs::new();
    // Only written, never used here: no pod is started on the host's 10.88.0.0/16.
    let daemon = Peapodd::start_with(&dirs, &[("--default-cni-network", "".into())]);
    let written = std::fs::read_to_string(dirs.path("cni/10-peapod.conflist")).unwrap();
    let conf: serde_json::Value = serde_json::from_str(&written).unwrap();
    let plugins: Vec<&str> = conf["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["type"].as_str())
        .collect();
    assert!(
        plugins.contains(&"bridge") && plugins.contains(&"portmap"),
        "{written}"
    );
    assert_eq!(conf["plugins"][0]["bridge"], "peapod0");
    drop(daemon);
    // An existing configuration is never touched.
    std::fs::remove_file(dirs.path("cni/10-peapod.conflist")).unwrap();
    std::fs::write(
        dirs.path("cni/05-mine.conflist"),
        r#"{"cniVersion":"1.0.0","name":"mine","plugins":[{"type":"loopback"}]}"#,
    )
    .unwrap();
    let _daemon = Peapodd::start_with(&dirs, &[("--default-cni-network", "".into())]);
    assert!(!dirs.path("cni/10-peapod.conflist").exists());
}

/// A host-network pod whose PID namespace option is `pid`.
fn pod_with_pid(
    name: &str,
    logs: &std::path::Path,
    pid: v1::NamespaceMode,
) -> v1::PodSandboxConfig {
    let mut config = host_network_pod(name, logs);
    if let Some(ns) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.pid = pid as i32;
    }
    config
}

/// A container with the PID namespace option the kubelet would send (`target` for TARGET).
fn with_pid(
    mut config: v1::ContainerConfig,
    pid: v1::NamespaceMode,
    target: &str,
) -> v1::ContainerConfig {
    config.linux = Some(v1::LinuxContainerConfig {
        security_context: Some(v1::LinuxContainerSecurityContext {
            namespace_options: Some(v1::NamespaceOption {
                network: v1::NamespaceMode::Node as i32,
                pid: pid as i32,
                target_id: target.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

/// Pids of the pod inits that a daemon on `dirs` started (their arguments name its state dir).
fn pod_inits(dirs: &DaemonDirs) -> Vec<String> {
    let state = dirs.path("state").display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            cmdline.contains("peapod-pod-init") && cmdline.contains(&state)
        })
        .collect()
}

type Client = RuntimeServiceClient<tonic::transport::Channel>;

/// RunPodSandbox of `config`; the pod's id and config.
async fn run_pod(rt: &Client, config: v1::PodSandboxConfig) -> (String, v1::PodSandboxConfig) {
    let request = v1::RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    };
    let id = rt
        .clone()
        .run_pod_sandbox(request)
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    (id, config)
}

async fn create_in(
    rt: &Client,
    pod: &(String, v1::PodSandboxConfig),
    config: v1::ContainerConfig,
) -> Result<String, tonic::Status> {
    let request = v1::CreateContainerRequest {
        pod_sandbox_id: pod.0.clone(),
        config: Some(config),
        sandbox_config: Some(pod.1.clone()),
    };
    Ok(rt
        .clone()
        .create_container(request)
        .await?
        .into_inner()
        .container_id)
}

/// Creates and starts a container; its id.
async fn start_in(
    rt: &Client,
    pod: &(String, v1::PodSandboxConfig),
    config: v1::ContainerConfig,
) -> String {
    let id = create_in(rt, pod, config).await.unwrap();
    let request = v1::StartContainerRequest {
        container_id: id.clone(),
    };
    rt.clone().start_container(request).await.unwrap();
    id
}

async fn pod_state_of(rt: &Client, id: &str) -> i32 {
    let request = v1::PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: false,
    };
    rt.clone()
        .pod_sandbox_status(request)
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .state
}

/// What `script` prints in the container, NULs (of /proc/*/cmdline) turned into spaces.
async fn run_in(rt: &Client, id: &str, script: &str) -> String {
    let out = rt
        .clone()
        .exec_sync(v1::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 20,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).replace('\0', " ")
}

const PID_1: &str = "cat /proc/1/cmdline";
const EVERY_PROCESS: &str = "cat /proc/[0-9]*/cmdline";

#[tokio::test(flavor = "multi_thread")]
async fn pid_namespaces_shared_private_and_target() {
    let dirs = std::sync::Arc::new(DaemonDirs::new());
    let registry = Registry::start();
    let image = registry.push("busybox", "test/busybox", "1");
    let result = tokio::spawn(pid_namespaces(dirs.clone(), image)).await;
    // Whatever happened, the pods (and their inits with them) go again.
    let daemon = Peapodd::start(&dirs);
    let mut rt = daemon.runtime().await;
    let pods = rt
        .list_pod_sandbox(v1::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    for pod in pods {
        rt.remove_pod_sandbox(v1::RemovePodSandboxRequest {
            pod_sandbox_id: pod.id,
        })
        .await
        .unwrap();
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    assert!(
        pod_inits(&dirs).is_empty(),
        "removing the pods ends their inits"
    );
}

async fn pid_namespaces(dirs: std::sync::Arc<DaemonDirs>, image: String) {
    use v1::NamespaceMode::{Container, Pod, Target};
    let daemon = Peapodd::start(&dirs);
    let rt = daemon.runtime().await;
    daemon.pull(&image).await;
    let logs = dirs.path("logs");
    let shared = run_pod(&rt, pod_with_pid("shared", &logs, Pod)).await;
    let private = run_pod(&rt, pod_with_pid("private", &logs, Container)).await;
    assert_eq!(pod_inits(&dirs).len(), 1, "only the shared pod has an init");
    let sleeper = |name: &str, marker: &str, pid| {
        with_pid(container(name, &image, &["sleep", marker]), pid, "")
    };

    // Shared: the pod init is PID 1 and each container sees the other.
    let a = start_in(&rt, &shared, sleeper("a", "4242", Pod)).await;
    let b = start_in(&rt, &shared, sleeper("b", "4343", Pod)).await;
    assert!(run_in(&rt, &b, PID_1).await.contains("peapod-pod-init"));
    let seen = run_in(&rt, &b, EVERY_PROCESS).await;
    assert!(seen.contains("sleep 4242"), "b sees a: {seen}");
    assert!(run_in(&rt, &a, EVERY_PROCESS).await.contains("sleep 4343"));

    // Private: each container is PID 1 of its own namespace and sees nothing else.
    let c = start_in(&rt, &private, sleeper("c", "5252", Container)).await;
    let d = start_in(&rt, &private, sleeper("d", "5353", Container)).await;
    assert!(run_in(&rt, &d, PID_1).await.contains("sleep 5353"));
    let seen = run_in(&rt, &d, EVERY_PROCESS).await;
    assert!(!seen.contains("5252") && !seen.contains("4242"), "{seen}");

    // Target: a debug container joins c's namespace, where c is PID 1.
    let debug = with_pid(container("debug", &image, &["sleep", "6262"]), Target, &c);
    let e = start_in(&rt, &private, debug).await;
    assert!(run_in(&rt, &e, PID_1).await.contains("sleep 5252"));
    let seen = run_in(&rt, &c, EVERY_PROCESS).await;
    assert!(
        seen.contains("sleep 6262"),
        "c sees its debug container: {seen}"
    );

    // A target must be a running container of the same pod.
    let target = |name: &str, id: &str| with_pid(container(name, &image, &["true"]), Target, id);
    let err = create_in(&rt, &private, target("t1", "nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = create_in(&rt, &private, target("t2", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = create_in(&rt, &private, target("t3", &a))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let idle = create_in(&rt, &private, sleeper("idle", "1", Container))
        .await
        .unwrap();
    let err = create_in(&rt, &private, target("t4", &idle))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // The pod init outlives a kill -9 of the daemon, and new containers still join it.
    let inits = pod_inits(&dirs);
    drop(rt);
    daemon.stop_with(nix::sys::signal::Signal::SIGKILL);
    let daemon = Peapodd::start(&dirs);
    let rt = daemon.runtime().await;
    assert_eq!(pod_inits(&dirs), inits);
    let late = start_in(&rt, &shared, sleeper("late", "4444", Pod)).await;
    let seen = run_in(&rt, &late, EVERY_PROCESS).await;
    assert!(
        seen.contains("sleep 4242") && seen.contains("peapod-pod-init"),
        "{seen}"
    );

    // A pod whose init is gone can take no more containers: it reports not ready.
    let doomed = run_pod(&rt, pod_with_pid("doomed", &logs, Pod)).await;
    assert_eq!(
        pod_state_of(&rt, &doomed.0).await,
        v1::PodSandboxState::SandboxReady as i32
    );
    let doomed_init: Vec<String> = pod_inits(&dirs)
        .into_iter()
        .filter(|p| !inits.contains(p))
        .collect();
    assert_eq!(doomed_init.len(), 1);
    let pid = nix::unistd::Pid::from_raw(doomed_init[0].parse().unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pod_state_of(&rt, &doomed.0).await != v1::PodSandboxState::SandboxNotready as i32 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pod never became not ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Stopping the pod stops its containers and ends its init.
    rt.clone()
        .stop_pod_sandbox(v1::StopPodSandboxRequest {
            pod_sandbox_id: shared.0.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        pod_inits(&dirs),
        Vec::<String>::new(),
        "the pod inits are gone"
    );
    let status = rt
        .clone()
        .container_status(v1::ContainerStatusRequest {
            container_id: a,
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.state, v1::ContainerState::ContainerExited as i32);
}

#[tokio::test(flavor = "multi_thread")]
async fn cni_check_after_a_restart_finds_a_broken_pod_network() {
    let dirs = std::sync::Arc::new(DaemonDirs::new());
    let network = PrivateNetwork::new(dirs.dir.path(), 2);
    let result = tokio::spawn(broken_network(dirs.clone())).await;
    let daemon = Peapodd::start_with(&dirs, &[("--cni-bin-dir", "/usr/lib/cni".into())]);
    let mut rt = daemon.runtime().await;
    let pods = rt
        .list_pod_sandbox(v1::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    for pod in pods {
        // DEL of a half-broken network still cleans up (veth, lease, rules).
        rt.remove_pod_sandbox(v1::RemovePodSandboxRequest {
            pod_sandbox_id: pod.id,
        })
        .await
        .unwrap();
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    let nat = String::from_utf8(
        std::process::Command::new("iptables-save")
            .args(["-t", "nat"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(!nat.contains(&network.name()), "rules left:\n{nat}");
}

async fn broken_network(dirs: std::sync::Arc<DaemonDirs>) {
    let flags = [("--cni-bin-dir", "/usr/lib/cni".into())];
    let daemon = Peapodd::start_with(&dirs, &flags);
    let rt = daemon.runtime().await;
    let logs = dirs.path("logs");
    let (healthy, _) = run_pod(&rt, pod_config("healthy", &logs)).await;
    let (broken, _) = run_pod(&rt, pod_config("broken", &logs)).await;
    drop(rt);
    daemon.stop_with(nix::sys::signal::Signal::SIGKILL);

    // While no daemon runs, the pod loses its default route (CHECK compares the routes with
    // ADD's result; the address stays, so DEL can still find and remove the pod's rules).
    let netns = dirs.path("state").join("pods").join(&broken).join("ns/net");
    let status = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "route", "del", "default"])
        .status()
        .unwrap();
    assert!(status.success());

    let daemon = Peapodd::start_with(&dirs, &flags);
    let rt = daemon.runtime().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pod_state_of(&rt, &broken).await != v1::PodSandboxState::SandboxNotready as i32 {
        assert!(
            std::time::Instant::now() < deadline,
            "CNI CHECK never marked the pod not ready:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        pod_state_of(&rt, &healthy).await,
        v1::PodSandboxState::SandboxReady as i32,
        "a pod whose network passes CHECK stays ready"
    );
}
