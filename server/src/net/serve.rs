//! Accepting connections and stopping cleanly.
//!
//! Plain TCP speaks HTTP/1.1 (and HTTP/2 with prior knowledge); with a certificate the server
//! speaks TLS and offers HTTP/2 through ALPN, which lets a browser multiplex any number of
//! event streams over one connection instead of six. Every connection gets limits that keep
//! a bad client from holding resources: a deadline for the request head, a cap on its size,
//! and [`StallGuard`], which closes a connection whose client stopped reading.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo, Router};
use http::Request;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::{Instant, Sleep},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{
    caps::{self, Caps, Permit, Refusal},
    fast_path::{self as stream_conn, FirstBytes},
    head_guard::{HeadDone, HeadGuard},
};

/// How the server treats connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// Serve TLS with this configuration (HTTP/2 and HTTP/1.1 through ALPN).
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Time from accepting a connection to its first complete request head (the TLS
    /// handshake included); later heads on a kept-alive connection get as long from the
    /// moment it turns idle.
    pub header_timeout: Duration,
    /// A connection whose writes make no progress for this long is closed.
    pub stall_timeout: Duration,
    /// The largest request head accepted, in bytes; larger ones get `431`.
    pub max_header_bytes: usize,
    /// How long open connections get to finish once shutdown starts.
    pub shutdown_grace: Duration,
    /// Serve plain HTTP/1.1 event-stream requests without hyper ([`crate::net::fast_path`]).
    pub fast_path: bool,
    /// How many connections the server holds, in all and per client address.
    pub limits: Arc<Caps>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            tls: None,
            header_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            shutdown_grace: Duration::from_millis(1500),
            fast_path: true,
            limits: Caps::new(
                caps::default_max_connections(caps::raise_open_file_limit()),
                DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            ),
        }
    }
}

/// The most event streams (and requests) one HTTP/2 connection carries at once.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;

/// Connections one client address may hold by default.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 1000;

/// Serves `router` on `listener` until `shutdown` is cancelled; then stops accepting, lets
/// open connections finish (event streams end at once, since they watch the same token) for
/// at most [`ServeOptions::shutdown_grace`], and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> io::Result<()> {
    let builder = Arc::new(hyper_builder(&options));
    let tls = options.tls.clone().map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut accept_errors = AcceptErrors::default();
    let mut refusals = RateLog::default();

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_errors.pause(error).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        accept_errors.reset();
        let permit = match options.limits.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(refusal) => {
                refuse(&stream, refusal, tls.is_none());
                refusals.note(|suppressed| {
                    tracing::warn!(%peer, suppressed, reason = refusal.reason(), "connection refused");
                });
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: Arc::clone(&builder),
            router: router.clone(),
            watcher: graceful.watcher(),
            peer,
            // Everything before the first request is parsed (a TLS handshake, the bytes
            // that tell HTTP/2 from HTTP/1.1, a head however slowly it comes) shares this
            // deadline.
            deadline: Instant::now() + options.header_timeout,
            stall_timeout: options.stall_timeout,
            _permit: permit,
        };
        match &tls {
            None => {
                tokio::spawn(connection.serve_plain(stream, options.fast_path));
            }
            Some(acceptor) => {
                tokio::spawn(connection.serve_tls(stream, acceptor.clone()));
            }
        }
    }

    drop(listener);
    drain(graceful, options.shutdown_grace).await;
    Ok(())
}

/// hyper's HTTP/1.1 and HTTP/2 settings, from the options.
fn hyper_builder(options: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .max_buf_size(options.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .keep_alive_interval(Duration::from_secs(30));
    builder
}

/// Waits up to `grace` for the open connections to finish.
async fn drain(graceful: GracefulShutdown, grace: Duration) {
    tracing::info!(
        connections = graceful.count(),
        "no longer accepting; closing connections"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period; dropping them");
    }
}

/// Answers a connection the limits refused (plain HTTP only: a TLS client could not read
/// the answer) without waiting, and closes it. The answer goes straight to the socket: a
/// connection just accepted has no readiness known to tokio yet.
fn refuse(stream: &tokio::net::TcpStream, refusal: Refusal, plain: bool) {
    if plain {
        let _ = socket2::SockRef::from(stream).send(refusal.response());
    }
}

/// Logs a repeated event at most once per [`RateLog::EVERY`], with how many it left out.
#[derive(Default)]
struct RateLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLog {
    const EVERY: Duration = Duration::from_secs(5);

    fn note(&mut self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + Self::EVERY) {
            self.suppressed += 1;
            return;
        }
        self.last = Some(now);
        log(std::mem::take(&mut self.suppressed));
    }
}

