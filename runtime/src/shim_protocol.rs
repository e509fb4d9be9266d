//! The messages between peapodd and a `peapod-shim`, and the shim's exit file.
//!
//! The control socket speaks one JSON object per line in each direction; docs/shim.md describes
//! the protocol for people, this module for programs. A client sends a [`Request`] and reads one
//! [`Response`] per request, in order. The two session requests ([`Op::ExecSession`],
//! [`Op::AttachSession`]) turn their connection into a stream of [`frame`]s after the response.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Context, Result};
use crate::state::{write_atomic, Status};

/// Bumped when a change would break an existing client.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The protocol version the client speaks; a shim refuses versions newer than its own.
    #[serde(default = "current_version")]
    pub version: u32,
    #[serde(flatten)]
    pub op: Op,
}

fn current_version() -> u32 {
    PROTOCOL_VERSION
}

impl Request {
    pub fn new(op: Op) -> Request {
        Request {
            version: PROTOCOL_VERSION,
            op,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The container's status and pid, and how it exited once it has.
    State,
    /// Run the user's program of the created container.
    Start,
    /// Signal the init (or with `all` every process of the container).
    Kill {
        /// A name (`TERM`, `SIGKILL`) or a number (`"9"`).
        signal: String,
        #[serde(default)]
        all: bool,
    },
    /// Run a process in the container and answer with its exit code and output.
    Exec {
        process: Box<oci_spec::runtime::Process>,
        /// Kill the process (SIGKILL) after this many milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// Give the process a terminal; its output then all comes as stdout.
        #[serde(default)]
        tty: bool,
    },
    /// Start a process in the container and relay its input and output: after the `ok` response
    /// the connection carries [`frame`]s in both directions until the process has exited.
    ExecSession {
        /// A terminal when `process.terminal` is true; its output then all comes as stdout.
        process: Box<oci_spec::runtime::Process>,
        /// Give the process a stdin pipe fed by stdin frames (otherwise /dev/null).
        #[serde(default)]
        stdin: bool,
    },
    /// Relay the container's output from now on (the log still gets all of it) and, with
    /// `stdin`, feed its stdin (a shim launched with `--stdin`). Frames follow the `ok` response
    /// until the container has exited or the client leaves.
    AttachSession {
        #[serde(default)]
        stdin: bool,
    },
    /// Open the log file again (after a rotation renamed it).
    ReopenLog,
    /// Answered once the container has exited (with its exit), not before.
    Wait,
    /// Delete the stopped container (with `force`, kill it first); the shim exits afterwards.
    Delete {
        #[serde(default)]
        force: bool,
    },
    /// Exit the shim as soon as the container has stopped.
    Shutdown,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecResult>,
}

impl Response {
    pub fn ok() -> Response {
        Response {
            version: PROTOCOL_VERSION,
            ok: true,
            ..Default::default()
        }
    }

    pub fn error(message: impl Into<String>) -> Response {
        Response {
            version: PROTOCOL_VERSION,
            ok: false,
            error: Some(message.into()),
            ..Default::default()
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub pid: i32,
    /// The exit status, or 128 + the signal number if a signal killed it (as shells report it).
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// RFC 3339 with nanoseconds, UTC.
    pub exited_at: String,
    /// The container's cgroup saw the OOM killer at work.
    #[serde(default)]
    pub oom_killed: bool,
}

impl ExitInfo {
    /// Write the exit file so that a reader sees all of it or nothing.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec(self).context(|| "serialising the exit".into())?;
        write_atomic(path, &text)
    }

    /// Read an exit file; `None` if there is none (the container has not exited yet).
    pub fn read(path: &Path) -> Result<Option<ExitInfo>> {
        match std::fs::read(path) {
            Ok(text) => serde_json::from_slice(&text)
                .context(|| format!("parsing {}", path.display()))
                .map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context(|| format!("reading {}", path.display())),
        }
    }
}

/// The outcome of an `exec` request, as CRI's ExecSync needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The timeout expired and the process was killed.
    pub timed_out: bool,
    /// Standard output, base64 (output is bytes, not necessarily text).
    pub stdout: String,
    /// Standard error, base64.
    pub stderr: String,
    /// Output beyond [`EXEC_OUTPUT_LIMIT`] bytes per stream was dropped.
    #[serde(default)]
    pub truncated: bool,
}

/// Most output kept per stream of an `exec`.
pub const EXEC_OUTPUT_LIMIT: usize = 4 * 1024 * 1024;

impl ExecResult {
    pub fn stdout_bytes(&self) -> Result<Vec<u8>, base64::InvalidBase64> {
        base64::decode(&self.stdout)
    }

    pub fn stderr_bytes(&self) -> Result<Vec<u8>, base64::InvalidBase64> {
        base64::decode(&self.stderr)
    }
}

/// The binary frames of an interactive session: a 5-byte header (kind, then the payload's
/// length as a big-endian u32) and the payload, at most [`frame::MAX_PAYLOAD`] bytes.
pub mod frame {
    /// The longest payload of one frame. Larger data is sent as several frames.
    pub const MAX_PAYLOAD: usize = 32 * 1024;
    /// The header's size: kind (1 byte) and payload length (4 bytes, big-endian).
    pub const HEADER_LEN: usize = 5;

    /// What a frame carries. Client to shim: `Stdin`, `CloseStdin`, `Resize`; shim to client:
    /// `Stdout`, `Stderr`, `Exited`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[repr(u8)]
    pub enum Kind {
        /// Bytes for the process's stdin.
        Stdin = 1,
        /// No more stdin: the process reads end-of-file (empty payload).
        CloseStdin = 2,
        /// The terminal's new size: width (columns) then height (rows), both big-endian u16.
        Resize = 3,
        /// Bytes the process wrote to stdout (or to its terminal).
        Stdout = 16,
        /// Bytes the process wrote to stderr.
        Stderr = 17,
        /// The process ended: its [`ExitInfo`](super::ExitInfo) as JSON. The last frame.
        Exited = 18,
    }

    impl TryFrom<u8> for Kind {
        type Error = FrameError;

        fn try_from(byte: u8) -> Result<Kind, FrameError> {
            Ok(match byte {
                1 => Kind::Stdin,
                2 => Kind::CloseStdin,
                3 => Kind::Resize,
                16 => Kind::Stdout,
                17 => Kind::Stderr,
                18 => Kind::Exited,
                other => return Err(FrameError::UnknownKind(other)),
            })
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum FrameError {
        #[error("unknown frame kind {0}")]
        UnknownKind(u8),
        #[error("frame of {0} bytes is longer than {MAX_PAYLOAD}")]
        TooLong(usize),
        #[error("a resize frame carries 4 bytes, not {0}")]
        BadResize(usize),
    }

    /// The header of a frame with `len` bytes of payload (`len` ≤ [`MAX_PAYLOAD`]).
    pub fn header(kind: Kind, len: usize) -> [u8; HEADER_LEN] {
        let len = (len as u32).to_be_bytes();
        [kind as u8, len[0], len[1], len[2], len[3]]
    }

    /// Append one frame to `out`.
    pub fn encode(kind: Kind, payload: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&header(kind, payload.len()));
        out.extend_from_slice(payload);
    }

    /// A header's kind and payload length, checked against the limit.
    pub fn parse_header(header: [u8; HEADER_LEN]) -> Result<(Kind, usize), FrameError> {
        let kind = Kind::try_from(header[0])?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLong(len));
        }
        Ok((kind, len))
    }

    /// The payload of a resize frame.
    pub fn resize_payload(width: u16, height: u16) -> [u8; 4] {
        let (w, h) = (width.to_be_bytes(), height.to_be_bytes());
        [w[0], w[1], h[0], h[1]]
    }

    /// Width and height from a resize frame's payload.
    pub fn parse_resize(payload: &[u8]) -> Result<(u16, u16), FrameError> {
        match payload {
            [w0, w1, h0, h1] => Ok((
                u16::from_be_bytes([*w0, *w1]),
                u16::from_be_bytes([*h0, *h1]),
            )),
            _ => Err(FrameError::BadResize(payload.len())),
        }
    }
}

/// Standard base64 (RFC 4648, with padding), the encoding of exec output in the protocol.
pub mod base64 {
    use ::base64::engine::general_purpose::STANDARD;
    use ::base64::Engine;

    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("invalid base64 text")]
    pub struct InvalidBase64;

