//! peapod: the command line for people, a CRI client in the spirit of
//! crictl. It talks to peapodd over the CRI socket only, so it works the same
//! against any CRI runtime.
//!
//! Adding a command: a variant of [`Command`] with its arguments, a function
//! in a `commands` module, and a line in [`run`].

mod client;
mod commands;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use client::Cri;
use commands::stats::{self, Selection};
use commands::workloads::{self, Action};
use commands::{images, import, runtime};
use output::Format;

#[derive(Debug, Parser)]
#[command(
    name = "peapod",
    version,
    about = "Talk to a CRI runtime such as peapodd"
)]
struct Cli {
    /// CRI endpoint of the runtime: unix:///path/to.sock or just /path/to.sock
    #[arg(
        long,
        global = true,
        env = "PEAPOD_ENDPOINT",
        default_value = "unix:///run/peapod/peapod.sock"
    )]
    endpoint: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the runtime's name and versions
    Version,
    /// Show the runtime's conditions and configuration
    Info {
        #[arg(short, long, value_enum, default_value = "json")]
        output: Format,
    },
    /// List images
    Images {
        /// Only the image with this reference or ID
        image: Option<String>,
        /// Print image IDs only
        #[arg(short, long)]
        quiet: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Pull an image from a registry
    Pull {
        image: String,
        /// Registry credentials
        #[arg(long, value_name = "USER:PASSWORD")]
        creds: Option<String>,
    },
    /// Import images from an OCI layout (directory or tar) or a `docker save` tar
    Import {
        /// The archive or layout directory; it is streamed to the daemon, which needs no
        /// access to it
        file: PathBuf,
        /// Repository for images the layout names by tag only (ref.name `v1` → REPO:v1)
        #[arg(long, value_name = "REPO")]
        name: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Remove images (by reference, ID or unique ID prefix)
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show an image's status and configuration
    Inspecti {
        image: String,
        #[arg(short, long, value_enum, default_value = "json")]
        output: Format,
    },
    /// List pod sandboxes
    Pods {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// List containers (running ones; -a for all)
    Ps {
        #[arg(short, long)]
        all: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Show a container's status
    Inspect {
        container: String,
        #[arg(short, long, value_enum, default_value = "json")]
        output: Format,
    },
    /// Show a pod sandbox's status
    Inspectp {
        pod: String,
        #[arg(short, long, value_enum, default_value = "json")]
        output: Format,
    },
    /// Print a container's log
    Logs {
        container: String,
        /// Only the last N lines
        #[arg(long)]
        tail: Option<usize>,
        /// Keep printing new lines until the container exits
        #[arg(short, long)]
        follow: bool,
    },
    /// Run a command in a container and wait for it
    Exec {
        container: String,
        /// Seconds before the command is killed (0: no limit)
        #[arg(long, default_value_t = 0)]
        timeout: i64,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Show resource usage of running containers (-a: all), or of pods with --pods
    Stats {
        /// Containers (or pods, with --pods) by unique ID prefix; default: all running ones
        ids: Vec<String>,
        /// Stopped containers (or pods) too
        #[arg(short, long)]
        all: bool,
        /// Only containers of this pod (unique ID prefix)
        #[arg(long, value_name = "POD", conflicts_with = "pods")]
        pod: Option<String>,
        /// Pod sandboxes instead of containers (crictl statsp)
        #[arg(short, long)]
        pods: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Stop containers
    Stop {
        #[arg(required = true)]
        containers: Vec<String>,
        /// Seconds to wait after the stop signal before SIGKILL
        #[arg(short, long, default_value_t = 10)]
        timeout: i64,
    },
    /// Remove containers
    Rm {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop pod sandboxes
    Stopp {
        #[arg(required = true)]
        pods: Vec<String>,
    },
    /// Remove pod sandboxes
    Rmp {
        #[arg(required = true)]
        pods: Vec<String>,
    },
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut cri = Cri::connect(&cli.endpoint).await?;
    let cri = &mut cri;
    match cli.command {
        Command::Version => runtime::version(cri).await,
        Command::Info { output } => runtime::info(cri, output).await,
        Command::Images {
            image,
            quiet,
            output,
        } => images::images(cri, image.as_deref(), quiet, output).await,
        Command::Pull { image, creds } => images::pull(cri, &image, creds.as_deref()).await,
        Command::Import { file, name, output } => {
            import::import(cri, &file, name.as_deref(), output).await
        }
        Command::Rmi { images } => images::rmi(cri, &images).await,
        Command::Inspecti { image, output } => images::inspecti(cri, &image, output).await,
        Command::Pods { output } => workloads::pods(cri, output).await,
        Command::Ps { all, output } => workloads::ps(cri, all, output).await,
        Command::Inspect { container, output } => workloads::inspect(cri, &container, output).await,
        Command::Inspectp { pod, output } => workloads::inspectp(cri, &pod, output).await,
        Command::Logs {
            container,
            tail,
            follow,
        } => workloads::logs(cri, &container, tail, follow).await,
        Command::Exec {
            container,
            timeout,
            cmd,
        } => {
            let code = workloads::exec(cri, &container, &cmd, timeout).await?;
            if code != 0 {
                // The command's own exit code, as `crictl exec` and `kubectl exec` report it.
                std::process::exit(code.clamp(0, 255));
            }
            Ok(())
        }
        Command::Stats {
            ids,
            all,
            pod,
            pods,
            output,
        } => {
            let selection = Selection {
                all,
                pod: pod.as_deref(),
                ids: &ids,
            };
            if pods {
                stats::pods(cri, selection, output).await
            } else {
                stats::containers(cri, selection, output).await
            }
        }
        Command::Stop {
            containers,
            timeout,
        } => workloads::act(cri, &containers, Action::StopContainer { timeout }).await,
        Command::Rm { containers } => {
            workloads::act(cri, &containers, Action::RemoveContainer).await
        }
        Command::Stopp { pods } => workloads::act(cri, &pods, Action::StopPod).await,
        Command::Rmp { pods } => workloads::act(cri, &pods, Action::RemovePod).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("peapod: {error:#}");
            ExitCode::FAILURE
        }
    }
}
