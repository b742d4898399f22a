//! The few HTTP/1.1 moves the attacks need, over plain sockets: subscribing as a browser
//! does, reading `data:` lines, publishing on a kept-alive connection.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

/// A connection to `addr` from the loopback address `source`, with a receive buffer of
/// `recv_buffer` bytes when given (a small one makes a reader that stops fill up fast).
pub async fn connect_from(
    source: [u8; 4],
    addr: SocketAddr,
    recv_buffer: Option<u32>,
) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    socket.connect(addr).await
}

/// Sends a subscription request for `query` (already encoded) as an EventSource does.
pub async fn subscribe(stream: &mut TcpStream, query: &str) -> std::io::Result<()> {
    let host = stream.peer_addr()?;
    let head = format!(
        "GET /.well-known/mercure?{query} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await
}

/// The status of the response on `stream` (reading its head), or `None` if the connection
/// closed or stayed silent for 5 s.
pub async fn status(stream: &mut TcpStream) -> Option<u16> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while memchr::memmem::find(&head, b"\r\n\r\n").is_none() && head.len() < 16 * 1024 {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buf[..read]);
    }
    let line = head.split(|&b| b == b'\n').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Form-encodes `text` (everything but unreserved characters escaped).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Microseconds since the epoch: what the publisher stamps an update with.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
        })
}

/// Reads `data:` lines from an event stream as they arrive.
pub struct DataLines {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl DataLines {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            pending: Vec::new(),
        }
    }

    /// The next `data:` line's text; `None` once the stream ends.
    pub async fn next(&mut self) -> Option<String> {
        let mut buf = [0u8; 16 * 1024];
        loop {
            while let Some(end) = memchr::memchr(b'\n', &self.pending) {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                if let Some(data) = line.strip_prefix(b"data: ") {
                    let text = String::from_utf8_lossy(data);
                    return Some(text.trim_end().to_owned());
                }
            }
            let read = self.stream.read(&mut buf).await.ok()?;
            if read == 0 {
                return None;
            }
            self.pending.extend_from_slice(&buf[..read]);
        }
    }
}

/// Publishes over one kept-alive connection, one update at a time.
pub struct Publisher {
    stream: TcpStream,
    token: String,
    host: SocketAddr,
}

impl Publisher {
    pub async fn connect(addr: SocketAddr, token: &str) -> std::io::Result<Self> {
        Ok(Self {
            stream: TcpStream::connect(addr).await?,
            token: token.to_owned(),
            host: addr,
        })
    }

    /// Publishes `data` to `topic`; returns the answer's status.
    pub async fn publish(&mut self, topic: &str, data: &str) -> std::io::Result<u16> {
        let body = format!("topic={}&data={}", encode(topic), encode(data));
        let request = format!(
            "POST /.well-known/mercure HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            self.token,
            body.len()
        );
        self.stream.write_all(request.as_bytes()).await?;
        // The answer: a head with a length, and that many bytes of body.
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = memchr::memmem::find(&answer, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .and_then(|value| value.trim().parse().ok())
                    .unwrap_or(0);
                if answer.len() >= end + 4 + length {
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|code| code.parse().ok())
                        .unwrap_or(0);
                    return Ok(status);
                }
            }
            let read = self.stream.read(&mut buf).await?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            answer.extend_from_slice(&buf[..read]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_a_form() {
        assert_eq!(encode("/a b:c"), "%2Fa%20b%3Ac");
        assert_eq!(encode("safe-_.~09"), "safe-_.~09");
    }

    #[tokio::test]
    async fn reads_data_lines_across_chunks_and_reads() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let writer = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            for part in [
                &b"HTTP/1.1 200 OK\r\n\r\n1a\r\nid: 1\nda"[..],
                b"ta: 12345\n\n\r\n",
                b"e\r\ndata: 678\n\n\r\n",
            ] {
                stream.write_all(part).await.expect("write");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut lines = DataLines::new(stream);
        assert_eq!(lines.next().await.as_deref(), Some("12345"));
        assert_eq!(lines.next().await.as_deref(), Some("678"));
        writer.await.expect("writer");
        assert_eq!(lines.next().await, None, "the stream ended");
    }
}
