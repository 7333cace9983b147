//! What one downstream connection's task, its requests and its socket tell each other.
//!
//! [`ConnState`] is shared by the connection task (deadlines, parking, close requests), the
//! requests it serves (an [`InFlight`] guard from the moment the service is called until the
//! response body is finished or dropped) and [`ConnIo`], the socket as hyper sees it, which
//! records whether hyper is waiting for bytes and replays bytes read before hyper took over.
//! Nothing here decides anything; `conn.rs` does.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The instant [`micros`] counts from: a day before it is first asked, so that no instant a
/// connection records is earlier (tests with a paused clock take theirs from their own start).
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(86_400)).unwrap_or(now)
    })
}

/// Microseconds since a process-wide base instant: an `Instant` that fits an atomic.
pub(super) fn micros(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base()).as_micros()).unwrap_or(u64::MAX)
}

/// The instant `micros` came from.
pub(super) fn instant(micros: u64) -> Instant {
    base() + Duration::from_micros(micros)
}

/// Why the listener asks a connection to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(super) enum CloseRequest {
    /// Nothing asked.
    None = 0,
    /// The listener is full: close if nothing is in flight.
    Evict = 1,
    /// Shutdown: finish what is in flight, then close (HTTP/2: GOAWAY).
    Drain = 2,
    /// The shutdown grace period is over: close now.
    Force = 3,
}

// `flags` bits.
/// hyper's last read of the socket found nothing to read.
const READ_WAITING: u8 = 1;
/// A write or flush could not complete (the peer is not reading).
const WRITE_BLOCKED: u8 = 2;
/// The task is taking the HTTP/1.1 connection apart while idle: hyper's shutdown of the socket
/// must not reach it.
const PARKING: u8 = 4;
/// The connection speaks HTTP/2 (reads are frames, not request heads).
const H2: u8 = 8;

/// See the module doc.
#[derive(Debug)]
pub(super) struct ConnState {
    /// Requests whose response is not finished.
    in_flight: AtomicU32,
    /// Requests started on this connection so far.
    requests: AtomicU32,
    /// When the connection last had nothing in flight ([`micros`]): the accept, or the end of
    /// the last response.
    idle_since: AtomicU64,
    /// When the first bytes of a later request head arrived ([`micros`]); 0 while none did.
    head_since: AtomicU64,
    flags: AtomicU8,
    close: AtomicU8,
    /// Wakes the connection task for a close request.
    pub(super) notify: Notify,
}

impl ConnState {
    /// A connection accepted at `accepted`.
    pub(super) fn new(accepted: Instant) -> Arc<ConnState> {
        Arc::new(ConnState {
            in_flight: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            idle_since: AtomicU64::new(micros(accepted)),
            head_since: AtomicU64::new(0),
            flags: AtomicU8::new(0),
            close: AtomicU8::new(CloseRequest::None as u8),
            notify: Notify::new(),
        })
    }

    /// A request head is complete and the service is called: the returned guard must live until
    /// the response body is finished (or dropped).
    pub(super) fn start_request(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Requests whose response is not finished.
    pub(super) fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests started so far.
    pub(super) fn requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    /// When the connection last became idle.
    pub(super) fn idle_since(&self) -> Instant {
        instant(self.idle_since.load(Ordering::Acquire))
    }

    /// When the bytes of a later request head started to arrive, if they did.
    pub(super) fn head_since(&self) -> Option<Instant> {
        match self.head_since.load(Ordering::Relaxed) {
            0 => None,
            at => Some(instant(at)),
        }
    }

    /// Asks the connection to close; a stronger request replaces a weaker one. Returns whether
    /// this request was new.
    pub(super) fn request_close(&self, request: CloseRequest) -> bool {
        let previous = self.close.fetch_max(request as u8, Ordering::AcqRel);
        if previous < request as u8 {
            self.notify.notify_one();
            true
        } else {
            false
        }
    }

    /// The strongest close request so far.
    pub(super) fn close_request(&self) -> CloseRequest {
        match self.close.load(Ordering::Acquire) {
            0 => CloseRequest::None,
            1 => CloseRequest::Evict,
            2 => CloseRequest::Drain,
            _ => CloseRequest::Force,
        }
    }

    /// Nothing in flight and no close asked yet: a connection the listener may evict.
    pub(super) fn is_evictable(&self) -> bool {
        self.in_flight() == 0 && self.close_request() == CloseRequest::None
    }

    /// hyper is waiting for bytes with nothing left to write: the connection is idle on the wire.
    pub(super) fn is_quiet(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & (READ_WAITING | WRITE_BLOCKED) == READ_WAITING
    }

    /// Whether the task is taking the connection apart.
    pub(super) fn is_parking(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & PARKING != 0
    }

    /// Marks the connection as HTTP/2.
    pub(super) fn set_h2(&self) {
        self.flags.fetch_or(H2, Ordering::Relaxed);
    }

    /// Starts or ends taking an idle HTTP/1.1 connection apart.
    pub(super) fn set_parking(&self, parking: bool) {
        if parking {
            self.flags.fetch_or(PARKING, Ordering::Relaxed);
        } else {
            self.flags.fetch_and(!PARKING, Ordering::Relaxed);
        }
    }

    fn set_flag(&self, flag: u8, on: bool) {
        // Written by the one task polling the socket; a plain load/store pair is enough.
        let flags = self.flags.load(Ordering::Relaxed);
        let new = if on { flags | flag } else { flags & !flag };
        if new != flags {
            self.flags.store(new, Ordering::Relaxed);
        }
    }

    fn on_read(&self, got_bytes: bool) {
        self.set_flag(READ_WAITING, !got_bytes);
        if got_bytes {
            let flags = self.flags.load(Ordering::Relaxed);
            // The first bytes of a later HTTP/1.1 head: its own deadline starts.
            if flags & H2 == 0
                && self.head_since.load(Ordering::Relaxed) == 0
                && self.requests() > 0
                && self.in_flight() == 0
            {
                self.head_since
                    .store(micros(Instant::now()).max(1), Ordering::Relaxed);
            }
        }
    }
}

/// One request in flight on a connection; its drop makes the connection idle again.
#[derive(Debug)]
pub(super) struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let state = &self.0;
        // Stored before the count drops, so whoever sees the count at 0 sees this time (or a later
        // one); with other requests still in flight it is overwritten when they end.
        state
            .idle_since
            .store(micros(Instant::now()), Ordering::Release);
        state.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The socket types a connection runs on.
pub(super) trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket underneath, to wait for readability without reading.
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// A socket as hyper sees it: bytes read before hyper took over come first, and what hyper's
/// reads and writes find is recorded in the [`ConnState`].
#[derive(Debug)]
pub(super) struct ConnIo<T> {
    inner: T,
    prefix: Bytes,
    state: Arc<ConnState>,
}

impl<T> ConnIo<T> {
    /// `inner`, replaying `prefix` first.
    pub(super) fn new(inner: T, prefix: Bytes, state: Arc<ConnState>) -> Self {
        ConnIo {
            inner,
            prefix,
            state,
        }
    }

