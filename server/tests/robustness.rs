//! `/stream` under the things real networks do: keep-alive, compression, shutdown with many
//! streams, hostile or broken clients, and HTTP/2 over TLS.

mod common;

use std::{process::Stdio, time::Duration};

use common::{contains, eventually, raw_get, read_to_close, read_until, TestServer};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

/// What a browser's EventSource asks for: the fast path takes such requests.
const ACCEPT: &str = "Accept: text/event-stream\r\n";

on_both_paths! {
    #[tokio::test]
    async fn idle_streams_get_keep_alive_comments() {
        let server = TestServer::start(&[
            "--stream-count",
            "2",
            "--stream-interval",
            "1h",
            "--keep-alive",
            "50ms",
        ])
        .await;
        let mut stream = raw_get(server.addr, "/stream", ACCEPT).await;
        let seen = read_until(&mut stream, b"Counter value 1", Duration::from_secs(2)).await;
        assert!(contains(&seen, b"Counter value 1"));
        // After the first message the stream is idle: only comments arrive.
        let seen = read_until(&mut stream, b":\n\n", Duration::from_secs(2)).await;
        assert!(
            contains(&seen, b":\n\n"),
            "{}",
            String::from_utf8_lossy(&seen)
        );
        assert!(!contains(&seen, b"Counter value 2"));
    }

    #[tokio::test]
    async fn streams_are_never_compressed_or_held_back() {
        let server = TestServer::start(&["--stream-count", "2", "--stream-interval", "1h"]).await;
        let client = reqwest::Client::builder().build().expect("client");

        // Compression is on for pages…
        let page = client
            .get(server.url("/"))
            .header("accept-encoding", "gzip")
            .send()
            .await
            .expect("page");
        assert_eq!(page.headers()["content-encoding"], "gzip");

        // …but the stream goes out as it is, and its first event arrives at once even though
        // the response is far from over.
        let mut stream = raw_get(
            server.addr,
            "/stream",
            "Accept: text/event-stream\r\nAccept-Encoding: gzip, br, deflate\r\n",
        )
        .await;
        let seen = read_until(&mut stream, b"Counter value 1", Duration::from_secs(2)).await;
        let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
        assert!(text.contains("counter value 1"), "{text}");
        assert!(text.contains("content-type: text/event-stream"), "{text}");
        assert!(text.contains("cache-control: no-cache"), "{text}");
        assert!(text.contains("x-accel-buffering: no"), "{text}");
        assert!(!text.contains("content-encoding"), "{text}");
    }

    #[tokio::test]
    async fn shutdown_ends_thousands_of_streams_at_once_without_end_event() {
        const STREAMS: usize = 2000;
        // More than one address may hold by default: these all come from 127.0.0.1.
        let server = TestServer::start(&[
            "--stream-count",
            "1000",
            "--stream-interval",
            "1s",
            "--max-connections-per-ip",
            "0",
            "--max-streams-per-ip",
            "0",
        ])
        .await;
        let mut clients = Vec::with_capacity(STREAMS);
        for _ in 0..STREAMS {
            clients.push(raw_get(server.addr, "/stream", ACCEPT).await);
        }
        for client in &mut clients {
            let seen = read_until(client, b"Counter value 1\n\n", Duration::from_secs(10)).await;
            assert!(contains(&seen, b"Counter value 1\n\n"));
        }
        let metrics = server.state.metrics.counter.clone();
        assert_eq!(metrics.open(), STREAMS as u64);

        let took = server.stop().await;
        assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
        assert_eq!(metrics.open(), 0);
        for client in &mut clients {
            let (rest, closed) = read_to_close(client, Duration::from_secs(2)).await;
            assert!(closed, "the connection was not closed");
            assert!(
                !contains(&rest, b"end_event"),
                "a shutdown must not end the stream for good"
            );
            // The chunked response was ended properly, so the browser reconnects.
            assert!(
                rest.ends_with(b"0\r\n\r\n"),
                "{}",
                String::from_utf8_lossy(&rest)
            );
        }
    }

    #[tokio::test]
    async fn open_streams_drop_to_zero_within_a_second_of_clients_leaving() {
        const CLIENTS: usize = 1000;
        // A long interval: the server must notice the clients leave without writing to them.
        let server = TestServer::start(&["--stream-count", "1000", "--stream-interval", "30s"]).await;
        let metrics = server.state.metrics.counter.clone();
        let mut clients = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            let mut client = raw_get(server.addr, "/stream", ACCEPT).await;
            let seen = read_until(&mut client, b"Counter value 1\n\n", Duration::from_secs(10)).await;
            assert!(contains(&seen, b"Counter value 1\n\n"));
            clients.push(client);
        }
        assert_eq!(metrics.open(), CLIENTS as u64);
        drop(clients);
        assert!(
            eventually(Duration::from_secs(1), || async { metrics.open() == 0 }).await,
            "{} streams still open a second after their clients left",
            metrics.open()
        );
        assert_eq!(metrics.disconnects(), CLIENTS as u64);
        let text = reqwest::get(server.url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        assert!(
            text.contains("pulse_streams_open{stream=\"counter\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "pulse_stream_disconnects_total{{stream=\"counter\"}} {CLIENTS}"
            )),
            "{text}"
        );
    }

    #[tokio::test]
    async fn absurdly_large_requests_get_a_4xx_and_the_server_carries_on() {
        let server = TestServer::start(&["--stream-count", "1", "--stream-interval", "1ms"]).await;
        let long_path = format!("/stream?x={}", "a".repeat(100_000));
        let huge_header = format!("{ACCEPT}X-Big: {}\r\n", "b".repeat(64 * 1024));
        let many_headers: String = std::iter::once(ACCEPT.to_owned())
            .chain((0..200).map(|i| format!("X-H{i}: v\r\n")))
            .collect();
        for (what, path, extra, status) in [
            ("request line", long_path.as_str(), ACCEPT, "414"),
            ("header", "/stream", huge_header.as_str(), "431"),
            ("header count", "/stream", many_headers.as_str(), "431"),
        ] {
            let mut stream = raw_get(server.addr, path, extra).await;
            let (response, closed) = read_to_close(&mut stream, Duration::from_secs(5)).await;
            let head = String::from_utf8_lossy(&response);
            assert!(
                head.starts_with(&format!("HTTP/1.1 {status} ")),
                "{what}: {head}"
            );
            assert!(closed, "{what}: the connection stays open");
        }
        let ok = common::mercure::sse_get(server.url("/stream"))
            .await
            .expect("request");
        assert_eq!(ok.status(), 200);
    }

    #[tokio::test]
    async fn a_bad_last_event_id_cannot_reach_the_wire_raw() {
        let server = TestServer::start(&["--stream-count", "5"]).await;
        let mut stream = raw_get(
            server.addr,
            "/stream?lastEventId=1%0D%0Aevent:%20forged%0A%0Adata:%20x%00",
            "Connection: close\r\nAccept: text/event-stream\r\n",
        )
        .await;
        let (response, _) = read_to_close(&mut stream, Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        let body = text.split("\r\n\r\n").nth(1).expect("a body");
        // The reason quotes the value escaped: no raw line break or NUL from it.
        assert!(
            body.contains(r#""1\r\nevent: forged\n\ndata: x\0""#),
            "{body}"
        );
        assert_eq!(body.matches('\n').count(), 1, "{body:?}");
        assert!(!body.contains('\0'));
    }
}

#[tokio::test]
async fn the_binary_exits_within_two_seconds_of_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .args([
            "--addr",
            &addr.to_string(),
            "--stream-count",
            "1000",
            "--log",
            "info",
            "--log-format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server binary");
    let mut stdout = child.stdout.take().expect("stdout");
    let logs = tokio::spawn(async move {
        let mut logs = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut logs)
            .await
            .map(|_| logs)
    });
    assert!(
        eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await,
        "the server did not start"
    );
    let mut clients = Vec::new();
    for _ in 0..500 {
        let mut client = raw_get(addr, "/stream", ACCEPT).await;
        let seen = read_until(&mut client, b"Counter value 1\n\n", Duration::from_secs(10)).await;
        assert!(contains(&seen, b"Counter value 1\n\n"));
        clients.push(client);
    }

    let pid = child.id().expect("pid").to_string();
    let started = std::time::Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the server exits")
        .expect("exit status");
    let took = started.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(2), "exit took {took:?}");
    for client in &mut clients {
        let (rest, closed) = read_to_close(client, Duration::from_secs(1)).await;
        assert!(closed);
        assert!(!contains(&rest, b"end_event"));
    }

    // The logs are structured: one JSON object a line.
    let logs = logs.await.expect("log reader").expect("logs");
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON log line"))
        .collect();
    assert!(
        lines
            .iter()
            .any(|line| line["message"] == "SIGTERM received, shutting down"),
        "{logs}"
    );
    assert!(lines
        .iter()
        .all(|line| line["level"].is_string() && line["timestamp"].is_string()));
}

#[tokio::test]
async fn a_client_that_never_sends_its_request_is_dropped() {
    let server = TestServer::start(&["--header-timeout", "200ms"]).await;
    let mut silent = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let mut half = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    half.write_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send");
    for (what, stream) in [("silent", &mut silent), ("half a request", &mut half)] {
        let (_, closed) = read_to_close(stream, Duration::from_secs(3)).await;
        assert!(closed, "{what}: the connection is still open");
    }
}

#[tokio::test]
async fn serves_http2_over_tls_with_many_streams_on_one_connection() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("a self-signed certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
    let server = TestServer::start(&[
        "--stream-count",
        "5",
        "--stream-interval",
        "20ms",
        "--tls-cert",
        cert.to_str().expect("utf-8 path"),
        "--tls-key",
        key.to_str().expect("utf-8 path"),
    ])
    .await;
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve("localhost", server.addr)
        .build()
        .expect("client");
    let url = format!("https://localhost:{}/stream", server.addr.port());
    let streams = (0..10).map(|_| {
        let request = client.get(&url);
        async move {
            let response = request.send().await.expect("request");
            assert_eq!(response.version(), reqwest::Version::HTTP_2);
            response
                .bytes_stream()
                .eventsource()
                .map(|event| event.expect("valid").data)
                .collect::<Vec<_>>()
                .await
        }
    });
    let results = futures_util::future::join_all(streams).await;
    let expected: Vec<String> = (1..=5)
        .map(|n| format!("Counter value {n}"))
        .chain(["End of the stream".to_owned()])
        .collect();
    for data in results {
        assert_eq!(data, expected);
    }
    assert_eq!(server.state.metrics.counter.started(), 10);
}
