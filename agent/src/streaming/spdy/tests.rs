//! Session tests against a SPDY/3.1 client written here from the specification (sharing only
//! the frame and header codecs), and against Node's `spdy-transport`, an independent
//! implementation.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::io::{
    AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf,
};

use super::compression::{HeaderCompressor, HeaderDecompressor, Headers};
use super::frame::{
    Frame, FrameHead, Setting, FLAG_FIN, HEAD_LEN, RST_REFUSED_STREAM,
    SETTINGS_INITIAL_WINDOW_SIZE, VERSION,
};
use super::portforward::port_forward_with_timeout;
use super::remotecommand::gather;
use super::session::{INITIAL_WINDOW, LINGER};
use super::{port_forward, remote_command, SpdyError};
use crate::streaming::streams::{
    RemoteCommandOptions, RemoteCommandProtocol, RemoteCommandStreams, TerminalSize,
};

/// Bytes that differ from position to position, so that lost or reordered bytes show.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + usize::from(seed)) % 251) as u8)
        .collect()
}

fn stream_type(kind: &str) -> Headers {
    Headers::default().with("streamtype", kind)
}

/// The sending half of the test client.
struct ClientTx<W> {
    writer: W,
    compressor: HeaderCompressor,
    next_id: u32,
}

impl<W: AsyncWrite + Unpin> ClientTx<W> {
    async fn send(&mut self, frame: Frame) {
        let mut wire = Vec::new();
        frame.encode(&mut self.compressor, &mut wire).unwrap();
        self.writer.write_all(&wire).await.unwrap();
    }

    async fn open(&mut self, headers: Headers) -> u32 {
        let stream_id = self.next_id;
        self.next_id += 2;
        self.send(Frame::SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers,
        })
        .await;
        stream_id
    }

    async fn data(&mut self, stream_id: u32, data: &[u8], fin: bool) {
        self.send(Frame::Data {
            stream_id,
            fin,
            data: data.to_vec(),
        })
        .await;
    }
}

/// What the test client has received, by kind.
#[derive(Default)]
struct Received {
    replies: HashSet<u32>,
    data: HashMap<u32, Vec<u8>>,
    fins: HashSet<u32>,
    resets: HashMap<u32, u32>,
    pings: Vec<u32>,
    goaway: Option<u32>,
    window_updates: HashMap<u32, u64>,
    eof: bool,
}

/// The receiving half of the test client.
struct ClientRx<R> {
    reader: R,
    decompressor: HeaderDecompressor,
    got: Received,
}

impl<R: AsyncRead + Unpin> ClientRx<R> {
    /// Reads one frame and records it; `None` at the end of the connection.
    async fn next(&mut self) -> Option<Frame> {
        let mut head = [0u8; HEAD_LEN];
        if self.reader.read_exact(&mut head).await.is_err() {
            self.got.eof = true;
            return None;
        }
        let head = FrameHead::parse(head);
        let mut payload = vec![0u8; head.length()];
        self.reader.read_exact(&mut payload).await.unwrap();
        let frame = match head {
            FrameHead::Data {
                stream_id, flags, ..
            } => Frame::Data {
                stream_id,
                fin: flags & FLAG_FIN != 0,
                data: payload,
            },
            FrameHead::Control {
                version,
                kind,
                flags,
                ..
            } => {
                assert_eq!(version, VERSION);
                Frame::decode_control(kind, flags, &payload, &mut self.decompressor)
                    .unwrap()
                    .expect("the server sends only known frame types")
            }
        };
        match &frame {
            Frame::SynReply { stream_id, .. } => {
                assert!(self.got.replies.insert(*stream_id), "second SYN_REPLY");
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                assert!(
                    self.got.replies.contains(stream_id),
                    "data before SYN_REPLY"
                );
                assert!(!self.got.fins.contains(stream_id), "data after FIN");
                self.got
                    .data
                    .entry(*stream_id)
                    .or_default()
                    .extend_from_slice(data);
                if *fin {
                    self.got.fins.insert(*stream_id);
                }
            }
            Frame::RstStream { stream_id, status } => {
                self.got.resets.insert(*stream_id, *status);
            }
            Frame::Ping { id } => self.got.pings.push(*id),
            Frame::GoAway { status, .. } => self.got.goaway = Some(*status),
            Frame::WindowUpdate { stream_id, delta } => {
                *self.got.window_updates.entry(*stream_id).or_default() += u64::from(*delta);
            }
            other => panic!("unexpected frame from the server: {other:?}"),
        }
        Some(frame)
    }

