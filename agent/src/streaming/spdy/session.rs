//! One server-side SPDY/3.1 session: many client-opened streams over one connection.
//!
//! Two halves run concurrently in one spawned task: the reader decodes frames and fills the
//! streams' inbound buffers, the writer owns the socket's write half and the header
//! compressor and sends queued frames in order. Stream handles (`StreamHandle`) talk to both
//! through the shared `State`.
//!
//! Flow control. The kubelet and crictl speak SPDY through spdystream, which neither sends
//! WINDOW_UPDATE nor looks at the ones it gets: waiting for the client's window to reopen
//! would stall every session after 64 KiB. We therefore enforce the peer's windows only once
//! it has shown it does flow control (a SETTINGS with an initial window, or any
//! WINDOW_UPDATE). Our own receive windows are always advertised: we credit the client as
//! the handlers consume its data. Memory stays bounded either way: each stream buffers at
//! most `MAX_BUFFERED` inbound bytes (beyond that the reader stops reading the socket, which
//! is TCP backpressure for clients that ignore windows) and queues at most `MAX_QUEUED`
//! outbound bytes (beyond that writes wait).

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

use super::compression::{HeaderCompressor, HeaderDecompressor, Headers};
use super::frame::{
    Frame, FrameHead, FLAG_FIN, FLAG_UNIDIRECTIONAL, GOAWAY_OK, GOAWAY_PROTOCOL_ERROR, HEAD_LEN,
    RST_PROTOCOL_ERROR, RST_REFUSED_STREAM, SETTINGS_INITIAL_WINDOW_SIZE, VERSION,
};
use super::SpdyError;

/// SPDY/3.1's initial stream and session window, for both directions.
pub const INITIAL_WINDOW: i64 = 64 * 1024;
/// We credit consumed bytes once this many have accumulated, as most implementations do.
const WINDOW_UPDATE_THRESHOLD: u32 = (INITIAL_WINDOW / 2) as u32;
/// Inbound bytes a stream buffers before the reader waits for its handler: one window, so a
/// client that honours our window never blocks the reader.
const MAX_BUFFERED: usize = INITIAL_WINDOW as usize;
/// How long a closing session waits for the client to hang up before dropping the
/// connection. Until then we keep reading (and discarding) what the client still sends:
/// closing a socket with unread data makes the kernel answer with a TCP reset, which can
/// destroy the last frames we sent before the client reads them. And when we are the first
/// to say GOAWAY, our write half stays open too: a client that sees the connection end may
/// drop frames it has received but not yet processed (Node's spdy-transport does, as its
/// header decompression is asynchronous), so the client, having read our GOAWAY, closes first.
pub(super) const LINGER: Duration = Duration::from_secs(5);
/// Outbound bytes a stream may have queued for the writer before its writes wait.
const MAX_QUEUED: usize = 64 * 1024;
/// The largest data frame we send, and the chunk size in which we read incoming ones.
const MAX_DATA_CHUNK: usize = 16 * 1024;
/// Control frames carry a few short headers at most; refuse absurd ones.
const MAX_CONTROL_FRAME: usize = 1024 * 1024;
/// Streams open at once; more are refused. Bounds the memory a client can make us spend.
const MAX_STREAMS: usize = 1024;

/// Decides whether to accept a new stream from its headers; the error says why not.
pub type Accept = fn(&Headers) -> Result<(), String>;

/// A stream the client opened (and we answered with SYN_REPLY).
pub struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    pub stream: StreamHandle,
}

/// Runs a session on `io` in a spawned task and yields the streams the client opens.
///
/// The session ends when the connection closes, or once no stream is open any more and no
/// new ones can come: the `IncomingStreams` was dropped or the client sent GOAWAY. We then
/// send GOAWAY ourselves and close the connection.
pub fn start<IO>(io: IO, accept: Accept) -> IncomingStreams
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            incoming: Some(tx),
            ..State::default()
        }),
        writer_wake: Notify::new(),
        reader_stop: Notify::new(),
    });
    tokio::spawn(run(Arc::clone(&shared), io, accept));
    IncomingStreams { rx, shared }
}

/// The streams of a session as the client opens them; `None` once the session has ended.
pub struct IncomingStreams {
    // Unbounded, yet bounded in practice: at most MAX_STREAMS streams exist at a time.
    rx: mpsc::UnboundedReceiver<IncomingStream>,
    shared: Arc<Shared>,
}

impl IncomingStreams {
    pub async fn recv(&mut self) -> Option<IncomingStream> {
        self.rx.recv().await
    }
}

