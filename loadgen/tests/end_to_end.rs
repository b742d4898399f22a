//! loadgen against a tiny SSE server of known behaviour on 127.0.0.1, checking that every
//! count comes out exactly: once with workers as threads through the library, once with
//! worker processes through the binary.
//!
//! The server, written on raw sockets so that each byte it sends is known:
//! - `GET /count?n=N&interval_ms=M[&skip=K][&twice=K]`: a chunked stream of `tick` events
//!   with ids 1..=N (leaving out id `skip`, sending id `twice` two times), then `end_event`,
//!   then the end of the body (like Pulse's `/stream`).
//! - `GET /subscribe?topic=T[&twice=1]`: a close-delimited stream with CRLF line endings and
//!   keep-alive comments, one event per update published to T (sse-starlette's contract),
//!   or two with `twice`.
//! - `POST /publish?topic=T[&delay_ms=M]`: publishes the body to T; `204`, after M ms.
//!   `POST /fail`: `500`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use loadgen::{config::Plan, protocol::Tracking, Cli, Launch, Report};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::broadcast,
};

type Topics = Arc<Mutex<HashMap<String, broadcast::Sender<Vec<u8>>>>>;

/// Starts the server on a thread of its own; returns its address.
fn start_server() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let topics = Topics::default();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(serve(stream, Arc::clone(&topics)));
            }
        });
    });
    rx.recv().unwrap()
}

/// Reads one request: its first line and body.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    loop {
        if let Some(end) = buf.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|value| value.parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                if stream.read_buf(buf).await.ok()? == 0 {
                    return None;
                }
            }
            let body = buf[end + 4..end + 4 + length].to_vec();
            buf.drain(..end + 4 + length);
            let first = head.lines().next().unwrap_or_default().to_owned();
            return Some((first, body));
        }
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

