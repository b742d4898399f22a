//! One SSE subscription: connect from its source address, send the GET, check the head,
//! then parse events until the server ends the stream, an error, or the run stops.
//!
//! Reads go into one buffer per worker thread: wait until the socket is readable, read
//! without blocking, and parse synchronously before the next await. An idle connection
//! thus holds no read buffer, only its parser's small state and its sequence bitmap, which
//! keeps 20 000 connections per process cheap enough that the tool is never the bottleneck.

use std::{
    cell::RefCell,
    io::{self, Read},
    net::SocketAddr,
    rc::Rc,
    time::Duration,
};

use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
use socket2::SockRef;
use tokio::{
    io::{AsyncWriteExt, Interest},
    net::{TcpSocket, TcpStream},
};

use crate::{
    chunked::ChunkedError,
    http1::{self, BodyDecoder, HttpError, ResponseHead},
    payload,
    protocol::{count_failure, Tracking},
    seqtrack::{Delivery, Owed, SeqTracker},
    sse::{Event, SseError, SseHandler, SseParser},
    worker_state::{ConnRecord, Live, WorkerContext},
};

/// Size of the per-thread read buffer.
const READ_BUFFER: usize = 64 * 1024;

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUFFER]);
}

/// Why an established stream ended badly.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("chunked: {0}")]
    Chunked(#[from] ChunkedError),
    #[error("sse: {0}")]
    Sse(#[from] SseError),
}

/// How a connection's stream ended.
enum Ending {
    /// The server ended the body or closed the connection.
    ClosedByServer,
    /// A read or parse error.
    Error(String),
    /// The run stopped.
    Stopped,
}

/// Runs connection number `index` of the run to its end, recording what it saw in `ctx`.
///
/// The caller has counted the attempt already (when it spawned this task), so that a
/// connection not yet polled still counts as pending.
pub(crate) async fn run(index: usize, ctx: Rc<WorkerContext>) {
    let timeout = Duration::from_millis(ctx.spec.connect_timeout_ms);
    let opened = tokio::select! {
        biased;
        () = ctx.stop.cancelled() => Err("stopped while connecting".to_owned()),
        opened = tokio::time::timeout(timeout, open(index, &ctx)) => match opened {
            Ok(opened) => opened,
            Err(_) => Err("timeout".to_owned()),
        },
    };
    let (stream, head, leftover) = match opened {
        Ok(opened) => opened,
        Err(reason) => {
            let mut live = ctx.live.borrow_mut();
            live.connections.failed += 1;
            live.last_settled_ns = payload::unix_nanos();
            count_failure(&mut live.failures, &reason);
            ctx.check_milestones(&mut live);
            return;
        }
    };

    let established_ns = payload::unix_nanos();
    let tracker = match ctx.spec.tracking {
        Tracking::Off => None,
        Tracking::Published => Some(SeqTracker::new(ctx.timeline.borrow().next_seq())),
        Tracking::SequentialIds => Some(SeqTracker::new(1)),
    };
    {
        let mut live = ctx.live.borrow_mut();
        live.connections.established += 1;
        live.last_settled_ns = established_ns;
        let open = live.connections.open();
        live.connections.peak_open = live.connections.peak_open.max(open);
        ctx.check_milestones(&mut live);
    }
    let mut conn = Connection {
        body: BodyDecoder::new(head.framing),
        parser: SseParser::new(ctx.spec.max_event_bytes),
        tracker,
        events: 0,
        established_ns,
    };

    let mut ending = match conn.process(&leftover, &ctx) {
        Ok(true) => Some(Ending::ClosedByServer),
        Ok(false) => None,
        Err(error) => Some(Ending::Error(error.to_string())),
    };
    drop(leftover);
    let ending = match ending.take() {
        Some(ending) => ending,
        None => read_until_end(&stream, &mut conn, &ctx).await,
    };

    let closed_ns = payload::unix_nanos();
    let closed_by_server = matches!(ending, Ending::ClosedByServer);
    let mut live = ctx.live.borrow_mut();
    match ending {
        Ending::ClosedByServer => live.connections.closed_by_server += 1,
        Ending::Stopped => live.connections.open_at_stop += 1,
        Ending::Error(reason) => {
            live.connections.errored += 1;
            count_failure(&mut live.failures, &reason);
        }
    }
    ctx.check_milestones(&mut live);
    drop(live);
    ctx.records.borrow_mut().push(ConnRecord {
        events: conn.events,
        tracker: conn.tracker,
        established_ns,
        closed_ns,
        closed_by_server,
    });
}

/// Connects, sends the request and reads the head; any bytes after the head are returned.
async fn open(
    index: usize,
    ctx: &WorkerContext,
) -> Result<(TcpStream, ResponseHead, Vec<u8>), String> {
    let spec = &ctx.spec;
    let slot = spec.target_slot(index);
    let (Some(target), Some(request)) = (spec.targets.get(slot), ctx.requests.get(slot)) else {
        return Err("no subscribe target".to_owned());
    };
    let target = target.addr;
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|error| io_reason("socket", &error))?;
    if target.is_ipv4() && !spec.source_addrs.is_empty() {
        let source = spec.source_addrs[index % spec.source_addrs.len()];
        // Let connect() pick the port, unique per destination, rather than bind() picking
        // one unique per source address: the kernel hint for bind-before-connect.
        let _ = setsockopt(&socket, IpBindAddressNoPort, &true);
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|error| io_reason("bind", &error))?;
    }
    let mut stream = socket
        .connect(target)
        .await
        .map_err(|error| io_reason("connect", &error))?;
    stream
        .write_all(request)
        .await
        .map_err(|error| io_reason("write", &error))?;
    let mut buf = Vec::with_capacity(1024);
    let head = http1::read_head(&mut stream, &mut buf)
        .await
        .map_err(|error| match error {
            HttpError::Io(error) => io_reason("read", &error),
            other => format!("head: {other}"),
        })?;
    if head.status != 200 {
        return Err(format!("http {}", head.status));
    }
    if !head.event_stream {
        return Err("not text/event-stream".to_owned());
    }
    buf.drain(..head.len);
    Ok((stream, head, buf))
}

