//! Test harness: a real peapodd on temporary directories, test images built
//! by scripts/make-test-images, Debian's docker-registry on a free loopback
//! port and skopeo to push to it. Every process is stopped (by PID) and every
//! directory removed when its guard is dropped, also when a test fails.

#![allow(dead_code)]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use peapod_cri_proto::v1;
use peapod_cri_proto::v1::image_service_client::ImageServiceClient;
use peapod_cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

/// How long a daemon or registry may take to start before the test gives
/// up; only a guard against hanging forever.
const START_LIMIT: Duration = Duration::from_secs(60);

/// The test images, built once per script version in cargo's temp dir.
pub fn images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| peapod_tests::test_images(&peapod_tests::target_tmp_dir()))
}

// Not every test binary uses all of them.
#[allow(unused_imports)]
pub use peapod_tests::registry::{free_port, Registry, PASSWORD, USER};

/// Where one peapodd keeps everything: all inside one temp dir.
pub struct DaemonDirs {
    pub dir: tempfile::TempDir,
}

impl DaemonDirs {
    pub fn new() -> DaemonDirs {
        let dir = tempfile::Builder::new()
            .prefix("peapodd-test-")
            .tempdir()
            .unwrap();
        for sub in ["cni", "cni-bin"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        // Empty files: no registry configuration and no daemon configuration,
        // whatever the machine has in /etc.
        std::fs::write(dir.path().join("registries.conf"), "").unwrap();
        std::fs::write(dir.path().join("config.toml"), "").unwrap();
        DaemonDirs { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn socket(&self) -> PathBuf {
        self.path("state/peapod.sock")
    }

    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The daemon's command line for these dirs.
    pub fn command(&self) -> Command {
        self.command_with(&[])
    }

    /// The daemon's command line with some flags (`"--root"`, …) given
    /// other values, and flags it does not set by default added.
    pub fn command_with(&self, overrides: &[(&str, PathBuf)]) -> Command {
        let flags = [
            ("--config", self.path("config.toml")),
            ("--root", self.path("root")),
            ("--state", self.path("state")),
            ("--socket", self.socket()),
            ("--registries-conf", self.path("registries.conf")),
            ("--cni-conf-dir", self.path("cni")),
            ("--cni-bin-dir", self.path("cni-bin")),
            ("--log-level", PathBuf::from("debug")),
        ];
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peapodd"));
        // The tests bring their own networks; the default one is tested on its own.
        if !overrides.iter().any(|(f, _)| *f == "--default-cni-network") {
            cmd.arg("--no-default-cni-network");
        }
        for (flag, default) in &flags {
            let value = overrides
                .iter()
                .find(|(f, _)| f == flag)
                .map_or(default, |(_, v)| v);
            cmd.arg(flag).arg(value);
        }
        for (flag, value) in overrides {
            if *flag == "--default-cni-network" {
                continue;
            }
            if !flags.iter().any(|(f, _)| f == flag) {
                cmd.arg(flag).arg(value);
            }
        }
        cmd
    }
}

/// A running peapodd; killed (by PID) when dropped.
pub struct Peapodd {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Peapodd {
    /// Starts peapodd on `dirs` and waits until it answers on its socket.
    pub fn start(dirs: &DaemonDirs) -> Peapodd {
        Self::start_with(dirs, &[])
    }

    /// Starts peapodd with some flags changed or added (see
    /// [`DaemonDirs::command_with`]).
    pub fn start_with(dirs: &DaemonDirs, flags: &[(&str, PathBuf)]) -> Peapodd {
        let log = dirs.path(&format!("peapodd-{}.log", unique_suffix()));
        let child = dirs
            .command_with(flags)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start peapodd");
        let mut daemon = Peapodd {
            child,
            socket: dirs.socket(),
            log,
        };
        let deadline = Instant::now() + START_LIMIT;
        while UnixStream::connect(&daemon.socket).is_err() {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("peapodd exited with {status}:\n{}", daemon.log());
            }
            assert!(
                Instant::now() < deadline,
                "peapodd did not start:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn channel(&self) -> Channel {
        peapod_cri_proto::connect_unix(&self.socket).await.unwrap()
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }

    /// Sends `signal` and waits for the daemon to exit.
    pub fn stop_with(mut self, signal: Signal) -> ExitStatus {
        kill(self.pid(), signal).unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Peapodd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// Runs a daemon command line to completion (one expected to fail at start).
pub fn run_to_exit(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run peapodd")
}

/// Runs the `peapod` CLI against `endpoint`.
pub fn peapod(endpoint: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peapod"))
        .arg("--endpoint")
        .arg(endpoint)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run peapod")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A CNI network of the test's own, written into `<root>/cni` (the conf dir the harness gives
/// peapodd): a bridge, the subnet 10.198.<octet>.0/24, leases under `<root>/ipam`. Each test
/// takes an octet no other test uses, so tests run side by side. Dropping it deletes the bridge
/// (the bridge plugin makes bridges and never deletes them).
pub struct PrivateNetwork {
    pub bridge: String,
    pub subnet_prefix: String,
}

impl PrivateNetwork {
    pub fn new(root: &Path, octet: u8) -> PrivateNetwork {
        let bridge = format!("ppt{}x{octet}", std::process::id() % 100_000);
        let cni = peapod_agent::sandbox::Cni::new(
            root.join("cni"),
            vec!["/usr/lib/cni".into()],
            root.join("cni-cache"),
        );
        cni.ensure_default_config(&peapod_agent::sandbox::DefaultNetwork {
            name: format!("test-{bridge}"),
            bridge: bridge.clone(),
            subnet: format!("10.198.{octet}.0/24"),
            ipam_data_dir: Some(root.join("ipam")),
            file_name: "10-test.conflist".into(),
        })
        .unwrap();
        PrivateNetwork {
            bridge,
            subnet_prefix: format!("10.198.{octet}."),
        }
    }

    /// The network's name, which CNI writes into the comments of its iptables rules.
    pub fn name(&self) -> String {
        format!("test-{}", self.bridge)
    }
}

impl Drop for PrivateNetwork {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

impl Peapodd {
    /// Pulls `image` through the CRI.
    pub async fn pull(&self, image: &str) {
        self.images()
            .await
            .pull_image(v1::PullImageRequest {
                image: Some(v1::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

/// A pod as the kubelet sends it for a pod without hostNetwork or shareProcessNamespace.
pub fn pod_config(name: &str, logs: &std::path::Path) -> v1::PodSandboxConfig {
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web".into(),
        log_directory: logs.display().to_string(),
        // What the kubelet sends for a pod without shareProcessNamespace.
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(v1::NamespaceOption {
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

/// A pod on the host's network (no CNI needed), with the kubelet's usual private PID namespaces.
pub fn host_network_pod(name: &str, logs: &std::path::Path) -> v1::PodSandboxConfig {
    let mut config = pod_config(name, logs);
    config.linux = Some(v1::LinuxPodSandboxConfig {
        security_context: Some(v1::LinuxSandboxSecurityContext {
            namespace_options: Some(v1::NamespaceOption {
                network: v1::NamespaceMode::Node as i32,
                pid: v1::NamespaceMode::Container as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

pub fn container(name: &str, image: &str, command: &[&str]) -> v1::ContainerConfig {
    v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(v1::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}
