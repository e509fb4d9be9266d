//! The streaming server (Exec, Attach, PortForward) driven as real clients drive it: a CRI
//! request gets a URL, a WebSocket client connects to it and speaks the `*.channel.k8s.io`
//! protocols. The daemon runs in the test's process so that the [`Streaming`] methods can be
//! called directly; containers are real, run by `peapod-shim`. One test uses the official
//! Kubernetes Python client as an independent implementation of the protocol.
mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use futures_util::{SinkExt, StreamExt};
use peapod_agent::config::Config;
use peapod_agent::cri::lifecycle;
use peapod_agent::daemon::Daemon;
use peapod_agent::streaming::{Streaming, DEFAULT_ADDRESS};
use peapod_cri_proto::v1;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tonic::Code;

use common::{
    container, free_port, host_network_pod, DaemonDirs, Peapodd, PrivateNetwork, Registry,
};

/// peapodd finds its shim next to its own binary; a test binary lives elsewhere.
fn point_at_companions() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("PEAPOD_SHIM", peapod_tests::workspace_binary("peapod-shim"));
        std::env::set_var(
            "PEAPOD_POD_INIT",
            peapod_tests::workspace_binary("peapod-pod-init"),
        );
    });
}

/// A daemon with its streaming server, on directories of its own, with busybox imported.
/// Every pod it made is removed when it is dropped, also when a test fails.
struct Node {
    daemon: Arc<Daemon>,
    streaming: Streaming,
    busybox: String,
    pods: std::sync::Mutex<Vec<String>>,
    /// Dropped after the pods (fields drop after `Drop::drop`).
    _network: Option<PrivateNetwork>,
    dir: tempfile::TempDir,
}

impl Node {
    async fn start() -> Node {
        Self::start_with_cni(None).await
    }

    /// `octet`: give pods a private CNI network (10.198.<octet>.0/24) of their own.
    async fn start_with_cni(octet: Option<u8>) -> Node {
        Self::start_with(octet, |_| {}).await
    }

