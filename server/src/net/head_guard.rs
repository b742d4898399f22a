//! The limits on a connection's first request head, for connections that hyper serves.
//!
//! One deadline, set when the connection is accepted, covers every byte before the first
//! request is parsed: the TLS handshake, HTTP/2's preface and settings, an HTTP/1.1 head
//! however slowly it trickles in. [`HeadGuard`] fails the connection's reads once that
//! deadline passes, until the server says a request arrived ([`HeadDone`]); later heads on
//! a kept-alive HTTP/1.1 connection have hyper's own header timeout, which starts when the
//! connection turns idle.
//!
//! It also measures the first request line: one longer than [`MAX_REQUEST_LINE`] is
//! answered `414 URI Too Long` (hyper itself would only see a head too large for its buffer,
//! `431`) and the connection is closed.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// The longest request line (method, target and version) accepted on a connection's first
/// request.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;

/// What a client whose request line is too long gets.
const URI_TOO_LONG: &[u8] = b"HTTP/1.1 414 URI Too Long\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 29\r\nconnection: close\r\n\r\nthe request line is too long\n";

/// Set by the server when the connection's first request has arrived.
#[derive(Clone, Debug, Default)]
pub struct HeadDone(Arc<AtomicBool>);

impl HeadDone {
    /// A flag not yet set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first request has arrived: the deadline no longer applies.
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

pin_project_lite::pin_project! {
    /// Reads from `inner` until the first request arrives or the deadline passes.
    pub struct HeadGuard<I> {
        #[pin]
        inner: I,
        // Boxed: a connection carries it only until its first request.
        state: Option<Box<State>>,
    }
}

struct State {
    timer: Pin<Box<Sleep>>,
    done: HeadDone,
    /// Bytes of the first line read so far; `None` once its end was seen.
    line: Option<usize>,
}

impl<I> HeadGuard<I> {
    /// Guards `inner` until `done` is set, failing reads after `deadline`.
    pub fn new(inner: I, deadline: Instant, done: HeadDone) -> Self {
        Self {
            inner,
            state: Some(Box::new(State {
                timer: Box::pin(tokio::time::sleep_until(deadline)),
                done,
                line: Some(0),
            })),
        }
    }
}

impl<I: AsyncRead + AsyncWrite> AsyncRead for HeadGuard<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        if this.state.as_ref().is_some_and(|state| state.done.is_set()) {
            *this.state = None;
        }
        let Some(state) = this.state.as_mut() else {
            return this.inner.poll_read(cx, buf);
        };
        let before = buf.filled().len();
        match this.inner.as_mut().poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some(seen) = state.line {
                    let new = &buf.filled()[before..];
                    let end = memchr_newline(new);
                    let line = seen + end.unwrap_or(new.len());
                    match end {
                        Some(_) if line <= MAX_REQUEST_LINE => state.line = None,
                        None if line <= MAX_REQUEST_LINE => state.line = Some(line),
                        _ => {
                            // Best effort, without waiting: the answer is small, and the
                            // socket has just been read from, not written to.
                            let _ = this.inner.as_mut().poll_write(cx, URI_TOO_LONG);
                            let _ = this.inner.as_mut().poll_flush(cx);
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "the request line is too long",
                            )));
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                if state.timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request before the header timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

impl<I: AsyncWrite> AsyncWrite for HeadGuard<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_head_that_trickles_in_is_cut_at_the_deadline() {
        let (mut client, server) = tokio::io::duplex(1024);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut guarded = HeadGuard::new(server, deadline, HeadDone::new());
        let reading = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                match guarded.read(&mut buf).await {
                    Ok(0) => return Ok(Instant::now()),
                    Ok(_) => {}
                    Err(error) => return Err((error.kind(), Instant::now())),
                }
            }
        });
        // A byte every 400 ms, for longer than the deadline (the reader stops taking them).
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Header: y" {
            if client.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        let (kind, at) = reading.await.expect("reader").expect_err("cut off");
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert_eq!(
            at, deadline,
            "at the deadline, not a timeout after the last byte"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn once_the_request_arrived_the_deadline_is_gone() {
        let (mut client, server) = tokio::io::duplex(1024);
        let done = HeadDone::new();
        let mut guarded = HeadGuard::new(
            server,
            Instant::now() + Duration::from_secs(1),
            done.clone(),
        );
        client
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        assert!(guarded.read(&mut buf).await.expect("read") > 0);
        done.set();
        tokio::time::sleep(Duration::from_secs(5)).await;
        client.write_all(b"body").await.expect("write");
        assert_eq!(guarded.read(&mut buf).await.expect("read"), 4);
    }

    #[tokio::test]
    async fn a_request_line_too_long_is_answered_414() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut guarded = HeadGuard::new(
            server,
            Instant::now() + Duration::from_secs(10),
            HeadDone::new(),
        );
        // Its end in the same read as the rest: the length still counts.
        let line = format!(
            "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(MAX_REQUEST_LINE)
        );
        client.write_all(line.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; 64 * 1024];
        let error = loop {
            match guarded.read(&mut buf).await {
                Ok(_) => {}
                Err(error) => break error,
            }
        };
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let mut answer = vec![0u8; URI_TOO_LONG.len()];
        client.read_exact(&mut answer).await.expect("an answer");
        assert!(answer.starts_with(b"HTTP/1.1 414 "));
        // A long header line after a short request line is hyper's to judge (431).
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut guarded = HeadGuard::new(
            server,
            Instant::now() + Duration::from_secs(10),
            HeadDone::new(),
        );
        let head = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(2 * MAX_REQUEST_LINE));
        client.write_all(head.as_bytes()).await.expect("write");
        let mut total = 0;
        while total < head.len() {
            total += guarded.read(&mut buf).await.expect("read");
        }
    }
}
