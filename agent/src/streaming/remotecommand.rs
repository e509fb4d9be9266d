//! What exec and attach share: moving bytes between the client's streams and a shim session,
//! reading terminal sizes, and reporting the outcome on the error stream.
//!
//! The outcome is the last thing a session sends. From protocol V4 on it is a JSON
//! `metav1.Status` (`{"metadata":{},"status":"Success"}`, or a failure whose details carry the
//! exit code), which is how `kubectl exec` learns the command's exit code; older protocols only
//! know failures, as plain text, and say nothing on success.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::streams::{Reader, RemoteCommandProtocol, TerminalSize, Writer};
use crate::shim::{SessionEvent, SessionInput, SessionOutput, ShimError, ShimSession};
use peapod_runtime::shim_protocol::ExitInfo;

/// How a remote command session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The command ran and exited with a code other than 0; `message` says which command.
    NonZeroExit {
        code: i32,
        message: String,
    },
    /// The session could not be run (the command could not start, the shim failed).
    Internal(String),
}

impl Outcome {
    /// The outcome of an exec'ed command that exited; `cmd` as the request named it.
    pub fn of_exit(exit: &ExitInfo, cmd: &[String]) -> Outcome {
        if exit.exit_code == 0 {
            return Outcome::Success;
        }
        // containerd words the error this way and the kubelet's server prefixes it; clients
        // show the message to people, so it should read the same everywhere.
        Outcome::NonZeroExit {
            code: exit.exit_code,
            message: format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {}",
                cmd.join(" "),
                exit.exit_code
            ),
        }
    }

    /// The bytes to write on the error stream for `protocol`; `None` when nothing is sent
    /// (success before V4).
    pub fn encode(&self, protocol: RemoteCommandProtocol) -> Option<Vec<u8>> {
        let status = self.status();
        if protocol >= RemoteCommandProtocol::V4 {
            // Serialising plain structs of strings cannot fail.
            return serde_json::to_vec(&status).ok();
        }
        status.message.map(String::into_bytes)
    }

    fn status(&self) -> MetaStatus {
        match self {
            Outcome::Success => MetaStatus {
                status: "Success",
                ..MetaStatus::default()
            },
            Outcome::NonZeroExit { code, message } => MetaStatus {
                metadata: Empty {},
                status: "Failure",
                message: Some(message.clone()),
                reason: Some("NonZeroExitCode"),
                details: Some(StatusDetails {
                    causes: vec![StatusCause {
                        reason: Some("ExitCode"),
                        message: code.to_string(),
                    }],
                }),
                code: None,
            },
            Outcome::Internal(error) => MetaStatus {
                metadata: Empty {},
                status: "Failure",
                message: Some(format!("Internal error occurred: {error}")),
                reason: Some("InternalError"),
                details: Some(StatusDetails {
                    causes: vec![StatusCause {
                        reason: None,
                        message: error.clone(),
                    }],
                }),
                code: Some(500),
            },
        }
    }
}

/// `metav1.Status` as the API server and kubelet serialise it: fields in Go's order, empty
/// ones left out, `metadata` always present.
#[derive(Debug, Default, Serialize)]
struct MetaStatus {
    metadata: Empty,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<StatusDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

#[derive(Debug, Default, Serialize)]
struct Empty {}

#[derive(Debug, Serialize)]
struct StatusDetails {
    causes: Vec<StatusCause>,
}

#[derive(Debug, Serialize)]
struct StatusCause {
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    message: String,
}

/// Writes the outcome to the error stream and closes it.
pub async fn report(mut error: Writer, protocol: RemoteCommandProtocol, outcome: &Outcome) {
    if let Some(bytes) = outcome.encode(protocol) {
        if let Err(e) = error.write_all(&bytes).await {
            tracing::debug!(error = %e, "the client left before the outcome");
        }
    }
    let _ = error.shutdown().await;
}

/// Turns the bytes of a resize stream into terminal sizes. Clients send a JSON object per
/// resize (`{"Width":80,"Height":24}`, Go's field names) with no framing, so an object may
/// arrive split over several messages or several in one.
#[derive(Debug, Default)]
pub struct ResizeDecoder {
    pending: Vec<u8>,
}

#[derive(Deserialize)]
struct SizeJson {
    // Go's decoder matches field names without regard to case; clients use both spellings.
    #[serde(rename = "Width", alias = "width")]
    width: u16,
    #[serde(rename = "Height", alias = "height")]
    height: u16,
}

impl ResizeDecoder {
    /// Adds received bytes and returns the sizes completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<TerminalSize> {
        self.pending.extend_from_slice(bytes);
        let mut sizes = Vec::new();
        let mut values =
            serde_json::Deserializer::from_slice(&self.pending).into_iter::<SizeJson>();
        let consumed = loop {
            match values.next() {
                Some(Ok(size)) => sizes.push(TerminalSize {
                    width: size.width,
                    height: size.height,
                }),
                // The rest of the object is still on its way.
                Some(Err(e)) if e.is_eof() => break values.byte_offset(),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "ignoring a malformed terminal size");
                    break self.pending.len();
                }
                None => break values.byte_offset(),
            }
        };
        self.pending.drain(..consumed);
        sizes
    }
}

