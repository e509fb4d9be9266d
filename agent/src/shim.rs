//! Talking to `peapod-shim`: launching one per container and calling its control socket.
//!
//! The shim binary, not the daemon, clones the container (ARCHITECTURE.md, principle 6): the
//! daemon only spawns the shim with fork+exec and then speaks its line-based JSON protocol
//! (`peapod_runtime::shim_protocol`, described in docs/shim.md).
use std::path::{Path, PathBuf};
use std::time::Duration;

use peapod_runtime::shim_protocol::{ExecResult, ExitInfo, Op, Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("starting peapod-shim for {id}: {reason}")]
    Launch { id: String, reason: String },
    #[error("shim socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("shim at {path} answered with something that is not its protocol: {reason}")]
    Protocol { path: PathBuf, reason: String },
    #[error("{0}")]
    Refused(String),
}

/// Where one container's shim keeps its things.
#[derive(Debug, Clone)]
pub struct ShimSetup {
    pub id: String,
    pub bundle: PathBuf,
    /// The runtime state root handed to the shim (`--root`).
    pub runtime_root: PathBuf,
    pub socket: PathBuf,
    pub exit_file: PathBuf,
    pub log_path: PathBuf,
    pub stdin: bool,
}

/// Run the shim's launcher and wait for it: it returns once the container is created (or failed
/// to be, with the reason on stderr). Returns the shim's pid.
pub async fn launch(shim_binary: &Path, setup: &ShimSetup) -> Result<u32, ShimError> {
    let mut cmd = tokio::process::Command::new(shim_binary);
    cmd.arg("--id")
        .arg(&setup.id)
        .arg("--bundle")
        .arg(&setup.bundle)
        .arg("--root")
        .arg(&setup.runtime_root)
        .arg("--socket")
        .arg(&setup.socket)
        .arg("--exit-file")
        .arg(&setup.exit_file)
        .arg("--log-path")
        .arg(&setup.log_path)
        .stdin(std::process::Stdio::null());
    if setup.stdin {
        cmd.arg("--stdin");
    }
    let launch_err = |reason: String| ShimError::Launch {
        id: setup.id.clone(),
        reason,
    };
    let out = cmd
        .output()
        .await
        .map_err(|e| launch_err(format!("{}: {e}", shim_binary.display())))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(launch_err(
            stderr
                .trim()
                .trim_start_matches("peapod-shim: ")
                .to_string(),
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| {
            launch_err(format!(
                "unexpected launcher output {:?}",
                String::from_utf8_lossy(&out.stdout)
            ))
        })
}

/// A client of one shim's control socket. Each call uses its own connection, so a long `wait`
/// never delays other calls.
#[derive(Debug, Clone)]
pub struct ShimClient {
    socket: PathBuf,
}

impl ShimClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ShimClient {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn call(&self, op: Op, timeout: Option<Duration>) -> Result<Response, ShimError> {
        let io = |source| ShimError::Io {
            path: self.socket.clone(),
            source,
        };
        let exchange = async {
            let stream = UnixStream::connect(&self.socket).await.map_err(io)?;
            let (read, mut write) = stream.into_split();
            let mut line =
                serde_json::to_vec(&Request::new(op)).map_err(|e| ShimError::Protocol {
                    path: self.socket.clone(),
                    reason: e.to_string(),
                })?;
            line.push(b'\n');
            write.write_all(&line).await.map_err(io)?;
            let mut answer = String::new();
            BufReader::new(read)
                .read_line(&mut answer)
                .await
                .map_err(io)?;
            if answer.is_empty() {
                return Err(ShimError::Protocol {
                    path: self.socket.clone(),
                    reason: "connection closed".into(),
                });
            }
            serde_json::from_str::<Response>(&answer).map_err(|e| ShimError::Protocol {
                path: self.socket.clone(),
                reason: e.to_string(),
            })
        };
        let response = match timeout {
            Some(t) => tokio::time::timeout(t, exchange).await.map_err(|_| {
                io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the shim did not answer",
                ))
            })??,
            None => exchange.await?,
        };
        if !response.ok {
            return Err(ShimError::Refused(
                response
                    .error
                    .clone()
                    .unwrap_or_else(|| "request refused".into()),
            ));
        }
        Ok(response)
    }

    const QUICK: Option<Duration> = Some(Duration::from_secs(30));

    pub async fn state(&self) -> Result<Response, ShimError> {
        self.call(Op::State, Self::QUICK).await
    }

    pub async fn start(&self) -> Result<(), ShimError> {
        self.call(Op::Start, Self::QUICK).await.map(drop)
    }

    pub async fn kill(&self, signal: &str, all: bool) -> Result<(), ShimError> {
        self.call(
            Op::Kill {
                signal: signal.into(),
                all,
            },
            Self::QUICK,
        )
        .await
        .map(drop)
    }

    pub async fn exec(
        &self,
        process: oci_spec::runtime::Process,
        timeout: Option<Duration>,
        tty: bool,
    ) -> Result<ExecResult, ShimError> {
        let timeout_ms = timeout.map(|t| t.as_millis() as u64);
        let response = self
            .call(
                Op::Exec {
                    process: Box::new(process),
                    timeout_ms,
                    tty,
                },
                None,
            )
            .await?;
        response.exec.ok_or_else(|| ShimError::Protocol {
            path: self.socket.clone(),
            reason: "exec answer without a result".into(),
        })
    }

    pub async fn reopen_log(&self) -> Result<(), ShimError> {
        self.call(Op::ReopenLog, Self::QUICK).await.map(drop)
    }

    /// Resolves when the container has exited.
    pub async fn wait(&self) -> Result<Option<ExitInfo>, ShimError> {
        Ok(self.call(Op::Wait, None).await?.exit)
    }

    pub async fn delete(&self, force: bool) -> Result<(), ShimError> {
        self.call(Op::Delete { force }, Self::QUICK).await.map(drop)
    }

    pub async fn shutdown(&self) -> Result<(), ShimError> {
        self.call(Op::Shutdown, Self::QUICK).await.map(drop)
    }
}
