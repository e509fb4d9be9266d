//! peapodd: the peapod CRI daemon. Serves the Kubernetes Container Runtime
//! Interface (RuntimeService and ImageService) on a unix socket.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use peapod_agent::config::{Config, DEFAULT_CONFIG_FILE};
use peapod_agent::daemon::Daemon;
use peapod_agent::server;
use peapod_agent::streaming::Streaming;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// peapod's CRI node agent. Every setting can come from the config file;
/// flags given here win over it.
#[derive(Debug, Parser)]
#[command(name = "peapodd", version)]
struct Args {
    /// TOML configuration file [default: /etc/peapod/config.toml, skipped if absent]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Persistent data: images, pod and container metadata [default: /var/lib/peapod]
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Runtime state that does not outlive a reboot [default: /run/peapod]
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// CRI socket to serve on [default: /run/peapod/peapod.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// containers-registries.conf(5) file [default: /etc/containers/registries.conf]
    #[arg(long, value_name = "FILE")]
    registries_conf: Option<PathBuf>,
    /// CNI network configuration directory [default: /etc/cni/net.d]
    #[arg(long, value_name = "DIR")]
    cni_conf_dir: Option<PathBuf>,
    /// CNI plugin directory; repeat for several, searched in order
    /// [default: /usr/lib/cni, /opt/cni/bin]
    #[arg(long = "cni-bin-dir", value_name = "DIR")]
    cni_bin_dirs: Vec<PathBuf>,
    /// Do not write the default bridge network into an empty CNI config dir
    #[arg(long = "no-default-cni-network")]
    no_default_cni_network: bool,
    /// Log filter, e.g. `info`, `debug` or `peapod_agent=trace,info` [default: info]
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Seconds calls still running at SIGTERM may take before peapodd exits
    /// anyway [default: 10]
    #[arg(long, value_name = "SECONDS")]
    shutdown_grace_seconds: Option<u64>,
    /// Address of the streaming server for exec, attach and port-forward
    /// [default: 127.0.0.1:0, a free port on loopback]
    #[arg(long, value_name = "ADDR:PORT")]
    stream_address: Option<std::net::SocketAddr>,
    /// Seconds after which a streaming session with no traffic is closed; 0: never
    /// [default: 14400, 4 hours]
    #[arg(long, value_name = "SECONDS")]
    stream_idle_timeout_seconds: Option<u64>,
}

impl Args {
    /// The configuration file's settings with the flags laid over them.
    fn config(&self) -> anyhow::Result<Config> {
        let (path, required) = match &self.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        let mut config = Config::load(&path, required)?;
        let flags = [
            (&self.root, &mut config.root),
            (&self.state, &mut config.state),
            (&self.socket, &mut config.socket),
            (&self.cni_conf_dir, &mut config.cni_conf_dir),
        ];
        for (flag, setting) in flags {
            if let Some(value) = flag {
                *setting = value.clone();
            }
        }
        if self.registries_conf.is_some() {
            config.registries_conf = self.registries_conf.clone();
        }
        if !self.cni_bin_dirs.is_empty() {
            config.cni_bin_dirs = self.cni_bin_dirs.clone();
        }
        if let Some(level) = &self.log_level {
            config.log_level = level.clone();
        }
        if let Some(seconds) = self.shutdown_grace_seconds {
            config.shutdown_grace_seconds = seconds;
        }
        if let Some(address) = self.stream_address {
            config.stream_address = address;
        }
        if let Some(seconds) = self.stream_idle_timeout_seconds {
            config.stream_idle_timeout_seconds = seconds;
        }
        if self.no_default_cni_network {
            config.default_cni_network = false;
        }
        Ok(config)
    }
}

fn init_logging(filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid log level {filter:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not for journald or a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

/// Resolves when SIGTERM or SIGINT arrives.
async fn termination() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        // Containers belong to their shims and keep running; only the API stops.
        tracing::info!(signal = name, "shutting down");
    })
}

async fn run(config: Config) -> anyhow::Result<()> {
    let signalled = termination().await?;
    let grace = Duration::from_secs(config.shutdown_grace_seconds);
    let daemon = Daemon::open(config).context("starting peapodd")?;
    let daemon = Arc::new(daemon);
    // The daemon owns the streaming server, which holds only a weak reference back to it.
    let streaming = Streaming::start(daemon.config.stream_address, Arc::downgrade(&daemon))
        .context("starting the streaming server")?;
    tracing::info!(address = %streaming.address(), "streaming server listening");
    let _ = daemon.streaming.set(streaming);
    peapod_agent::cri::lifecycle::rearm_watchers(daemon.clone()).await;
    // Plugins run per pod: in the background, so that serving does not wait for them.
    let checking = daemon.clone();
    tokio::spawn(async move { checking.pods.check_networks().await });
    tracing::info!(
        root = %daemon.config.root.display(),
        state = %daemon.config.state.display(),
        version = env!("CARGO_PKG_VERSION"),
        "peapodd starting"
    );
    let listener = server::bind(&daemon.config.socket)?;
    let socket = daemon.config.socket.clone();

    // Serving stops taking new calls at the signal and then waits for the
    // calls in flight; the grace period bounds that wait.
    let (stopping, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        signalled.await;
        let _ = stopping.send(());
    };
    let grace_over = async move {
        match stopped.await {
            Ok(()) => tokio::time::sleep(grace).await,
            // Serving ended by itself; its result decides.
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        served = server::serve(daemon, listener, shutdown) => served?,
        () = grace_over => {
            tracing::warn!(?grace, "calls still running after the grace period; exiting anyway");
            server::remove_socket(&socket);
        }
    }
    tracing::info!("peapodd stopped");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = args.config().and_then(|config| {
        init_logging(&config.log_level)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let outcome = runtime.block_on(run(config));
        // Blocking work still going after the grace period (a pull stuck on
        // a silent registry) must not hold the exit up.
        runtime.shutdown_timeout(Duration::from_secs(1));
        outcome
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("peapodd: {error:#}");
            ExitCode::FAILURE
        }
    }
}
