//! Just enough HTTP/1.1 for loadgen: writing a GET or a POST, parsing a response head, and
//! framing the body (chunked, `Content-Length`, or until close).
//!
//! Written over raw sockets rather than with an HTTP client library because at 20 000
//! subscribers per process a general client's per-connection machinery, buffers and tasks
//! would cost more than the server being measured. Heads are parsed by `httparse`, the
//! parser hyper uses; everything after the head is handled by [`BodyDecoder`].

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::{
    chunked::{ChunkedDecoder, ChunkedError},
    target::Target,
};

/// Largest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest publish-response body read; the body is discarded.
pub const MAX_RESPONSE_BODY: u64 = 1 << 20;
const MAX_HEADERS: usize = 64;
/// The `User-Agent` loadgen sends, so server logs can tell its requests apart.
pub const USER_AGENT: &str = concat!("pulse-loadgen/", env!("CARGO_PKG_VERSION"));

/// Why a response could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The connection ended before the head did.
    #[error("connection closed before a complete response head")]
    Eof,
    /// The head is longer than [`MAX_HEAD`].
    #[error("response head longer than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// The head is not HTTP/1.x.
    #[error("malformed response head: {0}")]
    Parse(#[from] httparse::Error),
    /// `Content-Length` is not a number, or two of them disagree.
    #[error("malformed Content-Length")]
    ContentLength,
    /// The body framing is broken.
    #[error("{0}")]
    Chunked(#[from] ChunkedError),
    /// The body is longer than [`MAX_RESPONSE_BODY`].
    #[error("response body longer than {MAX_RESPONSE_BODY} bytes")]
    BodyTooLarge,
    /// The connection ended inside the body.
    #[error("connection closed inside the response body")]
    TruncatedBody,
    /// A socket error.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// `Content-Length`.
    Length(u64),
    /// Neither: the body ends when the connection does.
    UntilClose,
}

/// The parts of a response head loadgen uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// How the body ends.
    pub framing: Framing,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
    /// Whether `Content-Type` is `text/event-stream`.
    pub event_stream: bool,
    /// Bytes of the buffer the head (and any interim 1xx heads before it) took.
    pub len: usize,
}

/// Writes a GET for an event stream.
pub fn write_get(out: &mut Vec<u8>, target: &Target, headers: &[(String, String)]) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(target.path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(target.host_header.as_bytes());
    out.extend_from_slice(
        b"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: ",
    );
    out.extend_from_slice(USER_AGENT.as_bytes());
    out.extend_from_slice(b"\r\n");
    write_headers(
        out,
        headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    );
    out.extend_from_slice(b"\r\n");
}

/// Writes a POST with `body`.
pub fn write_post<'a>(
    out: &mut Vec<u8>,
    target: &Target,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    content_type: &str,
    body: &[u8],
) {
    use std::io::Write;
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(target.path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(target.host_header.as_bytes());
    out.extend_from_slice(b"\r\nUser-Agent: ");
    out.extend_from_slice(USER_AGENT.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    // Writing to a Vec cannot fail.
    let _ = write!(out, "\r\nContent-Length: {}\r\n", body.len());
    write_headers(out, headers);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

fn write_headers<'a>(out: &mut Vec<u8>, headers: impl IntoIterator<Item = (&'a str, &'a str)>) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses the response head at the start of `buf`: `None` if more bytes are needed.
/// Interim 1xx responses (other than 101) are skipped.
pub fn parse_head(buf: &[u8]) -> Result<Option<ResponseHead>, HttpError> {
    let mut offset = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(&buf[offset..])? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return Ok(None),
        };
        let status = response.code.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            offset += len;
            continue;
        }
        let mut chunked = false;
        let mut other_coding = false;
        let mut length: Option<u64> = None;
        let mut close = false;
        let mut keep_alive_token = false;
        let mut event_stream = false;
        for header in response.headers.iter() {
            let value = String::from_utf8_lossy(header.value);
            if header.name.eq_ignore_ascii_case("transfer-encoding") {
                let last = value.rsplit(',').next().unwrap_or_default().trim();
                chunked = last.eq_ignore_ascii_case("chunked");
                other_coding = !chunked;
            } else if header.name.eq_ignore_ascii_case("content-length") {
                let parsed: u64 = value.trim().parse().map_err(|_| HttpError::ContentLength)?;
                if length.is_some_and(|known| known != parsed) {
                    return Err(HttpError::ContentLength);
                }
                length = Some(parsed);
            } else if header.name.eq_ignore_ascii_case("connection") {
                for token in value.split(',') {
                    close |= token.trim().eq_ignore_ascii_case("close");
                    keep_alive_token |= token.trim().eq_ignore_ascii_case("keep-alive");
                }
            } else if header.name.eq_ignore_ascii_case("content-type") {
                let essence = value.split(';').next().unwrap_or_default().trim();
                event_stream = essence.eq_ignore_ascii_case("text/event-stream");
            }
        }
        let framing = if status == 204 || status == 304 {
            Framing::Length(0)
        } else if chunked {
            Framing::Chunked
        } else if other_coding {
            Framing::UntilClose
        } else if let Some(length) = length {
            Framing::Length(length)
        } else {
            Framing::UntilClose
        };
        let http11 = response.version == Some(1);
        let keep_alive = framing != Framing::UntilClose && !close && (http11 || keep_alive_token);
        return Ok(Some(ResponseHead {
            status,
            framing,
            keep_alive,
            event_stream,
            len: offset + len,
        }));
    }
}

