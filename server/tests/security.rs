//! Hostile clients against the real server: each test plays one of the attacks the hub
//! must withstand (bounded in count and time, on loopback only), numbered as in
//! `SECURITY.md`. Tests that involve event streams run on both of the server's paths.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{
    connect_from, contains, eventually, mercure::*, read_to_close, read_until, TestServer,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

const ACCEPT: &str = "Accept: text/event-stream\r\n";

/// `count` distinct URL patterns, `tag` making them unlike any other call's.
fn patterns(tag: &str, count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|n| {
            (
                "match_urlpattern".to_owned(),
                format!("https://example.com/{tag}/{n}/:id"),
            )
        })
        .collect()
}

fn borrowed(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

/// A subscription from the loopback address `source`, as a browser asks for one.
async fn subscribe_from(
    server: &TestServer,
    source: [u8; 4],
    pairs: &[(String, String)],
) -> reqwest::Response {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(source))
        .build()
        .expect("client")
        .get(format!("{}?{}", server.url(HUB), query(&borrowed(pairs))))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("request")
}

/// The claims of a JWT, read without checking it (the test's own view of a token).
fn claims(token: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token).expect("a JWT")
}

/// The hub token a page response sets in its cookie.
fn page_token(response: &reqwest::Response) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| value.strip_prefix("mercure_access_token="))
        .and_then(|value| value.split(';').next())
        .expect("the page sets its hub token")
        .to_owned()
}

/// The `match` strings a token's subscribe grants name.
fn subscribe_grants(token: &str) -> Vec<String> {
    claims(token)["authorization_details"]
        .as_array()
        .expect("details")
        .iter()
        .filter(|detail| detail["actions"] == json!(["subscribe"]))
        .flat_map(|detail| detail["topics"].as_array().cloned().unwrap_or_default())
        .map(|topic| topic["match"].as_str().expect("a match").to_owned())
        .collect()
}

/// Sends `bytes` on a new connection and returns it.
async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("send");
    stream
}

/// How long until the server closes `stream` (reading and dropping what it sends), or
/// `None` if it is still open after `limit`.
async fn closed_after(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let (_, closed) = read_to_close(stream, limit).await;
    closed.then(|| started.elapsed())
}

