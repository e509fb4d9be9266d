//! What a streaming transport hands to the exec, attach and port-forward handlers.
//!
//! The kubelet's streaming protocols come in two transports: SPDY/3.1 (what the kubelet and
//! crictl speak by default) and WebSocket (`*.channel.k8s.io`, what newer clients prefer).
//! Each transport turns an upgraded HTTP connection into the plain byte streams below, so the
//! handlers never see a frame or a channel number.

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// A byte stream from the client (stdin, a forwarded connection's inbound bytes).
pub type Reader = Pin<Box<dyn AsyncRead + Send>>;
/// A byte stream to the client. Shutting it down (`AsyncWriteExt::shutdown`) tells the
/// client that the stream has ended (SPDY FIN / WebSocket channel close).
pub type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// The remote command sub-protocols (`X-Stream-Protocol-Version` for SPDY,
/// `Sec-WebSocket-Protocol` for WebSocket), oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RemoteCommandProtocol {
    /// "channel.k8s.io"
    V1,
    /// "v2.channel.k8s.io"
    V2,
    /// "v3.channel.k8s.io": adds the resize stream.
    V3,
    /// "v4.channel.k8s.io": the error stream carries a JSON metav1.Status (exit codes).
    V4,
    /// "v5.channel.k8s.io": adds closing stdin (WebSocket only).
    V5,
}

impl RemoteCommandProtocol {
    pub const ALL: [RemoteCommandProtocol; 5] = [Self::V1, Self::V2, Self::V3, Self::V4, Self::V5];

    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "channel.k8s.io",
            Self::V2 => "v2.channel.k8s.io",
            Self::V3 => "v3.channel.k8s.io",
            Self::V4 => "v4.channel.k8s.io",
            Self::V5 => "v5.channel.k8s.io",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// What an exec or attach request asked for (its URL's query: `stdin`, `stdout`, `stderr`,
/// `tty`; the CRI request fixed the same values when it got the URL).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoteCommandOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// A terminal size, from the resize stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// The streams of one exec or attach session, as the transport established them.
pub struct RemoteCommandStreams {
    pub protocol: RemoteCommandProtocol,
    /// Present when the options asked for it (likewise stdout and stderr; with a tty there
    /// is no stderr: the terminal merges it into stdout).
    pub stdin: Option<Reader>,
    pub stdout: Option<Writer>,
    pub stderr: Option<Writer>,
    /// Terminal sizes (protocol V3 and later, with a tty). The first size may arrive before
    /// the process starts.
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    /// The error stream: the handler writes the session's outcome here once, at the end
    /// (see `remotecommand::outcome`), then shuts it down.
    pub error: Writer,
}

/// One forwarded connection of a port-forward session: what the client sends arrives on
/// `data`'s read half, what is written to it reaches the client. Errors (a refused
/// connection) are written as text to `error`.
pub struct PortForwardStream {
    pub port: u16,
    pub data: Pin<Box<dyn AsyncReadWrite>>,
    pub error: Writer,
}

/// Both halves of a bidirectional stream.
pub trait AsyncReadWrite: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> AsyncReadWrite for T {}

/// The connections of a port-forward session, as the client opens them (SPDY: a pair of
/// streams per connection, any time; WebSocket: one per requested port, at once). The
/// channel closes when the session ends.
pub type PortForwardStreams = mpsc::Receiver<PortForwardStream>;