impl Drop for IncomingStreams {
    fn drop(&mut self) {
        self.rx.close();
        // Streams nobody will take: dropping their handles releases them.
        while self.rx.try_recv().is_ok() {}
        self.shared.lock().acceptor_closed();
        self.shared.writer_wake.notify_one();
    }
}

struct Shared {
    state: Mutex<State>,
    /// Frames were queued or the session is closing.
    writer_wake: Notify,
    /// The writer has finished: the reader stops too, after lingering.
    reader_stop: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the whole session down with poisoned-lock panics.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct State {
    /// Where new streams go; dropped when the session ends, which ends `IncomingStreams`.
    incoming: Option<mpsc::UnboundedSender<IncomingStream>>,
    streams: HashMap<u32, StreamState>,
    out: Outbox,
    /// The highest stream id the client used; new ones must be higher.
    last_stream_id: u32,
    /// No new streams: the acceptor is gone or the client sent GOAWAY.
    no_new_streams: bool,
    /// The client sent GOAWAY: it is closing the session itself.
    peer_goaway: bool,
    /// The writer already waited `LINGER` for the client to hang up; the reader need not.
    lingered: bool,
    /// Every stream is done and no new one can come: the writer sends GOAWAY and stops.
    closing: bool,
    /// The connection is gone (or finished): nothing more is read or written.
    ended: bool,
}

/// What goes out, and the session-level flow control.
struct Outbox {
    frames: VecDeque<Frame>,
    /// The client has shown it does SPDY/3.1 flow control (see the module comment).
    peer_flow_control: bool,
    peer_initial_window: i64,
    session_send_window: i64,
    /// Bytes consumed and not yet credited to the client's session window.
    session_unacked: u32,
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            frames: VecDeque::new(),
            peer_flow_control: false,
            peer_initial_window: INITIAL_WINDOW,
            session_send_window: INITIAL_WINDOW,
            session_unacked: 0,
        }
    }
}

impl Outbox {
    fn push(&mut self, frame: Frame) {
        self.frames.push_back(frame);
    }

    /// Records that `n` bytes of the client's data were consumed (read or discarded) and
    /// credits its windows once enough have accumulated.
    fn consumed(&mut self, stream: Option<(u32, &mut StreamState)>, n: usize) {
        if n == 0 {
            return;
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.session_unacked = self.session_unacked.saturating_add(n);
        if self.session_unacked >= WINDOW_UPDATE_THRESHOLD {
            let delta = std::mem::take(&mut self.session_unacked);
            self.push(Frame::WindowUpdate {
                stream_id: 0,
                delta,
            });
        }
        if let Some((id, stream)) = stream {
            stream.unacked = stream.unacked.saturating_add(n);
            // A finished stream gets nothing more from the client: no need to credit it.
            if stream.unacked >= WINDOW_UPDATE_THRESHOLD && !stream.remote_done() {
                let delta = std::mem::take(&mut stream.unacked);
                self.push(Frame::WindowUpdate {
                    stream_id: id,
                    delta,
                });
            }
        }
    }
}

struct StreamState {
    // Client to us.
    inbound: VecDeque<u8>,
    remote_fin: bool,
    reset: bool,
    reader_held: bool,
    unacked: u32,
    read_waker: Option<Waker>,
    /// The session reader, waiting for room in `inbound`.
    room_waker: Option<Waker>,
    // Us to client.
    send_window: i64,
    queued_bytes: usize,
    queued_frames: usize,
    local_closed: bool,
    writer_held: bool,
    write_waker: Option<Waker>,
    flush_waker: Option<Waker>,
}

impl StreamState {
    fn remote_done(&self) -> bool {
        self.remote_fin || self.reset
    }

    fn wake_all(&mut self) {
        for waker in [
            self.read_waker.take(),
            self.room_waker.take(),
            self.write_waker.take(),
            self.flush_waker.take(),
        ]
        .into_iter()
        .flatten()
        {
            waker.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(waker) = self.write_waker.take() {
            waker.wake();
        }
    }
}

impl State {
    fn push(&mut self, frame: Frame) {
        if !self.ended {
            self.out.push(frame);
        }
    }

    fn acceptor_closed(&mut self) {
        self.no_new_streams = true;
        self.maybe_close();
    }

    /// Starts closing once nothing can happen any more.
    fn maybe_close(&mut self) {
        if self.no_new_streams && self.streams.is_empty() && !self.closing {
            debug!("SPDY session done, closing");
            self.closing = true;
            self.incoming = None;
        }
    }

