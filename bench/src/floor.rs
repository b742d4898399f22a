//! The floor: about the least a server can do to deliver this benchmark's events, run as a target
//! (`bench floor-server`) and measured exactly like the others.
//!
//! Blocking sockets and plain threads; no framework, no HTTP beyond the request line and
//! `Content-Length`, nothing per subscriber but its socket, and subscribers are never read:
//!
//! - `GET /sub?…`: the response head, then every published event as `data: <body>\n\n`
//!   until the connection closes (no chunked framing).
//! - `POST /pub?…` (keep-alive): answered `200` at once; the body is then written to every
//!   subscriber by [`WRITERS`] threads, each owning a share of the subscribers.
//! - `GET /stream`: the counter job, byte for byte Pulse's events: the first at once with
//!   the head, then one per interval from one ticker thread on the same 25 ms grid as
//!   Pulse's clock, then the end event and the connection closes.
//!
//! What it costs is, in practice, what this machine's loopback TCP costs a server that
//! writes each event to each subscriber with a system call of its own (as every server
//! measured here does): a figure below the floor's is out of reach for such a server here.
//! It serves loopback only and stops when killed.

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{mpsc, Arc, Mutex, PoisonError},
    thread,
    time::{Duration, Instant},
};

/// Threads writing published events, each to its share of the subscribers (one per core
/// here).
pub const WRITERS: usize = 2;
/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// A subscriber whose socket stays full this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// The head of every event-stream response.
const STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\nConnection: close\r\n\r\n";

/// How `/stream` runs (the same settings Pulse gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterSettings {
    /// Messages per stream.
    pub count: u32,
    /// Time between two messages.
    pub interval: Duration,
}

/// A request head: method, target and body length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub target: String,
    pub content_length: usize,
}

/// Parses a complete request head (up to and including the blank line).
pub fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut request = lines.next()?.split(' ');
    let method = request.next()?.to_owned();
    let target = request.next()?.to_owned();
    let mut content_length = 0;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().ok()?;
            }
        }
    }
    Some(Head {
        method,
        target,
        content_length,
    })
}

/// Counter message `n`, as Pulse encodes it.
pub fn counter_message(n: u32) -> Vec<u8> {
    format!("event: new_message\nid: {n}\nretry: 15000\ndata: Counter value {n}\n\n").into_bytes()
}

/// The counter's end event, as Pulse encodes it.
pub const COUNTER_END: &[u8] = b"event: end_event\ndata: End of the stream\n\n";

/// A connection with what was read past the last request.
struct Conn {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Conn {
    /// The next request head and body; `None` when the client closed between requests.
    fn read_request(&mut self) -> io::Result<Option<(Head, Vec<u8>)>> {
        let head_end = loop {
            if let Some(at) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if self.buffer.len() > MAX_HEAD {
                return Err(io::Error::other("request head too long"));
            }
            if self.fill()? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(io::ErrorKind::UnexpectedEof.into())
                };
            }
        };
        let head = parse_head(&self.buffer[..head_end])
            .ok_or_else(|| io::Error::other("malformed request head"))?;
        while self.buffer.len() < head_end + head.content_length {
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        let body = self.buffer[head_end..head_end + head.content_length].to_vec();
        self.buffer.drain(..head_end + head.content_length);
        Ok(Some((head, body)))
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 4096];
        let read = self.stream.read(&mut chunk)?;
        self.buffer.extend_from_slice(&chunk[..read]);
        Ok(read)
    }
}

/// One counter stream.
struct Counting {
    stream: TcpStream,
    next: u32,
    due: Instant,
}

/// What the threads share.
struct Shared {
    /// Subscribers, one share per writer thread.
    shares: Vec<Mutex<Vec<TcpStream>>>,
    /// The writer threads' queues, behind one lock so that every writer gets the updates
    /// of concurrent publishers in the same order.
    writers: Mutex<Vec<mpsc::Sender<Arc<[u8]>>>>,
    counting: Mutex<Vec<Counting>>,
    settings: CounterSettings,
}

/// Listens on `127.0.0.1:port` (0: any free port) and returns the address; the server runs
/// on its own threads until the process ends.
pub fn start(port: u16, settings: CounterSettings) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    let addr = listener.local_addr()?;
    let mut writers = Vec::with_capacity(WRITERS);
    let shared = Arc::new(Shared {
        shares: (0..WRITERS).map(|_| Mutex::new(Vec::new())).collect(),
        writers: Mutex::new(Vec::new()),
        counting: Mutex::new(Vec::new()),
        settings,
    });
    for share in 0..WRITERS {
        let (sender, receiver) = mpsc::channel::<Arc<[u8]>>();
        writers.push(sender);
        let shared = Arc::clone(&shared);
        thread::Builder::new()
            .name(format!("floor-writer-{share}"))
            .spawn(move || write_share(&shared, share, &receiver))?;
    }
    *lock(&shared.writers) = writers;
    let ticker = Arc::clone(&shared);
    thread::Builder::new()
        .name("floor-ticker".into())
        .spawn(move || tick(&ticker))?;
    thread::Builder::new()
        .name("floor-accept".into())
        .spawn(move || accept(&listener, &shared))?;
    Ok(addr)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut subscribers = 0usize;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let mut conn = Conn {
            stream,
            buffer: Vec::new(),
        };
        let Ok(Some((head, body))) = conn.read_request() else {
            continue;
        };
        let path = head.target.split('?').next().unwrap_or_default();
        match (head.method.as_str(), path) {
            ("GET", "/sub") => {
                if conn.stream.write_all(STREAM_HEAD).is_ok() {
                    lock(&shared.shares[subscribers % WRITERS]).push(conn.stream);
                    subscribers += 1;
                }
            }
            ("GET", "/stream") => {
                let mut first = STREAM_HEAD.to_vec();
                first.extend_from_slice(&counter_message(1));
                if conn.stream.write_all(&first).is_ok() {
                    lock(&shared.counting).push(Counting {
                        stream: conn.stream,
                        next: 2,
                        due: Instant::now() + shared.settings.interval,
                    });
                }
            }
            ("POST", "/pub") => {
                let shared = Arc::clone(shared);
                let _ = thread::Builder::new()
                    .name("floor-publisher".into())
                    .spawn(move || publish(conn, body, &shared));
            }
            _ => {
                let _ = conn
                    .stream
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
            }
        }
    }
}

