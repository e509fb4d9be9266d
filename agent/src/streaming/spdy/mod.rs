//! The SPDY/3.1 transport of the streaming server.
//!
//! `kubectl exec`/`port-forward` (through the kubelet) and crictl speak the Kubernetes
//! streaming protocols over SPDY/3.1 by default: after the HTTP upgrade, the client opens one
//! SPDY stream per channel (`streamtype` header: error, stdin, stdout, stderr, resize; for
//! port forwarding a data and an error stream per connection). This module runs the server
//! side of such a session on the upgraded connection and hands the streams over as the
//! transport-neutral types of `streams`.
//!
//! Layout: `frame` (wire format), `compression` (header blocks), `session` (stream
//! multiplexing and flow control), `remotecommand` and `portforward` (gathering the streams
//! of the two session kinds).
//!
//! Where we differ from the kubelet (Go: apimachinery's httpstream/spdy on spdystream), on
//! purpose and invisibly to its clients:
//! - SYN_REPLY carries `:status` and `:version` as SPDY/3 asks; Go sends no headers and its
//!   client ignores them, but other clients reset streams without a status.
//! - The client's flow-control windows are honoured once it shows it uses them (spdystream
//!   never does); see `session`.
//! - We end our (unused) half of the stdin and resize streams at once; Go does so for stdin
//!   in protocol V1 only. V1's reset of the error stream, a kubelet bug kept for old
//!   clients, is not reproduced.
//! - Streams we cannot take get RST_STREAM REFUSED_STREAM (Go: CANCEL), including streams
//!   opened after an exec or attach session has all of its own (Go leaves those hanging).

mod compression;
mod frame;
mod portforward;
mod remotecommand;
mod session;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use portforward::port_forward;
pub use remotecommand::remote_command;

/// The `Upgrade` header value of SPDY connections.
pub const UPGRADE: &str = "SPDY/3.1";

/// How long a client may take to open the streams of a session (the kubelet's
/// `streamCreationTimeout`).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("the client did not open the {missing} stream(s) within {timeout:?}")]
    StreamTimeout { missing: String, timeout: Duration },
    #[error("the connection closed before the client opened the {missing} stream(s)")]
    ConnectionClosed { missing: String },
    #[error("SPDY protocol error: {0}")]
    Protocol(String),
    #[error("SPDY header compression failed: {0}")]
    Compression(String),
    #[error("SPDY connection I/O failed: {0}")]
    Io(#[from] std::io::Error),
}
