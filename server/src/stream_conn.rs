//! Event streams over plain HTTP/1.1 without hyper's per-connection buffers.
//!
//! An idle subscriber is the common case (tens of thousands per process), and hyper keeps
//! two 8 KiB buffers and a full connection state machine for each. For a request that is
//! plainly an event-stream subscription (`GET` of a stream route, HTTP/1.1, `Accept:
//! text/event-stream`, complete head in the first packet), the server reads the head itself,
//! runs the request through the same router (same handlers, layers, logs and metrics), and
//! writes the response head and the chunked body straight to the socket. What stays per
//! connection is the response body and a few hundred bytes of state; events that are ready
//! together go out in one vectored write.
//!
//! Anything else (other routes, unusual requests, TLS, HTTP/2) goes to hyper unchanged: the
//! head is only peeked at, never consumed, unless this path takes the request.

use std::{
    io::{self, IoSlice},
    net::SocketAddr,
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo, Router};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tower::ServiceExt;

/// The longest request head this path reads; longer ones go to hyper.
const MAX_HEAD: usize = 4096;
/// The most header lines this path parses; more go to hyper.
const MAX_HEADERS: usize = 32;
/// Routes served here when the request asks for an event stream.
const STREAM_PATHS: [&str; 2] = ["/.well-known/mercure", "/stream"];

/// A request head this path will serve.
pub struct StreamRequest {
    request: Request<Body>,
    head_len: usize,
}

/// Looks at the bytes already received on `stream` without consuming them; returns the
/// request when it is an event-stream subscription this path serves.
pub async fn classify(stream: &TcpStream, peer: SocketAddr) -> Option<StreamRequest> {
    let mut buffer = vec![0u8; MAX_HEAD];
    let peeked = stream.peek(&mut buffer).await.ok()?;
    parse(&buffer[..peeked], peer)
}

fn parse(bytes: &[u8], peer: SocketAddr) -> Option<StreamRequest> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = parsed.parse(bytes).ok()? else {
        return None;
    };
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return None;
    }
    let target = parsed.path?;
    let path = target.split('?').next().unwrap_or(target);
    if !STREAM_PATHS.contains(&path) {
        return None;
    }
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(header.value).ok()?;
        map.append(name, value);
    }
    let wants_stream = map.get_all(header::ACCEPT).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.contains("text/event-stream"))
    });
    let has_body = map.contains_key(header::TRANSFER_ENCODING)
        || map
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    if !wants_stream || has_body || map.contains_key(header::UPGRADE) {
        return None;
    }
    let uri: Uri = target.parse().ok()?;
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = map;
    request.extensions_mut().insert(ConnectInfo(peer));
    Some(StreamRequest { request, head_len })
}

/// Serves `request` on `stream`: consumes its head, answers through `router`, streams the
/// body until it ends, the client leaves, or a write stays blocked for `stall_timeout`.
pub async fn serve(
    mut stream: TcpStream,
    request: StreamRequest,
    router: Router,
    stall_timeout: Duration,
) {
    if let Err(error) = consume(&mut stream, request.head_len).await {
        tracing::debug!(%error, "connection lost before the request was read");
        return;
    }
    // Boxed: the router's future is large and only needed until the response head exists.
    let response = match Box::pin(router.oneshot(request.request)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if let Err(error) = respond(&stream, response, stall_timeout).await {
        tracing::debug!(%error, "event stream connection ended");
    }
}

async fn consume(stream: &mut TcpStream, mut length: usize) -> io::Result<()> {
    let mut sink = [0u8; 512];
    while length > 0 {
        let want = length.min(sink.len());
        let read = tokio::io::AsyncReadExt::read(stream, &mut sink[..want]).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        length -= read;
    }
    Ok(())
}

async fn respond(
    stream: &TcpStream,
    response: Response<Body>,
    stall_timeout: Duration,
) -> io::Result<()> {
    let (parts, mut body) = response.into_parts();
    let known_length = parts.headers.get(header::CONTENT_LENGTH).is_some();
    let head = response_head(parts, known_length);
    write_all(stream, &mut [IoSlice::new(&head)], stall_timeout).await?;
    drop(head);

    let mut probe = [0u8; 64];
    loop {
        tokio::select! {
            biased;
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    if known_length {
                        write_all(stream, &mut [IoSlice::new(&data)], stall_timeout).await?;
                    } else {
                        write_chunk(stream, &data, stall_timeout).await?;
                    }
                }
                Some(Err(error)) => return Err(io::Error::other(error)),
                None => {
                    if !known_length {
                        write_all(stream, &mut [IoSlice::new(b"0\r\n\r\n")], stall_timeout).await?;
                    }
                    return Ok(());
                }
            },
            ready = stream.readable() => {
                ready?;
                // The client sends nothing more on an event stream: data or EOF here means
                // it is done (or misbehaving).
                match stream.try_read(&mut probe) {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => return Err(error),
                }
            }
        }
    }
}