    /// The socket back.
    pub(super) fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ConnIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            this.state.on_read(true);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &polled {
            Poll::Pending => this.state.set_flag(READ_WAITING, true),
            Poll::Ready(Ok(())) => this.state.on_read(buf.filled().len() > before),
            Poll::Ready(Err(_)) => {}
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ConnIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.state.set_flag(WRITE_BLOCKED, polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.state.set_flag(WRITE_BLOCKED, polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.state.set_flag(WRITE_BLOCKED, polled.is_pending());
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state.flags.load(Ordering::Relaxed) & PARKING != 0 {
            // hyper closes its side of an idle connection the task takes apart; the socket stays.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_round_trip_to_the_same_instant() {
        let now = Instant::now();
        let back = instant(micros(now));
        let diff = if back > now { back - now } else { now - back };
        assert!(diff < Duration::from_micros(2), "{diff:?}");
    }

    #[tokio::test]
    async fn in_flight_guard_marks_the_connection_idle_when_dropped() {
        let state = ConnState::new(Instant::now());
        assert_eq!(state.requests(), 0);
        let first = state.start_request();
        let second = state.start_request();
        assert_eq!(state.in_flight(), 2);
        assert!(!state.is_evictable());
        drop(first);
        assert_eq!(state.in_flight(), 1);
        let before = Instant::now();
        drop(second);
        assert_eq!(state.in_flight(), 0);
        assert!(state.idle_since() + Duration::from_micros(1) >= before);
        assert!(state.is_evictable());
        assert_eq!(state.requests(), 2);
    }

    #[test]
    fn a_stronger_close_request_replaces_a_weaker_one_only() {
        let state = ConnState::new(Instant::now());
        assert!(state.request_close(CloseRequest::Drain));
        assert!(!state.request_close(CloseRequest::Evict));
        assert_eq!(state.close_request(), CloseRequest::Drain);
        assert!(state.request_close(CloseRequest::Force));
        assert_eq!(state.close_request(), CloseRequest::Force);
    }

    #[tokio::test]
    async fn later_head_bytes_start_the_head_clock_and_a_request_stops_it() {
        let state = ConnState::new(Instant::now());
        // The first head is timed from the accept: bytes before any request do not count.
        state.on_read(true);
        assert!(state.head_since().is_none());
        drop(state.start_request());
        state.on_read(false);
        assert!(state.head_since().is_none());
        assert!(state.is_quiet());
        state.on_read(true);
        assert!(state.head_since().is_some());
        let guard = state.start_request();
        assert!(state.head_since().is_none());
        // Bytes while a request is in flight (its body) are no head.
        state.on_read(true);
        assert!(state.head_since().is_none());
        drop(guard);
    }

    #[tokio::test]
    async fn prefix_is_read_before_the_socket() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(b" world").await.unwrap();
        let state = ConnState::new(Instant::now());
        let mut io = ConnIo::new(server, Bytes::from_static(b"hello"), state);
        let mut read = vec![0u8; 11];
        io.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"hello world");
    }
}