    fn end(&mut self) {
        self.ended = true;
        self.incoming = None;
        for stream in self.streams.values_mut() {
            stream.wake_all();
        }
    }

    /// A handle gave up its read and/or write half of stream `id`.
    fn release(&mut self, id: u32, read: bool, write: bool) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        if read {
            stream.reader_held = false;
            let discarded = stream.inbound.len();
            stream.inbound = VecDeque::new();
            self.out.consumed(Some((id, &mut *stream)), discarded);
            if let Some(waker) = stream.room_waker.take() {
                waker.wake();
            }
        }
        if write {
            stream.writer_held = false;
            // Dropping a writer without shutting it down still ends the stream politely.
            if !stream.local_closed && !self.ended {
                stream.local_closed = true;
                stream.queued_frames += 1;
                self.out.push(Frame::Data {
                    stream_id: id,
                    fin: true,
                    data: Vec::new(),
                });
            }
        }
        if !stream.reader_held && !stream.writer_held {
            self.streams.remove(&id);
            self.maybe_close();
        }
    }
}

fn reply_headers() -> Headers {
    Headers::from_pairs(&[(":status", "200"), (":version", "HTTP/1.1")])
}

async fn run<IO>(shared: Arc<Shared>, io: IO, accept: Accept)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (reader, writer) = tokio::io::split(io);
    let reading = async {
        let result = read_loop(&shared, reader, accept).await;
        let mut state = shared.lock();
        match result {
            Ok(()) => debug!("SPDY client closed the connection"),
            Err(SpdyError::Io(e)) => debug!("SPDY connection lost: {e}"),
            Err(e) => {
                warn!("SPDY session aborted: {e}");
                let last_good_stream_id = state.last_stream_id;
                state.push(Frame::GoAway {
                    last_good_stream_id,
                    status: GOAWAY_PROTOCOL_ERROR,
                });
            }
        }
        state.end();
        drop(state);
        shared.writer_wake.notify_one();
    };
    let lingering = async {
        shared.reader_stop.notified().await;
        if !shared.lock().lingered {
            tokio::time::sleep(LINGER).await;
        }
    };
    let reading = async {
        tokio::select! {
            _ = reading => {}
            _ = lingering => debug!("SPDY client did not close the connection"),
        }
    };
    tokio::join!(reading, write_loop(&shared, writer));
}

async fn read_loop<R: AsyncRead + Unpin>(
    shared: &Arc<Shared>,
    mut reader: R,
    accept: Accept,
) -> Result<(), SpdyError> {
    let mut decompressor = HeaderDecompressor::new();
    let mut head = [0u8; HEAD_LEN];
    let mut chunk = vec![0u8; MAX_DATA_CHUNK];
    loop {
        // The connection closing between two frames is the normal end of a session.
        match reader.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        match FrameHead::parse(head) {
            FrameHead::Data {
                stream_id,
                flags,
                length,
            } => {
                let fin = flags & FLAG_FIN != 0;
                if length == 0 {
                    deliver(shared, stream_id, &[], fin).await;
                }
                // Read big frames piecewise so that a frame never has to fit in memory whole.
                let mut remaining = length;
                while remaining > 0 {
                    let n = remaining.min(MAX_DATA_CHUNK);
                    reader.read_exact(&mut chunk[..n]).await?;
                    remaining -= n;
                    deliver(shared, stream_id, &chunk[..n], fin && remaining == 0).await;
                }
            }
            FrameHead::Control {
                version,
                kind,
                flags,
                length,
            } => {
                if length > MAX_CONTROL_FRAME {
                    return Err(SpdyError::Protocol(format!(
                        "control frame of {length} bytes"
                    )));
                }
                let mut payload = vec![0u8; length];
                reader.read_exact(&mut payload).await?;
                if version != VERSION {
                    return Err(SpdyError::Protocol(format!("SPDY version {version}")));
                }
                match Frame::decode_control(kind, flags, &payload, &mut decompressor)? {
                    Some(frame) => on_control_frame(shared, frame, accept),
                    None => debug!("ignoring SPDY control frame type {kind}"),
                }
                shared.writer_wake.notify_one();
            }
        }
    }
}

