//! Talking to `peapod-shim`: launching one per container and calling its control socket.
//!
//! The shim binary, not the daemon, clones the container (ARCHITECTURE.md, principle 6): the
//! daemon only spawns the shim with fork+exec and then speaks its line-based JSON protocol
//! (`peapod_runtime::shim_protocol`, described in docs/shim.md). Interactive sessions (streaming
//! exec and attach) are connections that switch to binary frames after the response:
//! [`ShimClient::exec_session`], [`ShimClient::attach_session`].
use std::path::{Path, PathBuf};
use std::time::Duration;

use peapod_runtime::shim_protocol::frame::{self, Kind};
use peapod_runtime::shim_protocol::{ExecResult, ExitInfo, Op, Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
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

impl ShimError {
    fn io(socket: &Path, source: std::io::Error) -> ShimError {
        ShimError::Io {
            path: socket.to_path_buf(),
            source,
        }
    }

    fn protocol(socket: &Path, reason: impl Into<String>) -> ShimError {
        ShimError::Protocol {
            path: socket.to_path_buf(),
            reason: reason.into(),
        }
    }
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
    /// CRI `stdin_once`: the first attach that closes its input closes the container's stdin.
    pub stdin_once: bool,
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
    if setup.stdin && setup.stdin_once {
        cmd.arg("--stdin-once");
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

    fn io_error(&self, source: std::io::Error) -> ShimError {
        ShimError::io(&self.socket, source)
    }

    fn protocol_error(&self, reason: impl Into<String>) -> ShimError {
        ShimError::protocol(&self.socket, reason)
    }

    /// Connect, send `op` and read the response line, within `timeout` if there is one. Returns
    /// the connection too: a session goes on with it. The reader is buffered, so it must stay the
    /// one that reads what follows the response.
    async fn exchange(
        &self,
        op: Op,
        timeout: Option<Duration>,
    ) -> Result<(Response, BufReader<OwnedReadHalf>, OwnedWriteHalf), ShimError> {
        let exchange = async {
            let stream = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| self.io_error(e))?;
            let (read, mut write) = stream.into_split();
            let mut line = serde_json::to_vec(&Request::new(op))
                .map_err(|e| self.protocol_error(e.to_string()))?;
            line.push(b'\n');
            write.write_all(&line).await.map_err(|e| self.io_error(e))?;
            let mut read = BufReader::new(read);
            let mut answer = String::new();
            read.read_line(&mut answer)
                .await
                .map_err(|e| self.io_error(e))?;
            if answer.is_empty() {
                return Err(self.protocol_error("connection closed"));
            }
            let response = serde_json::from_str::<Response>(&answer)
                .map_err(|e| self.protocol_error(e.to_string()))?;
            Ok((response, read, write))
        };
        let (response, read, write) = match timeout {
            Some(t) => tokio::time::timeout(t, exchange).await.map_err(|_| {
                self.io_error(std::io::Error::new(
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
        Ok((response, read, write))
    }

    async fn call(&self, op: Op, timeout: Option<Duration>) -> Result<Response, ShimError> {
        Ok(self.exchange(op, timeout).await?.0)
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
        response
            .exec
            .ok_or_else(|| self.protocol_error("exec answer without a result"))
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

    /// Starts `process` in the container (a terminal when `process.terminal`), streams its
    /// output and takes stdin when `stdin`. The process is the shim's child (as ExecSync's are).
    /// If the session's connection goes away before the process ends, the shim kills it.
    pub async fn exec_session(
        &self,
        process: oci_spec::runtime::Process,
        stdin: bool,
    ) -> Result<ShimSession, ShimError> {
        let op = Op::ExecSession {
            process: Box::new(process),
            stdin,
        };
        self.session(op).await
    }

    /// Attaches to the container's main process: its output from now on (the log gets it too),
    /// and its stdin when `stdin` and the container was created with stdin.
    pub async fn attach_session(&self, stdin: bool) -> Result<ShimSession, ShimError> {
        self.session(Op::AttachSession { stdin }).await
    }

    async fn session(&self, op: Op) -> Result<ShimSession, ShimError> {
        let (_, read, write) = self.exchange(op, Self::QUICK).await?;
        Ok(ShimSession {
            input: SessionInput {
                write,
                socket: self.socket.clone(),
            },
            output: SessionOutput {
                read,
                socket: self.socket.clone(),
                received: Vec::new(),
                ended: false,
            },
        })
    }
}

/// What an interactive session delivers, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The process ended; always the last event of a session.
    Exited(ExitInfo),
}

/// One interactive session: a unix connection to the shim carrying the process's input and
/// output as frames (docs/shim.md). Split it to write and read at the same time.
#[derive(Debug)]
pub struct ShimSession {
    input: SessionInput,
    output: SessionOutput,
}

/// The write half of a [`ShimSession`]. Dropping it closes the process's stdin (the shim sees
/// the connection's sending side shut).
#[derive(Debug)]
pub struct SessionInput {
    write: OwnedWriteHalf,
    socket: PathBuf,
}

/// The read half of a [`ShimSession`]. Dropping both halves ends the session: an exec's process
/// still running is killed; an attached container goes on.
#[derive(Debug)]
pub struct SessionOutput {
    read: BufReader<OwnedReadHalf>,
    socket: PathBuf,
    /// Received bytes not yet returned as an event: at most one frame and a read's worth.
    received: Vec<u8>,
    /// The exit has been delivered.
    ended: bool,
}

impl ShimSession {
    pub fn split(self) -> (SessionInput, SessionOutput) {
        (self.input, self.output)
    }
}

impl SessionInput {
    /// Send bytes to the process's stdin (dropped by the shim if the session has no stdin).
    pub async fn stdin(&mut self, data: &[u8]) -> Result<(), ShimError> {
        for chunk in data.chunks(frame::MAX_PAYLOAD) {
            self.send(Kind::Stdin, chunk).await?;
        }
        Ok(())
    }

    /// The process reads end-of-file once it has read what was sent before. (With a terminal,
    /// and for an attach, the shim only stops taking this client's input.)
    pub async fn close_stdin(&mut self) -> Result<(), ShimError> {
        self.send(Kind::CloseStdin, &[]).await
    }

    /// Set the terminal's size in columns and rows (ignored without a terminal).
    pub async fn resize(&mut self, width: u16, height: u16) -> Result<(), ShimError> {
        self.send(Kind::Resize, &frame::resize_payload(width, height))
            .await
    }

    async fn send(&mut self, kind: Kind, payload: &[u8]) -> Result<(), ShimError> {
        let mut bytes = Vec::with_capacity(frame::HEADER_LEN + payload.len());
        frame::encode(kind, payload, &mut bytes);
        self.write
            .write_all(&bytes)
            .await
            .map_err(|source| ShimError::io(&self.socket, source))
    }
}

impl SessionOutput {
    /// The next output, or the exit (the last event); None when the shim closed the
    /// session without an exit (an attach whose container is still running when the
    /// shim goes away).
    ///
    /// Cancel-safe: a `next` dropped before it returns (in a `select!`) loses nothing, since
    /// a partly received frame stays buffered for the next call.
    pub async fn next(&mut self) -> Result<Option<SessionEvent>, ShimError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            if let Some((kind, payload)) = self.take_frame()? {
                return self.event(kind, payload).map(Some);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self
                .read
                .read(&mut chunk)
                .await
                .map_err(|e| self.io_error(e))?;
            if n == 0 {
                if self.received.is_empty() {
                    return Ok(None);
                }
                return Err(self.protocol_error("connection closed in the middle of a frame"));
            }
            self.received.extend_from_slice(&chunk[..n]);
        }
    }

    /// The first complete frame received, if there is one.
    fn take_frame(&mut self) -> Result<Option<(Kind, Vec<u8>)>, ShimError> {
        let Some(header) = self.received.first_chunk::<{ frame::HEADER_LEN }>() else {
            return Ok(None);
        };
        let (kind, len) =
            frame::parse_header(*header).map_err(|e| self.protocol_error(e.to_string()))?;
        let end = frame::HEADER_LEN + len;
        if self.received.len() < end {
            return Ok(None);
        }
        let payload = self.received[frame::HEADER_LEN..end].to_vec();
        self.received.drain(..end);
        Ok(Some((kind, payload)))
    }

    fn event(&mut self, kind: Kind, payload: Vec<u8>) -> Result<SessionEvent, ShimError> {
        match kind {
            Kind::Stdout => Ok(SessionEvent::Stdout(payload)),
            Kind::Stderr => Ok(SessionEvent::Stderr(payload)),
            Kind::Exited => {
                let exit = serde_json::from_slice(&payload)
                    .map_err(|e| self.protocol_error(format!("exit frame: {e}")))?;
                self.ended = true;
                Ok(SessionEvent::Exited(exit))
            }
            Kind::Stdin | Kind::CloseStdin | Kind::Resize => {
                Err(self.protocol_error(format!("the shim sent a client's frame ({kind:?})")))
            }
        }
    }

    fn io_error(&self, source: std::io::Error) -> ShimError {
        ShimError::io(&self.socket, source)
    }

    fn protocol_error(&self, reason: impl Into<String>) -> ShimError {
        ShimError::protocol(&self.socket, reason)
    }
}