    /// Reads frames until `done` holds; false if the connection ended first.
    async fn until(&mut self, mut done: impl FnMut(&Received) -> bool) -> bool {
        while !done(&self.got) {
            if self.next().await.is_none() {
                return done(&self.got);
            }
        }
        true
    }
}

struct Client<IO> {
    tx: ClientTx<WriteHalf<IO>>,
    rx: ClientRx<ReadHalf<IO>>,
}

impl<IO: AsyncRead + AsyncWrite> Client<IO> {
    fn new(io: IO) -> Self {
        let (reader, writer) = tokio::io::split(io);
        Client {
            tx: ClientTx {
                writer,
                compressor: HeaderCompressor::new().unwrap(),
                next_id: 1,
            },
            rx: ClientRx {
                reader,
                decompressor: HeaderDecompressor::new(),
                got: Received::default(),
            },
        }
    }
}

impl<IO: AsyncRead + AsyncWrite> Client<IO> {
    /// Reads up to the server's GOAWAY, hangs up as a client does then, and reads on to the
    /// end of the connection: the server, having said goodbye first, waits for the client
    /// to close before it closes too.
    async fn hang_up_after_goaway(&mut self) {
        assert!(self.rx.until(|got| got.goaway.is_some()).await);
        assert!(!self.rx.got.eof, "the server closed before its GOAWAY");
        self.tx.writer.shutdown().await.unwrap();
        assert!(self.rx.until(|got| got.eof).await);
    }
}

fn pipe() -> (DuplexStream, Client<DuplexStream>) {
    let (server, client) = tokio::io::duplex(64 * 1024);
    (server, Client::new(client))
}

/// The server's end of a connection, reporting when the session lets go of it: the session
/// task owns the connection, so this is the task finishing.
struct Tracked {
    io: DuplexStream,
    dropped: Option<tokio::sync::oneshot::Sender<()>>,
}