on_both_paths! {
    // 1. URL patterns: bounded per subscription, per address and for the hub; shared;
    // private updates never matched against anonymous subscribers' patterns.

    #[tokio::test]
    async fn a_subscription_past_its_pattern_budget_gets_a_clear_4xx() {
        let server = start(&[
            "--pattern-budget", "40000",
            "--pattern-budget-per-ip", "100000",
            "--pattern-budget-total", "150000",
        ])
        .await;
        // About 2 kB a pattern: 100 are too many for one subscription.
        let response = subscribe_from(&server, [127, 0, 0, 1], &patterns("big", 100)).await;
        assert_eq!(response.status(), 400);
        let body = response.text().await.expect("body");
        assert!(body.contains("may cost 40000 bytes"), "{body}");
        assert_eq!(server.state.hub.base().patterns().total(), 0, "nothing kept");

        // Ten fit; one address may hold a few such subscriptions, then gets 429.
        let mut held = Vec::new();
        let mut refused = None;
        for n in 0..10 {
            let response =
                subscribe_from(&server, [127, 0, 0, 1], &patterns(&format!("a{n}"), 10)).await;
            if response.status() == 200 {
                held.push(response);
            } else {
                refused = Some(response);
                break;
            }
        }
        let refused = refused.expect("the address's budget runs out");
        assert_eq!(refused.status(), 429);
        assert!(refused.headers().contains_key("retry-after"));
        assert!(held.len() >= 3, "{} held", held.len());
        // Another address has its own share, until the hub's total runs out.
        let mut others = Vec::new();
        let mut full = None;
        for n in 0..10 {
            let response =
                subscribe_from(&server, [127, 0, 0, 2], &patterns(&format!("b{n}"), 10)).await;
            if response.status() == 200 {
                others.push(response);
            } else {
                full = Some(response);
                break;
            }
        }
        let full = full.expect("the hub's total runs out");
        assert_eq!(full.status(), 429);
        assert!(!others.is_empty());
        let total = server.state.hub.base().patterns().total();
        assert!(total <= 150_000, "{total}");
        // Exact topics cost nothing: they are never refused for patterns.
        let exact = subscribe_from(
            &server,
            [127, 0, 0, 3],
            &[("match".to_owned(), "/t".to_owned())],
        )
        .await;
        assert_eq!(exact.status(), 200);
        // Leaving gives the budget back.
        drop((held, others));
        let patterns = server.state.hub.base().patterns();
        assert!(
            eventually(Duration::from_secs(5), || async { patterns.total() == 0 }).await,
            "{} left",
            patterns.total()
        );
    }

    #[tokio::test]
    async fn patterns_are_compiled_once_and_private_updates_skip_anonymous_ones() {
        let server = start(&["--subscriptions", "false"]).await;
        let shared = patterns("shared", 50);
        let mut crowd = Vec::new();
        for n in 0..20u8 {
            let response = subscribe_from(&server, [127, 0, 1, n], &shared).await;
            assert_eq!(response.status(), 200);
            crowd.push(events(response));
        }
        subscribers(&server, 20).await;
        let hub = &server.state.hub;
        assert_eq!(hub.base().patterns().len(), 50, "one compiled form each");
        let one = hub.base().patterns().total() / 50;
        assert!((1000..8000).contains(&one), "{one} bytes a pattern");

        // A public update is checked once against each distinct pattern, not once per
        // subscriber; a private one not at all (no subscriber has a token).
        let before = hub.hub.pattern_checks();
        publish_ok(&server, &[("topic", "https://example.com/shared/7/x"), ("data", "d")]).await;
        for events in &mut crowd {
            assert_eq!(next(events).await.data, "d");
        }
        assert_eq!(hub.hub.pattern_checks() - before, 50);
        // A fence after the private update: once it arrives, both were fanned out.
        let mut fence = subscribe(&server, &[("match", "/fence")], None).await;
        subscribers(&server, 21).await;
        let before = hub.hub.pattern_checks();
        publish_ok(
            &server,
            &[("topic", "https://example.com/shared/7/x"), ("data", "p"), ("private", "on")],
        )
        .await;
        publish_ok(&server, &[("topic", "/fence"), ("data", "f")]).await;
        assert_eq!(next(&mut fence).await.data, "f");
        assert_eq!(
            hub.hub.pattern_checks() - before,
            50,
            "the private update was matched against no pattern, the public one against 50"
        );
    }

    #[tokio::test]
    async fn forty_subscriptions_of_a_hundred_patterns_fit_the_default_budgets() {
        // The issue's attack, with the default budgets: every subscription comes from an
        // address of its own (so that no per-address cap stops it) and names 100 patterns
        // no other does. All are served, and what they hold stays small.
        let server = start(&[]).await;
        let mut held = Vec::new();
        for n in 0..40u8 {
            let response =
                subscribe_from(&server, [127, 0, 2, n], &patterns(&format!("x{n}"), 100)).await;
            assert_eq!(response.status(), 200, "subscription {n}");
            held.push(response);
        }
        let patterns = server.state.hub.base().patterns();
        assert_eq!(patterns.len(), 4000);
        assert!(patterns.total() < 50 << 20, "{} bytes", patterns.total());
    }

    // 2. Connections: one deadline for every byte before the first request; caps.

    #[tokio::test]
    async fn a_connection_that_sends_one_byte_is_closed_at_the_header_timeout() {
        let server = TestServer::start(&["--header-timeout", "500ms"]).await;
        // `P` could start an HTTP/2 preface: the protocol detection waited forever.
        let mut one_byte = send_raw(server.addr, b"P").await;
        let took = closed_after(&mut one_byte, Duration::from_secs(5)).await;
        let took = took.expect("closed");
        assert!(took < Duration::from_millis(1500), "{took:?}");
        // A whole HTTP/2 preface and nothing after it: closed at the same deadline.
        let mut preface = send_raw(server.addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let took = closed_after(&mut preface, Duration::from_secs(5))
            .await
            .expect("closed");
        assert!(took < Duration::from_millis(1500), "{took:?}");
    }

    #[tokio::test]
    async fn a_head_dribbled_a_byte_at_a_time_is_cut_at_the_header_timeout_not_twice_it() {
        let server = TestServer::start(&["--header-timeout", "2s"]).await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let started = Instant::now();
        // The first byte just before the deadline, then one every 100 ms: the deadline
        // counts from the connection, not from the first byte (which gave it twice as long).
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let head = format!("GET /stream HTTP/1.1\r\nHost: x\r\n{ACCEPT}X-Padding: aaaaaaaaaaaaaaaa\r\n\r\n");
        for byte in head.bytes() {
            if stream.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, closed) = read_to_close(&mut stream, Duration::from_secs(5)).await;
        assert!(closed);
        let took = started.elapsed();
        // Writes fail once the server has closed: the loop ends about then.
        assert!(took < Duration::from_millis(3000), "cut after {took:?}");
    }

    #[tokio::test]
    async fn one_address_cannot_take_every_connection() {
        let server = TestServer::start(&["--max-connections-per-ip", "5"]).await;
        let mut held = Vec::new();
        for _ in 0..5 {
            let mut stream = connect_from([127, 0, 0, 1], server.addr).await;
            stream
                .write_all(format!("GET /stream HTTP/1.1\r\nHost: x\r\n{ACCEPT}\r\n").as_bytes())
                .await
                .expect("send");
            let seen = read_until(&mut stream, b"Counter value 1", Duration::from_secs(5)).await;
            assert!(contains(&seen, b"Counter value 1"));
            held.push(stream);
        }
        let mut sixth = connect_from([127, 0, 0, 1], server.addr).await;
        let (answer, closed) = read_to_close(&mut sixth, Duration::from_secs(5)).await;
        assert!(closed);
        assert!(answer.starts_with(b"HTTP/1.1 429 "), "{}", String::from_utf8_lossy(&answer));
        // Everyone else is still served.
        let mut other = connect_from([127, 0, 0, 2], server.addr).await;
        other
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let (answer, _) = read_to_close(&mut other, Duration::from_secs(5)).await;
        assert!(answer.starts_with(b"HTTP/1.1 200 "));
        // A place freed is a place taken again.
        drop(held.pop());
        assert!(
            eventually(Duration::from_secs(5), || async {
                let mut again = connect_from([127, 0, 0, 1], server.addr).await;
                let _ = again.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
                read_to_close(&mut again, Duration::from_secs(2)).await.0.starts_with(b"HTTP/1.1 200 ")
            })
            .await
        );
    }

    #[tokio::test]
    async fn past_the_connection_cap_new_connections_get_503_at_once() {
        let server = TestServer::start(&["--max-connections", "6", "--max-connections-per-ip", "0"]).await;
        let mut held = Vec::new();
        for n in 0..6u8 {
            held.push(connect_from([127, 0, 3, n], server.addr).await);
        }
        let mut refused = connect_from([127, 0, 3, 99], server.addr).await;
        let started = Instant::now();
        let (answer, closed) = read_to_close(&mut refused, Duration::from_secs(5)).await;
        assert!(closed);
        assert!(started.elapsed() < Duration::from_secs(2), "answered at once");
        assert!(answer.starts_with(b"HTTP/1.1 503 "), "{}", String::from_utf8_lossy(&answer));
        drop(held);
    }

    // 6. Every method and request-target form gets an answer, never a panic.

    #[tokio::test]
    async fn every_method_and_target_form_gets_an_answer() {
        let server = TestServer::start(&[]).await;
        let addr = server.addr;
        for (head, status) in [
            (format!("CONNECT {addr} HTTP/1.1\r\nHost: {addr}\r\n\r\n"), "405"),
            (format!("TRACE / HTTP/1.1\r\nHost: {addr}\r\n\r\n"), "405"),
            (format!("BREW /stream HTTP/1.1\r\nHost: {addr}\r\n{ACCEPT}\r\n"), "405"),
            (format!("DELETE /topics/a HTTP/1.1\r\nHost: {addr}\r\n\r\n"), "405"),
            (format!("OPTIONS * HTTP/1.1\r\nHost: {addr}\r\n\r\n"), "204"),
            (format!("GET http://{addr}/topics HTTP/1.1\r\nHost: {addr}\r\n\r\n"), "200"),
            (format!("GET /topics HTTP/1.1\r\nHost: {addr}\r\nHost: {addr}\r\n\r\n"), "400"),
            (format!("GET /stream HTTP/1.1\r\nHost: a\",error=\"x\r\n{ACCEPT}\r\n"), "400"),
            ("GET /topics HTTP/1.1\r\n\r\n".to_owned(), "400"),
            (format!("GET /stream HTTP/1.1\r\nHost: {addr}\r\nHost: evil\r\n{ACCEPT}\r\n"), "400"),
        ] {
            let mut stream = send_raw(addr, head.as_bytes()).await;
            let answer = read_until(&mut stream, b"\r\n\r\n", Duration::from_secs(5)).await;
            let text = String::from_utf8_lossy(&answer);
            assert!(
                text.starts_with(&format!("HTTP/1.1 {status} ")),
                "{head:?}: {text}"
            );
            if status == "405" {
                assert!(text.to_ascii_lowercase().contains("allow: get, head, post, options"), "{text}");
            }
        }
        // The server is still there.
        assert_eq!(reqwest::get(server.url("/")).await.expect("request").status(), 200);
    }

    // 10. Both paths give a head the same verdict.

    #[tokio::test]
    async fn conflicting_content_lengths_get_the_same_answer_on_both_paths() {
        let server = TestServer::start(&[]).await;
        let head = format!(
            "GET /stream HTTP/1.1\r\nHost: x\r\n{ACCEPT}Content-Length: 0\r\nContent-Length: 5\r\n\r\n"
        );
        let mut stream = send_raw(server.addr, head.as_bytes()).await;
        let answer = read_until(&mut stream, b"\r\n\r\n", Duration::from_secs(5)).await;
        assert!(answer.starts_with(b"HTTP/1.1 400 "), "{}", String::from_utf8_lossy(&answer));
    }

    // 7. Slow readers: bounded in bytes, and cut off when they make too little progress.

    #[tokio::test]
    async fn a_reader_that_stops_is_cut_off_and_its_queued_bytes_given_back() {
        let server = start(&[
            "--subscriber-queue-bytes", "262144",
            "--stall-timeout", "2s",
        ])
        .await;
        let mut readers = Vec::new();
        for _ in 0..10 {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_recv_buffer_size(4096).expect("small buffer");
            let mut stalled = socket.connect(server.addr).await.expect("connect");
            stalled
                .write_all(
                    format!("GET {HUB}?match=%2Fwave HTTP/1.1\r\nHost: x\r\n{ACCEPT}\r\n").as_bytes(),
                )
                .await
                .expect("send");
            readers.push(stalled);
        }
        subscribers(&server, 10).await;
        // Updates of 64 KiB until the readers are cut off: the kernel's socket buffers
        // take the first megabytes, then each queue fills past its 256 KiB, and though
        // none of the ten ever closed its side, every one is cut off and gives back what it
        // held.
        let payload = "w".repeat(64 * 1024);
        let metrics = server.state.metrics.hub.clone();
        let mut published = 0;
        while metrics.open() > 0 && published < 400 {
            publish_ok(&server, &[("topic", "/wave"), ("data", &payload)]).await;
            published += 1;
        }
        assert!(
            eventually(Duration::from_secs(10), || async { metrics.open() == 0 }).await,
            "{} still open after {published} updates",
            metrics.open()
        );
        let hub = server.state.hub.hub.clone();
        assert!(
            eventually(Duration::from_secs(5), || async { hub.queued_bytes() == 0 }).await,
            "{} bytes still queued",
            hub.queued_bytes()
        );
        drop(readers);
    }

    #[tokio::test]
    async fn a_reader_that_takes_a_trickle_is_cut_off_at_the_stall_timeout() {
        let server = start(&["--stall-timeout", "1s"]).await;
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("small buffer");
        let mut slow = socket.connect(server.addr).await.expect("connect");
        slow.write_all(format!("GET {HUB}?match=%2Ftrickle HTTP/1.1\r\nHost: x\r\n{ACCEPT}\r\n").as_bytes())
            .await
            .expect("send");
        subscribers(&server, 1).await;
        // Updates keep coming (1.6 MB/s) while the client reads 64 bytes every 20 ms
        // (3.2 kB/s): always reading, far too slowly.
        let publishing = {
            let url = server.url(HUB);
            let token = publish_all(&server);
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let payload = "t".repeat(32 * 1024);
                for _ in 0..1000 {
                    let _ = client
                        .post(&url)
                        .bearer_auth(&token)
                        .form(&[("topic", "/trickle"), ("data", payload.as_str())])
                        .send()
                        .await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(_)) | Err(_) => {}
            }
            if started.elapsed() > Duration::from_secs(20) {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        publishing.abort();
        // Its queue is bounded (4 MiB) and the oldest update may wait 1 s, so it goes once
        // the kernel's buffers (a few MB on loopback) and its queue are full.
        assert!(closed, "still served after {:?}", started.elapsed());
    }

    // 8. Token expiry is exact, for fractional exp too, on connect and on open streams.

    #[tokio::test]
    async fn a_fractional_exp_ends_the_stream_at_exp_and_allows_no_grace_after() {
        let server = start(&[]).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let exp = now + 1.5;
        let token = sign(
            SUBSCRIBER_KEY,
            Some("at+jwt"),
            &json!({ "iss": ISSUER, "aud": audience(&server), "exp": exp,
                     "authorization_details": [detail(&["subscribe"], json!([{ "match": "/secret" }]))] }),
        );
        let response = subscribe_request(&server, &[("match", "/secret")], Some(&token), None).await;
        assert_eq!(response.status(), 200);
        let mut stream = events(response);
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(_)) = futures_util::StreamExt::next(&mut stream).await {}
        })
        .await;
        assert!(ended.is_ok(), "the stream outlived its token");
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        assert!(at >= exp && at < exp + 1.0, "ended {:.3} s after exp", at - exp);
        // Just after exp (within the second the library would have allowed), refused.
        let late = subscribe_request(&server, &[("match", "/secret")], Some(&token), None).await;
        assert_eq!(late.status(), 401);
    }
}