/// Reads and parses until the stream ends or the run stops.
async fn read_until_end(stream: &TcpStream, conn: &mut Connection, ctx: &WorkerContext) -> Ending {
    // Made once: a fresh one per wait would join and leave the token's waiter list on every
    // event.
    let stopped = ctx.stop.cancelled();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            () = &mut stopped => return Ending::Stopped,
            ready = stream.readable() => {
                if let Err(error) = ready {
                    return Ending::Error(io_reason("read", &error));
                }
            }
        }
        let step = READ_BUF.with(|shared| match shared.try_borrow_mut() {
            Ok(mut buf) => conn.read_once(stream, &mut buf, ctx),
            // Unreachable (parsing never awaits), but a private buffer is a safe fallback.
            Err(_) => conn.read_once(stream, &mut vec![0; READ_BUFFER], ctx),
        });
        if let Some(ending) = step {
            return ending;
        }
    }
}

/// Reads what the socket holds into `buf` without waiting. A read that leaves room in `buf`
/// emptied the socket, so the socket's readiness is cleared with it: the next wait goes
/// straight to the event loop instead of first failing another read, which would be a
/// second system call for every event. (The clear is skipped if the socket became ready
/// again meanwhile, so no event is missed.)
fn read_now(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let room = buf.len();
    let mut drained = 0;
    let result = stream.try_io(Interest::READABLE, || {
        let read = (&*SockRef::from(stream)).read(buf)?;
        if read > 0 && read < room {
            drained = read;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(read)
    });
    match result {
        Err(error) if error.kind() == io::ErrorKind::WouldBlock && drained > 0 => Ok(drained),
        other => other,
    }
}

/// An established connection's parsing state.
struct Connection {
    body: BodyDecoder,
    parser: SseParser,
    tracker: Option<SeqTracker>,
    events: u64,
    established_ns: u64,
}

impl Connection {
    /// One non-blocking read into `buf` and its parsing; `Some` when the stream ended.
    fn read_once(
        &mut self,
        stream: &TcpStream,
        buf: &mut [u8],
        ctx: &WorkerContext,
    ) -> Option<Ending> {
        match read_now(stream, buf) {
            Ok(0) => Some(Ending::ClosedByServer),
            Ok(read) => match self.process(&buf[..read], ctx) {
                Ok(true) => Some(Ending::ClosedByServer),
                Ok(false) => None,
                Err(error) => Some(Ending::Error(error.to_string())),
            },
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => None,
            Err(error) => Some(Ending::Error(io_reason("read", &error))),
        }
    }

    /// Parses body bytes; returns whether the body ended.
    fn process(&mut self, bytes: &[u8], ctx: &WorkerContext) -> Result<bool, StreamError> {
        if bytes.is_empty() {
            return Ok(false);
        }
        let now_ns = payload::unix_nanos();
        let timeline = ctx.timeline.borrow();
        let mut live = ctx.live.borrow_mut();
        let owed = match ctx.spec.tracking {
            Tracking::Published => Owed::Published {
                timeline: &timeline,
                after_ns: self.established_ns,
                before_ns: u64::MAX,
            },
            Tracking::Off | Tracking::SequentialIds => Owed::Every,
        };
        let mut deliveries = Deliveries {
            events: &mut self.events,
            tracker: self.tracker.as_mut(),
            live: &mut live,
            owed,
            tracking: ctx.spec.tracking,
            now_ns,
        };
        let parser = &mut self.parser;
        self.body
            .feed(bytes, |data: &[u8]| -> Result<(), StreamError> {
                deliveries.live.events.body_bytes += data.len() as u64;
                parser.feed(data, &mut deliveries)?;
                Ok(())
            })
    }
}

/// Counts what the parser dispatches on one connection.
struct Deliveries<'a> {
    events: &'a mut u64,
    tracker: Option<&'a mut SeqTracker>,
    live: &'a mut Live,
    owed: Owed<'a>,
    tracking: Tracking,
    now_ns: u64,
}