fn tracked_pipe() -> (
    Tracked,
    Client<DuplexStream>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (io, client) = pipe();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let server = Tracked {
        io,
        dropped: Some(tx),
    };
    (server, client, rx)
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(dropped) = self.dropped.take() {
            let _ = dropped.send(());
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

const EXEC: RemoteCommandOptions = RemoteCommandOptions {
    stdin: true,
    stdout: true,
    stderr: true,
    tty: false,
};

/// Opens the streams of `kinds` in order and waits for the server to have them all.
async fn start_remote_command(
    protocol: RemoteCommandProtocol,
    options: RemoteCommandOptions,
    kinds: &[&str],
) -> (RemoteCommandStreams, Client<DuplexStream>, Vec<u32>) {
    let (server_io, mut client) = pipe();
    let server = tokio::spawn(remote_command(server_io, protocol, options));
    let mut ids = Vec::new();
    for kind in kinds {
        ids.push(client.tx.open(stream_type(kind)).await);
    }
    let streams = server.await.unwrap().unwrap();
    assert!(
        client
            .rx
            .until(|got| ids.iter().all(|id| got.replies.contains(id)))
            .await
    );
    (streams, client, ids)
}

#[tokio::test]
async fn remote_command_gathers_streams_and_carries_data() {
    let (streams, mut client, ids) = start_remote_command(
        RemoteCommandProtocol::V4,
        EXEC,
        &["stdout", "error", "stderr", "stdin"],
    )
    .await;
    let [stdout_id, error_id, stderr_id, stdin_id] = ids[..] else {
        unreachable!()
    };
    assert_eq!(streams.protocol, RemoteCommandProtocol::V4);
    assert!(streams.resize.is_none());
    let mut stdout = streams.stdout.unwrap();
    let mut stderr = streams.stderr.unwrap();
    let mut stdin = streams.stdin.unwrap();
    let mut error = streams.error;

    client.tx.data(stdin_id, b"input ", false).await;
    client.tx.data(stdin_id, b"line\n", true).await;
    let mut input = String::new();
    stdin.read_to_string(&mut input).await.unwrap();
    assert_eq!(input, "input line\n");

    stdout.write_all(b"to stdout").await.unwrap();
    stdout.shutdown().await.unwrap();
    stderr.write_all(b"to stderr").await.unwrap();
    stderr.shutdown().await.unwrap();
    error.write_all(b"{\"status\":\"Success\"}").await.unwrap();
    error.shutdown().await.unwrap();
    assert!(
        client
            .rx
            .until(|got| [stdout_id, stderr_id, error_id]
                .iter()
                .all(|id| got.fins.contains(id)))
            .await
    );
    assert_eq!(client.rx.got.data[&stdout_id], b"to stdout");
    assert_eq!(client.rx.got.data[&stderr_id], b"to stderr");
    assert_eq!(client.rx.got.data[&error_id], b"{\"status\":\"Success\"}");

    // Once the handler lets go of everything, the server says goodbye and, once the client
    // has hung up, closes the connection.
    drop((stdout, stderr, stdin, error));
    client.hang_up_after_goaway().await;
    assert_eq!(client.rx.got.goaway, Some(0));
}

/// A client may drop frames it has received but not yet processed once it sees the connection
/// end, so after our GOAWAY the client is the one to hang up; one that never does is let go
/// of after `LINGER`. (The clock is paused: the waits below take no real time.)
#[tokio::test(start_paused = true)]
async fn after_our_goaway_the_client_hangs_up_first() {
    let (streams, mut client, _) = start_remote_command(
        RemoteCommandProtocol::V4,
        EXEC,
        &["stdout", "error", "stderr", "stdin"],
    )
    .await;
    drop(streams);
    assert!(client.rx.until(|got| got.goaway.is_some()).await);
    let early = tokio::time::timeout(LINGER - Duration::from_millis(1), client.rx.next()).await;
    assert!(
        early.is_err(),
        "the server closed before the client hung up"
    );
    assert!(client.rx.until(|got| got.eof).await);
}

#[tokio::test]
async fn tty_sessions_have_a_resize_stream_from_v3_and_no_stderr() {
    let tty = RemoteCommandOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: true,
    };
    let (streams, mut client, ids) = start_remote_command(
        RemoteCommandProtocol::V3,
        tty,
        &["error", "stdin", "stdout", "resize"],
    )
    .await;
    assert!(streams.stderr.is_none());
    let mut sizes = streams.resize.unwrap();
    let resize_id = ids[3];
    // Objects split across frames and glued together, as a byte stream may deliver them.
    client
        .tx
        .data(resize_id, b"{\"Width\":80,\"Height\":24}{\"Wid", false)
        .await;
    client
        .tx
        .data(resize_id, b"th\":132,\"Height\":50}\n", true)
        .await;
    assert_eq!(
        sizes.recv().await,
        Some(TerminalSize {
            width: 80,
            height: 24
        })
    );
    assert_eq!(
        sizes.recv().await,
        Some(TerminalSize {
            width: 132,
            height: 50
        })
    );
    assert_eq!(sizes.recv().await, None, "the resize stream ended");

    // Before V3 there is no resize stream to wait for.
    let (streams, _client, _) = start_remote_command(
        RemoteCommandProtocol::V2,
        tty,
        &["error", "stdin", "stdout"],
    )
    .await;
    assert!(streams.resize.is_none() && streams.stderr.is_none());
}

#[tokio::test]
async fn missing_streams_time_out() {
    let (server_io, mut client) = pipe();
    let options = RemoteCommandOptions {
        stdout: true,
        ..Default::default()
    };
    let server = tokio::spawn(gather(
        server_io,
        RemoteCommandProtocol::V4,
        options,
        Duration::from_millis(100),
    ));
    client.tx.open(stream_type("error")).await;
    // A stream type that was not asked for does not count.
    client.tx.open(stream_type("stderr")).await;
    match server.await.unwrap() {
        Err(SpdyError::StreamTimeout { missing, .. }) => assert_eq!(missing, "stdout"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("the session started without its stdout stream"),
    }
    // The failed session closes its connection.
    client.hang_up_after_goaway().await;
}

#[tokio::test]
async fn a_connection_closed_before_the_streams_is_an_error() {
    let (server_io, mut client) = pipe();
    let server = tokio::spawn(remote_command(server_io, RemoteCommandProtocol::V4, EXEC));
    client.tx.open(stream_type("error")).await;
    drop(client);
    match server.await.unwrap() {
        Err(SpdyError::ConnectionClosed { missing }) => {
            assert_eq!(missing, "stdin, stdout, stderr")
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("the session started without its streams"),
    }
}

/// A client like spdystream: it ignores windows, so only TCP-style backpressure and the
/// bounded buffers keep memory in check, and it never sends WINDOW_UPDATE, so the server
/// must not wait for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transfers_both_ways_without_client_flow_control() {
    let (streams, client, ids) = start_remote_command(
        RemoteCommandProtocol::V4,
        RemoteCommandOptions {
            stdin: true,
            stdout: true,
            ..Default::default()
        },
        &["error", "stdin", "stdout"],
    )
    .await;
    let (stdin_id, stdout_id) = (ids[1], ids[2]);
    let size = 16 * INITIAL_WINDOW as usize + 123;
    let outbound = pattern(size, 1);
    let inbound = pattern(size, 2);

    let mut stdin = streams.stdin.unwrap();
    let reading = tokio::spawn(async move {
        let mut got = Vec::new();
        stdin.read_to_end(&mut got).await.unwrap();
        got
    });
    let mut stdout = streams.stdout.unwrap();
    let to_send = outbound.clone();
    let writing = tokio::spawn(async move {
        stdout.write_all(&to_send).await.unwrap();
        stdout.shutdown().await.unwrap();
        stdout
    });

    let Client { mut tx, mut rx } = client;
    let sending = tokio::spawn(async move {
        for chunk in inbound.chunks(40_000) {
            tx.data(stdin_id, chunk, false).await;
        }
        tx.data(stdin_id, &[], true).await;
        (tx, inbound)
    });
    assert!(rx.until(|got| got.fins.contains(&stdout_id)).await);
    assert!(rx.got.data[&stdout_id] == outbound);
    let (_tx, inbound) = sending.await.unwrap();
    assert!(reading.await.unwrap() == inbound);
    let _stdout = writing.await.unwrap();
    // The server credits what the handler consumed, stream and session alike.
    assert!(rx.got.window_updates.get(&stdin_id).copied().unwrap_or(0) >= (size / 2) as u64);
    assert!(rx.got.window_updates.get(&0).copied().unwrap_or(0) >= (size / 2) as u64);
    drop(streams.error);
}

/// A client that does SPDY/3.1 flow control with a small window: the server must never send
/// beyond it, and must reopen the client's send window as the handler reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_is_honoured_once_the_client_uses_it() {
    const CLIENT_WINDOW: u32 = 8 * 1024;
    let (server_io, mut client) = pipe();
    let server = tokio::spawn(remote_command(
        server_io,
        RemoteCommandProtocol::V4,
        RemoteCommandOptions {
            stdin: true,
            stdout: true,
            ..Default::default()
        },
    ));
    client
        .tx
        .send(Frame::Settings {
            flags: 0,
            entries: vec![Setting {
                flags: 0,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value: CLIENT_WINDOW,
            }],
        })
        .await;
    let _error_id = client.tx.open(stream_type("error")).await;
    let stdin_id = client.tx.open(stream_type("stdin")).await;
    let stdout_id = client.tx.open(stream_type("stdout")).await;
    let streams = server.await.unwrap().unwrap();

    // Server to client: count what is in flight and credit it only after checking it.
    let size = 5 * INITIAL_WINDOW as usize;
    let outbound = pattern(size, 3);
    let mut stdout = streams.stdout.unwrap();
    let to_send = outbound.clone();
    let writing = tokio::spawn(async move {
        stdout.write_all(&to_send).await.unwrap();
        stdout.shutdown().await.unwrap();
        stdout
    });
    let (mut received, mut credited) = (0usize, 0usize);
    while !client.rx.got.fins.contains(&stdout_id) {
        let Some(Frame::Data {
            stream_id, data, ..
        }) = client.rx.next().await
        else {
            continue;
        };
        if stream_id != stdout_id {
            continue; // the FIN on stdin: the server never writes there
        }
        received += data.len();
        // The server cannot have seen more credit than we sent.
        assert!(
            received <= CLIENT_WINDOW as usize + credited,
            "the server overran the stream window"
        );
        if !data.is_empty() {
            let delta = data.len() as u32;
            credited += data.len();
            for id in [0, stdout_id] {
                client
                    .tx
                    .send(Frame::WindowUpdate {
                        stream_id: id,
                        delta,
                    })
                    .await;
            }
        }
    }
    assert_eq!(received, size);
    assert!(client.rx.got.data[&stdout_id] == outbound);
    let _stdout = writing.await.unwrap();

    // Client to server: send only within the windows the server grants.
    let inbound = pattern(3 * INITIAL_WINDOW as usize, 4);
    let mut stdin = streams.stdin.unwrap();
    let reading = tokio::spawn(async move {
        let mut got = Vec::new();
        stdin.read_to_end(&mut got).await.unwrap();
        got
    });
    let mut sent = 0usize;
    while sent < inbound.len() {
        let credit = |id| client.rx.got.window_updates.get(&id).copied().unwrap_or(0) as usize;
        let window = (INITIAL_WINDOW as usize + credit(stdin_id))
            .min(INITIAL_WINDOW as usize + credit(0))
            - sent;
        if window == 0 {
            assert!(client.rx.next().await.is_some());
            continue;
        }
        let n = window.min(4096).min(inbound.len() - sent);
        client
            .tx
            .data(stdin_id, &inbound[sent..sent + n], false)
            .await;
        sent += n;
    }
    client.tx.data(stdin_id, &[], true).await;
    assert!(reading.await.unwrap() == inbound);
}

#[tokio::test]
async fn pings_are_answered() {
    let (server_io, mut client) = pipe();
    let _streams = port_forward(server_io);
    client.tx.send(Frame::Ping { id: 1 }).await;
    client.tx.send(Frame::Ping { id: 3 }).await;
    assert!(client.rx.until(|got| got.pings.len() == 2).await);
    assert_eq!(client.rx.got.pings, [1, 3]);
}

fn forward_headers(kind: &str, port: &str, request: Option<&str>) -> Headers {
    let headers = stream_type(kind).with("port", port);
    match request {
        Some(id) => headers.with("requestid", id),
        None => headers,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_pairs_streams_by_request_id() {
    let (server_io, mut client) = pipe();
    let mut forwards = port_forward(server_io);
    // Two connections, their streams interleaved and in either order.
    let data_a = client
        .tx
        .open(forward_headers("data", "8080", Some("0")))
        .await;
    let error_b = client
        .tx
        .open(forward_headers("error", "9090", Some("1")))
        .await;
    let data_b = client
        .tx
        .open(forward_headers("data", "9090", Some("1")))
        .await;
    let error_a = client
        .tx
        .open(forward_headers("error", "8080", Some("0")))
        .await;
    // Without a request id the kubelet pairs error stream N with data stream N + 2.
    let error_c = client.tx.open(forward_headers("error", "7070", None)).await;
    let data_c = client.tx.open(forward_headers("data", "7070", None)).await;

    let mut b = forwards.recv().await.unwrap();
    let mut a = forwards.recv().await.unwrap();
    let mut c = forwards.recv().await.unwrap();
    assert_eq!((a.port, b.port, c.port), (8080, 9090, 7070));

    client.tx.data(data_a, b"for a", true).await;
    client.tx.data(data_b, b"for b", false).await;
    client.tx.data(data_c, b"for c", false).await;
    let mut got = String::new();
    a.data.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "for a");
    let mut buf = [0u8; 5];
    b.data.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"for b");
    c.data.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"for c");

    a.data.write_all(b"from a").await.unwrap();
    a.data.shutdown().await.unwrap();
    b.error.write_all(b"connection refused").await.unwrap();
    b.error.shutdown().await.unwrap();
    assert!(
        client
            .rx
            .until(|got| got.fins.contains(&data_a) && got.fins.contains(&error_b))
            .await
    );
    assert_eq!(client.rx.got.data[&data_a], b"from a");
    assert_eq!(client.rx.got.data[&error_b], b"connection refused");
    assert!(!client.rx.got.fins.contains(&error_a) && !client.rx.got.fins.contains(&error_c));
}