// 2. HTTP/2 carries many streams on one connection: the stream caps count them.

#[tokio::test]
async fn one_address_cannot_hold_unbounded_streams_over_one_http2_connection() {
    let server = start(&["--max-streams-per-ip", "5", "--max-streams", "8"]).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let mut held = Vec::new();
    for n in 0..6 {
        let response = client
            .get(format!("{}?match=%2Fh2", server.url(HUB)))
            .send()
            .await
            .expect("request");
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        if n < 5 {
            assert_eq!(response.status(), 200, "stream {n}");
            held.push(response);
        } else {
            assert_eq!(response.status(), 429, "the sixth on one address");
            assert!(response.headers().contains_key("retry-after"));
        }
    }
    // Other addresses share what is left of the process's cap.
    let mut others = Vec::new();
    for n in 0..4u8 {
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .local_address(std::net::IpAddr::from([127, 0, 5, n + 1]))
            .build()
            .expect("client");
        others.push(
            client
                .get(format!("{}?match=%2Fh2", server.url(HUB)))
                .send()
                .await
                .expect("request"),
        );
    }
    let statuses: Vec<u16> = others.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [200, 200, 200, 503], "eight in all");
    let counter = client
        .get(server.url("/stream"))
        .send()
        .await
        .expect("request");
    assert_eq!(counter.status(), 503, "the counter's streams count too");
    // An HTTP/1.1 stream is its connection, which the connection caps count instead.
    let plain = subscribe_from(
        &server,
        [127, 0, 6, 1],
        &[("match".to_owned(), "/h2".to_owned())],
    )
    .await;
    assert_eq!(plain.status(), 200);
    drop((held, others, plain));
    let streams = server.state.streams.caps.clone();
    assert!(eventually(Duration::from_secs(5), || async { streams.open() == 0 }).await);
}

