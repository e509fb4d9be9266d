//! The HTTP side: `GET|POST /exec/<token>`, `/attach/<token>`, `/portforward/<token>`.
//!
//! A request takes its parked CRI request out of the cache (so a URL works once), picks a
//! transport from its `Upgrade` header and a sub-protocol the client offered, answers
//! `101 Switching Protocols`, and runs the session on the upgraded connection in a task of
//! its own. Anything else gets a plain-text error: 404 for an unknown, used or expired token,
//! 400 for a request that does not upgrade or offers no protocol we speak.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::idle::Idle;
use super::spdy;
use super::streams::{
    PortForwardStreams, RemoteCommandOptions, RemoteCommandProtocol, RemoteCommandStreams,
};
use super::websocket::{self, Negotiated};
use super::{attach, exec, portforward, Pending, Shared};

type Answer = Response<Full<Bytes>>;

/// The header SPDY clients name their protocol versions in, and we answer the chosen one.
const STREAM_PROTOCOL_VERSION: &str = "X-Stream-Protocol-Version";
/// Where a refused SPDY client learns what we accept.
const ACCEPTED_STREAM_PROTOCOL_VERSIONS: &str = "X-Accepted-Stream-Protocol-Versions";
/// SPDY's sub-protocols, in the kubelet's order.
const SPDY_REMOTE_COMMAND: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
const SPDY_PORT_FORWARD: [&str; 1] = ["portforward.k8s.io"];
/// The `Upgrade` header value of SPDY connections.
const SPDY_UPGRADE: &str = "SPDY/3.1";

/// Accepts connections until the task is aborted.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait a little instead of spinning.
                tracing::warn!(error = %e, "streaming server: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(request, shared).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "streaming connection ended with an error");
            }
        });
    }
}

fn text(status: StatusCode, message: impl Into<String>) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(message.into() + "\n")));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    answer
}

async fn route(request: Request<Incoming>, shared: Arc<Shared>) -> Answer {
    let path = request.uri().path().trim_start_matches('/');
    let Some((route, token)) = path.split_once('/') else {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    };
    if !matches!(route, "exec" | "attach" | "portforward") || token.contains('/') {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    }
    if request.method() != Method::GET && request.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST");
    }
    let pending = match shared.requests.consume(token) {
        Some(pending) if pending.route() == route => pending,
        _ => return text(StatusCode::NOT_FOUND, "unknown, used or expired token"),
    };
    let (target, idle) = match Target::of(pending, &shared).await {
        Ok(target) => target,
        Err(answer) => return answer,
    };
    let upgrade = header_values(&request, header::UPGRADE.as_str());
    if upgrade
        .iter()
        .any(|u| u.eq_ignore_ascii_case(websocket::UPGRADE))
    {
        websocket_upgrade(request, target, idle)
    } else if upgrade.iter().any(|u| u.eq_ignore_ascii_case(SPDY_UPGRADE)) {
        spdy_upgrade(request, target, idle)
    } else {
        text(
            StatusCode::BAD_REQUEST,
            "streaming needs a connection upgrade: Upgrade: websocket or SPDY/3.1",
        )
    }
}

/// Every value of a header, comma-separated lists split.
fn header_values(request: &Request<Incoming>, name: &str) -> Vec<String> {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// How the session's streams are made from the upgraded connection.
#[derive(Debug, Clone)]
enum Transport {
    WebSocket {
        negotiated: Negotiated,
        /// The ports of a port forward, from the query.
        ports: Vec<u16>,
    },
    Spdy {
        /// The negotiated X-Stream-Protocol-Version.
        version: &'static str,
    },
}

impl Transport {
    /// The streams of an exec or attach; an error when the client never opened them all
    /// (possible with SPDY, where the client opens each stream).
    async fn remote_command<IO>(
        self,
        io: IO,
        options: RemoteCommandOptions,
    ) -> Result<RemoteCommandStreams, String>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        match self {
            Transport::WebSocket { negotiated, .. } => {
                Ok(websocket::remote_command(io, negotiated, options).await)
            }
            Transport::Spdy { version } => {
                let protocol = RemoteCommandProtocol::from_name(version)
                    .ok_or_else(|| format!("unknown stream protocol {version}"))?;
                spdy::remote_command(io, protocol, options)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    async fn port_forward<IO>(self, io: IO) -> PortForwardStreams
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        match self {
            Transport::WebSocket { negotiated, ports } => {
                websocket::port_forward(io, negotiated, &ports).await
            }
            Transport::Spdy { .. } => spdy::port_forward(io),
        }
    }
}

fn websocket_upgrade(
    mut request: Request<Incoming>,
    target: Target,
    idle: Option<Duration>,
) -> Answer {
    let headers = request.headers();
    let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = key.filter(|_| version_ok) else {
        return text(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
        );
    };
    let offered = header_values(&request, header::SEC_WEBSOCKET_PROTOCOL.as_str());
    let offered_names = offered.iter().map(String::as_str);
    let (negotiated, supported) = match &target {
        Target::PortForward(..) => (
            websocket::negotiate_port_forward(offered_names),
            websocket::port_forward_names(),
        ),
        _ => (
            websocket::negotiate_remote_command(offered_names),
            websocket::remote_command_names(),
        ),
    };
    let Some(negotiated) = negotiated else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("requested protocol(s) are not supported: {offered:?}; supports {supported:?}"),
        );
    };
    let ports = match &target {
        Target::PortForward(..) => match query_ports(request.uri().query().unwrap_or("")) {
            Ok(ports) => ports,
            Err(message) => return text(StatusCode::BAD_REQUEST, message),
        },
        _ => Vec::new(),
    };
    start_session(
        &mut request,
        target,
        Transport::WebSocket { negotiated, ports },
        idle,
    );
    let mut answer = switching(websocket::UPGRADE);
    let headers = answer.headers_mut();
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if !negotiated.name.is_empty() {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(negotiated.name),
        );
    }
    answer
}