#[tokio::test]
async fn port_forward_refuses_invalid_streams_and_reports_incomplete_pairs() {
    let (server_io, mut client) = pipe();
    let mut forwards = port_forward_with_timeout(server_io, Duration::from_millis(100));
    let no_port = client.tx.open(stream_type("data")).await;
    let bad_port = client
        .tx
        .open(forward_headers("data", "0", Some("1")))
        .await;
    let bad_type = client
        .tx
        .open(forward_headers("stdin", "80", Some("1")))
        .await;
    let lonely_error = client
        .tx
        .open(forward_headers("error", "80", Some("2")))
        .await;
    let duplicate = client
        .tx
        .open(forward_headers("error", "80", Some("2")))
        .await;
    assert!(
        client
            .rx
            .until(|got| [no_port, bad_port, bad_type]
                .iter()
                .all(|id| got.resets.get(id) == Some(&RST_REFUSED_STREAM)))
            .await
    );
    // The incomplete pair hears about the duplicate, then times out and is closed.
    assert!(
        client
            .rx
            .until(|got| got.fins.contains(&lonely_error))
            .await
    );
    let report = String::from_utf8(client.rx.got.data[&lonely_error].clone()).unwrap();
    assert!(report.contains("error stream already assigned"), "{report}");
    assert!(report.contains("timed out waiting for streams"), "{report}");
    assert!(client.rx.until(|got| got.fins.contains(&duplicate)).await);

    // A complete pair still works afterwards.
    client
        .tx
        .open(forward_headers("error", "81", Some("3")))
        .await;
    client
        .tx
        .open(forward_headers("data", "81", Some("3")))
        .await;
    assert_eq!(forwards.recv().await.unwrap().port, 81);
}

