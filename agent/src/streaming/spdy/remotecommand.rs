//! Gathering the streams of an exec or attach session.
//!
//! The client opens one stream per channel, tagged by its `streamtype` header, in any order.
//! Like the kubelet, we wait until every stream the request asked for exists: error always,
//! stdin/stdout/stderr as requested (a terminal has no stderr), and resize with a terminal
//! from protocol V3 on.

use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::session::{self, IncomingStream, StreamHandle};
use super::{SpdyError, STREAM_CREATION_TIMEOUT};
use crate::streaming::streams::{
    Reader, RemoteCommandOptions, RemoteCommandProtocol, RemoteCommandStreams, TerminalSize, Writer,
};

/// Runs a SPDY/3.1 server session on an upgraded connection (the 101 answer is already sent)
/// and returns once the client has opened every stream a remote command session needs
/// (error; stdin/stdout/stderr per `options`, no stderr with a tty; resize with a tty from V3
/// on), or an error after 30 s. The session keeps running in a spawned task until all
/// streams are done or the connection closes.
pub async fn remote_command<IO>(
    io: IO,
    protocol: RemoteCommandProtocol,
    options: RemoteCommandOptions,
) -> Result<RemoteCommandStreams, SpdyError>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    gather(io, protocol, options, STREAM_CREATION_TIMEOUT).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Error,
    Stdin,
    Stdout,
    Stderr,
    Resize,
}

impl Channel {
    const ALL: [Channel; 5] = [
        Channel::Error,
        Channel::Stdin,
        Channel::Stdout,
        Channel::Stderr,
        Channel::Resize,
    ];

    /// The `streamtype` header value.
    fn name(self) -> &'static str {
        match self {
            Channel::Error => "error",
            Channel::Stdin => "stdin",
            Channel::Stdout => "stdout",
            Channel::Stderr => "stderr",
            Channel::Resize => "resize",
        }
    }

    fn expected(protocol: RemoteCommandProtocol, options: RemoteCommandOptions) -> Vec<Channel> {
        Channel::ALL
            .into_iter()
            .filter(|channel| match channel {
                Channel::Error => true,
                Channel::Stdin => options.stdin,
                Channel::Stdout => options.stdout,
                Channel::Stderr => options.stderr && !options.tty,
                Channel::Resize => options.tty && protocol >= RemoteCommandProtocol::V3,
            })
            .collect()
    }
}

/// The streams received so far, by channel.
#[derive(Default)]
struct Received(Vec<(Channel, StreamHandle)>);

impl Received {
    fn has(&self, channel: Channel) -> bool {
        self.0.iter().any(|(c, _)| *c == channel)
    }

    fn take(&mut self, channel: Channel) -> Option<StreamHandle> {
        let index = self.0.iter().position(|(c, _)| *c == channel)?;
        Some(self.0.swap_remove(index).1)
    }

    /// Keeps a new stream if it is one we wait for; the kubelet ignores the others too.
    fn file(&mut self, new: IncomingStream, expected: &[Channel]) {
        let kind = new.headers.get("streamtype");
        match expected.iter().find(|c| Some(c.name()) == kind) {
            Some(channel) if !self.has(*channel) => self.0.push((*channel, new.stream)),
            _ => warn!(
                "ignoring unexpected SPDY stream {} of type {kind:?}",
                new.id
            ),
        }
    }

    fn missing(&self, expected: &[Channel]) -> String {
        let missing: Vec<&str> = expected
            .iter()
            .filter(|c| !self.has(**c))
            .map(|c| c.name())
            .collect();
        missing.join(", ")
    }
}

