//! The streaming server: where Exec, Attach and PortForward really happen.
//!
//! Those three CRI RPCs do not stream over gRPC. Each validates its request, parks it under
//! a single-use token ([`tokens`]) and answers with a URL on this server
//! (`http://127.0.0.1:<port>/exec/<token>`). The client (the kubelet, crictl, kubectl through
//! the API server) then connects to that URL and upgrades the connection to WebSocket or
//! SPDY/3.1 ([`server`]); the transport turns the connection into plain byte streams
//! ([`streams`]), and the handlers connect those to a shim session ([`exec`], [`attach`]) or to
//! TCP connections inside the pod's network namespace ([`portforward`]). This is the design of
//! the kubelet's `pkg/cri/streaming`, which containerd and CRI-O embed.
//!
//! - [`tokens`]: the request cache (one minute, one use, at most 1000 waiting)
//! - [`server`]: HTTP, routes, protocol negotiation, the upgrade
//! - [`websocket`]: the `*.channel.k8s.io` WebSocket transport
//! - [`spdy`]: the SPDY/3.1 transport (what the kubelet and crictl speak by default)
//! - [`remotecommand`]: what exec and attach share: relaying a shim session, terminal sizes,
//!   the outcome on the error stream
//! - [`exec`], [`attach`], [`portforward`]: the handlers

mod attach;
mod exec;
mod idle;
mod portforward;
pub mod remotecommand;
mod server;
pub mod spdy;
pub mod streams;
pub mod tokens;
pub mod websocket;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Weak};

use peapod_cri_proto::v1;
use tonic::Status;

use crate::cri::lifecycle::{ctr_error, pod_error};
use crate::daemon::Daemon;
use crate::pods::PodState;
use tokens::{RequestCache, TokenError};

/// Where the server listens unless configured otherwise: loopback, a port the kernel picks.
/// containerd's default `stream_server_address` is the same; the kubelet on this node is the
/// client, so nothing else needs to reach it.
pub const DEFAULT_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);

#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("binding the streaming server to {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A request waiting for its client to connect.
#[derive(Debug, Clone)]
enum Pending {
    Exec(v1::ExecRequest),
    Attach(v1::AttachRequest),
    PortForward(v1::PortForwardRequest),
}