#[tokio::test]
async fn goaway_ends_the_session() {
    let (server_io, mut client, released) = tracked_pipe();
    let mut forwards = port_forward(server_io);
    let error = client
        .tx
        .open(forward_headers("error", "80", Some("0")))
        .await;
    let data = client
        .tx
        .open(forward_headers("data", "80", Some("0")))
        .await;
    let mut forward = forwards.recv().await.unwrap();
    // Like the Go client's Close: reset the streams, then GOAWAY.
    for stream_id in [error, data] {
        client
            .tx
            .send(Frame::RstStream {
                stream_id,
                status: 5,
            })
            .await;
    }
    client
        .tx
        .send(Frame::GoAway {
            last_good_stream_id: 0,
            status: 0,
        })
        .await;
    let mut buf = Vec::new();
    let read = forward.data.read_to_end(&mut buf).await;
    assert_eq!(
        read.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionReset
    );
    assert!(forward.data.write_all(b"late").await.is_err());
    // New streams are refused after GOAWAY.
    let late = client
        .tx
        .open(forward_headers("error", "80", Some("1")))
        .await;
    drop(forward);
    assert_eq!(forwards.recv().await.map(|f| f.port), None);
    assert!(client.rx.until(|got| got.eof).await);
    assert_eq!(client.rx.got.goaway, Some(0));
    assert!(!client.rx.got.replies.contains(&late));
    // When the client hangs up too, the session task finishes and frees the connection.
    drop(client);
    released.await.unwrap();
}

