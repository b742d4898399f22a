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
    future::Future,
    io::{self, Read},
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, extract::ConnectInfo, Router};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use socket2::SockRef;
use tokio::{
    io::{Interest, ReadBuf},
    net::TcpStream,
};

use crate::{
    stream::sink::{write_now, Direct, Part, Rest, Sink},
    wire::chunk::{chunk_header, LAST_CHUNK},
};
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

/// What a new connection's first bytes say.
// Handed over once, at once: a box would cost an allocation per connection for nothing.
#[allow(clippy::large_enum_variant)]
pub enum FirstBytes {
    /// An event-stream subscription this path serves.
    Stream(StreamRequest),
    /// Anything else, for hyper (the bytes are still unread).
    Other,
    /// The client closed the connection before sending anything.
    Closed,
    /// The socket failed.
    Failed(io::Error),
}

/// Waits for the first bytes on `stream` and looks at them without consuming them.
pub async fn classify(stream: &TcpStream, peer: SocketAddr) -> FirstBytes {
    // The buffer lives on the stack for one poll only, never in the connection's future.
    std::future::poll_fn(|cx| {
        let mut buffer = [0u8; MAX_HEAD];
        let mut peeked = ReadBuf::new(&mut buffer);
        match stream.poll_peek(cx, &mut peeked) {
            Poll::Ready(Ok(0)) => Poll::Ready(FirstBytes::Closed),
            Poll::Ready(Ok(_)) => Poll::Ready(
                parse(peeked.filled(), peer).map_or(FirstBytes::Other, FirstBytes::Stream),
            ),
            Poll::Ready(Err(error)) => Poll::Ready(FirstBytes::Failed(error)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
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
    // This path takes only heads hyper would take the same way; anything it would judge
    // otherwise (a body, conflicting or odd lengths, an upgrade, `Expect`) goes to hyper,
    // so both paths give every head the same verdict.
    let mut lengths = map.get_all(header::CONTENT_LENGTH).iter();
    let length_ok = match (lengths.next(), lengths.next()) {
        (None, _) => true,
        (Some(length), None) => length.as_bytes() == b"0",
        (Some(_), Some(_)) => false,
    };
    if !wants_stream
        || !length_ok
        || map.contains_key(header::TRANSFER_ENCODING)
        || map.contains_key(header::UPGRADE)
        || map.contains_key(header::EXPECT)
    {
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
///
/// The returned future lives as long as the stream, once per open connection, so it is kept
/// small: the request and the router run in a boxed future that is gone once the response
/// head exists, buffers live on the stack inside synchronous steps, and the rare waits for
/// a full socket are boxed. (An `async fn` would keep its arguments, the whole request,
/// for its whole life.)
pub fn serve(
    stream: TcpStream,
    request: StreamRequest,
    router: Router,
    stall_timeout: Duration,
) -> impl Future<Output = ()> + Send {
    let answering = Box::pin(answer(stream, request, router));
    async move {
        let Some((stream, response)) = answering.await else {
            return;
        };
        let stream = Arc::new(stream);
        let (body, head, known_length, direct) = split(response);
        let out = Out {
            stream: &stream,
            known_length,
            direct: direct.as_deref(),
        };
        let outcome = respond(out, body, head, stall_timeout).await;
        let stalled = match &outcome {
            Err(error) => {
                tracing::debug!(%error, "event stream connection ended");
                error.kind() == io::ErrorKind::TimedOut
            }
            Ok(()) => false,
        };
        if let Some(sink) = direct {
            sink.detach();
            if stalled || sink.stalled() {
                abort(&stream);
            }
        } else if stalled {
            abort(&stream);
        }
    }
}

/// Makes closing `stream` reset it: what the kernel still holds for a client that reads
/// too slowly is dropped at once (it would otherwise trickle out for as long as the client
/// takes, holding the memory), and the client, told so, reconnects and resumes.
pub fn abort(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// Consumes the request head from the socket and answers the request through `router`.
async fn answer(
    stream: TcpStream,
    request: StreamRequest,
    router: Router,
) -> Option<(TcpStream, Response<Body>)> {
    let StreamRequest { request, head_len } = request;
    if let Err(error) = consume(&stream, head_len).await {
        tracing::debug!(%error, "connection lost before the request was read");
        return None;
    }
    match router.oneshot(request).await {
        Ok(response) => Some((stream, response)),
        Err(never) => match never {},
    }
}

/// The body, the encoded head, whether the length is known, and the sink that takes
/// direct writes (for a chunked hub stream).
fn split(response: Response<Body>) -> (Body, Vec<u8>, bool, Option<Arc<Sink>>) {
    let (mut parts, body) = response.into_parts();
    let known_length = parts.headers.get(header::CONTENT_LENGTH).is_some();
    let direct = parts
        .extensions
        .remove::<Direct>()
        .filter(|_| !known_length)
        .map(|Direct(sink)| sink);
    (
        body,
        response_head(parts, known_length),
        known_length,
        direct,
    )
}

/// Reads and drops the request head's `length` bytes (already received: they were peeked).
async fn consume(stream: &TcpStream, mut length: usize) -> io::Result<()> {
    loop {
        length = consume_now(stream, length)?;
        if length == 0 {
            return Ok(());
        }
        stream.readable().await?;
    }
}

/// Reads what it can of `length` bytes without waiting; returns how many are left.
///
/// It asks for one byte more than is left: the stream ignores whatever a client sends after
/// the head, and a read that comes back short has emptied the socket, so the socket's read
/// readiness is cleared with it. The stream's first look for the client leaving then waits
/// for the event loop instead of failing a read first.
fn consume_now(stream: &TcpStream, mut length: usize) -> io::Result<usize> {
    let mut sink = [0u8; 512];
    while length > 0 {
        let want = (length + 1).min(sink.len());
        let mut emptied = 0;
        let read = stream.try_io(Interest::READABLE, || {
            let read = (&*SockRef::from(stream)).read(&mut sink[..want])?;
            if read > 0 && read < want {
                emptied = read;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(read)
        });
        match read {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(read) => length = length.saturating_sub(read),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                return Ok(length.saturating_sub(emptied));
            }
            Err(error) => return Err(error),
        }
    }
    Ok(length)
}

/// What the stream waits for next.
enum Next {
    /// Events to send; `end` when the body has nothing after them.
    Data { data: Bytes, end: bool },
    /// The body ended.
    End,
    /// The client closed its side.
    ClientGone,
    /// The end of a direct write, already framed.
    Leftover(Rest),
}

/// Where a response goes.
#[derive(Clone, Copy)]
struct Out<'a> {
    stream: &'a Arc<TcpStream>,
    known_length: bool,
    /// Takes direct writes from the hub between the task's own.
    direct: Option<&'a Sink>,
}

impl Out<'_> {
    /// Writes `parts` without waiting (under the sink's lock, when there is one); returns
    /// what the socket did not take. After it, direct writes may go on unless `done`.
    fn write(&self, parts: &[Part<'_>], done: bool) -> io::Result<Option<Rest>> {
        match self.direct {
            None => write_now(self.stream, parts),
            Some(sink) => sink.write((!done).then_some(self.stream), || {
                write_now(self.stream, parts)
            }),
        }
    }

    /// Waits until `rest` (what a write left over, if anything) is written.
    async fn finish(&self, rest: Option<Rest>, stall_timeout: Duration) -> io::Result<()> {
        let Some(rest) = rest else { return Ok(()) };
        // Boxed: rare, and the wait's timer would otherwise sit in every stream's future.
        Box::pin(write_rest(self.stream, rest, stall_timeout)).await?;
        if let Some(sink) = self.direct {
            sink.written();
        }
        Ok(())
    }
}

async fn respond(
    out: Out<'_>,
    mut body: Body,
    head: Vec<u8>,
    stall_timeout: Duration,
) -> io::Result<()> {
    // The first events are usually ready at once (a stream's greeting or replay, the
    // counter's first message): they go out with the head, in one write.
    let mut head = Some(head);
    let first = std::future::poll_fn(|cx| Poll::Ready(poll_next(out, &mut body, cx))).await;
    let mut next = match first {
        Poll::Ready(next) => next?,
        Poll::Pending => {
            let rest = out.write(&[Part::Slice(&head.take().unwrap_or_default())], false)?;
            out.finish(rest, stall_timeout).await?;
            std::future::poll_fn(|cx| poll_next(out, &mut body, cx)).await?
        }
    };
    loop {
        // Synchronous: the write's parts never live in this (long-lived) future.
        let (rest, done) = write_next(out, head.take(), next)?;
        out.finish(rest, stall_timeout).await?;
        if done {
            return Ok(());
        }
        next = std::future::poll_fn(|cx| poll_next(out, &mut body, cx)).await?;
    }
}

/// Writes `next` (after `head`, when given) without waiting; returns what the socket did
/// not take, and whether the response is over.
fn write_next(out: Out<'_>, head: Option<Vec<u8>>, next: Next) -> io::Result<(Option<Rest>, bool)> {
    let head = head.unwrap_or_default();
    match next {
        Next::Data { data, end } => {
            let mut size = [0u8; 18];
            let [size, chunk_end, last] = frame_parts(&data, out.known_length, end, &mut size);
            let parts = [
                Part::Slice(&head),
                Part::Slice(size),
                Part::Shared(&data),
                Part::Slice(chunk_end),
                Part::Slice(last),
            ];
            let rest = out.write(&parts, end)?;
            Ok((rest, end))
        }
        Next::Leftover(leftover) => {
            // A direct write's end is one part (its chunk's), plus the head before it.
            let mut parts = vec![Part::Slice(&head)];
            parts.extend(leftover.iter().map(Part::Shared));
            Ok((out.write(&parts, false)?, false))
        }
        Next::End => {
            let last: &[u8] = if out.known_length { b"" } else { LAST_CHUNK };
            Ok((
                out.write(&[Part::Slice(&head), Part::Slice(last)], true)?,
                true,
            ))
        }
        Next::ClientGone => Ok((None, true)),
    }
}

/// The framing around `data`: chunk size line, chunk end, and the last chunk when `end`
/// (all empty when the length is known).
fn frame_parts<'a>(
    data: &[u8],
    known_length: bool,
    end: bool,
    size: &'a mut [u8; 18],
) -> [&'a [u8]; 3] {
    if known_length {
        return [b"", b"", b""];
    }
    let last: &[u8] = if end { LAST_CHUNK } else { b"" };
    if data.is_empty() {
        return [b"", b"", last];
    }
    let used = chunk_header(data.len(), size);
    [&size[..used], b"\r\n", last]
}

/// Polls the body for events, then the socket for the client leaving (biased to events, so
/// a client that leaves still gets what was ready).
fn poll_next(out: Out<'_>, body: &mut Body, cx: &mut Context<'_>) -> Poll<io::Result<Next>> {
    // What a direct write left over goes first: it is the end of an event.
    if let Some(leftover) = out.direct.and_then(|sink| sink.poll_leftover(cx)) {
        return Poll::Ready(Ok(Next::Leftover(leftover)));
    }
    let stream = out.stream;
    loop {
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let end = body.is_end_stream();
                if data.is_empty() && !end {
                    continue;
                }
                return Poll::Ready(Ok(Next::Data { data, end }));
            }
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(io::Error::other(error))),
            Poll::Ready(None) => return Poll::Ready(Ok(Next::End)),
            Poll::Pending => break,
        }
    }
    // The client sends nothing more on an event stream: data or EOF means it is done (or
    // misbehaving). The socket's own reader slot is used rather than a `readable()` future,
    // which would join and leave the socket's waiter list on every event.
    while let Poll::Ready(ready) = stream.poll_read_ready(cx) {
        ready?;
        let mut probe = [0u8; 64];
        match stream.try_read(&mut probe) {
            Ok(0) => return Poll::Ready(Ok(Next::ClientGone)),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Poll::Ready(Err(error)),
        }
    }
    Poll::Pending
}

/// The least a client must read in each stall timeout while a write waits for it: less is
/// a client that stopped reading, or reads so slowly that it only holds the connection.
pub const MIN_PROGRESS: usize = 16 * 1024;

/// Writes all of `rest`, waiting for the socket when it is full, and fails when the client
/// reads less than [`MIN_PROGRESS`] (or what is left, if less) in one `stall_timeout`.
async fn write_rest(stream: &TcpStream, rest: Rest, stall_timeout: Duration) -> io::Result<()> {
    let total: usize = rest.iter().map(Bytes::len).sum();
    let mut left = total;
    let mut window = tokio::time::Instant::now() + stall_timeout;
    let mut owed = MIN_PROGRESS.min(left);
    for part in rest {
        let mut offset = 0;
        while offset < part.len() {
            match tokio::time::timeout_at(window, stream.writable()).await {
                Ok(ready) => ready?,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading, or reads too little",
                    ))
                }
            }
            match stream.try_write(&part[offset..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    offset += written;
                    left -= written;
                    owed = owed.saturating_sub(written);
                    if owed == 0 {
                        // Enough for this window: the next one starts now.
                        window = tokio::time::Instant::now() + stall_timeout;
                        owed = MIN_PROGRESS.min(left);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(())
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

#[cfg(test)]
pub(crate) mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    fn peer() -> SocketAddr {
        ([127, 0, 0, 1], 9).into()
    }

    /// Both ends of a loopback connection: the client's, and the server's.
    pub(crate) async fn connected() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    #[tokio::test]
    async fn consuming_the_head_empties_the_socket_and_clears_its_readiness() {
        let (mut client, server) = connected().await;
        let head = b"GET /stream HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n";
        client.write_all(head).await.expect("write");
        server.readable().await.expect("readable");
        assert_eq!(consume_now(&server, head.len()).expect("consume"), 0);
        // Nothing is left, and the socket says so without a failing read.
        let wait = Duration::from_millis(100);
        assert!(tokio::time::timeout(wait, server.readable()).await.is_err());
        // Whatever the client sends next still wakes the stream.
        client.write_all(b"more").await.expect("write");
        tokio::time::timeout(Duration::from_secs(5), server.readable())
            .await
            .expect("woken")
            .expect("readable");
    }

    #[tokio::test]
    async fn consuming_a_head_cut_in_two_waits_for_its_end() {
        let (mut client, server) = connected().await;
        let head = [b'x'; 700];
        client.write_all(&head[..300]).await.expect("write");
        server.readable().await.expect("readable");
        assert_eq!(consume_now(&server, head.len()).expect("consume"), 400);
        client.write_all(&head[300..]).await.expect("write");
        tokio::time::timeout(Duration::from_secs(5), consume(&server, 400))
            .await
            .expect("the rest arrives")
            .expect("consumed");
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
            b"GET /stream HTTP/1.1\r\nAccept: text/event-stream\r\nContent-Length: 0\r\nContent-Length: 3\r\n\r\n",
            b"GET /stream HTTP/1.1\r\nAccept: text/event-stream\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            b"GET /stream HTTP/1.1\r\nAccept: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /stream HTTP/1.1\r\nAccept: text/event-stream\r\nExpect: 100-continue\r\n\r\n",
            b"\x16\x03\x01 not http",
        ] {
            assert!(parse(head, peer()).is_none(), "{}", String::from_utf8_lossy(head));
        }
    }

    /// What hyper makes of `head` (as the server configures it for HTTP/1.1): the request
    /// it hands to the service, or `None` when it refuses the head or waits for more.
    fn hyper_reads(head: &[u8]) -> Option<http::request::Parts> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let (sender, received) = tokio::sync::oneshot::channel();
            let sender = std::sync::Mutex::new(Some(sender));
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    if let Some(sender) = sender.lock().ok().and_then(|mut slot| slot.take()) {
                        let _ = sender.send(request.into_parts().0);
                    }
                    async {
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Empty::<
                            Bytes,
                        >::new(
                        )))
                    }
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.max_buf_size(16 * 1024);
            let connection =
                builder.serve_connection(hyper_util::rt::TokioIo::new(server), service);
            tokio::spawn(connection);
            client.write_all(head).await.ok()?;
            tokio::time::timeout(Duration::from_millis(500), received)
                .await
                .ok()?
                .ok()
        })
    }

    /// Heads built from parts that matter to either parser, some of them broken.
    fn heads() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        // Weighted towards what the fast path takes, so that most cases reach hyper.
        let method = prop_oneof![
            12 => Just("GET"),
            1 => Just("get"),
            1 => Just("POST"),
            1 => Just("HEAD"),
            1 => Just("GET GET"),
            1 => Just("G\u{0}T"),
            1 => Just("CONNECT"),
        ];
        let target = prop_oneof![
            6 => Just("/stream"),
            6 => Just("/.well-known/mercure?match=%2Fa&match_urlpattern=%2F%3Ax"),
            2 => Just("/stream?lastEventId=3"),
            1 => Just("/stream#x"),
            1 => Just("/stream?x=\u{e9}"),
            1 => Just("*"),
            1 => Just("http://h/stream"),
            1 => Just("/str eam"),
            1 => Just("/stream?%ZZ"),
            1 => Just("/stream/"),
            1 => Just("//stream"),
        ];
        let version = prop_oneof![
            12 => Just("HTTP/1.1"),
            1 => Just("HTTP/1.0"),
            1 => Just("HTTP/2.0"),
            1 => Just("HTTP/1.10"),
            1 => Just("http/1.1"),
            1 => Just("HTTP/1.1 "),
        ];
        let header = prop_oneof![
            Just("Host: x"),
            Just("Host: a\",b"),
            Just("Accept: text/event-stream"),
            Just("accept: text/html, text/event-stream"),
            Just("Accept: text/event-stream;q=0"),
            Just("Content-Length: 0"),
            Just("Content-Length: 5"),
            Just("Content-Length: +0"),
            Just("Content-Length: 00"),
            Just("Content-Length:0"),
            Just("Content-Length: 0, 0"),
            Just("Transfer-Encoding: chunked"),
            Just("Transfer-Encoding: identity"),
            Just("Upgrade: h2c"),
            Just("Connection: upgrade"),
            Just("Expect: 100-continue"),
            Just("Last-Event-ID: 7"),
            Just("X-Folded: a\r\n b"),
            Just("Bad Name: x"),
            Just("X-Empty:"),
            Just("X-Ctl: a\u{1}b"),
            Just("X-High: \u{e9}"),
            Just(":authority: x"),
            Just("X-Tab:\tv"),
        ];
        (
            method,
            target,
            version,
            proptest::collection::vec(header, 0..6),
            proptest::bool::weighted(0.9),
            proptest::bool::weighted(0.2),
        )
            .prop_map(|(method, target, version, headers, accept, bare_lf)| {
                let eol = if bare_lf { "\n" } else { "\r\n" };
                let mut head = format!("{method} {target} {version}{eol}");
                if accept {
                    head.push_str("Accept: text/event-stream");
                    head.push_str(eol);
                }
                for header in headers {
                    head.push_str(header);
                    head.push_str(eol);
                }
                head.push_str(eol);
                head.into_bytes()
            })
    }

    /// A head the fast path takes, with a few bytes changed, inserted or removed.
    fn mutated_heads() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let valid = b"GET /.well-known/mercure?match=%2Fa HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nLast-Event-ID: 7\r\n\r\n".to_vec();
        proptest::collection::vec((0..valid.len(), any::<u8>(), 0..3u8), 1..4).prop_map(
            move |edits| {
                let mut head = valid.clone();
                for (at, byte, edit) in edits {
                    let at = at.min(head.len() - 1);
                    match edit {
                        0 => head[at] = byte,
                        1 => head.insert(at, byte),
                        _ => {
                            head.remove(at);
                        }
                    }
                }
                head
            },
        )
    }

    /// The property: whatever the fast path takes, hyper takes too, as the same request.
    fn same_verdict(head: &[u8]) -> Result<(), proptest::test_runner::TestCaseError> {
        let Some(ours) = parse(head, peer()) else {
            return Ok(());
        };
        let theirs = hyper_reads(head);
        proptest::prop_assert!(
            theirs.is_some(),
            "the fast path took what hyper refuses: {:?}",
            String::from_utf8_lossy(head)
        );
        let theirs = theirs.expect("checked");
        let (ours, _) = ours.request.into_parts();
        proptest::prop_assert_eq!(&ours.method, &theirs.method);
        proptest::prop_assert_eq!(&ours.uri, &theirs.uri);
        proptest::prop_assert_eq!(ours.version, theirs.version);
        proptest::prop_assert_eq!(&ours.headers, &theirs.headers);
        Ok(())
    }

    /// Runs [`same_verdict`] on `cases` heads from `strategy`; returns how many of them the
    /// fast path took (so that a test can check it tried enough).
    fn check_heads(
        strategy: impl proptest::strategy::Strategy<Value = Vec<u8>>,
        cases: u32,
    ) -> usize {
        let taken = std::cell::Cell::new(0);
        let mut runner = proptest::test_runner::TestRunner::new(
            proptest::test_runner::Config::with_cases(cases),
        );
        let outcome = runner.run(&strategy, |head| {
            if parse(&head, peer()).is_some() {
                taken.set(taken.get() + 1);
            }
            same_verdict(&head)
        });
        if let Err(failure) = outcome {
            panic!("{failure}");
        }
        taken.get()
    }

    #[test]
    fn the_fast_path_takes_only_heads_hyper_takes_the_same_way() {
        // About one head in ten reaches the fast path (between 34 and 65 of 512 in 50
        // runs): 2,048 cases make 120 a bound no honest run falls under.
        let taken = check_heads(heads(), 2048);
        assert!(
            taken > 120,
            "only {taken} of 2,048 heads reached the fast path"
        );
    }

    #[test]
    fn mutated_heads_get_the_same_verdict_too() {
        // About one head in ten reaches the fast path (between 34 and 65 of 512 in 50
        // runs): 2,048 cases make 120 a bound no honest run falls under.
        let taken = check_heads(mutated_heads(), 2048);
        assert!(
            taken > 120,
            "only {taken} of 2,048 heads reached the fast path"
        );
    }
}
