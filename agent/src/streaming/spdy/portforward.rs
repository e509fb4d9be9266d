//! Pairing the streams of a port-forward session.
//!
//! Each forwarded connection is two client streams sharing a `requestid` header: `data`
//! (the connection's bytes both ways) and `error` (where we report a failure as text). The
//! pairs come any time while the session lasts, their two streams in either order.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::compression::Headers;
use super::session::{self, IncomingStream, IncomingStreams, StreamHandle};
use super::STREAM_CREATION_TIMEOUT;
use crate::streaming::streams::{PortForwardStream, PortForwardStreams};

/// Runs a SPDY/3.1 port-forward session ("portforward.k8s.io"): every pair of streams the
/// client opens (headers streamType=error|data, port, requestID) becomes one
/// PortForwardStream.
pub fn port_forward<IO>(io: IO) -> PortForwardStreams
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    port_forward_with_timeout(io, STREAM_CREATION_TIMEOUT)
}

/// `port_forward` with the time a pair may take to complete as a parameter (tests shorten it).
pub(super) fn port_forward_with_timeout<IO>(io: IO, timeout: Duration) -> PortForwardStreams
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    let incoming = session::start(io, check_headers);
    tokio::spawn(pair_streams(incoming, tx, timeout));
    rx
}

/// Refuses streams without a valid port and type, as the kubelet does.
fn check_headers(headers: &Headers) -> Result<(), String> {
    port(headers)?;
    match headers.get("streamtype") {
        Some("data" | "error") => Ok(()),
        None | Some("") => Err("\"streamType\" header is required".into()),
        Some(other) => Err(format!("invalid stream type {other:?}")),
    }
}

fn port(headers: &Headers) -> Result<u16, String> {
    let text = headers
        .get("port")
        .filter(|p| !p.is_empty())
        .ok_or("\"port\" header is required")?;
    let port: u16 = text
        .parse()
        .map_err(|e| format!("unable to parse {text:?} as a port: {e}"))?;
    if port == 0 {
        return Err(format!("port {text:?} must be > 0"));
    }
    Ok(port)
}

/// The stream's request id. Old clients sent none; the kubelet then guesses from the stream
/// ids, which are consecutive when connections are not opened concurrently: the error
/// stream's id for the error stream, the data stream's id minus 2 for the data stream.
fn request_id(stream: &IncomingStream, data: bool) -> String {
    match stream.headers.get("requestid") {
        Some(id) if !id.is_empty() => id.to_string(),
        _ if data => (i64::from(stream.id) - 2).to_string(),
        _ => stream.id.to_string(),
    }
}

struct Pair {
    data: Option<(u16, StreamHandle)>,
    error: Option<StreamHandle>,
    deadline: Instant,
}

impl Pair {
    /// Reports a problem with this connection on its error stream, if it has one yet.
    async fn report(&mut self, message: &str) {
        warn!("port forward: {message}");
        if let Some(error) = self.error.as_mut() {
            if let Err(e) = error.write_all(message.as_bytes()).await {
                debug!("cannot report a port-forward error to the client: {e}");
            }
        }
    }
}

/// The pairs still waiting for one of their streams, by request id.
struct Pairing {
    pairs: HashMap<String, Pair>,
    timeout: Duration,
}

impl Pairing {
    /// Files a new stream with its pair; yields the connection once both streams are there.
    async fn add(&mut self, new: IncomingStream) -> Option<PortForwardStream> {
        let data = new.headers.get("streamtype") == Some("data");
        let request = request_id(&new, data);
        let timeout = self.timeout;
        let pair = self.pairs.entry(request.clone()).or_insert_with(|| Pair {
            data: None,
            error: None,
            deadline: Instant::now() + timeout,
        });
        let duplicate = if data {
            pair.data.is_some()
        } else {
            pair.error.is_some()
        };
        if duplicate {
            let kind = if data { "data" } else { "error" };
            let message = format!(
                "error processing stream for request {request}: {kind} stream already assigned"
            );
            pair.report(&message).await;
            return None;
        }
        if data {
            // check_headers let only streams with a valid port through.
            let port = port(&new.headers).unwrap_or_default();
            pair.data = Some((port, new.stream));
        } else {
            pair.error = Some(new.stream.into_writer());
        }
        if pair.data.is_none() || pair.error.is_none() {
            return None;
        }
        let Some(Pair {
            data: Some((port, data)),
            error: Some(error),
            ..
        }) = self.pairs.remove(&request)
        else {
            return None;
        };
        debug!("port forward request {request} to port {port}");
        Some(PortForwardStream {
            port,
            data: Box::pin(data),
            error: Box::pin(error),
        })
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.pairs.values().map(|p| p.deadline).min()
    }

    /// Gives up on the pairs whose partner did not come in time, as the kubelet does.
    async fn expire(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .pairs
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for request in expired {
            if let Some(mut pair) = self.pairs.remove(&request) {
                let message = format!("request {request}: timed out waiting for streams");
                pair.report(&message).await;
            }
        }
    }
}

async fn pair_streams(
    mut incoming: IncomingStreams,
    tx: mpsc::Sender<PortForwardStream>,
    timeout: Duration,
) {
    let mut pairing = Pairing {
        pairs: HashMap::new(),
        timeout,
    };
    loop {
        let next_deadline = pairing.next_deadline();
        let expiry = tokio::time::sleep_until(next_deadline.unwrap_or_else(Instant::now));
        tokio::select! {
            next = incoming.recv() => {
                let Some(new) = next else { break };
                if let Some(stream) = pairing.add(new).await {
                    if tx.send(stream).await.is_err() {
                        break;
                    }
                }
            }
            _ = expiry, if next_deadline.is_some() => pairing.expire().await,
            _ = tx.closed() => break,
        }
    }
}