// 3. A forged cookie can name topic pages, and nothing that costs the hub anything.

#[tokio::test]
async fn a_page_token_from_a_forged_cookie_names_only_topic_pages_and_compiles_nothing() {
    let server = start(&[]).await;
    let forged = sign(
        "some-other-key-of-at-least-32-bytes-long",
        Some("at+jwt"),
        &json!({ "iss": "x", "aud": "y", "exp": later(), "authorization_details": [detail(
            &["subscribe"],
            json!((0..20).map(|n| if n % 2 == 0 {
                json!({ "match": format!("/.well-known/mercure/subscriptions/exact/%2Ftopics%2Fn{n}/:subscriber"), "match_type": "urlpattern" })
            } else {
                json!({ "match": format!("https://evil.example/{n}/(a|b)+"), "match_type": "urlpattern" })
            }).collect::<Vec<_>>()),
        )] }),
    );
    let page = reqwest::Client::new()
        .get(server.url("/topics/x"))
        .header("cookie", format!("mercure_access_token={forged}"))
        .send()
        .await
        .expect("page");
    let token = page_token(&page);
    let grants = subscribe_grants(&token);
    let watched = grants
        .iter()
        .filter(|g| g.contains("subscriptions/exact"))
        .count();
    assert_eq!(
        watched, 8,
        "its own topic and seven carried over: {grants:?}"
    );
    assert!(grants.iter().all(|g| !g.contains("evil")), "{grants:?}");
    // Streams with it compile no pattern: watchers' grants are matched by an index.
    let mut streams = Vec::new();
    for _ in 0..5 {
        streams.push(
            subscribe(
                &server,
                &[
                    ("match", "/topics/x"),
                    (
                        "match_urlpattern",
                        "/.well-known/mercure/subscriptions/exact/%2Ftopics%2Fx/:subscriber",
                    ),
                ],
                Some(&token),
            )
            .await,
        );
    }
    subscribers(&server, 5).await;
    assert_eq!(server.state.hub.base().patterns().total(), 0);
}