    async fn start_with(octet: Option<u8>, tweak: impl FnOnce(&mut Config)) -> Node {
        point_at_companions();
        let dir = tempfile::Builder::new()
            .prefix("peapod-streaming-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("registries.conf"), "").unwrap();
        std::fs::create_dir(dir.path().join("cni")).unwrap();
        let network = octet.map(|octet| PrivateNetwork::new(dir.path(), octet));
        let config = Config {
            root: dir.path().join("root"),
            state: dir.path().join("state"),
            socket: dir.path().join("state/peapod.sock"),
            registries_conf: Some(dir.path().join("registries.conf")),
            cni_conf_dir: dir.path().join("cni"),
            cni_bin_dirs: vec!["/usr/lib/cni".into()],
            default_cni_network: false,
            log_level: "debug".into(),
            ..Config::default()
        };
        let mut config = config;
        tweak(&mut config);
        let daemon = Arc::new(Daemon::open(config).unwrap());
        let imported = daemon
            .images
            .import(&common::images().join("oci.tar"), None)
            .await
            .unwrap();
        let busybox = imported
            .iter()
            .flat_map(|i| i.repo_tags.iter())
            .find(|t| t.contains("busybox"))
            .expect("the busybox test image")
            .clone();
        let streaming = Streaming::start(DEFAULT_ADDRESS, Arc::downgrade(&daemon)).unwrap();
        Node {
            daemon,
            streaming,
            busybox,
            pods: std::sync::Mutex::new(Vec::new()),
            _network: network,
            dir,
        }
    }

    async fn pod(&self, name: &str, host_network: bool) -> String {
        let logs = self.dir.path().join("logs").join(name);
        std::fs::create_dir_all(&logs).unwrap();
        let network = if host_network {
            v1::NamespaceMode::Node
        } else {
            v1::NamespaceMode::Pod
        };
        let config = v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: logs.display().to_string(),
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
        };
        let id = lifecycle::run_pod_sandbox(
            &self.daemon,
            v1::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            },
        )
        .await
        .unwrap()
        .pod_sandbox_id;
        self.pods.lock().unwrap().push(id.clone());
        id
    }

    /// A container of busybox running `command` (not started when `start` is false).
    async fn container(
        &self,
        pod: &str,
        name: &str,
        command: &[&str],
        stdin: bool,
        start: bool,
    ) -> String {
        self.container_with(pod, name, command, start, |c| c.stdin = stdin)
            .await
    }

    async fn container_with(
        &self,
        pod: &str,
        name: &str,
        command: &[&str],
        start: bool,
        tweak: impl FnOnce(&mut v1::ContainerConfig),
    ) -> String {
        let sandbox_config = self.daemon.pods.load(pod).await.unwrap().config().unwrap();
        let config = v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(v1::ImageSpec {
                image: self.busybox.clone(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            ..Default::default()
        };
        let mut config = config;
        tweak(&mut config);
        let id = lifecycle::create_container(
            &self.daemon,
            v1::CreateContainerRequest {
                pod_sandbox_id: pod.into(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            },
        )
        .await
        .unwrap()
        .container_id;
        if start {
            lifecycle::start_container(
                &self.daemon,
                v1::StartContainerRequest {
                    container_id: id.clone(),
                },
            )
            .await
            .unwrap();
        }
        id
    }

    /// A host-network pod with a running `sleep` container to exec into.
    async fn sleeper(&self, name: &str) -> String {
        let pod = self.pod(name, true).await;
        self.container(&pod, "sleeper", &["sleep", "3600"], false, true)
            .await
    }

    /// An attach with stdin, stdout and stderr, no terminal.
    async fn attach_url(&self, container: &str) -> String {
        self.streaming
            .attach(v1::AttachRequest {
                container_id: container.into(),
                stdin: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .url
    }

    async fn exec_url(&self, container: &str, cmd: &[&str], streams: Streams) -> String {
        self.streaming
            .exec(v1::ExecRequest {
                container_id: container.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty: streams.tty,
                stdin: streams.stdin,
                stdout: streams.stdout,
                stderr: streams.stderr,
                ..Default::default()
            })
            .await
            .unwrap()
            .url
    }

    async fn port_forward_url(&self, pod: &str) -> String {
        self.streaming
            .port_forward(v1::PortForwardRequest {
                pod_sandbox_id: pod.into(),
                port: vec![],
            })
            .await
            .unwrap()
            .url
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let pods = std::mem::take(&mut *self.pods.lock().unwrap_or_else(|p| p.into_inner()));
        let daemon = self.daemon.clone();
        // Async clean-up from a destructor: a runtime of its own, on a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                for id in pods {
                    let _ = lifecycle::stop_pod_sandbox(
                        &daemon,
                        v1::StopPodSandboxRequest {
                            pod_sandbox_id: id.clone(),
                        },
                    )
                    .await;
                    let _ = lifecycle::remove_pod_sandbox(
                        &daemon,
                        v1::RemovePodSandboxRequest { pod_sandbox_id: id },
                    )
                    .await;
                }
            })
        })
        .join();
    }
}

#[derive(Clone, Copy, Default)]
struct Streams {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

const OUT: Streams = Streams {
    stdin: false,
    stdout: true,
    stderr: true,
    tty: false,
};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to a streaming URL as a WebSocket client offering `protocols`; returns the socket
/// and the protocol the server chose.
async fn connect(url: &str, protocols: &[&str]) -> (Socket, Option<String>) {
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut request = ws_url.into_client_request().unwrap();
    if !protocols.is_empty() {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(&protocols.join(", ")).unwrap(),
        );
    }
    let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (socket, chosen)
}

/// Everything a session sent, by channel, in order; and the messages as they came.
#[derive(Default, Debug)]
struct Received {
    channels: BTreeMap<u8, Vec<u8>>,
    messages: Vec<(u8, Vec<u8>)>,
}

impl Received {
    fn text(&self, channel: u8) -> String {
        String::from_utf8_lossy(self.channels.get(&channel).map_or(&[][..], |v| v)).into_owned()
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.text(3))
            .unwrap_or_else(|e| panic!("error channel {:?} is not a status: {e}", self.text(3)))
    }
}

