//! The WebSocket transport of the streaming protocols (`*.channel.k8s.io`).
//!
//! One WebSocket carries several byte streams, told apart by a channel number in front of
//! every message: for exec and attach 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; for a
//! port forward two channels per requested port, data (2i) and error (2i+1). The binary
//! protocols put the channel in the first byte of a binary message; the `base64.` ones send
//! text messages whose first character is the channel as an ASCII digit and whose rest is the
//! payload in base64 (for clients that cannot send binary messages, like old browsers).
//! `v5.channel.k8s.io` adds one control message, `[255, channel]`: the client closes that
//! channel (how it ends stdin; the older protocols cannot).
//!
//! Streams are plain [`AsyncRead`](tokio::io::AsyncRead)/[`AsyncWrite`] values: writes become
//! messages in the order they are made, on every channel alike (so the outcome on the error
//! channel comes after the output before it); incoming messages fill bounded pipes. The
//! connection closes once every stream the server writes has been shut down or dropped.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_util::{SinkExt, StreamExt};
use peapod_runtime::shim_protocol::base64;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{Message, Role};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::PollSender;

use super::remotecommand::ResizeDecoder;
use super::streams::{
    PortForwardStream, PortForwardStreams, RemoteCommandOptions, RemoteCommandProtocol,
    RemoteCommandStreams, TerminalSize, Writer,
};

/// The `Upgrade` header value of WebSocket connections.
pub const UPGRADE: &str = "websocket";

/// The sub-protocols of exec and attach, as the kubelet's server accepts them. The empty name
/// is a client that asked for none.
const REMOTE_COMMAND: [(&str, Codec, RemoteCommandProtocol); 6] = [
    (
        "v5.channel.k8s.io",
        Codec::Binary,
        RemoteCommandProtocol::V5,
    ),
    (
        "v4.channel.k8s.io",
        Codec::Binary,
        RemoteCommandProtocol::V4,
    ),
    (
        "v4.base64.channel.k8s.io",
        Codec::Base64,
        RemoteCommandProtocol::V4,
    ),
    ("channel.k8s.io", Codec::Binary, RemoteCommandProtocol::V1),
    (
        "base64.channel.k8s.io",
        Codec::Base64,
        RemoteCommandProtocol::V1,
    ),
    ("", Codec::Binary, RemoteCommandProtocol::V1),
];

/// The sub-protocols of port forwarding.
const PORT_FORWARD: [(&str, Codec); 3] = [
    ("v4.channel.k8s.io", Codec::Binary),
    ("v4.base64.channel.k8s.io", Codec::Base64),
    ("", Codec::Binary),
];

/// How payloads travel in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Binary,
    Base64,
}

/// The sub-protocol chosen for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// What to answer in `Sec-WebSocket-Protocol` (nothing when empty).
    pub name: &'static str,
    pub codec: Codec,
    pub protocol: RemoteCommandProtocol,
}

/// Picks the first of the client's protocols (`Sec-WebSocket-Protocol`, in its order of
/// preference) that exec and attach speak; a client that offers none gets the oldest.
pub fn negotiate_remote_command<'a>(
    offered: impl IntoIterator<Item = &'a str>,
) -> Option<Negotiated> {
    pick(
        offered,
        &REMOTE_COMMAND.map(|(name, codec, protocol)| Negotiated {
            name,
            codec,
            protocol,
        }),
    )
}

/// The same for port forwarding.
pub fn negotiate_port_forward<'a>(
    offered: impl IntoIterator<Item = &'a str>,
) -> Option<Negotiated> {
    pick(
        offered,
        &PORT_FORWARD.map(|(name, codec)| Negotiated {
            name,
            codec,
            // Port forwarding has no remote command version; nothing reads this.
            protocol: RemoteCommandProtocol::V4,
        }),
    )
}

