//! Event streams requested the way browsers do (`Accept: text/event-stream`), which the
//! server serves without hyper: framing, resume, disconnects, shutdown, slow clients.

mod common;

use std::time::Duration;

use common::{contains, eventually, mercure::*, raw_get, read_to_close, read_until, TestServer};
use tokio::io::AsyncWriteExt;

const ACCEPT: &str = "Accept: text/event-stream\r\n";

#[tokio::test]
async fn the_counter_is_framed_exactly_and_ends() {
    let server = TestServer::start(&[
        "--stream-count",
        "2",
        "--stream-interval",
        "5ms",
        "--stream-retry",
        "250ms",
    ])
    .await;
    let mut stream = raw_get(server.addr, "/stream", ACCEPT).await;
    let (bytes, closed) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(closed);
    let text = String::from_utf8(bytes).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    assert!(head.contains("x-accel-buffering: no"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(
        dechunk(body),
        "event: new_message\nid: 1\nretry: 250\ndata: Counter value 1\n\n\
         event: new_message\nid: 2\nretry: 250\ndata: Counter value 2\n\n\
         event: end_event\ndata: End of the stream\n\n"
    );
    assert!(body.ends_with("0\r\n\r\n"));
}

/// Decodes a chunked body, checking its framing.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size, 16).expect("hex size");
        if size == 0 {
            assert_eq!(rest, "\r\n");
            return out;
        }
        out.push_str(&rest[..size]);
        assert_eq!(&rest[size..size + 2], "\r\n");
        body = &rest[size + 2..];
    }
}

#[tokio::test]
async fn resumes_and_refuses_like_the_other_path() {
    let server = TestServer::start(&["--stream-count", "5", "--stream-interval", "5ms"]).await;
    let mut resumed = raw_get(
        server.addr,
        "/stream",
        &format!("{ACCEPT}Last-Event-ID: 3\r\n"),
    )
    .await;
    let (bytes, _) = read_to_close(&mut resumed, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("Counter value 3\n"), "{text}");
    assert!(
        text.contains("Counter value 4\n") && text.contains("End of the stream"),
        "{text}"
    );
    let mut refused = raw_get(
        server.addr,
        "/stream",
        &format!("{ACCEPT}Last-Event-ID: 99\r\n"),
    )
    .await;
    let (bytes, closed) = read_to_close(&mut refused, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(closed && text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        text.contains("Last-Event-ID must be a whole number from 0 to 5"),
        "{text}"
    );
}

#[tokio::test]
async fn a_client_that_leaves_is_noticed_at_once() {
    let server = TestServer::start(&["--stream-count", "1000", "--stream-interval", "30s"]).await;
    let metrics = server.state.metrics.counter.clone();
    let mut clients = Vec::new();
    for _ in 0..200 {
        let mut client = raw_get(server.addr, "/stream", ACCEPT).await;
        assert!(contains(
            &read_until(&mut client, b"Counter value 1\n", Duration::from_secs(5)).await,
            b"Counter value 1\n"
        ));
        clients.push(client);
    }
    assert_eq!(metrics.open(), 200);
    drop(clients);
    assert!(
        eventually(Duration::from_secs(1), || async { metrics.open() == 0 }).await,
        "{} still open",
        metrics.open()
    );
}

#[tokio::test]
async fn shutdown_ends_streams_without_end_event() {
    let server = TestServer::start(&["--stream-count", "1000", "--stream-interval", "1s"]).await;
    let mut clients = Vec::new();
    for _ in 0..300 {
        let mut client = raw_get(server.addr, "/stream", ACCEPT).await;
        assert!(contains(
            &read_until(&mut client, b"Counter value 1\n", Duration::from_secs(5)).await,
            b"Counter value 1\n"
        ));
        clients.push(client);
    }
    let took = server.stop().await;
    assert!(took < Duration::from_secs(2), "{took:?}");
    for client in &mut clients {
        let (rest, closed) = read_to_close(client, Duration::from_secs(2)).await;
        assert!(closed);
        assert!(!contains(&rest, b"end_event"));
        assert!(rest.ends_with(b"0\r\n\r\n"));
    }
}

#[tokio::test]
async fn hub_subscriptions_get_updates_and_a_stalled_one_is_dropped() {
    let server = start(&["--subscriber-queue", "8", "--stall-timeout", "500ms"]).await;
    let mut reader = raw_get(server.addr, "/.well-known/mercure?match=%2Ffast", ACCEPT).await;
    assert!(contains(
        &read_until(&mut reader, b":\n\n", Duration::from_secs(5)).await,
        b":\n\n"
    ));
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("small buffer");
    let mut stalled = socket.connect(server.addr).await.expect("connect");
    stalled
        .write_all(
            format!("GET /.well-known/mercure?match=%2Ffast HTTP/1.1\r\nHost: x\r\n{ACCEPT}\r\n")
                .as_bytes(),
        )
        .await
        .expect("send");
    subscribers(&server, 2).await;
    let payload = "p".repeat(60 * 1024);
    for _ in 0..120 {
        let id = publish_ok(&server, &[("topic", "/fast"), ("data", &payload)]).await;
        let seen = read_until(&mut reader, id.as_bytes(), Duration::from_secs(5)).await;
        assert!(
            contains(&seen, id.as_bytes()),
            "the reading subscriber missed {id}"
        );
    }
    let hub = server.state.metrics.hub.clone();
    assert!(
        eventually(Duration::from_secs(10), || async { hub.open() == 1 }).await,
        "the stalled one is still there"
    );
    drop(stalled);
}

/// Updates the fan-out writes straight to the socket count as traffic: a stream that gets
/// them more often than the keep-alive interval gets no keep-alive comments, and one that
/// falls silent gets them again.
#[tokio::test]
async fn direct_writes_hold_off_keep_alive_comments() {
    let server = start(&["--keep-alive", "1s"]).await;
    let mut reader = raw_get(server.addr, "/.well-known/mercure?match=%2Fbusy", ACCEPT).await;
    let greeting = read_until(&mut reader, b":\n\n", Duration::from_secs(5)).await;
    let mut body = body_after_head(&greeting);
    subscribers(&server, 1).await;
    // Three keep-alive intervals of updates, ten an interval.
    let mut last = String::new();
    for n in 0..30 {
        last = publish_ok(&server, &[("topic", "/busy"), ("data", &format!("n={n}"))]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    read_into(&mut reader, &mut body, last.as_bytes()).await;
    let comments = |body: &[u8]| {
        let text = String::from_utf8(dechunk_prefix(body)).expect("utf-8");
        let events: Vec<String> = text.split("\n\n").map(str::to_owned).collect();
        let updates = events.iter().filter(|e| e.contains("data: n=")).count();
        (events.iter().filter(|e| *e == ":").count(), updates)
    };
    let (busy_comments, updates) = comments(&body);
    assert_eq!(updates, 30, "every update arrives");
    assert_eq!(busy_comments, 1, "only the greeting while updates flow");
    // Silent from here on: the keep-alive comes back.
    read_into(&mut reader, &mut body, b"3\r\n:\n\n\r\n").await;
    assert_eq!(comments(&body).0, 2);
}

/// What follows the response head in the bytes read so far.
fn body_after_head(read: &[u8]) -> Vec<u8> {
    let head_len = read
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    read[head_len..].to_vec()
}

/// Decodes the complete chunks at the start of a chunked body; stops at the first
/// incomplete one.
fn dechunk_prefix(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&body[..line_end]).expect("ASCII size line");
        let size = usize::from_str_radix(size, 16).expect("hex size");
        let rest = &body[line_end + 2..];
        if size == 0 || rest.len() < size + 2 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        assert_eq!(&rest[size..size + 2], b"\r\n", "a chunk must end with CRLF");
        body = &rest[size + 2..];
    }
}

/// Reads into `body` until what was read in this call contains `needle`.
async fn read_into(stream: &mut tokio::net::TcpStream, body: &mut Vec<u8>, needle: &[u8]) {
    use tokio::io::AsyncReadExt;
    let start = body.len();
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        // Only the new bytes (and a needle's length before them) need searching.
        let from = body.len().saturating_sub(needle.len()).max(start);
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("the stream stalled")
            .expect("read");
        assert!(read > 0, "the stream ended");
        body.extend_from_slice(&chunk[..read]);
        if contains(&body[from..], needle) {
            return;
        }
    }
}