impl SseHandler for Deliveries<'_> {
    fn on_event(&mut self, event: &Event<'_>) {
        *self.events += 1;
        let live = &mut *self.live;
        live.events.total += 1;
        live.events.count_type(event.type_name());
        if let Some(stamp) = payload::decode(event.data) {
            live.events.stamped += 1;
            // Only an update's first arrival on this connection says how long delivery
            // took: a duplicate (or one too late to tell from one) would add the time
            // since the first, and an update sent before the connection opened the time
            // before it. The tracker counts those (duplicates, late, early) instead.
            let first = match (self.tracking, self.tracker.as_deref_mut()) {
                (Tracking::Published, Some(tracker)) => {
                    tracker.record(stamp.seq, &self.owed) == Delivery::New
                }
                _ => true,
            };
            if first {
                let micros = match self.now_ns.checked_sub(stamp.sent_ns) {
                    Some(nanos) => nanos / 1000,
                    None => {
                        live.events.negative_latency += 1;
                        0
                    }
                };
                live.latency.record(micros);
                live.interval.record(micros);
            }
        }
        if self.tracking == Tracking::SequentialIds && event.has_id {
            match parse_id(event.last_id) {
                Some(id) => {
                    if let Some(tracker) = self.tracker.as_deref_mut() {
                        tracker.record(id, &Owed::Every);
                    }
                }
                None => live.events.non_numeric_ids += 1,
            }
        }
    }

    fn on_comment(&mut self, _text: &[u8]) {
        self.live.events.comments += 1;
    }

    fn on_retry(&mut self, _millis: u64) {
        self.live.events.retry_fields += 1;
    }
}

/// A decimal id such as `42`.
fn parse_id(id: &[u8]) -> Option<u64> {
    if id.is_empty() || id.len() > 20 {
        return None;
    }
    id.iter().try_fold(0u64, |acc, &digit| {
        if digit.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        } else {
            None
        }
    })
}