#[tokio::test]
async fn a_closed_connection_ends_the_streams() {
    let (server_io, mut client, released) = tracked_pipe();
    let mut forwards = port_forward(server_io);
    client
        .tx
        .open(forward_headers("error", "80", Some("0")))
        .await;
    let data = client
        .tx
        .open(forward_headers("data", "80", Some("0")))
        .await;
    let mut forward = forwards.recv().await.unwrap();
    client.tx.data(data, b"partial", false).await;
    drop(client);
    let mut buf = Vec::new();
    let read = forward.data.read_to_end(&mut buf).await;
    assert!(
        read.is_err(),
        "a lost connection is not a clean end of stream"
    );
    assert_eq!(buf, b"partial");
    assert!(forward.error.write_all(b"x").await.is_err());
    assert_eq!(forwards.recv().await.map(|f| f.port), None);
    // The handler still holds its streams, yet the session has let go of the connection.
    released.await.unwrap();
    drop(forward);
}

/// The idle timeout (server.rs) wraps the connection: at expiry the session lets go of it,
/// although the handler still holds its streams.
#[tokio::test]
async fn an_idle_timeout_ends_the_session_with_its_streams_still_held() {
    let (server_io, mut client, released) = tracked_pipe();
    let idle = crate::streaming::idle::Idle::new();
    let server = tokio::spawn(remote_command(
        idle.watch(server_io),
        RemoteCommandProtocol::V4,
        EXEC,
    ));
    for kind in ["stdout", "error", "stderr", "stdin"] {
        client.tx.open(stream_type(kind)).await;
    }
    let streams = server.await.unwrap().unwrap();
    idle.expired_after(std::time::Duration::from_millis(200))
        .await;
    released.await.unwrap();
    drop(streams);
}