/// What the accept loop does when `accept` fails.
///
/// Most errors concern one connection that went away before it was taken. Running out of
/// file descriptors (or kernel memory) concerns them all: accepting again at once would
/// spin a core, so the loop waits, twice as long each time up to a second, and logs at a
/// bounded rate.
#[derive(Default)]
struct AcceptErrors {
    backoff: Option<Duration>,
    log: RateLog,
}

impl AcceptErrors {
    const FIRST: Duration = Duration::from_millis(10);
    const MOST: Duration = Duration::from_secs(1);

    async fn pause(&mut self, error: io::Error) {
        if matches!(
            error.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::Interrupted
                | io::ErrorKind::WouldBlock
        ) {
            return;
        }
        let wait = self
            .backoff
            .map_or(Self::FIRST, |wait| (wait * 2).min(Self::MOST));
        self.backoff = Some(wait);
        self.log.note(|suppressed| {
            tracing::warn!(%error, suppressed, pause_ms = wait.as_millis() as u64, "accept failed; pausing");
        });
        tokio::time::sleep(wait).await;
    }

    fn reset(&mut self) {
        self.backoff = None;
    }
}

/// One accepted connection, ready to be served over plain TCP or TLS.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
    /// Until the first request has arrived.
    deadline: Instant,
    /// How long a write may wait for the client (see [`StallGuard`]).
    stall_timeout: Duration,
    /// Its place under the connection limits, held until it closes.
    _permit: Permit,
}

impl Connection {
    /// Serves a plain TCP connection: an HTTP/1.1 event stream on the fast path (when it is
    /// on), anything else with hyper.
    async fn serve_plain(self, stream: TcpStream, fast_path: bool) {
        let peer = self.peer;
        if fast_path {
            match tokio::time::timeout_at(self.deadline, stream_conn::classify(&stream, peer)).await
            {
                Ok(FirstBytes::Stream(request)) => {
                    let Self {
                        router,
                        stall_timeout,
                        _permit,
                        ..
                    } = self;
                    stream_conn::serve(stream, request, router, stall_timeout).await;
                    drop(_permit);
                    return;
                }
                Ok(FirstBytes::Other) => {}
                Ok(FirstBytes::Closed) => return,
                Ok(FirstBytes::Failed(error)) => {
                    tracing::debug!(%peer, %error, "connection failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "no request before the header timeout");
                    return;
                }
            }
        }
        // Boxed: hyper's connection state is large, and this task should only be that
        // large for connections that need it.
        let io = StallGuard::new(stream, self.stall_timeout);
        Box::pin(self.serve(io)).await;
    }

    /// Serves a connection over TLS once its handshake is done (before the deadline).
    async fn serve_tls(self, stream: TcpStream, acceptor: TlsAcceptor) {
        let peer = self.peer;
        let io = StallGuard::new(stream, self.stall_timeout);
        match tokio::time::timeout_at(self.deadline, acceptor.accept(io)).await {
            Ok(Ok(stream)) => self.serve(stream).await,
            Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        }
    }

    /// Serves the connection with hyper; reads fail after the deadline until the first
    /// request has arrived.
    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let done = HeadDone::new();
        let peer = self.peer;
        let arrived = done.clone();
        let service = TowerToHyperService::new(self.router.map_request(
            move |mut request: Request<Incoming>| {
                arrived.set();
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(Body::new)
            },
        ));
        let io = HeadGuard::new(io, self.deadline, done);
        let connection = self.builder.serve_connection(TokioIo::new(io), service);
        if let Err(error) = self.watcher.watch(connection).await {
            tracing::debug!(%peer, %error, "connection ended with an error");
        }
    }
}

pin_project_lite::pin_project! {
    /// Closes a connection whose client stopped reading, or reads too little to be anything
    /// but a way to hold the connection: once a write has to wait, the client must take at
    /// least [`stream_conn::MIN_PROGRESS`] bytes in each `limit`, until a write goes through
    /// at once again (its buffers are drained); otherwise the write fails with `TimedOut`
    /// and the server drops the connection (a subscriber dropped this way can come back
    /// with `Last-Event-ID`). The timer exists only while writes wait.
    pub struct StallGuard<I> {
        #[pin]
        pub(crate) inner: I,
        limit: Duration,
        timer: Option<Pin<Box<Sleep>>>,
        // The last write had to wait.
        blocked: bool,
        // Bytes written since the current window started, while one is open.
        window: Option<usize>,
    }
}