/// A short, bounded failure reason: the stage and the errno name (`connect: ECONNREFUSED`).
fn io_reason(stage: &str, error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => format!("{stage}: {:?}", nix::errno::Errno::from_raw(code)),
        None => format!("{stage}: {}", error.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_short_read_clears_readiness_and_the_next_bytes_still_wake() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        let wait = Duration::from_millis(100);

        server.write_all(b"first").await.expect("write");
        client.readable().await.expect("readable");
        let mut buf = [0u8; 128];
        assert_eq!(read_now(&client, &mut buf).expect("read"), 5);
        assert_eq!(&buf[..5], b"first");
        // Drained and cleared: the wait goes to the event loop, without a failing read.
        assert!(tokio::time::timeout(wait, client.readable()).await.is_err());

        server.write_all(b"second!").await.expect("write");
        tokio::time::timeout(Duration::from_secs(5), client.readable())
            .await
            .expect("woken by the next bytes")
            .expect("readable");
        assert_eq!(read_now(&client, &mut buf).expect("read"), 7);

        // A read that fills the buffer may have left bytes: readiness stays.
        server.write_all(&[b'x'; 100]).await.expect("write");
        client.readable().await.expect("readable");
        let mut small = [0u8; 10];
        assert_eq!(read_now(&client, &mut small).expect("read"), 10);
        tokio::time::timeout(wait, client.readable())
            .await
            .expect("still ready")
            .expect("readable");
        assert_eq!(read_now(&client, &mut buf).expect("read"), 90);

        drop(server);
        client.readable().await.expect("readable");
        assert_eq!(read_now(&client, &mut buf).expect("end of stream"), 0);
    }

    #[test]
    fn latency_counts_first_deliveries_only() {
        use crate::{
            payload::Stamp,
            sse::{Event, SseHandler},
            timeline::Timeline,
            worker_state::Live,
        };
        // Updates 1..=5 sent at 100, 200, … ns; the connection opened at 250 with 1 and 2
        // in the log, so it tracks from 3.
        let mut timeline = Timeline::new();
        for i in 1..=5 {
            timeline.push(i * 100);
        }
        let mut live = Live::new().expect("histograms");
        let mut tracker = SeqTracker::new(3);
        let mut events = 0;
        let mut deliveries = Deliveries {
            events: &mut events,
            tracker: Some(&mut tracker),
            live: &mut live,
            owed: Owed::Published {
                timeline: &timeline,
                after_ns: 250,
                before_ns: u64::MAX,
            },
            tracking: Tracking::Published,
            now_ns: 1_000_000,
        };
        let mut data = Vec::new();
        // 2 was sent before the connection opened, 3 comes twice.
        for seq in [2, 3, 3, 4, 5] {
            payload::encode(
                Stamp {
                    seq,
                    sent_ns: seq * 100,
                },
                0,
                &mut data,
            );
            deliveries.on_event(&Event {
                event_type: b"",
                data: &data,
                last_id: b"",
                has_id: false,
            });
        }
        assert_eq!(live.events.stamped, 5);
        assert_eq!(live.latency.count(), 3);
        assert_eq!(live.interval.count(), 3);
        let counts = tracker.finish(Some(5), &Owed::Every);
        assert_eq!((counts.early, counts.duplicates), (1, 1));
    }

    #[test]
    fn parses_decimal_ids_only() {
        assert_eq!(parse_id(b"1"), Some(1));
        assert_eq!(parse_id(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_id(b"18446744073709551616"), None);
        assert_eq!(parse_id(b""), None);
        assert_eq!(parse_id(b"-1"), None);
        assert_eq!(parse_id(b"1a"), None);
        assert_eq!(parse_id(b" 1"), None);
    }

    #[test]
    fn failure_reasons_name_the_errno() {
        let refused = io::Error::from_raw_os_error(111);
        assert_eq!(io_reason("connect", &refused), "connect: ECONNREFUSED");
        let other = io::Error::new(io::ErrorKind::TimedOut, "x");
        assert_eq!(io_reason("read", &other), "read: timed out");
    }
}