fn query(target: &str) -> HashMap<String, String> {
    target
        .split_once('?')
        .map(|(_, query)| query)
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

async fn serve(mut stream: TcpStream, topics: Topics) {
    let mut buf = Vec::new();
    while let Some((line, body)) = read_request(&mut stream, &mut buf).await {
        let target = line.split(' ').nth(1).unwrap_or("/").to_owned();
        let params = query(&target);
        let number = |key: &str| params.get(key).and_then(|value| value.parse::<u64>().ok());
        let topic = params.get("topic").cloned().unwrap_or_default();
        if line.starts_with("GET /count") {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await;
            let interval = Duration::from_millis(number("interval_ms").unwrap_or(10));
            for id in 1..=number("n").unwrap_or(5) {
                if Some(id) == number("skip") {
                    continue;
                }
                let event = format!("event: tick\nid: {id}\nretry: 1000\ndata: tick {id}\n\n");
                let times = if Some(id) == number("twice") { 2 } else { 1 };
                for _ in 0..times {
                    // Split each event over two chunks, mid-line.
                    let (a, b) = event.as_bytes().split_at(7);
                    let _ = stream.write_all(&[chunk(a), chunk(b)].concat()).await;
                }
                tokio::time::sleep(interval).await;
            }
            let _ = stream
                .write_all(&chunk(b"event: end_event\ndata: bye\n\n"))
                .await;
            let _ = stream.write_all(b"0\r\n\r\n").await;
            return;
        } else if line.starts_with("GET /subscribe") {
            let mut updates = topics
                .lock()
                .unwrap()
                .entry(topic)
                .or_insert_with(|| broadcast::channel(4096).0)
                .subscribe();
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n: hello\r\n\r\n")
                .await;
            let mut keep_alive = tokio::time::interval(Duration::from_millis(200));
            let times = if params.contains_key("twice") { 2 } else { 1 };
            loop {
                let bytes = tokio::select! {
                    update = updates.recv() => match update {
                        Ok(data) => [b"event: update\r\ndata: ".as_slice(), &data, b"\r\n\r\n"].concat().repeat(times),
                        Err(_) => return,
                    },
                    _ = keep_alive.tick() => b": keep-alive\r\n\r\n".to_vec(),
                };
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        } else if line.starts_with("POST /publish") {
            if let Some(sender) = topics.lock().unwrap().get(&topic) {
                let _ = sender.send(body);
            }
            tokio::time::sleep(Duration::from_millis(number("delay_ms").unwrap_or(0))).await;
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        } else if line.starts_with("POST /fail") {
            let _ = stream
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops")
                .await;
        } else {
            let _ = stream
                .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    }
}

fn plan(args: &[&str]) -> Plan {
    let mut argv = vec!["loadgen", "--quiet", "--in-process"];
    argv.extend_from_slice(args);
    let mut plan = <Cli as clap::Parser>::try_parse_from(argv)
        .unwrap()
        .run
        .into_plan()
        .unwrap();
    plan.handle_ctrl_c = false;
    plan
}

fn run(args: &[&str]) -> Report {
    loadgen::run(&plan(args), Launch::Threads).unwrap()
}

#[test]
fn counts_a_counter_stream_exactly() {
    let addr = start_server();
    let url = format!("http://{addr}/count?n=12&interval_ms=15");
    let report = run(&[
        "--subscribe-url",
        &url,
        "-c",
        "5",
        "-d",
        "5s",
        "--expect-ids",
        "12",
    ]);

    assert_eq!(report.run.stop_reason, "all_streams_ended");
    let connections = &report.connections;
    assert_eq!(
        (
            connections.attempted,
            connections.established,
            connections.failed
        ),
        (5, 5, 0)
    );
    assert_eq!(connections.closed_by_server, 5);
    assert_eq!(connections.open_at_stop, 0);
    assert!(connections.ramp_s.is_some());
    assert_eq!(report.events.total, 5 * 13);
    assert_eq!(report.events.by_type["tick"], 5 * 12);
    assert_eq!(report.events.by_type["end_event"], 5);
    assert_eq!(report.events.retry_fields, 5 * 12);
    assert_eq!(report.events.per_connection.min, 13);
    assert_eq!(report.events.per_connection.max, 13);
    let sequence = &report.sequence;
    assert_eq!(sequence.mode, Some(Tracking::SequentialIds));
    assert_eq!(
        (
            sequence.counts.owed,
            sequence.counts.missing,
            sequence.counts.duplicates
        ),
        (60, 0, 0)
    );
    assert_eq!(sequence.connections_complete, 5);
    assert_eq!(sequence.delivered_ratio, Some(1.0));
    assert_eq!(report.latency_us.count, 0);
    assert!(report.loadgen.cpu_s > 0.0);
}

#[test]
fn finds_missing_and_duplicated_ids() {
    let addr = start_server();
    let url = format!("http://{addr}/count?n=10&interval_ms=5&skip=4&twice=7");
    let report = run(&[
        "--subscribe-url",
        &url,
        "-c",
        "3",
        "-d",
        "5s",
        "--expect-sequential-ids",
    ]);
    let sequence = &report.sequence;
    assert_eq!(sequence.counts.owed, 30);
    assert_eq!(sequence.counts.missing, 3);
    assert_eq!(sequence.counts.duplicates, 3);
    assert_eq!(sequence.connections_with_missing, 3);
    assert_eq!(sequence.connections_with_duplicates, 3);
    assert_eq!(sequence.connections_complete, 0);
    assert!((sequence.delivered_ratio.unwrap() - 0.9).abs() < 1e-9);
}

#[test]
fn a_known_count_finds_lost_last_ids_and_empty_streams() {
    // Streams of ids 1..=10: complete ones, ones that lose id 10, and empty ones.
    let (a, b, c) = (start_server(), start_server(), start_server());
    let whole = format!("http://{a}/count?n=10&interval_ms=5");
    let no_tail = format!("http://{b}/count?n=10&interval_ms=5&skip=10");
    let empty = format!("http://{c}/count?n=0");
    let report = run(&[
        "--subscribe-url",
        &whole,
        "--subscribe-url",
        &no_tail,
        "--subscribe-url",
        &empty,
        "-c",
        "6",
        "-d",
        "5s",
        "--expect-ids",
        "10",
    ]);
    assert_eq!(report.run.stop_reason, "all_streams_ended");
    assert_eq!(report.connections.closed_by_server, 6);
    let sequence = &report.sequence;
    assert_eq!(sequence.mode, Some(Tracking::SequentialIds));
    assert_eq!(report.params.expected_ids, Some(10));
    // Every stream is owed 10; the last id of two streams and all of two more are missing.
    assert_eq!(sequence.counts.owed, 60);
    assert_eq!(sequence.counts.missing, 2 + 2 * 10);
    assert_eq!(sequence.connections_with_missing, 4);
    assert_eq!(sequence.connections_complete, 2);
}

#[test]
fn publishes_and_measures_fan_out() {
    let addr = start_server();
    let subscribe = format!("http://{addr}/subscribe?topic={{topic}}");
    let publish = format!("http://{addr}/publish?topic={{topic}}");
    let server_pid = std::process::id().to_string();
    let report = run(&[
        "--subscribe-url",
        &subscribe,
        "--api",
        "starlette",
        "--publish-url",
        &publish,
        "--topic",
        "room 1",
        "-c",
        "4",
        "-d",
        "1s",
        "--drain",
        "300ms",
        "--publish-rate",
        "60",
        "--payload-size",
        "200",
        "--publish-after-ramp",
        "--server-pid",
        &server_pid,
    ]);

    assert_eq!(report.connections.established, 4);
    assert_eq!(report.connections.open_at_stop, 4);
    let publish = report.publish.as_ref().unwrap();
    assert!(publish.sent >= 10, "sent {}", publish.sent);
    assert_eq!(publish.ok, publish.sent);
    assert_eq!(publish.failed, 0);
    assert_eq!(publish.latency_us.count, publish.sent);

    // Publishing started after every connection was up: each owed every update.
    let sequence = &report.sequence;
    assert_eq!(sequence.mode, Some(Tracking::Published));
    assert_eq!(sequence.counts.owed, 4 * publish.sent);
    assert_eq!(sequence.counts.missing, 0);
    assert_eq!(sequence.counts.duplicates, 0);
    assert_eq!(report.events.stamped, 4 * publish.sent);
    assert_eq!(report.events.by_type["update"], 4 * publish.sent);
    assert!(report.events.comments >= 4);
    assert_eq!(report.latency_us.count, report.events.stamped);
    assert!(
        report.latency_us.p99_us < 500_000,
        "{:?}",
        report.latency_us
    );
    assert!(report.latency_us.min_us <= report.latency_us.p50_us);

    let server = report.server.as_ref().unwrap();
    assert!(server.rss_kb_before > 0 && server.rss_kb_end > 0);
    assert_eq!(server.sample_errors, 0);
    assert!(!report.samples.is_empty());
}

#[test]
fn spreads_connections_over_several_subscribe_urls() {
    // Two servers whose streams differ in length, so the counts say who served whom.
    let (a, b) = (start_server(), start_server());
    let url_a = format!("http://{a}/count?n=3&interval_ms=5");
    let url_b = format!("http://{b}/count?n=5&interval_ms=5");
    let report = run(&[
        "--subscribe-url",
        &url_a,
        "--subscribe-url",
        &url_b,
        "-c",
        "6",
        "-d",
        "5s",
        "--expect-sequential-ids",
    ]);
    assert_eq!(report.run.stop_reason, "all_streams_ended");
    assert_eq!(report.connections.established, 6);
    // Round-robin: connections 0, 2, 4 to A (3 ticks), 1, 3, 5 to B (5 ticks).
    assert_eq!(report.events.by_type["tick"], 3 * 3 + 3 * 5);
    assert_eq!(report.events.by_type["end_event"], 6);
    assert_eq!(report.events.per_connection.min, 4);
    assert_eq!(report.events.per_connection.max, 6);
    assert_eq!(report.sequence.counts.owed, 3 * 3 + 3 * 5);
    assert_eq!(report.sequence.counts.missing, 0);
    assert_eq!(report.params.subscribe_urls, [url_a, url_b]);
}

#[test]
fn failed_publishes_are_not_owed() {
    let addr = start_server();
    let subscribe = format!("http://{addr}/subscribe?topic=t");
    let publish = format!("http://{addr}/fail");
    let report = run(&[
        "--subscribe-url",
        &subscribe,
        "--api",
        "nchan",
        "--publish-url",
        &publish,
        "-c",
        "2",
        "-d",
        "500ms",
        "--drain",
        "100ms",
        "--publish-rate",
        "20",
    ]);
    let publish = report.publish.as_ref().unwrap();
    assert!(publish.sent > 0);
    assert_eq!(publish.ok, 0);
    assert_eq!(publish.failed, publish.sent);
    assert_eq!(publish.failures["http 500"], publish.sent);
    assert_eq!(report.sequence.counts.owed, 0);
    assert_eq!(report.sequence.counts.missing, 0);
    // Nothing owed: no ratio, rather than "everything arrived".
    assert_eq!(report.sequence.delivered_ratio, None);
}

#[test]
fn the_publish_rate_leaves_out_the_wait_for_slow_answers() {
    // Answers take 700 ms; with enough requests in flight the schedule never slips, so the
    // publisher achieved the rate asked for, however long the last answers took.
    let addr = start_server();
    let subscribe = format!("http://{addr}/subscribe?topic={{topic}}");
    let publish = format!("http://{addr}/publish?topic={{topic}}&delay_ms=700");
    let report = run(&[
        "--subscribe-url",
        &subscribe,
        "--api",
        "starlette",
        "--publish-url",
        &publish,
        "-c",
        "2",
        "-d",
        "1s",
        "--drain",
        "100ms",
        "--publish-rate",
        "20",
        "--publish-concurrency",
        "64",
        "--publish-after-ramp",
    ]);
    let publish = report.publish.as_ref().unwrap();
    assert_eq!(publish.backlogged, 0);
    assert_eq!(publish.ok, publish.sent);
    assert!(publish.sent >= 5, "sent {}", publish.sent);
    // The window is the sends' own span: `sent` slots of 50 ms (give or take a late timer).
    let slots = publish.sent as f64 / 20.0;
    assert!(
        (publish.window_s - slots).abs() < 0.1,
        "window {} for {} sent",
        publish.window_s,
        publish.sent
    );
    assert!(
        (publish.achieved_rate - 20.0).abs() < 2.0,
        "{}",
        publish.achieved_rate
    );
    let deliveries = report.events.deliveries_per_second.unwrap();
    assert!((deliveries - 2.0 * 20.0).abs() < 4.0, "{deliveries}");
}

#[test]
fn duplicates_are_counted_but_not_timed() {
    let addr = start_server();
    let subscribe = format!("http://{addr}/subscribe?topic={{topic}}&twice=1");
    let publish = format!("http://{addr}/publish?topic={{topic}}");
    let report = run(&[
        "--subscribe-url",
        &subscribe,
        "--api",
        "starlette",
        "--publish-url",
        &publish,
        "-c",
        "3",
        "-d",
        "500ms",
        "--drain",
        "200ms",
        "--publish-rate",
        "40",
        "--publish-after-ramp",
    ]);
    let sent = report.publish.as_ref().unwrap().sent;
    assert!(sent > 0);
    assert_eq!(report.events.stamped, 2 * 3 * sent);
    assert_eq!(report.sequence.counts.duplicates, 3 * sent);
    assert_eq!(report.sequence.counts.missing, 0);
    assert_eq!(report.latency_us.count, 3 * sent);
}

#[test]
fn refused_connections_are_failures_not_errors() {
    // Bind then drop a listener: nothing listens on that port now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/stream");
    let report = run(&["--subscribe-url", &url, "-c", "3", "-d", "3s"]);
    assert_eq!(report.connections.failed, 3);
    assert_eq!(report.connections.failures["connect: ECONNREFUSED"], 3);
    assert_eq!(report.run.stop_reason, "all_streams_ended");
}

#[test]
fn worker_processes_through_the_binary() {
    let addr = start_server();
    let url = format!("http://{addr}/count?n=6&interval_ms=10");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results.json");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--quiet",
            "--subscribe-url",
            &url,
            "-c",
            "6",
            "--conns-per-worker",
            "3",
        ])
        .args(["-d", "5s", "--expect-sequential-ids", "--source-addrs", "2"])
        .args(["--server-pid", &std::process::id().to_string()])
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(json["run"]["workers"], 2);
    assert_eq!(json["run"]["worker_processes"], true);
    assert_eq!(json["run"]["workers_lost"], 0);
    assert_eq!(json["loadgen"]["processes"], 3);
    assert_eq!(json["connections"]["established"], 6);
    assert_eq!(json["connections"]["closed_by_server"], 6);
    assert_eq!(json["events"]["total"], 6 * 7);
    assert_eq!(json["sequence"]["owed"], 36);
    assert_eq!(json["sequence"]["missing"], 0);
    assert_eq!(json["sequence"]["duplicates"], 0);
    assert_eq!(
        json["params"]["source_addrs"],
        serde_json::json!(["127.0.0.1", "127.0.0.2"])
    );
    assert!(json["server"]["rss_kb_before"].as_u64().unwrap() > 0);
    assert_eq!(
        json["loadgen"]["worker_peak_rss_kb"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn the_binary_refuses_other_hosts_before_connecting() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--subscribe-url", "http://example.com/stream"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}
