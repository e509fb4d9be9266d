//! The streaming server's idle timeout (the kubelet's `--streaming-connection-idle-timeout`,
//! containerd's `stream_idle_timeout`, 4 hours by default in both): a session through which
//! nothing has passed for that long is closed.
//!
//! It watches the upgraded connection itself, below WebSocket and SPDY, so one mechanism covers
//! every transport and every session kind, and anything on the wire counts as activity (SPDY
//! pings too, as with spdystream). When the time is up, [`Idle::expired_after`] returns, the
//! server drops the session (an exec'd process is then killed by its shim, an attach detaches,
//! forwarded connections close), and the connection's reads and writes fail with `TimedOut` so
//! that the transport's own tasks let go of it too and it closes.
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The activity of one connection, shared by its reads and writes and its watchdog.
#[derive(Clone)]
pub struct Idle(Arc<State>);

struct State {
    start: Instant,
    /// Milliseconds from `start` to the last read or write that moved bytes.
    last_ms: AtomicU64,
    expired: AtomicBool,
    /// Whoever is blocked reading or writing, to be woken into the error at expiry.
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Idle {
    pub fn new() -> Idle {
        Idle(Arc::new(State {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            expired: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            writer: AtomicWaker::new(),
        }))
    }

    /// `io`, with its traffic counted as activity.
    pub fn watch<IO>(&self, io: IO) -> Watched<IO> {
        Watched {
            io,
            idle: self.clone(),
        }
    }

    fn touch(&self) {
        let ms = self.0.start.elapsed().as_millis() as u64;
        self.0.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn is_expired(&self) -> bool {
        self.0.expired.load(Ordering::Acquire)
    }

    /// Returns once nothing has passed for `timeout`, after marking the connection expired.
    pub async fn expired_after(&self, timeout: Duration) {
        loop {
            let last = self.0.start + Duration::from_millis(self.0.last_ms.load(Ordering::Relaxed));
            let due = last + timeout;
            if Instant::now() >= due {
                break;
            }
            tokio::time::sleep_until(due).await;
        }
        tracing::info!(
            timeout_secs = timeout.as_secs(),
            "streaming session idle for too long, closing it"
        );
        self.0.expired.store(true, Ordering::Release);
        self.0.reader.wake();
        self.0.writer.wake();
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the streaming session was idle too long",
    )
}

/// A connection whose traffic an [`Idle`] counts.
pub struct Watched<IO> {
    io: IO,
    idle: Idle,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Registered before the check, so that an expiry in between still wakes us.
        this.idle.0.reader.register(cx.waker());
        if this.idle.is_expired() {
            return Poll::Ready(Err(timed_out()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.idle.touch();
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.idle.0.writer.register(cx.waker());
        if this.idle.is_expired() {
            return Poll::Ready(Err(timed_out()));
        }
        let result = Pin::new(&mut this.io).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.idle.touch();
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn traffic_keeps_a_connection_open_and_silence_closes_it() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let idle = Idle::new();
        let mut conn = idle.watch(ours);
        let watchdog = tokio::spawn({
            let idle = idle.clone();
            async move {
                idle.expired_after(Duration::from_secs(60)).await;
                Instant::now()
            }
        });
        let start = Instant::now();
        let mut buf = [0u8; 8];
        // Traffic every 40 s, either way, keeps it open well past one timeout.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(40)).await;
            theirs.write_all(b"x").await.unwrap();
            assert_eq!(conn.read(&mut buf).await.unwrap(), 1);
        }
        tokio::time::sleep(Duration::from_secs(40)).await;
        conn.write_all(b"y").await.unwrap();
        // Then a reader waits for what never comes: it is woken into an error.
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let expired_at = watchdog.await.unwrap();
        assert_eq!(expired_at - start, Duration::from_secs(160 + 60));
        assert_eq!(
            conn.write(b"z").await.unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
    }
}