/// Reads from `stream` into `buf` until a whole response head is there; the bytes after
/// it (`buf[head.len..]`) are the start of the body.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<ResponseHead, HttpError> {
    loop {
        if let Some(head) = parse_head(buf)? {
            return Ok(head);
        }
        if buf.len() >= MAX_HEAD {
            return Err(HttpError::HeadTooLarge);
        }
        buf.reserve(1024);
        if stream.read_buf(buf).await? == 0 {
            return Err(HttpError::Eof);
        }
    }
}

/// A response read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Whether the connection can carry the next request.
    pub reusable: bool,
}

/// Reads a whole response (head and body, body discarded); `buf` is scratch space.
pub async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Response, HttpError> {
    buf.clear();
    let head = read_head(stream, buf).await?;
    let mut body = BodyDecoder::new(head.framing);
    let mut received = 0u64;
    let mut count = |data: &[u8]| -> Result<(), HttpError> {
        received += data.len() as u64;
        if received > MAX_RESPONSE_BODY {
            Err(HttpError::BodyTooLarge)
        } else {
            Ok(())
        }
    };
    let mut done = body.feed(&buf[head.len..], &mut count)?;
    while !done {
        buf.clear();
        buf.reserve(8192);
        if stream.read_buf(buf).await? == 0 {
            if head.framing == Framing::UntilClose {
                break;
            }
            return Err(HttpError::TruncatedBody);
        }
        done = body.feed(buf, &mut count)?;
    }
    buf.clear();
    Ok(Response {
        status: head.status,
        reusable: head.keep_alive,
    })
}

