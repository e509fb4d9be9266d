//! `peapod-shim`: the small process that owns one container for its whole life.
//!
//! It creates the container through the runtime library (so the container's init is its child),
//! copies the container's output into a CRI log file, records the exit in an exit file, reaps
//! orphans as a subreaper, and answers peapodd on a control socket (docs/shim.md). It detaches
//! from whoever launched it, so that peapodd can restart without touching any container.
mod clients;
mod detach;
mod execs;
mod output;
mod server;
mod sessions;
mod signals;
mod terminal;

use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use nix::fcntl::OFlag;
use peapod_runtime::crilog::{LogFile, Stream};
use peapod_runtime::{Container, CreateOptions, Stdio};

use output::{Log, Output};
use server::{Paths, Shim};
use terminal::ConsoleSocket;

#[derive(Parser)]
#[command(
    name = "peapod-shim",
    version,
    about = "Own one container: create it, log its output, record its exit"
)]
struct Cli {
    /// The container's id.
    #[arg(long)]
    id: String,
    /// The OCI bundle (directory with config.json).
    #[arg(long)]
    bundle: PathBuf,
    /// The runtime's state root.
    #[arg(long, default_value = "/run/peapod-runtime")]
    root: PathBuf,
    /// The control socket to listen on.
    #[arg(long)]
    socket: PathBuf,
    /// The container's CRI log file (appended to; its directory is created).
    #[arg(long = "log-path")]
    log_path: PathBuf,
    /// Where the exit code and time are written when the container exits.
    #[arg(long = "exit-file")]
    exit_file: PathBuf,
    /// Keep the container's stdin open (a pipe the shim holds) instead of /dev/null.
    #[arg(long)]
    stdin: bool,
    /// With `--stdin`: once the first attached client that writes to the stdin closes it, close
    /// the container's stdin too, so that it reads end-of-file (CRI `stdin_once`).
    #[arg(long = "stdin-once", requires = "stdin")]
    stdin_once: bool,
    /// Start the container right after creating it, instead of waiting for a `start` request.
    #[arg(long)]
    start: bool,
    /// The shim's own log (default: the socket path with the extension `.log`).
    #[arg(long = "shim-log")]
    shim_log: Option<PathBuf>,
    /// Log debug messages.
    #[arg(long)]
    debug: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::parse().absolute() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("peapod-shim: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let reporter = match detach::detach() {
        Ok(reporter) => reporter,
        Err(e) => {
            eprintln!("peapod-shim: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // From here on we are the detached shim; the launcher waits for our report. Like any daemon,
    // do not keep the launcher's working directory busy.
    if let Err(e) = init_logging(&cli).and_then(|()| Ok(std::env::set_current_dir("/")?)) {
        reporter.failure(&e);
        return ExitCode::FAILURE;
    }
    let shim = match setup(&cli) {
        Ok(shim) => shim,
        Err(e) => {
            tracing::error!("{e:#}");
            reporter.failure(&e);
            return ExitCode::FAILURE;
        }
    };
    reporter.success();
    if let Err(e) = detach::close_stdio() {
        tracing::warn!("{e:#}");
    }
    match shim.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

impl Cli {
    /// The shim changes directory to `/`, so relative paths are resolved first.
    fn absolute(mut self) -> Result<Cli> {
        for path in [
            &mut self.bundle,
            &mut self.root,
            &mut self.socket,
            &mut self.log_path,
            &mut self.exit_file,
        ] {
            *path = std::path::absolute(&*path)
                .with_context(|| format!("resolving {}", path.display()))?;
        }
        if let Some(path) = &mut self.shim_log {
            *path = std::path::absolute(&*path)
                .with_context(|| format!("resolving {}", path.display()))?;
        }
        Ok(self)
    }
}

fn init_logging(cli: &Cli) -> Result<()> {
    let path = cli
        .shim_log
        .clone()
        .unwrap_or_else(|| cli.socket.with_extension("log"));
    create_parent(&path)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening the shim log {}", path.display()))?;
    let level = if cli.debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PEAPOD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // A synchronous writer: no logging thread, since the shim must stay single-threaded to clone.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init()
        .map_err(|e| anyhow::anyhow!("setting up logging: {e}"))?;
    Ok(())
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// Everything before the container is handed over to the event loop. A failure undoes the steps
/// already taken, so that a failed create leaves nothing behind.
fn setup(cli: &Cli) -> Result<Shim> {
    let signals = signals::Signals::install()?;
    nix::sys::prctl::set_child_subreaper(true).context("becoming a subreaper")?;
    create_parent(&cli.exit_file)?;
    let listener = bind_control_socket(&cli.socket)?;
    let mut undo = Undo {
        socket: Some(cli.socket.clone()),
        container: None,
    };

    let (stdin, stdin_writer) = if cli.stdin {
        let (read, write) = pipe()?;
        // Our end only: attached clients' input must never block the event loop.
        nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .context("configuring the stdin pipe")?;
        (read, Some(write))
    } else {
        (
            std::fs::File::open("/dev/null")
                .context("opening /dev/null")?
                .into(),
            None,
        )
    };
    let console = if wants_terminal(&cli.bundle) {
        Some(ConsoleSocket::bind()?)
    } else {
        None
    };
    let (stdio, outputs) = match &console {
        // With a terminal, stdout and stderr are both the terminal: the library installs it.
        Some(_) => (
            Stdio {
                stdin: Some(stdin),
                ..Default::default()
            },
            Vec::new(),
        ),
        None => {
            let (out_read, out_write) = pipe()?;
            let (err_read, err_write) = pipe()?;
            let stdio = Stdio {
                stdin: Some(stdin),
                stdout: Some(out_write),
                stderr: Some(err_write),
            };
            (
                stdio,
                vec![
                    output(out_read, Stream::Stdout)?,
                    output(err_read, Stream::Stderr)?,
                ],
            )
        }
    };
    let container = Container::create(CreateOptions {
        id: cli.id.clone(),
        bundle: cli.bundle.clone(),
        root: cli.root.clone(),
        console_socket: console.as_ref().map(ConsoleSocket::path),
        pid_file: None,
        stdio,
        wait_for_start: true,
    })
    .with_context(|| format!("creating container {}", cli.id))?;
    let init = nix::unistd::Pid::from_raw(container.pid());
    let container = undo.container.insert(container);
    tracing::info!(id = %cli.id, pid = init.as_raw(), "container created");

    let (outputs, terminal) = match &console {
        Some(console) => {
            let master = console.receive()?;
            // A second descriptor for input and resizing by attached clients, which stays
            // usable after the output side has ended.
            let terminal = master.try_clone().context("duplicating the terminal")?;
            (vec![output(master, Stream::Stdout)?], Some(terminal))
        }
        None => (outputs, None),
    };
    let log = Log::new(LogFile::open(&cli.log_path)?);
    if cli.start {
        container
            .start()
            .with_context(|| format!("starting container {}", cli.id))?;
    }

    let (socket, container) = undo.disarm();
    Ok(Shim {
        paths: Paths {
            root: cli.root.clone(),
            socket,
            exit_file: cli.exit_file.clone(),
        },
        container,
        id: cli.id.clone(),
        init,
        signals,
        listener,
        log,
        outputs,
        stdin: stdin_writer,
        stdin_once: cli.stdin_once,
        terminal,
        clients: Vec::new(),
        sessions: Vec::new(),
        next_client: 0,
        execs: Vec::new(),
        reaped: None,
        exit: None,
        waiting: Vec::new(),
        deleting: None,
        shutdown: false,
    })
}

/// Whether the bundle's process asks for a terminal. An unreadable bundle is left for the
/// library's create to report.
fn wants_terminal(bundle: &Path) -> bool {
    oci_spec::runtime::Spec::load(bundle.join("config.json"))
        .ok()
        .and_then(|spec| spec.process().as_ref().and_then(|p| p.terminal()))
        .unwrap_or(false)
}

fn bind_control_socket(path: &Path) -> Result<UnixListener> {
    create_parent(path)?;
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("another shim is listening on {}", path.display());
        }
        // A socket left by a shim that died: nobody listens on it.
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    listener
        .set_nonblocking(true)
        .context("configuring the control socket")?;
    Ok(listener)
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).context("creating a pipe")
}

/// Our reading end of one of the container's output streams, non-blocking for the event loop.
fn output(fd: OwnedFd, stream: Stream) -> Result<Output> {
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .context("configuring an output pipe")?;
    Ok(Output::new(fd, stream))
}

/// What `setup` has made so far, removed again if it fails.
struct Undo {
    socket: Option<PathBuf>,
    container: Option<Container>,
}

impl Undo {
    fn disarm(mut self) -> (PathBuf, Option<Container>) {
        (
            self.socket.take().unwrap_or_default(),
            self.container.take(),
        )
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(container) = self.container.take() {
            if let Err(e) = container.delete(true) {
                tracing::warn!(error = %e, "removing the container after a failed setup");
            }
        }
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
    }
}