/// Runs Node's `spdy-transport` (a complete SPDY/3.1 implementation with flow control) as
/// the client: it opens error, stdin and stdout streams over TCP, sends a payload larger
/// than a window on stdin and checks the one we send on stdout. Needs `node` and `npm`
/// (Debian: nodejs, npm) and the npm registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_spdy_transport_client_interoperates() {
    let dir = tempfile::tempdir().unwrap();
    let install = tokio::process::Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--silent",
            "spdy-transport@3.0.0",
        ])
        .current_dir(dir.path())
        .status()
        .await
        .expect("npm is needed for this test (Debian packages nodejs and npm)");
    assert!(install.success(), "npm install spdy-transport failed");
    let script = dir.path().join("client.js");
    std::fs::write(&script, NODE_CLIENT).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let node = tokio::process::Command::new("node")
        .arg(&script)
        .arg(port.to_string())
        .arg(NODE_PAYLOAD.to_string())
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node is needed for this test (Debian package nodejs)");
    let (socket, _) = listener.accept().await.unwrap();
    let streams = remote_command(
        socket,
        RemoteCommandProtocol::V4,
        RemoteCommandOptions {
            stdin: true,
            stdout: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let mut stdin = streams.stdin.unwrap();
    let mut input = Vec::new();
    stdin.read_to_end(&mut input).await.unwrap();
    assert!(input == pattern(NODE_PAYLOAD, 5), "stdin differs");
    let mut stdout = streams.stdout.unwrap();
    stdout.write_all(&pattern(NODE_PAYLOAD, 6)).await.unwrap();
    stdout.shutdown().await.unwrap();
    let mut error = streams.error;
    error.write_all(b"done").await.unwrap();
    error.shutdown().await.unwrap();

    let output = node.wait_with_output().await.unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "node client failed: {report}");
    assert_eq!(
        report.trim(),
        format!("ok stdout={NODE_PAYLOAD} error=done replies=3")
    );
}

const NODE_PAYLOAD: usize = 300 * 1024;

/// The Node client: the same byte pattern as `pattern`, generated independently.
const NODE_CLIENT: &str = r#"
const net = require('net');
const transport = require('spdy-transport');
const [port, size] = process.argv.slice(2).map(Number);
const pattern = (len, seed) => {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (i * 7 + seed) % 251;
  return b;
};
const fail = (why) => { console.log('FAIL ' + why); process.exit(1); };
setTimeout(() => fail('no result within 60 s'), 60000).unref();
const socket = net.connect(port, '127.0.0.1', () => {
  const conn = transport.connection.create(socket, { protocol: 'spdy', isServer: false });
  conn.on('error', (e) => fail('connection: ' + e));
  conn.start(3.1);
  const got = {};
  let replies = 0;
  let open = 0;
  const request = (type) => {
    open++;
    const chunks = [];
    const stream = conn.request({ method: 'POST', path: '/', host: 'localhost', headers: { streamtype: type } },
      (err) => { if (err) fail('request ' + type + ': ' + err); });
    stream.on('response', () => { replies++; });
    stream.on('data', (d) => chunks.push(d));
    stream.on('error', (e) => fail(type + ': ' + e));
    stream.on('end', () => {
      got[type] = Buffer.concat(chunks);
      if (--open === 0) finish();
    });
    return stream;
  };
  const finish = () => {
    if (!got.stdout.equals(pattern(size, 6))) fail('stdout differs (' + got.stdout.length + ' bytes)');
    console.log('ok stdout=' + got.stdout.length + ' error=' + got.error.toString() + ' replies=' + replies);
    conn.end(() => { socket.destroy(); process.exit(0); });
    setTimeout(() => process.exit(0), 1000).unref();
  };
  request('error').end();
  const stdin = request('stdin');
  stdin.end(pattern(size, 5));
  request('stdout').end();
});
socket.on('error', (e) => fail('socket: ' + e));
"#;