/// Hands out the body bytes of a response, whatever its framing.
#[derive(Debug, Clone)]
pub enum BodyDecoder {
    /// Chunked.
    Chunked(ChunkedDecoder),
    /// This many bytes remain.
    Length(u64),
    /// Until the connection ends.
    UntilClose,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`.
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::Chunked => Self::Chunked(ChunkedDecoder::new()),
            Framing::Length(length) => Self::Length(length),
            Framing::UntilClose => Self::UntilClose,
        }
    }

    /// Passes the body bytes in `input` to `sink`; returns whether the body is complete.
    pub fn feed<E: From<ChunkedError>>(
        &mut self,
        input: &[u8],
        mut sink: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<bool, E> {
        match self {
            Self::Chunked(decoder) => decoder.feed(input, sink),
            Self::Length(remaining) => {
                let take =
                    usize::try_from(*remaining).map_or(input.len(), |left| left.min(input.len()));
                if take > 0 {
                    sink(&input[..take])?;
                }
                *remaining -= take as u64;
                Ok(*remaining == 0)
            }
            Self::UntilClose => {
                if !input.is_empty() {
                    sink(input)?;
                }
                Ok(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target::parse(url).unwrap()
    }

    #[test]
    fn writes_a_get() {
        let mut out = Vec::new();
        write_get(
            &mut out,
            &target("http://localhost:3000/sub?id=a%20b"),
            &[("Authorization".into(), "Bearer x".into())],
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /sub?id=a%20b HTTP/1.1\r\nHost: localhost:3000\r\n"));
        assert!(text.contains("\r\nAccept: text/event-stream\r\n"));
        assert!(text.ends_with("\r\nAuthorization: Bearer x\r\n\r\n"));
    }

    #[test]
    fn writes_a_post() {
        let mut out = Vec::new();
        write_post(
            &mut out,
            &target("http://127.0.0.1:8081/pub?id=x"),
            [("X-A", "1")],
            "application/json",
            b"{}",
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("POST /pub?id=x HTTP/1.1\r\nHost: 127.0.0.1:8081\r\n"));
        assert!(text.contains("\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"));
        assert!(text.ends_with("\r\nX-A: 1\r\n\r\n{}"));
    }

    #[test]
    fn parses_an_event_stream_head() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
                    Transfer-Encoding: chunked\r\n\r\n5\r\nhello";
        let head = parse_head(raw).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, Framing::Chunked);
        assert!(head.event_stream);
        assert!(head.keep_alive);
        assert_eq!(&raw[head.len..], b"5\r\nhello");
    }

    #[test]
    fn needs_more_bytes_for_a_partial_head() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap(), None);
        assert_eq!(parse_head(b"").unwrap(), None);
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn frames_bodies() {
        let head = |raw: &[u8]| parse_head(raw).unwrap().unwrap();
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n").framing,
            Framing::Length(12)
        );
        let close = head(b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n");
        assert_eq!(close.framing, Framing::UntilClose);
        assert!(!close.keep_alive);
        assert!(
            !head(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").keep_alive
        );
        assert!(
            head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n")
                .keep_alive
        );
        assert_eq!(
            head(b"HTTP/1.1 204 No Content\r\n\r\n").framing,
            Framing::Length(0)
        );
        assert_eq!(
            head(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n"
            )
            .framing,
            Framing::Chunked
        );
        assert!(!head(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n").event_stream);
        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(HttpError::ContentLength)
        ));
    }

    #[test]
    fn skips_interim_responses() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        let head = parse_head(raw).unwrap().unwrap();
        assert_eq!(head.status, 201);
        assert_eq!(head.len, raw.len());
    }

    #[tokio::test]
    async fn reads_responses_of_every_framing() {
        let cases: [(&[u8], u16, bool); 4] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                200,
                true,
            ),
            (
                b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                202,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
                200,
                false,
            ),
            (
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
                401,
                true,
            ),
        ];
        for (raw, status, reusable) in cases {
            // Deliver one byte per read to exercise every boundary.
            let mut stream = tokio_test_reader(raw);
            let mut buf = Vec::new();
            let response = read_response(&mut stream, &mut buf).await.unwrap();
            assert_eq!(
                response,
                Response { status, reusable },
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[tokio::test]
    async fn a_truncated_body_is_an_error() {
        let mut stream = tokio_test_reader(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort");
        let mut buf = Vec::new();
        assert!(matches!(
            read_response(&mut stream, &mut buf).await,
            Err(HttpError::TruncatedBody)
        ));
        let mut stream = tokio_test_reader(b"HTTP/1.1 200 OK\r\n");
        assert!(matches!(
            read_head(&mut stream, &mut buf).await,
            Err(HttpError::Eof)
        ));
    }

    /// A reader that returns `bytes` one at a time.
    fn tokio_test_reader(bytes: &'static [u8]) -> impl AsyncRead + Unpin {
        struct OneByte(&'static [u8]);
        impl AsyncRead for OneByte {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                if let Some((&first, rest)) = self.0.split_first() {
                    buf.put_slice(&[first]);
                    self.0 = rest;
                }
                std::task::Poll::Ready(Ok(()))
            }
        }
        OneByte(bytes)
    }
}