/// `remote_command` with the stream creation timeout as a parameter (tests shorten it).
pub(super) async fn gather<IO>(
    io: IO,
    protocol: RemoteCommandProtocol,
    options: RemoteCommandOptions,
    timeout: Duration,
) -> Result<RemoteCommandStreams, SpdyError>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let expected = Channel::expected(protocol, options);
    // Like the kubelet, accept any stream and sort them out here.
    let mut incoming = session::start(io, |_| Ok(()));
    let mut received = Received::default();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    while received.0.len() < expected.len() {
        tokio::select! {
            next = incoming.recv() => match next {
                Some(new) => received.file(new, &expected),
                None => {
                    let missing = received.missing(&expected);
                    return Err(SpdyError::ConnectionClosed { missing });
                }
            },
            _ = &mut deadline => {
                let missing = received.missing(&expected);
                return Err(SpdyError::StreamTimeout { missing, timeout });
            }
        }
    }
    // No more streams: the session ends once the handler is done with these.
    drop(incoming);
    debug!(
        "SPDY remote command session has its {} streams",
        expected.len()
    );

    let reader = |stream: StreamHandle| -> Reader { Box::pin(stream.into_reader()) };
    let writer = |stream: StreamHandle| -> Writer { Box::pin(stream.into_writer()) };
    let error = received
        .take(Channel::Error)
        .ok_or_else(|| SpdyError::Protocol("no error stream".into()))?;
    Ok(RemoteCommandStreams {
        protocol,
        stdin: received.take(Channel::Stdin).map(reader),
        stdout: received.take(Channel::Stdout).map(writer),
        stderr: received.take(Channel::Stderr).map(writer),
        resize: received
            .take(Channel::Resize)
            .map(|stream| decode_resizes(stream.into_reader())),
        error: writer(error),
    })
}

/// A terminal size as the client encodes it: Go's `remotecommand.TerminalSize` in JSON.
/// Go decodes field names case-insensitively; the aliases cover the spellings seen in
/// practice.
#[derive(Deserialize)]
struct WireSize {
    #[serde(rename = "Width", alias = "width")]
    width: u16,
    #[serde(rename = "Height", alias = "height")]
    height: u16,
}

/// A resize message that has not arrived whole after this many bytes is garbage.
const MAX_RESIZE_MESSAGE: usize = 4096;

/// Decodes the resize stream (JSON objects, one after another) into terminal sizes. Ends,
/// closing the channel, at the end of the stream, on malformed input (as the kubelet does)
/// or when the receiver goes away.
fn decode_resizes(mut stream: StreamHandle) -> mpsc::Receiver<TerminalSize> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            loop {
                let (next, used) = {
                    let mut objects =
                        serde_json::Deserializer::from_slice(&pending).into_iter::<WireSize>();
                    let next = objects.next();
                    (next, objects.byte_offset())
                };
                match next {
                    Some(Ok(size)) => {
                        pending.drain(..used);
                        let size = TerminalSize {
                            width: size.width,
                            height: size.height,
                        };
                        if tx.send(size).await.is_err() {
                            return;
                        }
                    }
                    // Only whitespace left.
                    None => {
                        pending.clear();
                        break;
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(e)) => {
                        debug!("malformed terminal size on the resize stream: {e}");
                        return;
                    }
                }
            }
            if pending.len() > MAX_RESIZE_MESSAGE {
                debug!("oversized terminal size message on the resize stream");
                return;
            }
            tokio::select! {
                read = stream.read(&mut chunk) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(&chunk[..n]),
                },
                _ = tx.closed() => return,
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_streams_follow_the_kubelet() {
        let names = |protocol, options| {
            Channel::expected(protocol, options)
                .into_iter()
                .map(Channel::name)
                .collect::<Vec<_>>()
        };
        let all = RemoteCommandOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let tty = RemoteCommandOptions { tty: true, ..all };
        let output_only = RemoteCommandOptions {
            stdin: false,
            stderr: false,
            ..all
        };
        use RemoteCommandProtocol::*;
        assert_eq!(names(V4, all), ["error", "stdin", "stdout", "stderr"]);
        assert_eq!(names(V1, tty), ["error", "stdin", "stdout"]);
        assert_eq!(names(V2, tty), ["error", "stdin", "stdout"]);
        assert_eq!(names(V3, tty), ["error", "stdin", "stdout", "resize"]);
        assert_eq!(names(V5, tty), ["error", "stdin", "stdout", "resize"]);
        assert_eq!(names(V4, output_only), ["error", "stdout"]);
    }
}