fn add(received: &mut Received, message: Message) {
    let (channel, data) = match message {
        Message::Binary(bytes) => (bytes[0], bytes[1..].to_vec()),
        Message::Text(text) => {
            let bytes = text.as_bytes();
            let data = peapod_runtime::shim_protocol::base64::decode(
                std::str::from_utf8(&bytes[1..]).unwrap(),
            )
            .unwrap();
            (bytes[0] - b'0', data)
        }
        _ => return,
    };
    received.channels.entry(channel).or_default().extend(&data);
    received.messages.push((channel, data));
}

/// Reads until the server closes the connection.
async fn read_all(socket: &mut Socket) -> Received {
    let mut received = Received::default();
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(message) => add(&mut received, message),
        }
    }
    received
}

/// Reads until `channel` has received something containing `wanted`.
async fn read_until(socket: &mut Socket, received: &mut Received, channel: u8, wanted: &str) {
    while !received.text(channel).contains(wanted) {
        match socket.next().await {
            Some(Ok(message)) => add(received, message),
            other => panic!(
                "connection ended before {wanted:?} on channel {channel}: {other:?}, got {received:?}"
            ),
        }
    }
}

async fn send(socket: &mut Socket, channel: u8, data: &[u8]) {
    let mut bytes = vec![channel];
    bytes.extend_from_slice(data);
    socket.send(Message::binary(bytes)).await.unwrap();
}