// 4. A member's page resumes from no update a member cannot read.

#[tokio::test]
async fn a_members_page_names_no_private_update_members_cannot_read() {
    let server = start(&[]).await;
    let outside = publish_ok(
        &server,
        &[
            ("topic", "/topics/../secret"),
            ("data", "s"),
            ("private", "on"),
        ],
    )
    .await;
    let page = reqwest::Client::new()
        .post(server.url("/api/membership"))
        .header("accept", "application/json")
        .form(&[("topic", "x"), ("member", "true")])
        .send()
        .await
        .expect("join");
    let cookie = format!("mercure_access_token={}", page_token(&page));
    let html = reqwest::Client::new()
        .get(server.url("/topics/x"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(html.contains("You are a member"), "{html}");
    assert!(
        !html.contains(&outside),
        "the page names a private update outside /topics/"
    );
}

// 9. Compatibility mode: absent claims pass, wrong ones never.

#[tokio::test]
async fn compatibility_mode_refuses_a_wrong_aud_or_iss() {
    let server = start(&["--protocol-version-compatibility", "8"]).await;
    let grant = json!({ "mercure": { "publish": ["*"], "subscribe": ["*"] } });
    let with = |extra: Value| {
        let mut claims = grant.clone();
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            claims.extend(extra.clone());
        }
        claims
    };
    for (claims, status) in [
        (with(json!({})), 200),
        (
            with(json!({ "aud": audience(&server), "iss": ISSUER })),
            200,
        ),
        (
            with(json!({ "aud": "https://other.example/.well-known/mercure" })),
            401,
        ),
        (with(json!({ "iss": "https://untrusted.example" })), 401),
        (with(json!({ "exp": 1000 })), 401),
    ] {
        let publisher = sign(PUBLISHER_KEY, None, &claims);
        let published = publish(&server, &publisher, &[("topic", "/c"), ("data", "x")]).await;
        assert_eq!(published.status(), status, "publish: {claims}");
        let subscriber = sign(SUBSCRIBER_KEY, None, &claims);
        let subscribed =
            subscribe_request(&server, &[("match", "/c")], Some(&subscriber), None).await;
        assert_eq!(subscribed.status(), status, "subscribe: {claims}");
    }
}

// 3. A page's token grants what the page shows: its topic's watchers, nothing hub-wide.

#[tokio::test]
async fn a_page_token_reads_its_own_topics_watchers_and_no_one_elses() {
    let server = start(&[]).await;
    // An API client with a payload, on a topic no page shows.
    let private_client = subscriber_token(
        &server,
        json!([{ "type": DETAIL, "actions": ["subscribe"],
                 "topics": [{ "match": "https://example.com/users/ada/inbox" }],
                 "payload": { "user": "ada", "email": "ada@example.com" } }]),
    );
    let _ada = subscribe(
        &server,
        &[("match", "https://example.com/users/ada/inbox")],
        Some(&private_client),
    )
    .await;
    let page = reqwest::get(server.url("/topics/x")).await.expect("page");
    let token = page_token(&page);
    let grants = subscribe_grants(&token);
    assert!(
        grants.contains(
            &"/.well-known/mercure/subscriptions/exact/%2Ftopics%2Fx/:subscriber".to_owned()
        ),
        "{grants:?}"
    );
    assert!(
        grants
            .iter()
            .all(|grant| !grant.contains(":topic") && grant != "*"),
        "nothing hub-wide: {grants:?}"
    );

    // With it, every subscription event of the hub, asked for: only topic x's come.
    let mut watching = subscribe(
        &server,
        &[(
            "match_urlpattern",
            "/.well-known/mercure/subscriptions/:type/:topic/:subscriber",
        )],
        Some(&token),
    )
    .await;
    let _ada_again = subscribe(
        &server,
        &[("match", "https://example.com/users/ada/inbox")],
        Some(&private_client),
    )
    .await;
    let _reader = subscribe(&server, &[("match", "/topics/x")], None).await;
    let event = next(&mut watching).await;
    assert!(event.data.contains("%2Ftopics%2Fx"), "{}", event.data);
    nothing_within(&mut watching, Duration::from_millis(300)).await;

    // Nor through the subscriptions API, given the API client's subscriber id.
    let listing: Value = reqwest::Client::new()
        .get(server.url("/.well-known/mercure/subscriptions"))
        .bearer_auth(subscriber_token(
            &server,
            json!([detail(&["subscribe"], json!([{ "match": "*" }]))]),
        ))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let ada = listing["subscriptions"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|doc| doc["match"] == "https://example.com/users/ada/inbox")
        .expect("ada's subscription")
        .clone();
    let lookup = reqwest::Client::new()
        .get(server.url(ada["id"].as_str().expect("an id")))
        .header("cookie", format!("mercure_access_token={token}"))
        .send()
        .await
        .expect("request");
    assert_eq!(lookup.status(), 403);
    assert!(!lookup
        .text()
        .await
        .expect("body")
        .contains("ada@example.com"));

    // A later page carries the earlier one's watchers (for its other tab) and its own.
    let second = reqwest::Client::new()
        .get(server.url("/topics/y"))
        .header("cookie", format!("mercure_access_token={token}"))
        .send()
        .await
        .expect("page");
    let grants = subscribe_grants(&page_token(&second));
    assert!(
        grants.iter().any(|g| g.contains("%2Ftopics%2Fy")),
        "{grants:?}"
    );
    assert!(
        grants.iter().any(|g| g.contains("%2Ftopics%2Fx")),
        "{grants:?}"
    );
}

// 4. An anonymous client learns nothing of private updates, not even that they exist.

#[tokio::test]
async fn an_anonymous_client_learns_nothing_of_private_updates() {
    let server = start(&[]).await;
    let public = publish_ok(&server, &[("topic", "/topics/x"), ("data", "public")]).await;
    let secret = publish_ok(
        &server,
        &[
            ("topic", "https://example.com/users/ada/inbox"),
            ("data", "s"),
            ("private", "on"),
        ],
    )
    .await;
    // The page's server-rendered data resumes from the newest update its reader may see.
    let page = reqwest::get(server.url("/topics/x")).await.expect("page");
    let html = page.text().await.expect("html");
    assert!(!html.contains(&secret), "the page names a private update");
    assert!(html.contains(&public));

    // The subscriptions API's cursor, to a token that may read the listing.
    let reader = subscriber_token(
        &server,
        json!([detail(
            &["subscribe"],
            json!([{ "match": "/.well-known/mercure/subscriptions", "match_type": "exact" }])
        )]),
    );
    let api = reqwest::Client::new()
        .get(server.url("/.well-known/mercure/subscriptions"))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("request");
    assert_eq!(api.status(), 200);
    let link = api.headers()["link"].to_str().expect("text").to_owned();
    let etag = api.headers()["etag"].to_str().expect("text").to_owned();
    assert!(
        !link.contains(&secret) && !etag.contains(&secret),
        "{link} {etag}"
    );

    // Resuming from a private id answers exactly as from an id never published.
    let answer = |id: String| {
        let server = &server;
        async move {
            let response =
                subscribe_request(server, &[("match", "/topics/x")], None, Some(&id)).await;
            let echoed = response.headers()["mercure-last-event-id"]
                .to_str()
                .expect("text")
                .to_owned();
            let mut events = events(response);
            (echoed, next(&mut events).await.id)
        }
    };
    let from_secret = answer(secret.clone()).await;
    let from_nothing = answer("urn:uuid:never-published".to_owned()).await;
    assert_eq!(from_secret, from_nothing);
    assert_eq!(from_secret.0, "earliest");
}

// 5. Another site's page cannot post in a reader's name.

#[tokio::test]
async fn posting_a_message_from_another_site_is_refused() {
    let server = start(&[]).await;
    let page = reqwest::get(server.url("/topics/x")).await.expect("page");
    let cookie = format!("mercure_access_token={}", page_token(&page));
    let mut reader = subscribe(&server, &[("match", "/topics/x")], None).await;
    subscribers(&server, 1).await;
    let refused = reqwest::Client::new()
        .post(server.url("/api/post_message"))
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .header("sec-fetch-site", "cross-site")
        .header("accept", "application/json")
        .form(&[("topic", "x"), ("text", "forged"), ("members_only", "on")])
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), 403);
    let ok = reqwest::Client::new()
        .post(server.url("/api/post_message"))
        .header("sec-fetch-site", "same-origin")
        .header("accept", "application/json")
        .form(&[("topic", "x"), ("text", "mine")])
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), 200);
    assert_eq!(
        next(&mut reader).await.data,
        "mine",
        "the forged one never arrived"
    );
    // And a client error is a 4xx, not a 500.
    let invalid = reqwest::Client::new()
        .post(server.url("/api/post_message"))
        .header("accept", "application/json")
        .form(&[("topic", "no such/name"), ("text", "x")])
        .send()
        .await
        .expect("request");
    assert_eq!(invalid.status(), 400);
}