    pub fn encode(data: &[u8]) -> String {
        STANDARD.encode(data)
    }

    pub fn decode(text: &str) -> Result<Vec<u8>, InvalidBase64> {
        STANDARD.decode(text).map_err(|_| InvalidBase64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64::encode(plain.as_bytes()), coded);
            assert_eq!(base64::decode(coded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64::decode(&base64::encode(&all)).unwrap(), all);
    }

    #[test]
    fn requests_are_tagged_by_op() {
        let r: Request = serde_json::from_str(r#"{"op":"kill","signal":"TERM"}"#).unwrap();
        assert_eq!(r.version, PROTOCOL_VERSION);
        assert!(matches!(r.op, Op::Kill { ref signal, all: false } if signal == "TERM"));
        let r: Request = serde_json::from_str(
            r#"{"version":1,"op":"exec","process":{"args":["ls"],"cwd":"/","user":{"uid":0,"gid":0}},"timeout_ms":5}"#,
        )
        .unwrap();
        assert!(matches!(
            r.op,
            Op::Exec {
                timeout_ms: Some(5),
                tty: false,
                ..
            }
        ));
        let text = serde_json::to_string(&Request::new(Op::ReopenLog)).unwrap();
        assert_eq!(text, r#"{"version":1,"op":"reopen_log"}"#);
        let text = serde_json::to_string(&Request::new(Op::AttachSession { stdin: true })).unwrap();
        assert_eq!(text, r#"{"version":1,"op":"attach_session","stdin":true}"#);
    }

    #[test]
    fn frames_round_trip() {
        let mut out = Vec::new();
        frame::encode(frame::Kind::Stdout, b"hi", &mut out);
        assert_eq!(out, [16, 0, 0, 0, 2, b'h', b'i']);
        let header: [u8; frame::HEADER_LEN] = out[..5].try_into().unwrap();
        assert_eq!(frame::parse_header(header), Ok((frame::Kind::Stdout, 2)));
        assert_eq!(
            frame::parse_header([1, 0, 1, 0, 0]),
            Err(frame::FrameError::TooLong(65536))
        );
        assert_eq!(
            frame::parse_header([9, 0, 0, 0, 0]),
            Err(frame::FrameError::UnknownKind(9))
        );
        let resize = frame::resize_payload(100, 40);
        assert_eq!(resize, [0, 100, 0, 40]);
        assert_eq!(frame::parse_resize(&resize), Ok((100, 40)));
        assert!(frame::parse_resize(b"abc").is_err());
    }
}
