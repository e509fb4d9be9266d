//! `peapod-runtime`: a runc-compatible command line over the peapod runtime library, so that tools
//! which drive runc (containerd's shim, CRI-O, conformance suites) can drive peapod.
mod spec_cmd;
mod tty;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, Process};
use peapod_runtime::container::{self, Container, CreateOptions};
use peapod_runtime::{exec, signal, ExecOptions, Status};

#[derive(Parser)]
#[command(
    name = "peapod-runtime",
    version,
    about = "Run OCI containers (runc-compatible)"
)]
struct Cli {
    /// Directory for the containers' state.
    #[arg(long, global = true, default_value = "/run/peapod-runtime")]
    root: PathBuf,
    /// Write logs to this file instead of stderr.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    #[arg(long = "log-format", global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for compatibility with runc callers; peapod uses cgroupfs paths.
    #[arg(long = "systemd-cgroup", global = true, hide = true)]
    systemd_cgroup: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Format {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Create a container; its process waits for `start`.
    Create(CreateArgs),
    /// Run the user process of a created container.
    Start { id: String },
    /// Print a container's state as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to a container.
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Remove a container and everything it holds.
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Create and start a container; exit with its exit code.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Do not wait for the container to exit.
        #[arg(short, long)]
        detach: bool,
        /// Keep the stopped container instead of deleting it after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Run another process inside a running container.
    Exec(ExecArgs),
    /// List containers.
    List {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[arg(short, long)]
        quiet: bool,
    },
    /// List the processes of a container.
    Ps {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        format: Format,
        id: String,
    },
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change a container's resource limits.
    Update {
        /// A LinuxResources JSON file ("-" for standard input).
        #[arg(short, long)]
        resources: PathBuf,
        id: String,
    },
    /// Print resource usage of a container as JSON.
    Events {
        /// Print one set of statistics and exit.
        #[arg(long)]
        stats: bool,
        id: String,
    },
    /// Write a default config.json into the bundle directory.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
}

#[derive(clap::Args)]
struct CreateArgs {
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility; pivot_root is always used.
    #[arg(long = "no-pivot", hide = true)]
    no_pivot: bool,
    /// Accepted for runc compatibility; no session keyring is created.
    #[arg(long = "no-new-keyring", hide = true)]
    no_new_keyring: bool,
    id: String,
}

#[derive(clap::Args)]
struct ExecArgs {
    /// A process.json with the full process to run.
    #[arg(short, long)]
    process: Option<PathBuf>,
    #[arg(short, long)]
    tty: bool,
    #[arg(short, long)]
    detach: bool,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Extra environment, KEY=VALUE.
    #[arg(short, long)]
    env: Vec<String>,
    /// uid[:gid]
    #[arg(short, long)]
    user: Option<String>,
    id: String,
    /// The command and its arguments (when no --process is given).
    #[arg(last = false, trailing_var_arg = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!("{e:#}");
            let _ = writeln!(std::io::stderr(), "peapod-runtime: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cli: &Cli) {
    let level = if cli.debug { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PEAPOD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let file = cli.log.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    // The subscriber writes synchronously: no logging thread, so the process stays
    // single-threaded, which clone() requires.
    match (file, cli.log_format) {
        (Some(f), LogFormat::Json) => builder.json().with_writer(std::sync::Mutex::new(f)).init(),
        (Some(f), LogFormat::Text) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .init(),
        (None, LogFormat::Json) => builder.json().with_writer(std::io::stderr).init(),
        (None, LogFormat::Text) => builder.with_writer(std::io::stderr).init(),
    }
}

fn run(cli: Cli) -> Result<u8> {
    let root = cli.root.as_path();
    match cli.command {
        Command::Create(args) => {
            create(root, args, true)?;
        }
        Command::Start { id } => Container::load(root, &id)?.start()?,
        Command::State { id } => {
            let state = Container::load(root, &id)?.state()?;
            println!("{}", serde_json::to_string_pretty(&state)?);
        }
        Command::Kill {
            all,
            id,
            signal: sig,
        } => {
            let sig = signal::parse(&sig)?;
            Container::load(root, &id)?.kill(sig, all)?;
        }
        Command::Delete { force, id } => match Container::load(root, &id) {
            Ok(c) => c.delete(force)?,
            // A directory without a readable record is a creation that crashed half-way.
            Err(peapod_runtime::Error::Io { .. } | peapod_runtime::Error::Json { .. }) => {
                container::remove_dir_of(root, &id)?
            }
            Err(e) => return Err(e.into()),
        },
        Command::Run {
            create: args,
            detach,
            keep,
        } => {
            let tty =
                tty::Session::for_run(&args.bundle, args.console_socket.is_none() && !detach)?;
            let console_socket = tty.socket_path().or(args.console_socket.clone());
            let c = create(
                root,
                CreateArgs {
                    console_socket,
                    ..args
                },
                false,
            )?;
            if detach {
                return Ok(0);
            }
            let code = wait_foreground(Pid::from_raw(c.pid()), tty)?;
            if !keep {
                c.delete(false)?;
            }
            return Ok(code);
        }
        Command::Exec(args) => return exec_cmd(root, args),
        Command::List { format, quiet } => list(root, format, quiet)?,
        Command::Ps { format, id } => {
            let pids = Container::load(root, &id)?.processes()?;
            if format == Format::Json {
                println!("{}", serde_json::to_string(&pids)?);
            } else {
                println!("PID");
                for pid in pids {
                    println!("{pid}");
                }
            }
        }
        Command::Pause { id } => Container::load(root, &id)?.pause()?,
        Command::Resume { id } => Container::load(root, &id)?.resume()?,
        Command::Update { resources, id } => {
            let text = if resources == Path::new("-") {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&resources)
                    .with_context(|| format!("reading {}", resources.display()))?
            };
            let res: LinuxResources =
                serde_json::from_str(&text).context("parsing the resources JSON")?;
            Container::load(root, &id)?.update(&res)?;
        }
        Command::Events { stats, id } => {
            if !stats {
                bail!("only `events --stats` is supported");
            }
            let stats = Container::load(root, &id)?.stats()?;
            println!(
                "{}",
                serde_json::json!({ "type": "stats", "id": id, "data": stats })
            );
        }
        Command::Spec { bundle } => spec_cmd::write_default(&bundle)?,
    }
    Ok(0)
}

fn create(root: &Path, args: CreateArgs, wait_for_start: bool) -> Result<Container> {
    let _ = (args.no_pivot, args.no_new_keyring);
    Ok(Container::create(CreateOptions {
        id: args.id,
        bundle: args.bundle,
        root: root.to_path_buf(),
        console_socket: args.console_socket,
        pid_file: args.pid_file,
        wait_for_start,
        ..Default::default()
    })?)
}

fn exec_cmd(root: &Path, args: ExecArgs) -> Result<u8> {
    let container = Container::load(root, &args.id)?;
    let mut process: Process = match &args.process {
        Some(path) => exec::load_process(path)?,
        None => {
            if args.command.is_empty() {
                bail!("exec needs a command or --process");
            }
            let mut p = container
                .record()
                .config
                .process()
                .clone()
                .unwrap_or_default();
            p.set_args(Some(args.command.clone()));
            p.set_terminal(Some(args.tty));
            p
        }
    };
    if let Some(cwd) = &args.cwd {
        process.set_cwd(cwd.clone());
    }
    if !args.env.is_empty() {
        let mut env = process.env().clone().unwrap_or_default();
        env.extend(args.env.iter().cloned());
        process.set_env(Some(env));
    }
    if let Some(user) = &args.user {
        let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
        let mut u = process.user().clone();
        u.set_uid(
            uid.parse()
                .with_context(|| format!("bad uid in --user {user}"))?,
        );
        u.set_gid(
            gid.parse()
                .with_context(|| format!("bad gid in --user {user}"))?,
        );
        process.set_user(u);
    }
    let terminal = process.terminal().unwrap_or(false);
    let tty = if terminal && args.console_socket.is_none() && !args.detach {
        tty::Session::new()?
    } else {
        tty::Session::none()
    };
    if terminal && args.console_socket.is_none() && args.detach {
        bail!("a detached terminal process needs --console-socket");
    }
    let pid = container.exec(
        &process,
        ExecOptions {
            console_socket: tty.socket_path().or(args.console_socket),
            pid_file: args.pid_file,
            ..Default::default()
        },
    )?;
    if args.detach {
        return Ok(0);
    }
    wait_foreground(pid, tty)
}

/// Wait for a process we started, relaying signals we get to it and the terminal if it has one;
/// our exit code is its exit code.
fn wait_foreground(pid: Pid, tty: tty::Session) -> Result<u8> {
    tty::forward_signals(pid)?;
    tty.relay_until_exit()?;
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code as u8),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(signal::exit_code(sig) as u8),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waiting for the container"),
        }
    }
}

fn list(root: &Path, format: Format, quiet: bool) -> Result<()> {
    let containers = container::list(root)?;
    if quiet {
        for c in &containers {
            println!("{}", c.id());
        }
        return Ok(());
    }
    let states = containers
        .iter()
        .map(|c| c.state())
        .collect::<Result<Vec<_>, _>>()?;
    if format == Format::Json {
        println!("{}", serde_json::to_string(&states)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<8} {:<8} {:<40} {:<32} OWNER",
        "ID", "PID", "STATUS", "BUNDLE", "CREATED"
    );
    for s in states {
        let pid = if s.status == Status::Stopped {
            0
        } else {
            s.pid
        };
        println!(
            "{:<24} {:<8} {:<8} {:<40} {:<32} {}",
            s.id,
            pid,
            s.status,
            s.bundle.display(),
            s.created,
            s.owner
        );
    }
    Ok(())
}