/// Serves one publisher's keep-alive connection.
fn publish(mut conn: Conn, mut body: Vec<u8>, shared: &Shared) {
    let _ = conn.stream.set_read_timeout(None);
    loop {
        if conn
            .stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
        let mut event = Vec::with_capacity(body.len() + 8);
        event.extend_from_slice(b"data: ");
        event.extend_from_slice(&body);
        event.extend_from_slice(b"\n\n");
        let event: Arc<[u8]> = event.into();
        for writer in lock(&shared.writers).iter() {
            let _ = writer.send(Arc::clone(&event));
        }
        body = match conn.read_request() {
            Ok(Some((head, body))) if head.method == "POST" => body,
            _ => return,
        };
    }
}

/// A writer thread: each event to every subscriber of its share, dropping those that fail.
fn write_share(shared: &Shared, share: usize, events: &mpsc::Receiver<Arc<[u8]>>) {
    while let Ok(event) = events.recv() {
        lock(&shared.shares[share]).retain_mut(|stream| stream.write_all(&event).is_ok());
    }
}

/// The wake-up grid for `interval`, as Pulse's clock: a fortieth, 1 ms to 25 ms.
pub fn grid(interval: Duration) -> Duration {
    (interval / 40).clamp(Duration::from_millis(1), Duration::from_millis(25))
}

/// The ticker: each grid step, the next message (or the end) to every counter stream due.
fn tick(shared: &Shared) {
    let interval = shared.settings.interval;
    let grid = grid(interval);
    let epoch = Instant::now();
    let mut step = 0u32;
    loop {
        step = step.saturating_add(1);
        let at = epoch + grid * step;
        let now = Instant::now();
        if at > now {
            thread::sleep(at - now);
        } else {
            // Behind: skip to the next step from now.
            step = u32::try_from((now - epoch).as_nanos() / grid.as_nanos().max(1))
                .unwrap_or(u32::MAX);
        }
        let fired = Instant::now();
        lock(&shared.counting).retain_mut(|counting| {
            if counting.due > fired {
                return true;
            }
            if counting.next > shared.settings.count {
                let _ = counting.stream.write_all(COUNTER_END);
                return false;
            }
            if counting
                .stream
                .write_all(&counter_message(counting.next))
                .is_err()
            {
                return false;
            }
            counting.next += 1;
            let next = counting.due + interval;
            counting.due = if next + grid < fired {
                fired + interval
            } else {
                next
            };
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufRead;

    use super::*;

    #[test]
    fn reads_the_request_line_and_the_body_length() {
        let head = b"POST /pub?id=t HTTP/1.1\r\nHost: x\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(
            parse_head(head),
            Some(Head {
                method: "POST".into(),
                target: "/pub?id=t".into(),
                content_length: 12,
            })
        );
        assert_eq!(
            parse_head(b"GET /sub HTTP/1.1\r\n\r\n").map(|h| h.content_length),
            Some(0)
        );
        assert_eq!(
            parse_head(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            None
        );
        assert_eq!(parse_head(b"\xff\r\n\r\n"), None);
    }

    #[test]
    fn counter_events_match_pulses() {
        assert_eq!(
            counter_message(3),
            b"event: new_message\nid: 3\nretry: 15000\ndata: Counter value 3\n\n"
        );
    }

    fn connect(addr: SocketAddr, request: &str) -> io::BufReader<TcpStream> {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream.write_all(request.as_bytes()).expect("send");
        io::BufReader::new(stream)
    }

    fn read_until_blank(reader: &mut io::BufReader<TcpStream>) -> String {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).expect("read") > 0,
                "closed: {text}"
            );
            text.push_str(&line);
            if line == "\n" || line == "\r\n" {
                return text;
            }
        }
    }

    #[test]
    fn publishes_to_every_subscriber_and_counts_like_pulse() {
        let addr = start(
            0,
            CounterSettings {
                count: 2,
                interval: Duration::from_millis(20),
            },
        )
        .expect("starts");
        let mut subscribers: Vec<_> = (0..3)
            .map(|_| {
                let mut reader = connect(addr, "GET /sub?id=t HTTP/1.1\r\nHost: x\r\n\r\n");
                assert!(read_until_blank(&mut reader).starts_with("HTTP/1.1 200 OK\r\n"));
                reader
            })
            .collect();
        // One accept thread registers each subscriber before it reads the next request,
        // so all three are in before the publish.
        let mut publisher = connect(
            addr,
            "POST /pub?id=t HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        );
        assert!(read_until_blank(&mut publisher).starts_with("HTTP/1.1 200 OK\r\n"));
        for reader in &mut subscribers {
            assert_eq!(read_until_blank(reader), "data: hello\n\n");
        }

        let mut counter = connect(addr, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
        read_until_blank(&mut counter);
        let mut rest = String::new();
        counter.read_to_string(&mut rest).expect("the stream ends");
        assert_eq!(
            rest,
            "event: new_message\nid: 1\nretry: 15000\ndata: Counter value 1\n\n\
             event: new_message\nid: 2\nretry: 15000\ndata: Counter value 2\n\n\
             event: end_event\ndata: End of the stream\n\n"
        );
    }
}