impl Pending {
    /// The first segment of its URL's path.
    fn route(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

/// What the RPC side and the HTTP side share.
struct Shared {
    requests: RequestCache<Pending>,
    /// The daemon owns the server, not the other way round.
    daemon: Weak<Daemon>,
}

/// The running streaming server. Dropping it stops accepting connections; sessions already
/// running go on until they end.
pub struct Streaming {
    shared: Arc<Shared>,
    address: SocketAddr,
    serving: tokio::task::JoinHandle<()>,
}

impl Streaming {
    /// Binds `address` (see [`DEFAULT_ADDRESS`]) and serves on it. Must be called within a
    /// tokio runtime.
    pub fn start(address: SocketAddr, daemon: Weak<Daemon>) -> Result<Streaming, StreamingError> {
        let bind_error = |source| StreamingError::Bind { address, source };
        let listener = std::net::TcpListener::bind(address).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        let listener = tokio::net::TcpListener::from_std(listener).map_err(bind_error)?;
        let shared = Arc::new(Shared {
            requests: RequestCache::new(),
            daemon,
        });
        let serving = tokio::spawn(server::serve(listener, shared.clone()));
        tracing::info!(address = %bound, "streaming server listening");
        Ok(Streaming {
            shared,
            address: bound,
            serving,
        })
    }

    /// The address the server is bound to (with the port the kernel picked).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The URL of a parked request. A server bound to every address advertises loopback,
    /// where the node's kubelet reaches it.
    fn url(&self, route: &str, token: &str) -> String {
        let mut address = self.address;
        if address.ip().is_unspecified() {
            address.set_ip(match address.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        format!("http://{address}/{route}/{token}")
    }

    fn daemon(&self) -> Result<Arc<Daemon>, Status> {
        self.shared
            .daemon
            .upgrade()
            .ok_or_else(|| Status::unavailable("peapodd is shutting down"))
    }

    fn park(&self, request: Pending) -> Result<String, Status> {
        let route = request.route();
        let token = self.shared.requests.insert(request).map_err(|e| match e {
            TokenError::Full => Status::resource_exhausted(e.to_string()),
            TokenError::Random(_) => Status::internal(e.to_string()),
        })?;
        Ok(self.url(route, &token))
    }

    /// The Exec RPC: checks the request and the container, and returns the URL to connect to.
    pub async fn exec(&self, request: v1::ExecRequest) -> Result<v1::ExecResponse, Status> {
        check_streams(
            &request.container_id,
            request.stdin,
            request.stdout,
            request.stderr,
            request.tty,
        )?;
        if request.cmd.is_empty() {
            return Err(crate::cri::errors::missing("cmd"));
        }
        let daemon = self.daemon()?;
        running_container(&daemon, &request.container_id).await?;
        let url = self.park(Pending::Exec(request))?;
        Ok(v1::ExecResponse { url })
    }

    /// The Attach RPC: the same checks as exec.
    pub async fn attach(&self, request: v1::AttachRequest) -> Result<v1::AttachResponse, Status> {
        check_streams(
            &request.container_id,
            request.stdin,
            request.stdout,
            request.stderr,
            request.tty,
        )?;
        let daemon = self.daemon()?;
        running_container(&daemon, &request.container_id).await?;
        let url = self.park(Pending::Attach(request))?;
        Ok(v1::AttachResponse { url })
    }

    /// The PortForward RPC: the pod must exist and be ready. The ports the client wants come
    /// with its connection (`?port=` for WebSocket, stream headers for SPDY), as upstream.
    pub async fn port_forward(
        &self,
        request: v1::PortForwardRequest,
    ) -> Result<v1::PortForwardResponse, Status> {
        if request.pod_sandbox_id.is_empty() {
            return Err(Status::invalid_argument("missing required pod_sandbox_id"));
        }
        let pod = self
            .daemon()?
            .pods
            .load(&request.pod_sandbox_id)
            .await
            .map_err(pod_error)?;
        if pod.state != PodState::Ready {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        let url = self.park(Pending::PortForward(request))?;
        Ok(v1::PortForwardResponse { url })
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

/// The kubelet's rules for exec and attach requests, with its messages.
/// The streams an exec or attach asked for, whichever of the two it is.
macro_rules! options_of {
    ($request:ty) => {
        impl From<&$request> for streams::RemoteCommandOptions {
            fn from(request: &$request) -> Self {
                streams::RemoteCommandOptions {
                    stdin: request.stdin,
                    stdout: request.stdout,
                    stderr: request.stderr,
                    tty: request.tty,
                }
            }
        }
    };
}
options_of!(v1::ExecRequest);
options_of!(v1::AttachRequest);

fn check_streams(
    container_id: &str,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> Result<(), Status> {
    if container_id.is_empty() {
        return Err(Status::invalid_argument("missing required container_id"));
    }
    // A terminal merges stderr into stdout: there is no separate stream to give.
    if tty && stderr {
        return Err(Status::invalid_argument(
            "tty and stderr cannot both be true",
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(Status::invalid_argument(
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    Ok(())
}

/// NOT_FOUND for an unknown container, FAILED_PRECONDITION for one that is not running.
async fn running_container(daemon: &Daemon, id: &str) -> Result<(), Status> {
    daemon.containers.load(id).await.map_err(ctr_error)?;
    let running = match daemon.containers.shim(id).state().await {
        Ok(state) => state.exit.is_none() && state.status == Some(peapod_runtime::Status::Running),
        // No shim: the container is long gone.
        Err(_) => false,
    };
    if running {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!(
            "container {id} is not running"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn the_kubelets_stream_rules() {
        let code = |r: Result<(), Status>| r.err().map(|s| (s.code(), s.message().to_string()));
        assert_eq!(code(check_streams("c", false, true, false, false)), None);
        assert_eq!(code(check_streams("c", true, false, false, true)), None);
        assert_eq!(
            code(check_streams("c", false, true, true, true)),
            Some((
                Code::InvalidArgument,
                "tty and stderr cannot both be true".into()
            ))
        );
        assert_eq!(
            code(check_streams("c", false, false, false, false)),
            Some((
                Code::InvalidArgument,
                "one of stdin, stdout, or stderr must be set".into()
            ))
        );
        assert_eq!(
            code(check_streams("", true, true, false, false)).map(|c| c.0),
            Some(Code::InvalidArgument)
        );
    }
}