// 10. Smaller: the limits of a publication's fields.

#[tokio::test]
async fn a_publication_topic_is_capped_like_a_matcher() {
    let server = start(&[]).await;
    let long = format!("/{}", "t".repeat(5000));
    let response = publish(
        &server,
        &publish_all(&server),
        &[("topic", &long), ("data", "x")],
    )
    .await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.expect("body").contains("4096"));
}

#[tokio::test]
async fn a_host_header_cannot_inject_into_the_challenge() {
    let server = start(&[]).await;
    let mut stream = send_raw(
        server.addr,
        b"POST /.well-known/mercure HTTP/1.1\r\nHost: a\",error=\"x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let answer = read_until(&mut stream, b"\r\n\r\n", Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(!text.contains("error=\"x"), "{text}");
}

// 2. Over TLS, the deadline covers the handshake and the head together.

#[tokio::test]
async fn over_tls_the_head_deadline_counts_from_the_connection() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("a certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("write key");
    let server = TestServer::start(&[
        "--header-timeout",
        "1s",
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ])
    .await;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("a root");
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let started = Instant::now();
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let mut tls = connector
        .connect("localhost".try_into().expect("a name"), tcp)
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // HTTP/2's preface, then nothing: hyper's HTTP/2 has no header timeout of its own, and
    // kept such a connection open for its keep-alive pings (about 50 s).
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("send");
    let closed = loop {
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => {}
            Err(_) => break false,
        }
    };
    assert!(closed, "the connection is still open");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
}