fn pick<'a>(
    offered: impl IntoIterator<Item = &'a str>,
    supported: &[Negotiated],
) -> Option<Negotiated> {
    let mut offered: Vec<&str> = offered
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if offered.is_empty() {
        offered.push("");
    }
    offered
        .iter()
        .find_map(|wanted| supported.iter().find(|s| s.name == *wanted).copied())
}

/// The names a client may ask for, for error messages.
pub fn remote_command_names() -> Vec<&'static str> {
    REMOTE_COMMAND
        .iter()
        .map(|p| p.0)
        .filter(|n| !n.is_empty())
        .collect()
}

pub fn port_forward_names() -> Vec<&'static str> {
    PORT_FORWARD
        .iter()
        .map(|p| p.0)
        .filter(|n| !n.is_empty())
        .collect()
}

/// Sets up the streams of an exec or attach on an upgraded connection (the 101 answer is
/// already sent).
pub async fn remote_command<IO>(
    io: IO,
    negotiated: Negotiated,
    options: RemoteCommandOptions,
) -> RemoteCommandStreams
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let v5 = negotiated.protocol >= RemoteCommandProtocol::V5;
    // Upstream reads terminal sizes on every WebSocket protocol, unlike SPDY before V3.
    let only_if = |wanted: bool, kind: Kind| if wanted { kind } else { Kind::Ignored };
    let kinds = [
        only_if(options.stdin, Kind::Read),
        only_if(options.stdout, Kind::Write),
        only_if(options.stderr && !options.tty, Kind::Write),
        Kind::Write,
        only_if(options.tty, Kind::Resize),
    ];
    let mut channels = open(ws, negotiated.codec, v5, &kinds);
    // An empty message on the first channel the client reads tells it the session is up.
    let first = if options.stdout {
        STDOUT
    } else if options.stderr && !options.tty {
        STDERR
    } else {
        ERROR
    };
    channels.announce(first, Vec::new()).await;
    RemoteCommandStreams {
        protocol: negotiated.protocol,
        stdin: channels.take_reader(STDIN).map(|r| Box::pin(r) as _),
        stdout: channels.take_writer(STDOUT).map(|w| Box::pin(w) as Writer),
        stderr: channels.take_writer(STDERR).map(|w| Box::pin(w) as Writer),
        resize: channels.resize.take(),
        error: match channels.take_writer(ERROR) {
            Some(w) => Box::pin(w),
            // Always opened above; a sink keeps the type honest.
            None => Box::pin(tokio::io::sink()),
        },
    }
}

const STDIN: usize = 0;
const STDOUT: usize = 1;
const STDERR: usize = 2;
const ERROR: usize = 3;

/// Sets up one forwarded connection per requested port on an upgraded connection. Each
/// channel first tells the client its port (two bytes, little-endian), as upstream does.
pub async fn port_forward<IO>(io: IO, negotiated: Negotiated, ports: &[u16]) -> PortForwardStreams
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let kinds: Vec<Kind> = ports
        .iter()
        .flat_map(|_| [Kind::ReadWrite, Kind::Write])
        .collect();
    let mut channels = open(ws, negotiated.codec, false, &kinds);
    let (sender, receiver) = mpsc::channel(ports.len().max(1));
    for (i, port) in ports.iter().enumerate() {
        let (data, error) = (2 * i, 2 * i + 1);
        channels.announce(data, port.to_le_bytes().to_vec()).await;
        channels.announce(error, port.to_le_bytes().to_vec()).await;
        let (Some(reader), Some(writer), Some(error)) = (
            channels.take_reader(data),
            channels.take_writer(data),
            channels.take_writer(error),
        ) else {
            continue;
        };
        let stream = PortForwardStream {
            port: *port,
            data: Box::pin(tokio::io::join(reader, writer)),
            error: Box::pin(error),
        };
        // The receiver holds room for every port.
        let _ = sender.try_send(stream);
    }
    receiver
}

/// What a channel does, seen from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The client writes, the server reads (stdin).
    Read,
    /// The server writes (stdout, stderr, error).
    Write,
    /// Both (a forwarded connection).
    ReadWrite,
    /// Terminal sizes from the client, as JSON.
    Resize,
    /// Not opened for this session: what arrives on it is dropped.
    Ignored,
}