/// Runs a shim session against the client's streams until the process exits (or, for an
/// attach, until the shim ends the session): output goes to the client's stdout/stderr, the
/// client's stdin and terminal sizes go to the process. Returns the exit, if the session saw
/// one. The error stream is left to the caller.
pub async fn relay(
    session: ShimSession,
    stdin: Option<Reader>,
    stdout: Option<Writer>,
    stderr: Option<Writer>,
    resize: Option<mpsc::Receiver<TerminalSize>>,
) -> Result<Option<ExitInfo>, ShimError> {
    let (input, output) = session.split();
    // Output has its own task: a process blocked writing its output while we wait for it to
    // read its input would otherwise never get either done.
    // Aborted if the relay is dropped half-way (the server gives a session up at its idle
    // timeout): the task must not keep the client's stream and the shim session open.
    let mut output = AbortOnDropHandle::new(tokio::spawn(deliver_output(output, stdout, stderr)));
    let (input, result) = feed_input(input, stdin, resize, &mut output).await;
    // The input half goes only now: closing it early could look like the client leaving.
    drop(input);
    result
}

type OutputTask = AbortOnDropHandle<Result<Option<ExitInfo>, ShimError>>;

/// Passes stdin and terminal sizes on until the output task finishes (the session's end);
/// returns the input half and the output task's result.
async fn feed_input(
    mut input: SessionInput,
    mut stdin: Option<Reader>,
    mut resize: Option<mpsc::Receiver<TerminalSize>>,
    output: &mut OutputTask,
) -> (SessionInput, Result<Option<ExitInfo>, ShimError>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let step = tokio::select! {
            // In this order: a size the client sent before some input is applied before it
            // (the transport queues both in the client's order).
            biased;
            done = &mut *output => return (input, joined(done)),
            size = next_size(&mut resize), if resize.is_some() => Input::Resize(size),
            read = read_some(&mut stdin, &mut buf), if stdin.is_some() => Input::Stdin(read),
        };
        let call: InputCall<'_> = match step {
            Input::Stdin(Ok(n)) if n > 0 => Box::pin(input.stdin(&buf[..n])),
            // End of stdin (or a broken client stream): the process sees EOF.
            Input::Stdin(_) => {
                stdin = None;
                Box::pin(input.close_stdin())
            }
            Input::Resize(Some(size)) => Box::pin(input.resize(size.width, size.height)),
            Input::Resize(None) => {
                resize = None;
                continue;
            }
        };
        // A process that exits without reading its stdin would leave this write waiting
        // forever: the session's end abandons it.
        let sent = tokio::select! {
            sent = call => Sent::Call(sent),
            done = &mut *output => Sent::OutputFinished(joined(done)),
        };
        match sent {
            Sent::Call(Ok(())) => {}
            Sent::Call(Err(e)) => {
                // The process may have closed its stdin or exited; its output says how it ends.
                tracing::debug!(error = %e, "input to the session failed");
                stdin = None;
                resize = None;
            }
            Sent::OutputFinished(done) => return (input, done),
        }
    }
}

