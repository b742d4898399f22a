//! Accepting connections and stopping cleanly.
//!
//! Plain TCP speaks HTTP/1.1 (and HTTP/2 with prior knowledge); with a certificate the server
//! speaks TLS and offers HTTP/2 through ALPN, which lets a browser multiplex any number of
//! event streams over one connection instead of six. Every connection gets limits that keep
//! a bad client from holding resources: a deadline for the request head, a cap on its size,
//! and [`StallGuard`], which closes a connection whose client stopped reading.

use std::{
    convert::Infallible,
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
    net::TcpListener,
    time::{Instant, Sleep},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::stream_conn::{self, FirstBytes};

/// How the server treats connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// Serve TLS with this configuration (HTTP/2 and HTTP/1.1 through ALPN).
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Time a client gets to send its request head (and finish a TLS handshake).
    pub header_timeout: Duration,
    /// A connection whose writes make no progress for this long is closed.
    pub stall_timeout: Duration,
    /// The largest request head accepted, in bytes; larger ones get `431`.
    pub max_header_bytes: usize,
    /// How long open connections get to finish once shutdown starts.
    pub shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            tls: None,
            header_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            shutdown_grace: Duration::from_millis(1500),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled; then stops accepting, lets
/// open connections finish (event streams end at once, since they watch the same token) for
/// at most [`ServeOptions::shutdown_grace`], and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> io::Result<()> {
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
        .max_concurrent_streams(256)
        .keep_alive_interval(Duration::from_secs(30));
    let builder = Arc::new(builder);
    let tls = options.tls.clone().map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_error(error).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: Arc::clone(&builder),
            service: TowerToHyperService::new(router.clone().map_request(
                move |mut request: Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request.map(Body::new)
                },
            )),
            watcher: graceful.watcher(),
            peer,
        };
        let guarded = StallGuard::new(stream, options.stall_timeout);
        match &tls {
            None => {
                let first_byte_timeout = options.header_timeout;
                let stall_timeout = options.stall_timeout;
                let router = router.clone();
                tokio::spawn(async move {
                    // Telling an event stream from anything else waits for the first bytes,
                    // and that wait has no deadline of its own: a client that connects and
                    // says nothing must not hold the connection forever.
                    let first = stream_conn::classify(&guarded.inner, peer);
                    match tokio::time::timeout(first_byte_timeout, first).await {
                        Ok(FirstBytes::Stream(request)) => {
                            stream_conn::serve(guarded.inner, request, router, stall_timeout).await;
                        }
                        // Boxed: hyper's connection state is large, and this task should
                        // only be that large for connections that need it.
                        Ok(FirstBytes::Other) => Box::pin(connection.serve(guarded)).await,
                        Ok(FirstBytes::Closed) => {}
                        Ok(FirstBytes::Failed(error)) => {
                            tracing::debug!(%peer, %error, "connection failed");
                        }
                        Err(_) => tracing::debug!(%peer, "no request before the header timeout"),
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let handshake_timeout = options.header_timeout;
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(guarded)).await {
                        Ok(Ok(stream)) => connection.serve(stream).await,
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }

    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "no longer accepting; closing connections"
    );
    if tokio::time::timeout(options.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period; dropping them");
    }
    Ok(())
}

/// Errors from `accept` concern one connection, except running out of file descriptors,
/// where waiting a little beats spinning.
async fn accept_error(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) {
        return;
    }
    tracing::warn!(%error, "accept failed; pausing 50 ms");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// One accepted connection, ready to be served over plain TCP or TLS.
struct Connection<S> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: TowerToHyperService<S>,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
}

impl<S> Connection<S>
where
    S: tower::Service<Request<Incoming>, Response = axum::response::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let connection = self
            .builder
            .serve_connection(TokioIo::new(io), self.service);
        if let Err(error) = self.watcher.watch(connection).await {
            tracing::debug!(peer = %self.peer, %error, "connection ended with an error");
        }
    }
}

pin_project_lite::pin_project! {
    /// Closes a connection whose client stopped reading: when a write cannot make progress
    /// for `limit`, the write fails with `TimedOut` and the server drops the connection
    /// (a subscriber dropped this way can come back with `Last-Event-ID`). The timer exists
    /// only while a write is blocked.
    pub struct StallGuard<I> {
        #[pin]
        pub(crate) inner: I,
        limit: Duration,
        timer: Option<Pin<Box<Sleep>>>,
        blocked: bool,
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
        }
    }
}

impl<I: AsyncWrite> StallGuard<I> {
    fn guard<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut I>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let this = self.project();
        if let Poll::Ready(result) = op(this.inner, cx) {
            *this.blocked = false;
            return Poll::Ready(result);
        }
        let deadline = Instant::now() + *this.limit;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !*this.blocked {
            *this.blocked = true;
            timer.as_mut().reset(deadline);
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading",
        )))
    }
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

impl<I: AsyncWrite> AsyncWrite for StallGuard<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.guard(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.guard(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guard(cx, AsyncWrite::poll_flush)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.guard(cx, AsyncWrite::poll_shutdown)
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
        let (writer, mut reader) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(writer, Duration::from_millis(50));
        let reading = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0u8; 16];
            while total < 8192 {
                // A slow reader: each read lets a little more through.
                tokio::time::sleep(Duration::from_millis(1)).await;
                total += tokio::io::AsyncReadExt::read(&mut reader, &mut buf)
                    .await
                    .expect("read");
            }
            total
        });
        guarded
            .write_all(&[1u8; 8192])
            .await
            .expect("a slow reader is not a stalled one");
        assert_eq!(reading.await.expect("reader"), 8192);
    }
}