/// The server's ends of a connection's channels, until the handler takes them.
struct Channels {
    readers: Vec<Option<DuplexStream>>,
    writers: Vec<Option<ChannelWriter>>,
    resize: Option<mpsc::Receiver<TerminalSize>>,
    /// For the announcement messages; dropped once the streams are handed out.
    frames: mpsc::Sender<Frame>,
}

impl Channels {
    async fn announce(&self, channel: usize, data: Vec<u8>) {
        let _ = self
            .frames
            .send(Frame {
                channel: channel as u8,
                data,
            })
            .await;
    }

    fn take_reader(&mut self, channel: usize) -> Option<DuplexStream> {
        self.readers.get_mut(channel)?.take()
    }

    fn take_writer(&mut self, channel: usize) -> Option<ChannelWriter> {
        self.writers.get_mut(channel)?.take()
    }
}

/// One message to send.
struct Frame {
    channel: u8,
    data: Vec<u8>,
}

/// Room in each incoming pipe; a handler that does not read holds the client back.
const PIPE_BYTES: usize = 64 * 1024;
/// Messages waiting to be sent; writers wait when it is full.
const QUEUED_FRAMES: usize = 16;
/// The largest payload of one message.
const MAX_PAYLOAD: usize = 32 * 1024;
/// The v5 control message that closes a channel.
const CLOSE_CHANNEL: u8 = 255;

fn open<IO>(ws: WebSocketStream<IO>, codec: Codec, closable: bool, kinds: &[Kind]) -> Channels
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (frames, queue) = mpsc::channel(QUEUED_FRAMES);
    let mut readers = Vec::new();
    let mut inbound = Vec::new();
    let mut writers = Vec::new();
    let mut resize = None;
    let mut resize_sender = None;
    for (number, kind) in kinds.iter().enumerate() {
        let reads = matches!(kind, Kind::Read | Kind::ReadWrite);
        let writes = matches!(kind, Kind::Write | Kind::ReadWrite);
        if reads {
            let (server_end, socket_end) = tokio::io::duplex(PIPE_BYTES);
            readers.push(Some(server_end));
            inbound.push(Inbound::Pipe(socket_end));
        } else if *kind == Kind::Resize {
            let (sender, receiver) = mpsc::channel(8);
            resize = Some(receiver);
            resize_sender = Some(sender);
            readers.push(None);
            inbound.push(Inbound::Resize(ResizeDecoder::default()));
        } else {
            readers.push(None);
            inbound.push(Inbound::Dropped);
        }
        writers.push(writes.then(|| ChannelWriter {
            channel: number as u8,
            frames: PollSender::new(frames.clone()),
        }));
    }
    let (sink, stream) = ws.split();
    tokio::spawn(send_frames(sink, queue, codec));
    tokio::spawn(receive(stream, inbound, resize_sender, codec, closable));
    Channels {
        readers,
        writers,
        resize,
        frames,
    }
}

/// Where the messages of one channel go.
enum Inbound {
    Pipe(DuplexStream),
    Resize(ResizeDecoder),
    Dropped,
}

type Sink<IO> = futures_util::stream::SplitSink<WebSocketStream<IO>, Message>;
type Source<IO> = futures_util::stream::SplitStream<WebSocketStream<IO>>;

/// Sends queued frames until every writer is gone, then closes the connection.
async fn send_frames<IO>(mut sink: Sink<IO>, mut queue: mpsc::Receiver<Frame>, codec: Codec)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(frame) = queue.recv().await {
        let message = match codec {
            Codec::Binary => {
                let mut bytes = Vec::with_capacity(frame.data.len() + 1);
                bytes.push(frame.channel);
                bytes.extend_from_slice(&frame.data);
                Message::binary(bytes)
            }
            Codec::Base64 => {
                let digit = char::from(b'0' + frame.channel);
                Message::text(format!("{digit}{}", base64::encode(&frame.data)))
            }
        };
        if let Err(e) = sink.send(message).await {
            tracing::debug!(error = %e, "websocket send failed; the client is gone");
            return;
        }
    }
    let _ = sink.close().await;
}