/// Hands `bytes` of a data frame to its stream, waiting while the stream's buffer is full.
async fn deliver(shared: &Shared, id: u32, bytes: &[u8], fin: bool) {
    poll_fn(|cx| {
        let mut guard = shared.lock();
        let state = &mut *guard;
        if state.closing || state.ended {
            return Poll::Ready(());
        }
        let Some(stream) = state.streams.get_mut(&id) else {
            // A stream we released (or never had): the bytes still count against the
            // session window.
            state.out.consumed(None, bytes.len());
            return Poll::Ready(());
        };
        if stream.remote_done() {
            debug!("SPDY data on stream {id} after its end, ignored");
            state.out.consumed(None, bytes.len());
            return Poll::Ready(());
        }
        if !stream.reader_held {
            stream.remote_fin |= fin;
            state.out.consumed(Some((id, stream)), bytes.len());
            return Poll::Ready(());
        }
        let full = !stream.inbound.is_empty() && stream.inbound.len() + bytes.len() > MAX_BUFFERED;
        if full {
            stream.room_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        stream.inbound.extend(bytes);
        stream.remote_fin |= fin;
        if let Some(waker) = stream.read_waker.take() {
            waker.wake();
        }
        Poll::Ready(())
    })
    .await;
    shared.writer_wake.notify_one();
}

fn on_control_frame(shared: &Arc<Shared>, frame: Frame, accept: Accept) {
    let mut guard = shared.lock();
    let state = &mut *guard;
    match frame {
        Frame::SynStream {
            stream_id,
            flags,
            headers,
            ..
        } => {
            // Client streams have odd, strictly increasing ids.
            if stream_id % 2 == 0 || stream_id <= state.last_stream_id {
                warn!("SPDY client opened stream {stream_id} out of order");
                state.push(Frame::RstStream {
                    stream_id,
                    status: RST_PROTOCOL_ERROR,
                });
                return;
            }
            state.last_stream_id = stream_id;
            let refusal = if state.no_new_streams || state.incoming.is_none() {
                Some("the session takes no new streams".to_string())
            } else if state.streams.len() >= MAX_STREAMS {
                Some(format!("more than {MAX_STREAMS} streams"))
            } else {
                accept(&headers).err()
            };
            if let Some(reason) = refusal {
                warn!("refusing SPDY stream {stream_id}: {reason}");
                state.push(Frame::RstStream {
                    stream_id,
                    status: RST_REFUSED_STREAM,
                });
                return;
            }
            let unidirectional = flags & FLAG_UNIDIRECTIONAL != 0;
            state.streams.insert(
                stream_id,
                StreamState {
                    inbound: VecDeque::new(),
                    remote_fin: flags & FLAG_FIN != 0,
                    reset: false,
                    reader_held: true,
                    unacked: 0,
                    read_waker: None,
                    room_waker: None,
                    send_window: state.out.peer_initial_window,
                    queued_bytes: 0,
                    queued_frames: 0,
                    local_closed: unidirectional,
                    writer_held: !unidirectional,
                    write_waker: None,
                    flush_waker: None,
                },
            );
            // The Go client waits for this reply before it uses the stream. It ignores the
            // reply's headers (the kubelet sends none), but SPDY/3 wants a response status
            // and HTTP-minded clients reset streams without one.
            state.push(Frame::SynReply {
                stream_id,
                fin: false,
                headers: reply_headers(),
            });
            let incoming = state.incoming.clone();
            drop(guard);
            let stream = StreamHandle {
                id: stream_id,
                shared: Arc::clone(shared),
                read: true,
                write: !unidirectional,
            };
            // If the acceptor is gone the stream comes back and dropping it releases it.
            if let Some(incoming) = incoming {
                let _ = incoming.send(IncomingStream {
                    id: stream_id,
                    headers,
                    stream,
                });
            }
        }
        Frame::RstStream { stream_id, status } => {
            let Some(stream) = state.streams.get_mut(&stream_id) else {
                return;
            };
            debug!("SPDY client reset stream {stream_id} (status {status})");
            stream.reset = true;
            stream.local_closed = true;
            stream.queued_bytes = 0;
            stream.queued_frames = 0;
            stream.wake_all();
            // Nothing more may be sent on a reset stream.
            state.out.frames.retain(
                |frame| !matches!(frame, Frame::Data { stream_id: id, .. } if *id == stream_id),
            );
        }
        Frame::Settings { entries, .. } => {
            for entry in entries {
                if entry.id != SETTINGS_INITIAL_WINDOW_SIZE {
                    continue;
                }
                let window = i64::from(entry.value);
                let delta = window - state.out.peer_initial_window;
                state.out.peer_initial_window = window;
                state.out.peer_flow_control = true;
                for stream in state.streams.values_mut() {
                    stream.send_window += delta;
                    stream.wake_writer();
                }
            }
        }
        Frame::WindowUpdate { stream_id, delta } => {
            state.out.peer_flow_control = true;
            if stream_id == 0 {
                state.out.session_send_window += i64::from(delta);
                for stream in state.streams.values_mut() {
                    stream.wake_writer();
                }
            } else if let Some(stream) = state.streams.get_mut(&stream_id) {
                stream.send_window += i64::from(delta);
                stream.wake_writer();
            }
        }
        // Odd ids are the client's pings, which we echo; even ones would answer ours, and
        // we never ping.
        Frame::Ping { id } if id % 2 == 1 => state.push(Frame::Ping { id }),
        Frame::Ping { .. } => {}
        Frame::GoAway { .. } => {
            debug!("SPDY client sent GOAWAY");
            state.no_new_streams = true;
            state.peer_goaway = true;
            state.maybe_close();
        }
        // Extra headers carry nothing the Kubernetes protocols use, but may end the stream.
        Frame::Headers {
            stream_id,
            fin: true,
            ..
        } => {
            if let Some(stream) = state.streams.get_mut(&stream_id) {
                stream.remote_fin = true;
                if let Some(waker) = stream.read_waker.take() {
                    waker.wake();
                }
            }
        }
        // We never open streams, so there is nothing to reply to.
        Frame::SynReply { .. } | Frame::Headers { .. } | Frame::Data { .. } => {}
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(shared: &Shared, mut writer: W) {
    let mut compressor = match HeaderCompressor::new() {
        Ok(compressor) => Some(compressor),
        Err(e) => {
            warn!("SPDY session cannot start: {e}");
            None
        }
    };
    let mut wire = Vec::new();
    while let Some(compressor) = compressor.as_mut() {
        let next = {
            let mut state = shared.lock();
            if !state.out.frames.is_empty() {
                Some((state.out.frames.drain(..).collect::<Vec<_>>(), false))
            } else if state.ended {
                break;
            } else if state.closing {
                let last_good_stream_id = state.last_stream_id;
                let goaway = Frame::GoAway {
                    last_good_stream_id,
                    status: GOAWAY_OK,
                };
                Some((vec![goaway], true))
            } else {
                None
            }
        };
        let Some((batch, last)) = next else {
            shared.writer_wake.notified().await;
            continue;
        };
        wire.clear();
        if let Err(e) = batch
            .iter()
            .try_for_each(|frame| frame.encode(compressor, &mut wire))
        {
            warn!("SPDY frame encoding failed: {e}");
            break;
        }
        let written = async {
            writer.write_all(&wire).await?;
            writer.flush().await
        };
        if let Err(e) = written.await {
            debug!("SPDY connection write failed: {e}");
            break;
        }
        let client_closing = {
            let mut state = shared.lock();
            for frame in &batch {
                if let Frame::Data {
                    stream_id, data, ..
                } = frame
                {
                    if let Some(stream) = state.streams.get_mut(stream_id) {
                        stream.queued_bytes = stream.queued_bytes.saturating_sub(data.len());
                        stream.queued_frames = stream.queued_frames.saturating_sub(1);
                        stream.wake_writer();
                        if let Some(waker) = stream.flush_waker.take() {
                            waker.wake();
                        }
                    }
                }
            }
            state.peer_goaway
        };
        if last {
            if !client_closing {
                wait_for_hang_up(shared).await;
            }
            break;
        }
    }
    let _ = writer.shutdown().await;
    shared.lock().end();
    shared.reader_stop.notify_one();
}

/// After our GOAWAY: waits until the client closes the connection, or `LINGER` at most.
async fn wait_for_hang_up(shared: &Shared) {
    let deadline = tokio::time::Instant::now() + LINGER;
    loop {
        if shared.lock().ended {
            return;
        }
        // The reader notifies the writer when it sees the end of the connection; a permit
        // stored between our check and this wait is not lost.
        tokio::select! {
            _ = shared.writer_wake.notified() => {}
            _ = tokio::time::sleep_until(deadline) => {
                debug!("SPDY client did not hang up after GOAWAY");
                shared.lock().lingered = true;
                return;
            }
        }
    }
}

/// One stream of the session, as the handlers use it: the read half yields what the client
/// sends (EOF at its FIN), the write half sends data frames (shutdown sends FIN). A handle
/// may hold only one half (`into_reader`, `into_writer`); dropping it releases what it holds.
pub struct StreamHandle {
    id: u32,
    shared: Arc<Shared>,
    read: bool,
    write: bool,
}

impl StreamHandle {
    /// Keeps only the read half; the write half ends (FIN) right away.
    pub fn into_reader(mut self) -> Self {
        self.release(false, true);
        self
    }

    /// Keeps only the write half; whatever the client sends is discarded.
    pub fn into_writer(mut self) -> Self {
        self.release(true, false);
        self
    }

    fn release(&mut self, read: bool, write: bool) {
        let read = read && self.read;
        let write = write && self.write;
        if !read && !write {
            return;
        }
        self.read &= !read;
        self.write &= !write;
        self.shared.lock().release(self.id, read, write);
        self.shared.writer_wake.notify_one();
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.release(true, true);
    }
}

fn broken_pipe(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, what.to_string())
}

impl AsyncRead for StreamHandle {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read {
            return Poll::Ready(Err(io::Error::other(
                "this SPDY stream handle is write-only",
            )));
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let mut guard = this.shared.lock();
        let state = &mut *guard;
        let Some(stream) = state.streams.get_mut(&this.id) else {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        };
        if !stream.inbound.is_empty() {
            let n = buf.remaining().min(stream.inbound.len());
            let (front, back) = stream.inbound.as_slices();
            let from_front = n.min(front.len());
            buf.put_slice(&front[..from_front]);
            buf.put_slice(&back[..n - from_front]);
            stream.inbound.drain(..n);
            if let Some(waker) = stream.room_waker.take() {
                waker.wake();
            }
            state.out.consumed(Some((this.id, stream)), n);
            drop(guard);
            this.shared.writer_wake.notify_one();
            return Poll::Ready(Ok(()));
        }
        if stream.remote_fin {
            return Poll::Ready(Ok(()));
        }
        if stream.reset {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the client reset the SPDY stream",
            )));
        }
        if state.ended {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the SPDY connection closed",
            )));
        }
        stream.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for StreamHandle {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.write {
            return Poll::Ready(Err(io::Error::other(
                "this SPDY stream handle is read-only",
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut guard = this.shared.lock();
        let state = &mut *guard;
        if state.ended {
            return Poll::Ready(Err(broken_pipe("the SPDY connection closed")));
        }
        let Some(stream) = state.streams.get_mut(&this.id) else {
            return Poll::Ready(Err(broken_pipe("the SPDY stream is gone")));
        };
        if stream.reset {
            return Poll::Ready(Err(broken_pipe("the client reset the SPDY stream")));
        }
        if stream.local_closed {
            return Poll::Ready(Err(broken_pipe("write after shutdown")));
        }
        let mut allowance = (MAX_QUEUED - stream.queued_bytes.min(MAX_QUEUED)) as i64;
        if state.out.peer_flow_control {
            allowance = allowance
                .min(stream.send_window)
                .min(state.out.session_send_window);
        }
        if allowance <= 0 {
            stream.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(allowance as usize).min(MAX_DATA_CHUNK);
        stream.send_window -= n as i64;
        stream.queued_bytes += n;
        stream.queued_frames += 1;
        state.out.session_send_window -= n as i64;
        state.out.push(Frame::Data {
            stream_id: this.id,
            fin: false,
            data: buf[..n].to_vec(),
        });
        drop(guard);
        this.shared.writer_wake.notify_one();
        Poll::Ready(Ok(n))
    }

    /// Completes once everything written so far is on the connection.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut state = this.shared.lock();
        let ended = state.ended;
        let Some(stream) = state.streams.get_mut(&this.id) else {
            return Poll::Ready(Ok(()));
        };
        if stream.queued_frames == 0 {
            return Poll::Ready(Ok(()));
        }
        if ended {
            return Poll::Ready(Err(broken_pipe("the SPDY connection closed")));
        }
        stream.flush_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.as_mut().get_mut();
        if !this.write {
            return Poll::Ready(Ok(()));
        }
        {
            let mut guard = this.shared.lock();
            let state = &mut *guard;
            let Some(stream) = state.streams.get_mut(&this.id) else {
                return Poll::Ready(Ok(()));
            };
            if !stream.local_closed {
                if state.ended {
                    return Poll::Ready(Err(broken_pipe("the SPDY connection closed")));
                }
                stream.local_closed = true;
                stream.queued_frames += 1;
                state.out.push(Frame::Data {
                    stream_id: this.id,
                    fin: true,
                    data: Vec::new(),
                });
                drop(guard);
                this.shared.writer_wake.notify_one();
            }
        }
        self.poll_flush(cx)
    }
}