// 2. At the open-file limit, the process keeps a reserve: it answers and logs little.

#[tokio::test]
async fn at_the_open_file_limit_the_server_still_answers_and_logs_little() {
    let port = common::free_port();
    let binary = env!("CARGO_BIN_EXE_server");
    // A limit of 256 files: the server holds at most 192 connections.
    let mut child = tokio::process::Command::new("sh")
        .args([
            "-c",
            "ulimit -n 256 && exec \"$0\" \"$@\"",
            binary,
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--header-timeout",
            "2s",
            "--max-connections-per-ip",
            "0",
            "--site-root",
            "target/site",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    assert!(
        eventually(Duration::from_secs(20), || async {
            TcpStream::connect(addr).await.is_ok()
        })
        .await,
        "the server did not start"
    );
    // 400 idle connections from many addresses, twice what it may hold.
    let mut idle = Vec::new();
    for n in 0..400u16 {
        let source = [127, 0, 4 + (n / 200) as u8, (n % 200) as u8 + 1];
        idle.push(connect_from(source, addr).await);
    }
    // A request now gets an answer at once (503 while full), not a timeout.
    let started = Instant::now();
    let mut probe = connect_from([127, 0, 9, 1], addr).await;
    let _ = probe
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let (answer, _) = read_to_close(&mut probe, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 503 ") || answer.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // The idle ones are closed at the header timeout; then everyone is served again.
    assert!(
        eventually(Duration::from_secs(10), || async {
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                return false;
            };
            let _ = stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            read_to_close(&mut stream, Duration::from_secs(2))
                .await
                .0
                .starts_with(b"HTTP/1.1 200 ")
        })
        .await,
        "not served again"
    );
    drop(idle);
    let _ = child.start_kill();
    let output = child.wait_with_output().await.expect("the server's log");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!log.contains("Too many open files"), "{log}");
    let refusals = log.matches("connection refused").count();
    assert!(refusals <= 3, "{refusals} lines of refusals:\n{log}");
}