impl<I> StallGuard<I> {
    /// Guards `inner`'s writes with `limit`.
    pub fn new(inner: I, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            timer: None,
            blocked: false,
            window: None,
        }
    }
}

impl<I: AsyncWrite + ResetOnClose> StallGuard<I> {
    fn guard<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut I>, &mut Context<'_>) -> Poll<io::Result<T>>,
        written: impl FnOnce(&T) -> usize,
    ) -> Poll<io::Result<T>> {
        let mut this = self.project();
        match op(this.inner.as_mut(), cx) {
            Poll::Ready(Ok(value)) => {
                let waited = std::mem::take(this.blocked);
                if waited {
                    if let Some(window) = this.window.as_mut() {
                        *window += written(&value);
                        if *window >= stream_conn::MIN_PROGRESS {
                            *this.window = None;
                        }
                    }
                } else {
                    *this.window = None;
                }
                return Poll::Ready(Ok(value));
            }
            Poll::Ready(Err(error)) => {
                *this.blocked = false;
                return Poll::Ready(Err(error));
            }
            Poll::Pending => {}
        }
        *this.blocked = true;
        let timer = this.timer.get_or_insert_with(|| {
            Box::pin(tokio::time::sleep_until(Instant::now() + *this.limit))
        });
        if this.window.is_none() {
            *this.window = Some(0);
            timer.as_mut().reset(Instant::now() + *this.limit);
        }
        ready!(timer.as_mut().poll(cx));
        this.inner.as_mut().reset_on_close();
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading, or reads too little",
        )))
    }
}

/// A connection that can be made to reset, not close, when dropped (see
/// [`stream_conn::abort`]).
pub trait ResetOnClose {
    fn reset_on_close(self: Pin<&mut Self>);
}

impl ResetOnClose for tokio::net::TcpStream {
    fn reset_on_close(self: Pin<&mut Self>) {
        stream_conn::abort(&self);
    }
}

impl ResetOnClose for tokio::io::DuplexStream {
    fn reset_on_close(self: Pin<&mut Self>) {}
}

impl<I: AsyncRead> AsyncRead for StallGuard<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + ResetOnClose> AsyncWrite for StallGuard<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.guard(cx, |inner, cx| inner.poll_write(cx, buf), |n| *n)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.guard(cx, |inner, cx| inner.poll_write_vectored(cx, bufs), |n| *n)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guard(cx, AsyncWrite::poll_flush, |()| 0)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guard(cx, AsyncWrite::poll_shutdown, |()| 0)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn a_blocked_write_fails_after_the_limit() {
        // The other end of the pipe never reads, so writes block once 64 bytes are buffered.
        let (writer, _reader) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(writer, Duration::from_millis(100));
        let started = std::time::Instant::now();
        let error = guarded
            .write_all(&[0u8; 4096])
            .await
            .expect_err("the write cannot finish");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
    }

    #[tokio::test]
    async fn writes_that_progress_never_time_out() {
        let (writer, mut reader) = tokio::io::duplex(4096);
        let mut guarded = StallGuard::new(writer, Duration::from_millis(100));
        let reading = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0u8; 1024];
            while total < 256 * 1024 {
                // A reader slower than the writer, taking about 1 MB/s: far more than
                // the least it must take in each 100 ms.
                tokio::time::sleep(Duration::from_millis(1)).await;
                total += tokio::io::AsyncReadExt::read(&mut reader, &mut buf)
                    .await
                    .expect("read");
            }
            total
        });
        guarded
            .write_all(&vec![1u8; 256 * 1024])
            .await
            .expect("a slow reader is not a stalled one");
        assert_eq!(reading.await.expect("reader"), 256 * 1024);
    }

    #[tokio::test]
    async fn a_reader_that_takes_a_trickle_counts_as_stalled() {
        let (writer, mut reader) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(writer, Duration::from_millis(200));
        tokio::spawn(async move {
            let mut buf = [0u8; 16];
            // 16 bytes every 10 ms: the connection never stops moving, but at 1.6 kB/s it
            // would take 10 s to pass one window's least.
            while tokio::io::AsyncReadExt::read(&mut reader, &mut buf)
                .await
                .is_ok_and(|n| n > 0)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let started = std::time::Instant::now();
        let error = guarded
            .write_all(&vec![1u8; 64 * 1024])
            .await
            .expect_err("cut off");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