/// A plain HTTP request; returns the status line and the body.
fn http(url: &str, extra_headers: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (address, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{extra_headers}\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_echo_reports_output_and_success() {
    let node = Node::start().await;
    let container = node.sleeper("exec-echo").await;
    let url = node.exec_url(&container, &["echo", "hello"], OUT).await;
    assert!(url.starts_with(&format!("http://{}/exec/", node.streaming.address())));

    let (mut socket, chosen) = connect(&url, &["v4.channel.k8s.io"]).await;
    assert_eq!(chosen.as_deref(), Some("v4.channel.k8s.io"));
    let received = read_all(&mut socket).await;
    // The first message, empty, on stdout: the session is up.
    assert_eq!(received.messages[0], (1, vec![]));
    assert_eq!(received.text(1), "hello\n");
    assert_eq!(received.text(2), "");
    assert_eq!(
        received.status(),
        serde_json::json!({"metadata": {}, "status": "Success"})
    );

    // The URL was good for one connection.
    let (status, _) = http(&url, "");
    assert!(status.contains(" 404 "), "{status}");
}

/// The idle timeout closes a session that nothing passes through; its exec'd process ends.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_session_is_closed_and_its_process_ends() {
    let node = Node::start_with(None, |c| c.stream_idle_timeout_seconds = 1).await;
    let container = node.sleeper("idle").await;
    let cmd = ["sh", "-c", "echo started; exec sleep 3599"];
    let url = node.exec_url(&container, &cmd, OUT).await;
    let (mut socket, _) = connect(&url, &["v4.channel.k8s.io"]).await;
    let mut received = Received::default();
    read_until(&mut socket, &mut received, 1, "started").await;
    // Nothing more passes either way: the server closes the connection without a status.
    let rest = read_all(&mut socket).await;
    assert!(
        rest.messages.iter().all(|(channel, _)| *channel != 3),
        "{rest:?}"
    );
    // The shim kills a process whose session is gone.
    let mut processes = String::new();
    for _ in 0..100 {
        let out = lifecycle::exec_sync(
            &node.daemon,
            v1::ExecSyncRequest {
                container_id: container.clone(),
                cmd: ["sh", "-c", "cat /proc/[0-9]*/cmdline"]
                    .map(String::from)
                    .to_vec(),
                timeout: 10,
            },
        )
        .await
        .unwrap();
        processes = String::from_utf8_lossy(&out.stdout).replace('\0', " ");
        if !processes.contains("3599") {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the idle session's process still runs: {processes}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_zero_exit_code_is_reported() {
    let node = Node::start().await;
    let container = node.sleeper("exec-exit").await;
    let url = node
        .exec_url(&container, &["sh", "-c", "echo oops >&2; exit 3"], OUT)
        .await;
    let (mut socket, _) = connect(&url, &["v5.channel.k8s.io", "v4.channel.k8s.io"]).await;
    let received = read_all(&mut socket).await;
    assert_eq!(received.text(2), "oops\n");
    let status = received.status();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    assert!(status["message"]
        .as_str()
        .unwrap()
        .starts_with("command terminated with non-zero exit code"));

    // Before V4 the error stream carries text, and only for failures.
    let url = node
        .exec_url(&container, &["sh", "-c", "exit 4"], OUT)
        .await;
    let (mut socket, chosen) = connect(&url, &["channel.k8s.io"]).await;
    assert_eq!(chosen.as_deref(), Some("channel.k8s.io"));
    let received = read_all(&mut socket).await;
    assert!(received.text(3).contains("exit code 4"), "{received:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_reaches_the_command_and_closing_it_ends_cat() {
    let node = Node::start().await;
    let container = node.sleeper("exec-stdin").await;
    let streams = Streams { stdin: true, ..OUT };
    let url = node.exec_url(&container, &["cat"], streams).await;
    let (mut socket, chosen) = connect(&url, &["v5.channel.k8s.io"]).await;
    assert_eq!(chosen.as_deref(), Some("v5.channel.k8s.io"));
    send(&mut socket, 0, b"line one\n").await;
    let mut received = Received::default();
    read_until(&mut socket, &mut received, 1, "line one\n").await;
    send(&mut socket, 0, b"line two\n").await;
    // v5: close stdin; cat sees the end and exits.
    socket.send(Message::binary(vec![255, 0])).await.unwrap();
    let rest = read_all(&mut socket).await;
    assert_eq!(received.text(1) + &rest.text(1), "line one\nline two\n");
    assert_eq!(rest.status()["status"], "Success");
}

#[tokio::test(flavor = "multi_thread")]
async fn base64_protocol_sends_text_messages() {
    let node = Node::start().await;
    let container = node.sleeper("exec-base64").await;
    let url = node.exec_url(&container, &["echo", "hi"], OUT).await;
    let (mut socket, chosen) = connect(&url, &["v4.base64.channel.k8s.io"]).await;
    assert_eq!(chosen.as_deref(), Some("v4.base64.channel.k8s.io"));
    let mut texts = Vec::new();
    let mut received = Received::default();
    while let Some(Ok(message)) = socket.next().await {
        if let Message::Text(text) = &message {
            texts.push(text.to_string());
        }
        add(&mut received, message);
    }
    // Channel 1 as a digit, then "hi\n" in base64.
    assert!(texts.iter().any(|t| t == "1aGkK"), "{texts:?}");
    assert_eq!(received.text(1), "hi\n");
    assert_eq!(received.status()["status"], "Success");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_takes_its_size_from_resize_messages() {
    let node = Node::start().await;
    let container = node.sleeper("exec-tty").await;
    let streams = Streams {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: true,
    };
    let url = node
        .exec_url(&container, &["sh", "-c", "read line; stty size"], streams)
        .await;
    let (mut socket, _) = connect(&url, &["v4.channel.k8s.io"]).await;
    // A size, then the line `read` waits for: the size is applied before the line arrives.
    send(&mut socket, 4, br#"{"Width":123,"Height":45}"#).await;
    send(&mut socket, 0, b"go\n").await;
    let received = read_all(&mut socket).await;
    // With a terminal there is no stderr: everything is on stdout, with the terminal's \r\n.
    assert!(received.text(1).contains("45 123"), "{received:?}");
    assert!(!received.channels.contains_key(&2));
    assert_eq!(received.status()["status"], "Success");
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_sees_a_running_containers_output_and_feeds_its_stdin() {
    let node = Node::start().await;
    let pod = node.pod("attach", true).await;
    let container = node.container(&pod, "cat", &["cat"], true, true).await;
    let url = node.attach_url(&container).await;
    assert!(url.contains("/attach/"));
    let (mut socket, _) = connect(&url, &["v4.channel.k8s.io"]).await;
    let mut received = Received::default();
    send(&mut socket, 0, b"through attach\n").await;
    read_until(&mut socket, &mut received, 1, "through attach\n").await;
    // Detaching leaves the container running.
    socket.close(None).await.unwrap();
    drop(socket);
    let status = lifecycle::container_status(
        &node.daemon,
        v1::ContainerStatusRequest {
            container_id: container,
            verbose: false,
        },
    )
    .await
    .unwrap()
    .status
    .unwrap();
    assert_eq!(status.state, v1::ContainerState::ContainerRunning as i32);
}

/// `kubectl run -i` (stdin and stdin_once, no terminal): when the attached client is done, the
/// container reads end-of-file and finishes.
#[tokio::test(flavor = "multi_thread")]
async fn with_stdin_once_the_container_reads_eof_when_the_attach_ends() {
    let node = Node::start().await;
    let pod = node.pod("stdin-once", true).await;
    let container = node
        .container_with(
            &pod,
            "once",
            &["sh", "-c", "cat; echo finished"],
            true,
            |c| {
                c.stdin = true;
                c.stdin_once = true;
            },
        )
        .await;
    let url = node.attach_url(&container).await;
    let (mut socket, _) = connect(&url, &["v4.channel.k8s.io"]).await;
    let mut received = Received::default();
    send(&mut socket, 0, b"typed\n").await;
    read_until(&mut socket, &mut received, 1, "typed\n").await;
    socket.close(None).await.unwrap();
    drop(socket);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        let status = lifecycle::container_status(
            &node.daemon,
            v1::ContainerStatusRequest {
                container_id: container.clone(),
                verbose: false,
            },
        )
        .await
        .unwrap()
        .status
        .unwrap();
        if status.state == v1::ContainerState::ContainerExited as i32
            || std::time::Instant::now() > deadline
        {
            break status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        status.state,
        v1::ContainerState::ContainerExited as i32,
        "the container still waits for input"
    );
    assert_eq!(status.exit_code, 0);
}

/// An echo service on a loopback listener: what a pod's server would be.
fn echo(listener: std::net::TcpListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// Forwards `port` over a new session and checks that the service echoes.
async fn forward_and_echo(url: &str, port: u16) {
    let (mut socket, chosen) = connect(&format!("{url}?port={port}"), &["v4.channel.k8s.io"]).await;
    assert_eq!(chosen.as_deref(), Some("v4.channel.k8s.io"));
    // Each channel first names its port, little-endian.
    let mut received = Received::default();
    while received.messages.len() < 2 {
        add(&mut received, socket.next().await.unwrap().unwrap());
    }
    let mut firsts: Vec<_> = received.messages.clone();
    firsts.sort();
    assert_eq!(
        firsts,
        vec![
            (0, port.to_le_bytes().to_vec()),
            (1, port.to_le_bytes().to_vec())
        ]
    );
    received = Received::default();
    send(&mut socket, 0, b"ping through the pod").await;
    read_until(&mut socket, &mut received, 0, "ping through the pod").await;
    assert_eq!(received.text(1), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_on_the_host_network_and_a_refused_port() {
    let node = Node::start().await;
    let pod = node.pod("forward-host", true).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    echo(listener);
    forward_and_echo(&node.port_forward_url(&pod).await, port).await;

    // Nobody listens: the error channel says so, in the kubelet's words.
    let closed = common::free_port();
    let url = node.port_forward_url(&pod).await;
    let (mut socket, _) = connect(&format!("{url}?port={closed}"), &["v4.channel.k8s.io"]).await;
    let received = read_all(&mut socket).await;
    // After the port number, the error.
    let error: Vec<u8> = received
        .messages
        .iter()
        .filter(|(channel, _)| *channel == 1)
        .skip(1)
        .flat_map(|(_, data)| data.clone())
        .collect();
    let error = String::from_utf8_lossy(&error);
    assert!(
        error.starts_with(&format!(
            "error forwarding port {closed} to pod {pod}, uid : "
        )),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_connects_inside_the_pods_network_namespace() {
    let node = Node::start_with_cni(Some(43)).await;
    let pod = node.pod("forward-netns", false).await;
    let netns: PathBuf = node
        .daemon
        .pods
        .load(&pod)
        .await
        .unwrap()
        .sandbox
        .netns
        .expect("a pod network namespace");
    // The pod's service: a listener made inside the pod's namespace (by a thread that joins
    // it), on a port nothing listens on in the host's.
    let listener = std::thread::spawn(move || {
        let ns = std::fs::File::open(&netns).unwrap();
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        std::net::TcpListener::bind("127.0.0.1:0").unwrap()
    })
    .join()
    .unwrap();
    let port = listener.local_addr().unwrap().port();
    echo(listener);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    forward_and_echo(&node.port_forward_url(&pod).await, port).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_urls_and_requests_get_http_errors() {
    let node = Node::start().await;
    let container = node.sleeper("http-errors").await;
    let base = format!("http://{}", node.streaming.address());

    let (status, _) = http(&format!("{base}/exec/unknown-token"), "");
    assert!(status.contains(" 404 "), "{status}");
    let (status, _) = http(&format!("{base}/nothing/here"), "");
    assert!(status.contains(" 404 "), "{status}");

    // No upgrade.
    let url = node.exec_url(&container, &["true"], OUT).await;
    let (status, _) = http(&url, "");
    assert!(status.contains(" 400 "), "{status}");
    // The token is gone even so.
    let (status, _) = http(&url, "");
    assert!(status.contains(" 404 "), "{status}");

    // A token of another kind is not found either.
    let url = node.exec_url(&container, &["true"], OUT).await;
    let (status, _) = http(&url.replace("/exec/", "/attach/"), "");
    assert!(status.contains(" 404 "), "{status}");

    // A sub-protocol we do not speak.
    let url = node.exec_url(&container, &["true"], OUT).await;
    let (status, body) = http(
        &url,
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v9.channel.k8s.io\r\n",
    );
    assert!(status.contains(" 400 "), "{status}");
    assert!(body.contains("not supported"), "{body}");

    // SPDY: a version the server does not speak.
    let url = node.exec_url(&container, &["true"], OUT).await;
    let (status, _) = http(
        &url,
        "Upgrade: SPDY/3.1\r\nConnection: Upgrade\r\nX-Stream-Protocol-Version: v9.channel.k8s.io\r\n",
    );
    assert!(status.contains(" 403 "), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_requests_get_the_kubelets_codes() {
    let node = Node::start().await;
    let pod = node.pod("bad-requests", true).await;
    let running = node
        .container(&pod, "running", &["sleep", "3600"], false, true)
        .await;
    let created = node
        .container(&pod, "created", &["sleep", "3600"], false, false)
        .await;
    let exec = |container: &str, streams: Streams| v1::ExecRequest {
        container_id: container.into(),
        cmd: vec!["true".into()],
        tty: streams.tty,
        stdin: streams.stdin,
        stdout: streams.stdout,
        stderr: streams.stderr,
        ..Default::default()
    };
    let code = |r: Result<v1::ExecResponse, tonic::Status>| {
        r.map(drop).map_err(|s| (s.code(), s.message().to_string()))
    };

    let none = Streams::default();
    assert_eq!(
        code(node.streaming.exec(exec(&running, none)).await),
        Err((
            Code::InvalidArgument,
            "one of stdin, stdout, or stderr must be set".into()
        ))
    );
    let tty_and_stderr = Streams { tty: true, ..OUT };
    assert_eq!(
        code(node.streaming.exec(exec(&running, tty_and_stderr)).await),
        Err((
            Code::InvalidArgument,
            "tty and stderr cannot both be true".into()
        ))
    );
    let unknown = node.streaming.exec(exec("no-such-container", OUT)).await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);
    let not_running = node.streaming.exec(exec(&created, OUT)).await;
    assert_eq!(not_running.unwrap_err().code(), Code::FailedPrecondition);
    let mut no_cmd = exec(&running, OUT);
    no_cmd.cmd.clear();
    assert_eq!(
        node.streaming.exec(no_cmd).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let attach = node
        .streaming
        .attach(v1::AttachRequest {
            container_id: created.clone(),
            stdout: true,
            ..Default::default()
        })
        .await;
    assert_eq!(attach.unwrap_err().code(), Code::FailedPrecondition);
    let forward = node
        .streaming
        .port_forward(v1::PortForwardRequest {
            pod_sandbox_id: "no-such-pod".into(),
            port: vec![80],
        })
        .await;
    assert_eq!(forward.unwrap_err().code(), Code::NotFound);
    let forward = node
        .streaming
        .port_forward(v1::PortForwardRequest::default())
        .await;
    assert_eq!(forward.unwrap_err().code(), Code::InvalidArgument);
}

/// The Kubernetes Python client's WebSocket code (`pip install kubernetes`) against our
/// server: an implementation of the protocol that is not ours.
const PYTHON_CLIENT: &str = r#"
import json, sys
from kubernetes.client import Configuration
from kubernetes.stream.ws_client import WSClient, get_websocket_url
client = WSClient(Configuration(), get_websocket_url(sys.argv[1]), None, True, binary=True)
client.run_forever(timeout=60)
print(json.dumps({
    "protocol": client.subprotocol,
    "stdout": (client.read_stdout() or b"").decode(),
    "stderr": (client.read_stderr() or b"").decode(),
    "returncode": client.returncode,
}))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_kubernetes_python_client_execs() {
    let node = Node::start().await;
    let container = node.sleeper("python-client").await;
    for (script, code) in [
        ("echo out; echo err >&2", 0),
        ("echo out; echo err >&2; exit 7", 7),
    ] {
        let url = node.exec_url(&container, &["sh", "-c", script], OUT).await;
        let output = tokio::process::Command::new("python3")
            .args(["-c", PYTHON_CLIENT, &url])
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "the Python client failed (needs `pip install kubernetes`): {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(result["protocol"], "v5.channel.k8s.io");
        assert_eq!(result["stdout"], "out\n");
        assert_eq!(result["stderr"], "err\n");
        assert_eq!(result["returncode"], code);
    }
}

/// `spdy-transport` (Node's SPDY/3.1 implementation), installed once per test run.
fn node_spdy_client() -> PathBuf {
    static INSTALL: Once = Once::new();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("node-spdy-client");
    INSTALL.call_once(|| {
        std::fs::create_dir_all(&dir).unwrap();
        if !dir.join("node_modules/spdy-transport").is_dir() {
            let status = std::process::Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--silent",
                    "spdy-transport@3.0.0",
                ])
                .current_dir(&dir)
                .status()
                .expect("npm is needed for this test (node 20 with npm)");
            assert!(status.success(), "npm install spdy-transport failed");
        }
        std::fs::write(dir.join("exec.js"), NODE_SPDY_EXEC).unwrap();
    });
    dir.join("exec.js")
}

/// What kubectl exec does through the kubelet, from Node: an HTTP upgrade to SPDY/3.1 with
/// `v4.channel.k8s.io`, then the error, stdout and stderr streams; prints what each carried.
const NODE_SPDY_EXEC: &str = r#"
const net = require('net');
const transport = require('spdy-transport');
const url = new URL(process.argv[2]);
const fail = (why) => { console.log(JSON.stringify({ fail: String(why) })); process.exit(1); };
setTimeout(() => fail('no result within 60 s'), 60000).unref();
const socket = net.connect(Number(url.port), url.hostname, () => {
  socket.write(`POST ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n` +
    'Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n' +
    'Content-Length: 0\r\n\r\n');
});
socket.on('error', (e) => fail('socket: ' + e));
let head = Buffer.alloc(0);
const onHead = (data) => {
  head = Buffer.concat([head, data]);
  const end = head.indexOf('\r\n\r\n');
  if (end < 0) return;
  socket.pause();
  socket.removeListener('data', onHead);
  const answer = head.slice(0, end).toString();
  if (!answer.startsWith('HTTP/1.1 101')) fail(answer);
  if (!/x-stream-protocol-version: v4.channel.k8s.io/i.test(answer)) fail(answer);
  if (head.length > end + 4) socket.unshift(head.slice(end + 4));
  session();
};
socket.on('data', onHead);
const session = () => {
  const conn = transport.connection.create(socket, { protocol: 'spdy', isServer: false });
  conn.on('error', (e) => fail('connection: ' + e));
  conn.start(3.1);
  const got = {};
  let open = 0;
  const open_stream = (type) => {
    open++;
    const chunks = [];
    const stream = conn.request({ method: 'POST', path: '/', host: 'localhost', headers: { streamtype: type } },
      (err) => { if (err) fail('request ' + type + ': ' + err); });
    stream.on('data', (d) => chunks.push(d));
    stream.on('error', (e) => fail(type + ': ' + e));
    stream.on('end', () => {
      got[type] = Buffer.concat(chunks).toString();
      if (--open === 0) {
        console.log(JSON.stringify(got));
        socket.destroy();
        process.exit(0);
      }
    });
    stream.end();
  };
  open_stream('error');
  open_stream('stdout');
  open_stream('stderr');
  socket.resume();
};
"#;

#[tokio::test(flavor = "multi_thread")]
async fn exec_over_spdy_as_the_kubelet_proxies_it() {
    let client = node_spdy_client();
    let node = Node::start().await;
    let container = node.sleeper("spdy-exec").await;
    let url = node
        .exec_url(
            &container,
            &["sh", "-c", "echo hello; echo oops >&2; exit 4"],
            OUT,
        )
        .await;
    let output = tokio::process::Command::new("node")
        .arg(&client)
        .arg(&url)
        .output()
        .await
        .expect("node is needed for this test");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "node client failed: {report}");
    let got: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(got["stdout"], "hello\n", "{got}");
    assert_eq!(got["stderr"], "oops\n", "{got}");
    let status: serde_json::Value = serde_json::from_str(got["error"].as_str().unwrap()).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
    assert_eq!(status["details"]["causes"][0]["message"], "4", "{status}");
}

/// Through a real peapodd: the CRI Exec RPC hands out a URL on the server the daemon was told to
/// use (`--stream-address`), and a WebSocket client runs the command there.
#[tokio::test(flavor = "multi_thread")]
async fn peapodd_serves_exec_urls_on_its_stream_address() {
    let dirs = DaemonDirs::new();
    let registry = Registry::start();
    let image = registry.push("busybox", "test/busybox", "1");
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let daemon = Peapodd::start_with(&dirs, &[("--stream-address", address.clone().into())]);
    let mut rt = daemon.runtime().await;
    daemon.pull(&image).await;
    let config = host_network_pod("grpc-exec", &dirs.path("logs"));
    let pod = rt
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let body = {
        let (mut rt, pod) = (rt.clone(), pod.clone());
        async move {
            let container = rt
                .create_container(v1::CreateContainerRequest {
                    pod_sandbox_id: pod.clone(),
                    config: Some(container("sleeper", &image, &["sleep", "3600"])),
                    sandbox_config: Some(config.clone()),
                })
                .await
                .unwrap()
                .into_inner()
                .container_id;
            rt.clone()
                .start_container(v1::StartContainerRequest {
                    container_id: container.clone(),
                })
                .await
                .unwrap();
            let url = rt
                .clone()
                .exec(v1::ExecRequest {
                    container_id: container.clone(),
                    cmd: vec!["echo".into(), "through grpc".into()],
                    stdout: true,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .url;
            assert!(url.starts_with(&format!("http://{address}/exec/")), "{url}");
            let (mut socket, _) = connect(&url, &["v4.channel.k8s.io"]).await;
            let received = read_all(&mut socket).await;
            assert_eq!(received.text(1), "through grpc\n");
            assert_eq!(received.status()["status"], "Success");

            let err = rt
                .clone()
                .port_forward(v1::PortForwardRequest {
                    pod_sandbox_id: "nope".into(),
                    port: vec![80],
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::NotFound, "{err:?}");
            let err = rt
                .clone()
                .attach(v1::AttachRequest {
                    container_id: container,
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        }
    };
    let result = tokio::spawn(body).await;
    rt.remove_pod_sandbox(v1::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}