/// A hub subscriber (`query`) whose small receive buffer fills after a few updates, once
/// its first comment is in; returns it with the body read so far.
async fn slow_subscriber(server: &TestServer, query: &str) -> (tokio::net::TcpStream, Vec<u8>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(8192).expect("small buffer");
    let mut slow = socket.connect(server.addr).await.expect("connect");
    slow.write_all(
        format!("GET /.well-known/mercure?{query} HTTP/1.1\r\nHost: x\r\n{ACCEPT}\r\n").as_bytes(),
    )
    .await
    .expect("send");
    let greeting = read_until(&mut slow, b":\n\n", Duration::from_secs(5)).await;
    assert!(contains(&greeting, b":\n\n"));
    (slow, body_after_head(&greeting))
}

/// Reads into `body` until the event with `last_id` is complete; returns the events so far,
/// decoded from their chunks.
async fn read_through(
    stream: &mut tokio::net::TcpStream,
    body: &mut Vec<u8>,
    last_id: &str,
) -> String {
    let mut decoded = dechunk_prefix(body);
    while !decoded.ends_with(b"\n\n") || !contains(&decoded, last_id.as_bytes()) {
        read_into(stream, body, b"\r\n").await;
        decoded = dechunk_prefix(body);
    }
    String::from_utf8(decoded).expect("utf-8")
}