/// Delivers the client's messages to their channels until the connection ends.
async fn receive<IO>(
    mut stream: Source<IO>,
    mut inbound: Vec<Inbound>,
    resize: Option<mpsc::Sender<TerminalSize>>,
    codec: Codec,
    closable: bool,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = stream.next().await {
        let bytes = match message {
            Ok(Message::Binary(bytes)) => bytes.to_vec(),
            Ok(Message::Text(text)) => text.as_bytes().to_vec(),
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "websocket receive failed");
                break;
            }
        };
        let Some((&first, payload)) = bytes.split_first() else {
            continue;
        };
        if closable && first == CLOSE_CHANNEL {
            // The client has no more to send on that channel: its reader sees the end.
            if let Some(channel) = payload
                .first()
                .and_then(|c| inbound.get_mut(usize::from(*c)))
            {
                *channel = Inbound::Dropped;
            }
            continue;
        }
        let number = match codec {
            Codec::Binary => first,
            Codec::Base64 => first.wrapping_sub(b'0'),
        };
        let Some(channel) = inbound.get_mut(usize::from(number)) else {
            tracing::debug!(channel = number, "message for an unknown channel");
            continue;
        };
        let data = match codec {
            Codec::Binary => payload.to_vec(),
            Codec::Base64 => match std::str::from_utf8(payload)
                .ok()
                .and_then(|text| base64::decode(text).ok())
            {
                Some(data) => data,
                None => {
                    tracing::warn!(channel = number, "dropping a message that is not base64");
                    continue;
                }
            },
        };
        match channel {
            Inbound::Pipe(pipe) => {
                if pipe.write_all(&data).await.is_err() {
                    // The handler stopped reading this channel.
                    *channel = Inbound::Dropped;
                }
            }
            Inbound::Resize(decoder) => {
                for size in decoder.push(&data) {
                    if let Some(sizes) = &resize {
                        let _ = sizes.send(size).await;
                    }
                }
            }
            Inbound::Dropped => {}
        }
    }
    // Dropping the pipes gives every reader its end of stream.
}

/// The server's writing end of a channel: each write becomes one message (at most
/// [`MAX_PAYLOAD`] bytes of it), queued behind the messages written before on any channel.
struct ChannelWriter {
    channel: u8,
    frames: PollSender<Frame>,
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the websocket connection is closed",
    )
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if ready!(self.frames.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(gone()));
        }
        let n = buf.len().min(MAX_PAYLOAD);
        let frame = Frame {
            channel: self.channel,
            data: buf[..n].to_vec(),
        };
        match self.frames.send_item(frame) {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(_) => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // WebSocket channels have no end-of-stream message; letting go of the queue counts
        // this writer out of those the connection waits for.
        self.frames.close();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_preference_wins() {
        let chosen = negotiate_remote_command(["v4.channel.k8s.io", "v5.channel.k8s.io"]).unwrap();
        assert_eq!(chosen.name, "v4.channel.k8s.io");
        assert_eq!(chosen.protocol, RemoteCommandProtocol::V4);
        let chosen = negotiate_remote_command(["x", "v4.base64.channel.k8s.io"]).unwrap();
        assert_eq!(chosen.codec, Codec::Base64);
        assert_eq!(negotiate_remote_command(["v2.channel.k8s.io"]), None);
        let none = negotiate_remote_command([]).unwrap();
        assert_eq!((none.name, none.protocol), ("", RemoteCommandProtocol::V1));
        assert_eq!(negotiate_port_forward(["portforward.k8s.io"]), None);
        assert_eq!(
            negotiate_port_forward(["v4.channel.k8s.io"]).unwrap().name,
            "v4.channel.k8s.io"
        );
    }
}