/// Runs the session once `request`'s connection is upgraded, which happens after the 101
/// answer has gone out; with `idle`, a connection silent that long is closed.
fn start_session(
    request: &mut Request<Incoming>,
    target: Target,
    transport: Transport,
    idle: Option<Duration>,
) {
    let upgrading = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let io = match upgrading.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => return tracing::debug!(error = %e, "the upgrade did not complete"),
        };
        let Some(timeout) = idle else {
            return target.run(transport, io).await;
        };
        let idle = Idle::new();
        tokio::select! {
            () = target.run(transport, idle.watch(io)) => {}
            // Dropping the session ends it as a client going away would.
            () = idle.expired_after(timeout) => {}
        }
    });
}

/// `101 Switching Protocols` to `protocol`.
fn switching(protocol: &'static str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::new()));
    *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = answer.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(protocol));
    answer
}

/// SPDY/3.1: the version is negotiated as the kubelet does (the client's first offer that the
/// server supports), then the session runs on the upgraded connection.
fn spdy_upgrade(mut request: Request<Incoming>, target: Target, idle: Option<Duration>) -> Answer {
    let supported: &[&'static str] = match target {
        Target::PortForward(..) => &SPDY_PORT_FORWARD,
        _ => &SPDY_REMOTE_COMMAND,
    };
    let offered = header_values(&request, STREAM_PROTOCOL_VERSION);
    if offered.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            format!("unable to upgrade: {STREAM_PROTOCOL_VERSION} is required"),
        );
    }
    let chosen = offered
        .iter()
        .find_map(|wanted| supported.iter().find(|s| *s == wanted).copied());
    let Some(chosen) = chosen else {
        let mut answer = text(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {supported:?}"
            ),
        );
        for version in supported {
            answer.headers_mut().append(
                ACCEPTED_STREAM_PROTOCOL_VERSIONS,
                HeaderValue::from_static(version),
            );
        }
        return answer;
    };
    start_session(
        &mut request,
        target,
        Transport::Spdy { version: chosen },
        idle,
    );
    let mut answer = switching(spdy::UPGRADE);
    answer
        .headers_mut()
        .insert(STREAM_PROTOCOL_VERSION, HeaderValue::from_static(chosen));
    answer
}

/// The ports of a WebSocket port forward: `?port=80&port=8080` (or `port=80,8080`).
fn query_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if name != "port" {
            continue;
        }
        if value.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for port in value.split(',') {
            match port.trim().parse::<u16>() {
                Ok(0) => return Err(format!("port {port:?} must be > 0")),
                Ok(port) => ports.push(port),
                Err(e) => return Err(format!("unable to parse {port:?} as a port: {e}")),
            }
        }
    }
    Ok(ports)
}

/// A session ready to run once the connection is upgraded: the request and what it needs
/// from the daemon, looked up before answering so that failures are still HTTP errors.
enum Target {
    Exec(
        Arc<crate::daemon::Daemon>,
        peapod_cri_proto::v1::ExecRequest,
    ),
    Attach(
        Arc<crate::daemon::Daemon>,
        peapod_cri_proto::v1::AttachRequest,
    ),
    /// The pod's id and its network namespace (`None`: the host's).
    PortForward(String, Option<std::path::PathBuf>),
}

impl Target {
    /// The session's target, and the idle timeout it runs under.
    async fn of(pending: Pending, shared: &Shared) -> Result<(Target, Option<Duration>), Answer> {
        let Some(daemon) = shared.daemon.upgrade() else {
            return Err(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "peapodd is shutting down",
            ));
        };
        let idle = daemon.config.stream_idle_timeout();
        let target = match pending {
            Pending::Exec(request) => Target::Exec(daemon, request),
            Pending::Attach(request) => Target::Attach(daemon, request),
            Pending::PortForward(request) => {
                match daemon.pods.load(&request.pod_sandbox_id).await {
                    Ok(pod) => Target::PortForward(pod.id, pod.sandbox.netns),
                    Err(e) => return Err(text(StatusCode::NOT_FOUND, e.to_string())),
                }
            }
        };
        Ok((target, idle))
    }

    async fn run<IO>(self, transport: Transport, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        match self {
            Target::Exec(daemon, request) => {
                let options = RemoteCommandOptions::from(&request);
                match transport.remote_command(io, options).await {
                    Ok(streams) => exec::run(&daemon, request, streams).await,
                    Err(e) => tracing::warn!(error = %e, "exec: the client's streams never came"),
                }
            }
            Target::Attach(daemon, request) => {
                let options = RemoteCommandOptions::from(&request);
                match transport.remote_command(io, options).await {
                    Ok(streams) => attach::run(&daemon, request, streams).await,
                    Err(e) => tracing::warn!(error = %e, "attach: the client's streams never came"),
                }
            }
            Target::PortForward(pod_id, netns) => {
                let streams = transport.port_forward(io).await;
                portforward::serve(pod_id, netns, streams).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(query_ports("port=80&port=8080"), Ok(vec![80, 8080]));
        assert_eq!(query_ports("port=80,81&x=1"), Ok(vec![80, 81]));
        assert_eq!(query_ports(""), Ok(vec![]));
        assert!(query_ports("port=").is_err());
        assert!(query_ports("port=0").is_err());
        assert!(query_ports("port=70000").is_err());
    }
}