enum Input {
    Stdin(std::io::Result<usize>),
    Resize(Option<TerminalSize>),
}

enum Sent {
    Call(Result<(), ShimError>),
    OutputFinished(Result<Option<ExitInfo>, ShimError>),
}

type InputCall<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ShimError>> + Send + 'a>>;

fn joined(
    done: Result<Result<Option<ExitInfo>, ShimError>, tokio::task::JoinError>,
) -> Result<Option<ExitInfo>, ShimError> {
    done.unwrap_or_else(|e| Err(ShimError::Refused(format!("the output relay failed: {e}"))))
}

async fn read_some(stdin: &mut Option<Reader>, buf: &mut [u8]) -> std::io::Result<usize> {
    match stdin {
        Some(reader) => reader.read(buf).await,
        None => Ok(0),
    }
}

async fn next_size(resize: &mut Option<mpsc::Receiver<TerminalSize>>) -> Option<TerminalSize> {
    match resize {
        Some(sizes) => sizes.recv().await,
        None => None,
    }
}

/// Copies the session's output to the client until the process exits. A client that went
/// away ends the session: nobody would see the rest.
async fn deliver_output(
    mut output: SessionOutput,
    mut stdout: Option<Writer>,
    mut stderr: Option<Writer>,
) -> Result<Option<ExitInfo>, ShimError> {
    let result = loop {
        let (writer, data) = match output.next().await {
            Ok(Some(SessionEvent::Stdout(data))) => (&mut stdout, data),
            Ok(Some(SessionEvent::Stderr(data))) => (&mut stderr, data),
            Ok(Some(SessionEvent::Exited(exit))) => break Ok(Some(exit)),
            Ok(None) => break Ok(None),
            Err(e) => break Err(e),
        };
        // Output on a stream the client did not ask for is dropped, as upstream does.
        let Some(client) = writer else { continue };
        if let Err(e) = client.write_all(&data).await {
            tracing::debug!(error = %e, "the client left; ending the session");
            break Ok(None);
        }
    };
    for writer in [stdout, stderr].into_iter().flatten() {
        let mut writer = writer;
        let _ = writer.shutdown().await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitInfo {
        ExitInfo {
            pid: 1,
            exit_code: code,
            signal: None,
            exited_at: String::new(),
            oom_killed: false,
        }
    }

    #[test]
    fn success_is_a_status_from_v4_and_silence_before() {
        let outcome = Outcome::of_exit(&exit(0), &["true".into()]);
        assert_eq!(
            outcome.encode(RemoteCommandProtocol::V4).unwrap(),
            br#"{"metadata":{},"status":"Success"}"#
        );
        assert_eq!(outcome.encode(RemoteCommandProtocol::V2), None);
    }

    #[test]
    fn a_non_zero_exit_carries_its_code() {
        let cmd = ["sh".to_string(), "-c".into(), "exit 3".into()];
        let outcome = Outcome::of_exit(&exit(3), &cmd);
        let json = String::from_utf8(outcome.encode(RemoteCommandProtocol::V5).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        let text = outcome.encode(RemoteCommandProtocol::V1).unwrap();
        assert!(String::from_utf8(text)
            .unwrap()
            .starts_with("command terminated"));
    }

    #[test]
    fn internal_errors_look_like_the_api_servers() {
        let json = Outcome::Internal("boom".into())
            .encode(RemoteCommandProtocol::V4)
            .unwrap();
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: boom","reason":"InternalError","details":{"causes":[{"message":"boom"}]},"code":500}"#
        );
    }

    #[test]
    fn sizes_are_read_across_and_within_messages() {
        let mut decoder = ResizeDecoder::default();
        assert!(decoder.push(br#"{"Width":80,"#).is_empty());
        assert_eq!(
            decoder.push(br#""Height":24}{"width":100,"height":50}"#),
            vec![
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 50
                }
            ]
        );
        assert!(decoder.push(b"not json").is_empty());
        assert_eq!(decoder.push(br#"{"Width":1,"Height":2}"#).len(), 1);
    }
}