/// Updates go straight from the fan-out to an idle subscriber's socket; when that socket is
/// full they queue, and the end of a cut-short write goes first. Whatever the mix, every
/// update arrives once, whole, in order, in valid chunks.
#[tokio::test]
async fn direct_and_queued_writes_never_reorder_or_interleave() {
    let server = start(&["--subscriber-queue", "1000", "--stall-timeout", "20s"]).await;
    let (mut slow, mut body) = slow_subscriber(&server, "match=%2Forder").await;

    // Sizes from a few bytes to 60 KiB, 9 MB in all: more than the kernel buffers hold, so
    // some updates fit in the socket whole and some are cut short.
    let mut ids = Vec::new();
    for n in 0..300usize {
        let size = (n * 7919) % (60 * 1024) + 1;
        let data = format!("n={n};{}", "x".repeat(size));
        ids.push(publish_ok(&server, &[("topic", "/order"), ("data", &data)]).await);
        if n % 150 == 149 {
            // Let the socket drain sometimes, so that direct writes happen in between.
            read_into(&mut slow, &mut body, ids[n].as_bytes()).await;
        }
    }
    // The last round of the loop read up to the last id; the rest of its event follows.
    let text = read_through(&mut slow, &mut body, ids.last().expect("ids")).await;
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|event| event.contains("id: "))
        .collect();
    assert_eq!(events.len(), ids.len(), "every update once");
    for (n, (event, id)) in events.iter().zip(&ids).enumerate() {
        assert!(
            event.contains(&format!("id: {id}\n")),
            "update {n} out of order"
        );
        let size = (n * 7919) % (60 * 1024) + 1;
        assert!(
            event.ends_with(&format!("data: n={n};{}", "x".repeat(size))),
            "update {n} damaged"
        );
    }
}

/// Events the counter's clock writes straight to a stream's socket show in `/metrics` as
/// they go out, not only once the stream ends (the stream's own task is not woken for them).
#[tokio::test]
async fn the_clocks_direct_writes_count_in_the_metrics_at_once() {
    let server = TestServer::start(&["--stream-count", "1000", "--stream-interval", "20ms"]).await;
    let metrics = server.state.metrics.counter.clone();
    let mut stream = raw_get(server.addr, "/stream", ACCEPT).await;
    let seen = read_until(&mut stream, b"Counter value 6\n", Duration::from_secs(5)).await;
    assert!(contains(&seen, b"Counter value 6\n"));
    // Messages 2 to 6 went out from the clock; the first, with the head, is the stream's.
    assert!(
        eventually(Duration::from_secs(1), || async { metrics.events() >= 5 }).await,
        "{} events counted while the stream is open",
        metrics.events()
    );
    assert_eq!(metrics.open(), 1);
}

/// The same for the hub: updates the fan-out writes straight to a subscriber's socket are
/// counted as they go out.
#[tokio::test]
async fn the_fan_outs_direct_writes_count_in_the_metrics_at_once() {
    let server = start(&[]).await;
    let metrics = server.state.metrics.hub.clone();
    let mut reader = raw_get(server.addr, "/.well-known/mercure?match=%2Fcounted", ACCEPT).await;
    read_until(&mut reader, b":\n\n", Duration::from_secs(5)).await;
    subscribers(&server, 1).await;
    for n in 0..3 {
        let id = publish_ok(
            &server,
            &[("topic", "/counted"), ("data", &format!("n={n}"))],
        )
        .await;
        let seen = read_until(&mut reader, id.as_bytes(), Duration::from_secs(5)).await;
        assert!(contains(&seen, id.as_bytes()), "missed {id}");
    }
    assert!(
        eventually(Duration::from_secs(1), || async { metrics.events() >= 3 }).await,
        "{} updates counted while the subscriber is connected",
        metrics.events()
    );
    assert_eq!(metrics.open(), 1);
}

/// A replay longer than one write goes out whole before any live update, while the
/// subscriber's socket fills up and updates keep coming.
#[tokio::test]
async fn a_long_replay_is_never_overtaken_by_live_updates() {
    let server = start(&["--subscriber-queue", "1000", "--stall-timeout", "20s"]).await;
    let payload = "r".repeat(6 * 1024);
    let mut ids = Vec::new();
    for n in 0..40 {
        let data = format!("n={n};{payload}");
        ids.push(publish_ok(&server, &[("topic", "/replay"), ("data", &data)]).await);
    }
    let (mut slow, mut body) =
        slow_subscriber(&server, "match=%2Freplay&last_event_id=earliest").await;
    for n in 40..80 {
        let data = format!("n={n};{payload}");
        ids.push(publish_ok(&server, &[("topic", "/replay"), ("data", &data)]).await);
        if n % 8 == 7 {
            // Read a little now and then: the socket drains while updates keep coming.
            read_into(&mut slow, &mut body, b"\n\n").await;
        }
    }
    let text = read_through(&mut slow, &mut body, ids.last().expect("ids")).await;
    let seen: Vec<&str> = text
        .split("\n\n")
        .filter_map(|event| event.lines().find_map(|line| line.strip_prefix("id: ")))
        .collect();
    assert_eq!(
        seen, ids,
        "the replay (40) then the live updates (40), in order"
    );
}
