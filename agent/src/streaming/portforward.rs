//! Port forwarding: each connection the client opens becomes a TCP connection to
//! `localhost:<port>` inside the pod's network namespace, and bytes are copied both ways.
//!
//! The socket must be created inside the pod's namespace, and a socket keeps the namespace it
//! was created in. So a short-lived thread joins the namespace (setns changes only the calling
//! thread), connects, and hands the connected socket back; the thread then ends, so no thread
//! of the daemon stays in a pod's namespace. Nothing forks (ARCHITECTURE.md, principle 6).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::streams::{AsyncReadWrite, PortForwardStream, PortForwardStreams};

/// A pod's service that does not accept within this time is reported as an error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the connections of one port-forward session until the client ends it.
/// `netns` is the pod's pinned network namespace; `None` for a pod on the host's network.
pub async fn serve(pod_id: String, netns: Option<PathBuf>, mut streams: PortForwardStreams) {
    let mut connections = tokio::task::JoinSet::new();
    while let Some(stream) = streams.recv().await {
        connections.spawn(forward(pod_id.clone(), netns.clone(), stream));
    }
    while connections.join_next().await.is_some() {}
}

/// Forwards one connection; a failure is told to the client on the stream's error channel.
async fn forward(pod_id: String, netns: Option<PathBuf>, stream: PortForwardStream) {
    let PortForwardStream {
        port,
        mut data,
        mut error,
    } = stream;
    let result = match connect(netns.as_deref(), port).await {
        Ok(pod) => copy(&mut data, pod).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        // The same words as the kubelet's server (its pod is our sandbox id, it has no uid).
        let message = format!("error forwarding port {port} to pod {pod_id}, uid : {e}");
        tracing::info!(%message);
        let _ = error.write_all(message.as_bytes()).await;
    }
    let _ = error.shutdown().await;
    let _ = data.shutdown().await;
}

/// Copies until the pod's side has said all it will say. The client's end of stream is
/// passed on as a half-close, so a request-then-response service still answers.
async fn copy(client: &mut Pin<Box<dyn AsyncReadWrite>>, pod: TcpStream) -> io::Result<()> {
    let (mut pod_read, mut pod_write) = pod.into_split();
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let to_pod = async {
        let copied = tokio::io::copy(&mut client_read, &mut pod_write).await;
        let _ = pod_write.shutdown().await;
        copied
    };
    let to_client = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = pod_read.read(&mut buf).await?;
            if n == 0 {
                return client_write.shutdown().await;
            }
            client_write.write_all(&buf[..n]).await?;
        }
    };
    tokio::pin!(to_pod, to_client);
    tokio::select! {
        done = &mut to_client => done,
        sent = &mut to_pod => {
            // A client that cannot be read from any more may still be written to.
            if let Err(e) = sent {
                tracing::debug!(error = %e, "reading the client ended");
            }
            to_client.await
        }
    }
}

/// A connection to `localhost:port` in `netns` (the host's when `None`): IPv4 first, then
/// IPv6, as containerd tries them.
async fn connect(netns: Option<&Path>, port: u16) -> io::Result<TcpStream> {
    let Some(netns) = netns else {
        return match TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await {
            Ok(stream) => Ok(stream),
            Err(v4) => TcpStream::connect((Ipv6Addr::LOCALHOST, port))
                .await
                .map_err(|_| v4),
        };
    };
    let netns = netns.to_path_buf();
    let (answer, answered) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("portforward-netns".into())
        .spawn(move || {
            let _ = answer.send(connect_in(&netns, port));
        })?;
    let stream = answered
        .await
        .map_err(|_| io::Error::other("the connecting thread ended without an answer"))??;
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}

/// Runs on a thread of its own, which it leaves in the pod's namespace: the thread ends
/// right after.
fn connect_in(netns: &Path, port: u16) -> io::Result<StdTcpStream> {
    let file = std::fs::File::open(netns)?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| io::Error::other(format!("entering {}: {e}", netns.display())))?;
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match StdTcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(stream) => Ok(stream),
        Err(v4_error) => {
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            StdTcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| v4_error)
        }
    }
}