/// The response head: status line, headers, and chunked framing unless the length is known;
/// the connection closes after the response.
fn response_head(parts: http::response::Parts, known_length: bool) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONNECTION || name == header::TRANSFER_ENCODING {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !known_length {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

async fn write_chunk(stream: &TcpStream, data: &Bytes, stall_timeout: Duration) -> io::Result<()> {
    let mut size = [0u8; 18];
    let header_len = chunk_header(data.len(), &mut size);
    write_all(
        stream,
        &mut [
            IoSlice::new(&size[..header_len]),
            IoSlice::new(data),
            IoSlice::new(b"\r\n"),
        ],
        stall_timeout,
    )
    .await
}

/// Writes `{len:x}\r\n` into `out`; returns how many bytes it used.
fn chunk_header(len: usize, out: &mut [u8; 18]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut count = 0;
    loop {
        digits[count] = HEX[n & 0xf];
        count += 1;
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    for i in 0..count {
        out[i] = digits[count - 1 - i];
    }
    out[count] = b'\r';
    out[count + 1] = b'\n';
    count + 2
}

/// Writes every byte of `slices`, waiting for the socket when it is full, and fails when one
/// wait lasts longer than `stall_timeout` (the client stopped reading).
async fn write_all(
    stream: &TcpStream,
    slices: &mut [IoSlice<'_>],
    stall_timeout: Duration,
) -> io::Result<()> {
    let mut slices = slices;
    while !slices.is_empty() {
        match stream.try_write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                match tokio::time::timeout(stall_timeout, stream.writable()).await {
                    Ok(ready) => ready?,
                    Err(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client stopped reading",
                        ))
                    }
                }
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        ([127, 0, 0, 1], 9).into()
    }

    #[test]
    fn takes_event_stream_subscriptions() {
        let head = b"GET /.well-known/mercure?match=%2Ft HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nLast-Event-ID: 7\r\n\r\n";
        let request = parse(head, peer()).expect("a stream request");
        assert_eq!(request.head_len, head.len());
        assert_eq!(request.request.uri().query(), Some("match=%2Ft"));
        assert_eq!(request.request.headers()["last-event-id"], "7");
        let with_extra = [&head[..], b"GET / HTTP/1.1\r\n"].concat();
        assert_eq!(
            parse(&with_extra, peer())
                .expect("a stream request")
                .head_len,
            head.len()
        );
    }

    #[test]
    fn leaves_everything_else_to_hyper() {
        for head in [
            &b"GET / HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n"[..],
            b"GET /stream HTTP/1.1\r\nAccept: text/html\r\n\r\n",
            b"GET /stream HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n",
            b"POST /.well-known/mercure HTTP/1.1\r\nAccept: text/event-stream\r\nContent-Length: 3\r\n\r\n",
            b"GET /stream HTTP/1.1\r\nAccept: text/event-stream\r\nContent-Length: 3\r\n\r\n",
            b"GET /stream HTTP/1.1\r\nAccept: text/event-stream\r\n",
            b"GET /stream HTTP/1.1\r\nAccept: text/event-stream\r\nUpgrade: h2c\r\n\r\n",
            b"\x16\x03\x01 not http",
        ] {
            assert!(parse(head, peer()).is_none(), "{}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn writes_chunk_sizes_in_hex() {
        let mut out = [0u8; 18];
        for (len, expected) in [
            (0, "0\r\n"),
            (9, "9\r\n"),
            (255, "ff\r\n"),
            (4096, "1000\r\n"),
        ] {
            let used = chunk_header(len, &mut out);
            assert_eq!(&out[..used], expected.as_bytes());
        }
    }
}
