//! The Mercure hub against the real server: subscribe, publish, authorization, history,
//! subscriptions, limits, slow subscribers, and compatibility mode; every test runs on
//! both of the server's paths (see `common::on_both_paths`).

mod common;

use std::time::Duration;

use common::{contains, eventually, mercure::*, read_until, TestServer};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

const SUBSCRIPTIONS: &str = "/.well-known/mercure/subscriptions";

/// A token that may read every subscription event and the whole subscriptions API.
fn subscriptions_reader(server: &TestServer) -> String {
    subscriber_token(
        server,
        json!([detail(
            &["subscribe"],
            json!([{ "match": "/.well-known/mercure/subscriptions{/match_type}{/match}{/subscriber}", "match_type": "urlpattern" }, { "match": "/.well-known/mercure/subscriptions/*", "match_type": "urlpattern" }, { "match": "/.well-known/mercure/subscriptions", "match_type": "exact" }])
        )]),
    )
}

/// The 0.x clients' topic: an RFC 6570 URI template.
const BOOKS_TEMPLATE: &str = "https://example.com/books/{id}";

/// 0.x tokens (the `mercure` claim, no `typ`, `aud`, `exp` or `iss`): a publisher's and a
/// subscriber's, both for the books.
fn legacy_tokens() -> (String, String) {
    (
        sign(
            PUBLISHER_KEY,
            None,
            &json!({ "mercure": { "publish": [BOOKS_TEMPLATE] } }),
        ),
        sign(
            SUBSCRIBER_KEY,
            None,
            &json!({ "mercure": { "subscribe": [BOOKS_TEMPLATE] } }),
        ),
    )
}

/// Subscribes the 0.x way to the books, with `params` in the query.
async fn legacy_subscribe(server: &TestServer, params: &[(&str, &str)]) -> reqwest::Response {
    let mut all = vec![("topic", BOOKS_TEMPLATE)];
    all.extend_from_slice(params);
    sse_get(format!("{}?{}", server.url(HUB), query(&all)))
        .await
        .expect("request")
}

/// Publishes a private book, then a public one, with `token`; returns their ids.
async fn publish_private_then_public(server: &TestServer, token: &str) -> (String, String) {
    let secret = publish(
        server,
        token,
        &[
            ("topic", "https://example.com/books/7"),
            ("data", "s"),
            ("private", "on"),
        ],
    )
    .await;
    assert_eq!(secret.status(), 200);
    let public = publish(
        server,
        token,
        &[("topic", "https://example.com/books/8"), ("data", "p")],
    )
    .await;
    assert_eq!(public.status(), 200);
    (
        secret.text().await.expect("id"),
        public.text().await.expect("id"),
    )
}

/// `GET` the subscriptions API at `path` below it, with `token` if given.
async fn subscriptions_get(
    server: &TestServer,
    path: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("{}{path}", server.url(SUBSCRIPTIONS)));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

on_both_paths! {
    #[tokio::test]
    async fn publishes_to_matching_subscribers_with_every_field() {
        let server = start(&[]).await;
        let mut exact = subscribe(&server, &[("match", "https://example.com/books/1")], None).await;
        let mut pattern = subscribe(
            &server,
            &[("match_urlpattern", "https://example.com/books/:id")],
            None,
        )
        .await;
        let mut other = subscribe(&server, &[("match", "https://example.com/other")], None).await;
        subscribers(&server, 3).await;

        let response = publish(
            &server,
            &publish_all(&server),
            &[
                ("topic", "https://example.com/books/1"),
                ("data", "first line\n\nthird line\r\nfourth"),
                ("id", "urn:example:1"),
                ("type", "book"),
                ("retry", "2500"),
            ],
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; charset=utf-8"
        );
        assert_eq!(response.text().await.expect("body"), "urn:example:1");

        for events in [&mut exact, &mut pattern] {
            let event = next(events).await;
            assert_eq!(event.id, "urn:example:1");
            assert_eq!(event.event, "book");
            assert_eq!(event.retry, Some(Duration::from_millis(2500)));
            assert_eq!(event.data, "first line\n\nthird line\nfourth");
        }
        nothing_within(&mut other, Duration::from_millis(200)).await;
    }

    #[tokio::test]
    async fn generates_ids_and_delivers_once_when_several_matchers_match() {
        let server = start(&[]).await;
        let mut both = subscribe(
            &server,
            &[
                ("match", "/topics/a"),
                ("match_urlpattern", "/topics/:name"),
                ("match_exact", "*"),
            ],
            None,
        )
        .await;
        subscribers(&server, 1).await;
        let id = publish_ok(&server, &[("topic", "/topics/a"), ("data", "x")]).await;
        assert!(id.starts_with("urn:uuid:"), "{id}");
        let event = next(&mut both).await;
        assert_eq!(event.id, id);
        assert_eq!(event.event, "message");
        let second = publish_ok(&server, &[("topic", "/topics/a"), ("data", "y")]).await;
        assert_eq!(
            next(&mut both).await.id,
            second,
            "the first update came once"
        );
    }

    #[tokio::test]
    async fn refuses_malformed_subscriptions() {
        let server = start(&[]).await;
        let many: Vec<(&str, &str)> = (0..101).map(|_| ("match", "t")).collect();
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![("Match", "x")], "unknown topic matcher"),
            (vec![("match_regex", "x")], "unknown topic matcher"),
            (vec![("topic", "x")], "use \"match\""),
            (vec![("other", "x")], "missing \"match\""),
            (
                vec![("match_urlpattern", "https://example.com/(")],
                "invalid topic matcher pattern",
            ),
            (vec![("match", "a\u{0}b")], "control or format"),
            (many, "too many matchers"),
        ];
        for (pairs, message) in cases {
            let response = subscribe_request(&server, &pairs, None, None).await;
            assert_eq!(response.status(), 400, "{pairs:?}");
            let body = response.text().await.expect("body");
            assert!(body.contains(message), "{pairs:?}: {body}");
        }
        let response = sse_get(format!("{}?match=%FF", server.url(HUB)))
            .await
            .expect("request");
        assert_eq!(response.status(), 400);
    }

    #[tokio::test]
    async fn publishing_without_a_valid_token_gets_the_rfc_6750_answers() {
        let server = start(&[]).await;
        let metadata = format!(
            "http://{}/.well-known/oauth-protected-resource{HUB}",
            server.addr
        );
        let form = [("topic", "/topics/a"), ("data", "x")];

        let client = reqwest::Client::new();
        let none = client
            .post(server.url(HUB))
            .form(&form)
            .send()
            .await
            .expect("request");
        assert_eq!(none.status(), 401);
        assert_eq!(
            none.headers()["www-authenticate"],
            format!("Bearer resource_metadata=\"{metadata}\"")
        );

        let basic = client
            .post(server.url(HUB))
            .header("authorization", "Basic dXNlcjpwYXNz")
            .form(&form)
            .send()
            .await
            .expect("request");
        assert_eq!(basic.status(), 400);
        assert!(basic.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .contains("error=\"invalid_request\""));

        let claims = |aud: &str, iss: &str| json!({ "iss": iss, "aud": aud, "exp": later(), "authorization_details": [detail(&["publish"], json!([{ "match": "*" }]))] });
        let invalid = [
            sign(
                SUBSCRIBER_KEY,
                Some("at+jwt"),
                &claims(&audience(&server), ISSUER),
            ),
            sign(
                PUBLISHER_KEY,
                Some("JWT"),
                &claims(&audience(&server), ISSUER),
            ),
            sign(
                PUBLISHER_KEY,
                Some("at+jwt"),
                &claims("https://other.test/.well-known/mercure", ISSUER),
            ),
            sign(
                PUBLISHER_KEY,
                Some("at+jwt"),
                &claims(&audience(&server), "https://evil.test"),
            ),
            "not.a.token".to_owned(),
        ];
        for token in invalid {
            let response = publish(&server, &token, &form).await;
            assert_eq!(response.status(), 401);
            assert_eq!(
                response.headers()["www-authenticate"],
                format!("Bearer error=\"invalid_token\", resource_metadata=\"{metadata}\"")
            );
        }

    }

    #[tokio::test]
    async fn publishing_needs_a_grant_for_every_topic() {
        let server = start(&[]).await;
        let form = [("topic", "/topics/a"), ("data", "x")];
        let narrow = publisher_token(&server, json!([{ "match": "/topics/b" }]));
        let forbidden = publish(&server, &narrow, &form).await;
        assert_eq!(forbidden.status(), 403);
        assert!(forbidden.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .contains("insufficient_scope"));
        // Every topic must be covered, alternates too.
        let partial = publish(
            &server,
            &narrow,
            &[("topic", "/topics/b"), ("topic", "/topics/a")],
        )
        .await;
        assert_eq!(partial.status(), 403);

        let by_pattern = publisher_token(
            &server,
            json!([{ "match": "/topics/:name", "match_type": "urlpattern" }]),
        );
        assert_eq!(publish(&server, &by_pattern, &form).await.status(), 200);

    }

    #[tokio::test]
    async fn a_publisher_token_in_the_cookie_counts_from_the_hubs_own_origin_only() {
        let server = start(&[]).await;
        let form = [("topic", "/topics/a"), ("data", "x")];
        let client = reqwest::Client::new();
        // A token in the cookie works when there is no Authorization header, from a page of
        // the hub's own origin (which the request must name).
        let own_origin = format!("http://{}", server.addr);
        for (origin, referer, status) in [
            (Some(own_origin.as_str()), None, 200),
            (None, Some(format!("{own_origin}/topics/a")), 200),
            (Some("http://evil.example"), None, 403),
            (None, Some("http://evil.example/page".to_owned()), 403),
            (None, None, 403),
        ] {
            let mut request = client
                .post(server.url(HUB))
                .header(
                    "cookie",
                    format!("mercure_access_token={}", publish_all(&server)),
                )
                .form(&form);
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            if let Some(referer) = &referer {
                request = request.header("referer", referer);
            }
            let response = request.send().await.expect("request");
            assert_eq!(response.status(), status, "{origin:?} {referer:?}");
        }
    }

    #[tokio::test]
    async fn refuses_bad_updates_before_looking_at_grants() {
        let server = start(&[]).await;
        let narrow = publisher_token(&server, json!([{ "match": "/topics/a" }]));
        for (form, status) in [
            (vec![("topic", "*")], 400),
            (vec![("topic", "/.well-known/mercure/subscriptions/x")], 400),
            (vec![("topic", "/topics/a"), ("type", "mercure")], 400),
            (vec![("topic", "/topics/a"), ("id", "earliest")], 400),
            (vec![("topic", "/topics/a"), ("retry", "soon")], 400),
            (vec![("data", "no topic")], 400),
        ] {
            let response = publish(&server, &narrow, &form).await;
            assert_eq!(response.status(), status, "{form:?}");
        }
        let big = "x".repeat(64 * 1024 + 1);
        assert_eq!(
            publish(
                &server,
                &publish_all(&server),
                &[("topic", "/t"), ("data", &big)]
            )
            .await
            .status(),
            413
        );
        let many: Vec<(&str, &str)> = (0..101).map(|_| ("topic", "/t")).collect();
        assert_eq!(
            publish(&server, &publish_all(&server), &many)
                .await
                .status(),
            413
        );
        let raw_invalid = reqwest::Client::new()
            .post(server.url(HUB))
            .bearer_auth(publish_all(&server))
            .body("topic=%2Ft&data=%FF%FE")
            .send()
            .await
            .expect("request");
        assert_eq!(raw_invalid.status(), 400);
    }

    #[tokio::test]
    async fn a_publisher_cannot_forge_fields_or_events_on_the_wire() {
        let server = start(&[]).await;
        let mut stream = common::raw_get(
            server.addr,
            &format!("{HUB}?match=%2Ft"),
            "Accept: text/event-stream\r\n",
        )
        .await;
        let head = read_until(&mut stream, b":\n\n", Duration::from_secs(5)).await;
        assert!(contains(&head, b"text/event-stream"));
        subscribers(&server, 1).await;
        publish_ok(
            &server,
            &[
                ("topic", "/t"),
                (
                    "data",
                    "a\n\nevent: admin\rid: 666\r\nretry: 1\n\ndata: x\u{0}y",
                ),
                ("id", "safe"),
            ],
        )
        .await;
        let seen = read_until(&mut stream, b"x\0y\n\n", Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&seen);
        let event = &text[text.find("id: safe").expect("the event")..];
        let lines: Vec<&str> = event.trim_end_matches('\n').split('\n').collect();
        // Chunked framing lines aside, every line of the event is its id or a data line.
        for line in lines.iter().filter(|line| {
            !line.is_empty() && !line.chars().all(|c| c.is_ascii_hexdigit() || c == '\r')
        }) {
            assert!(
                line.starts_with("id: safe") || line.starts_with("data: "),
                "forged line {line:?} in {event:?}"
            );
        }
        for id in ["a\nb", "a\rb", "a\u{0}b"] {
            let response = publish(
                &server,
                &publish_all(&server),
                &[("topic", "/t"), ("id", id)],
            )
            .await;
            assert_eq!(response.status(), 400, "{id:?}");
        }
        for kind in ["a\nevent: b", "x\ry"] {
            let response = publish(
                &server,
                &publish_all(&server),
                &[("topic", "/t"), ("type", kind)],
            )
            .await;
            assert_eq!(response.status(), 400, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn private_updates_reach_only_subscribers_allowed_to_read_them() {
        let server = start(&[]).await;
        let reader = subscriber_token(
            &server,
            json!([detail(&["subscribe"], json!([{ "match": "/private/alt" }]))]),
        );
        let other = subscriber_token(
            &server,
            json!([detail(
                &["subscribe"],
                json!([{ "match": "/private/other" }])
            )]),
        );
        let mut allowed = subscribe(&server, &[("match", "/private/a")], Some(&reader)).await;
        let mut denied = subscribe(&server, &[("match", "/private/a")], Some(&other)).await;
        let mut anonymous = subscribe(&server, &[("match", "/private/a")], None).await;
        subscribers(&server, 3).await;

        // Routed on the canonical topic, authorized through the alternate one.
        let secret = publish_ok(
            &server,
            &[
                ("topic", "/private/a"),
                ("topic", "/private/alt"),
                ("data", "secret"),
                ("private", "on"),
            ],
        )
        .await;
        let public = publish_ok(&server, &[("topic", "/private/a"), ("data", "public")]).await;
        assert_eq!(next(&mut allowed).await.id, secret);
        assert_eq!(next(&mut allowed).await.id, public);
        assert_eq!(next(&mut denied).await.id, public);
        assert_eq!(next(&mut anonymous).await.id, public);

        // Replays are filtered the same way.
        let replay = subscribe(
            &server,
            &[("match", "/private/a"), ("last_event_id", "earliest")],
            None,
        )
        .await;
        let mut replay = replay;
        assert_eq!(next(&mut replay).await.id, public);
    }

    #[tokio::test]
    async fn anonymous_subscribers_can_be_refused() {
        let server = start(&["--anonymous", "false"]).await;
        let response = subscribe_request(&server, &[("match", "/t")], None, None).await;
        assert_eq!(response.status(), 401);
        let token = subscriber_token(&server, json!([]));
        let response = subscribe_request(&server, &[("match", "/t")], Some(&token), None).await;
        assert_eq!(response.status(), 200);
        // A bad token is refused even where anonymous access is allowed.
        let open = start(&[]).await;
        let response = subscribe_request(&open, &[("match", "/t")], Some("bad.token.here"), None).await;
        assert_eq!(response.status(), 401);
    }

    #[tokio::test]
    async fn resumes_from_the_history_without_gaps_or_duplicates() {
        let server = start(&["--history-size", "3"]).await;
        let mut ids = Vec::new();
        for n in 1..=4 {
            ids.push(publish_ok(&server, &[("topic", "/h"), ("data", &n.to_string())]).await);
        }
        // The hub kept the last three.
        let response = subscribe_request(&server, &[("match", "/h")], None, Some(&ids[1])).await;
        assert_eq!(response.headers()["mercure-last-event-id"], ids[1].as_str());
        let mut resumed = events(response);
        assert_eq!(next(&mut resumed).await.id, ids[2]);
        assert_eq!(next(&mut resumed).await.id, ids[3]);
        let live = publish_ok(&server, &[("topic", "/h"), ("data", "live")]).await;
        assert_eq!(next(&mut resumed).await.id, live);

        // Unknown (or dropped) id: everything kept, and the header says so.
        let response = subscribe_request(&server, &[("match", "/h")], None, Some(&ids[0])).await;
        assert_eq!(response.headers()["mercure-last-event-id"], "earliest");
        let mut from_start = events(response);
        assert_eq!(next(&mut from_start).await.id, ids[2]);

        let earliest = sse_get(format!(
            "{}?match=%2Fh&last_event_id=earliest",
            server.url(HUB)
        ))
        .await
        .expect("request");
        assert_eq!(earliest.headers()["mercure-last-event-id"], "earliest");
        let no_cursor = subscribe_request(&server, &[("match", "/h")], None, None).await;
        assert!(no_cursor.headers().get("mercure-last-event-id").is_none());
    }

    #[tokio::test]
    async fn announces_subscriptions_when_they_start_and_end() {
        let server = start(&[]).await;
        let mut watcher = subscribe(
            &server,
            &[(
                "match_urlpattern",
                "/.well-known/mercure/subscriptions/exact/:topic/:subscriber",
            )],
            Some(&subscriptions_reader(&server)),
        )
        .await;
        subscribers(&server, 1).await;

        let payload_token = subscriber_token(
            &server,
            json!([{ "type": DETAIL, "actions": ["subscribe"], "topics": [{ "match": "/room" }], "payload": { "name": "ada" } }]),
        );
        let reader = subscribe(&server, &[("match", "/room")], Some(&payload_token)).await;
        let joined = next(&mut watcher).await;
        assert_eq!(joined.event, "mercure");
        let doc: Value = serde_json::from_str(&joined.data).expect("json");
        assert_eq!(doc["type"], "subscription");
        assert_eq!(doc["match"], "/room");
        assert_eq!(doc["match_type"], "exact");
        assert_eq!(doc["active"], true);
        assert_eq!(doc["payload"], json!({ "name": "ada" }));
        let subscriber = doc["subscriber"].as_str().expect("id").to_owned();
        assert!(subscriber.starts_with("urn:uuid:"));
        assert_eq!(
            doc["id"],
            format!(
                "/.well-known/mercure/subscriptions/exact/%2Froom/{}",
                subscriber.replace(':', "%3A")
            )
        );

        // Leaving is announced too.
        drop(reader);
        let left = next(&mut watcher).await;
        let doc: Value = serde_json::from_str(&left.data).expect("json");
        assert_eq!(doc["active"], false);
        assert_eq!(doc["subscriber"], subscriber.as_str());
    }

    #[tokio::test]
    async fn the_subscriptions_api_lists_them_with_a_cursor_and_an_etag() {
        let server = start(&[]).await;
        let token = subscriptions_reader(&server);
        let _reader = subscribe(&server, &[("match", "/room")], None).await;
        subscribers(&server, 1).await;

        let list = subscriptions_get(&server, "", Some(&token)).await;
        assert_eq!(list.status(), 200);
        let link = list.headers()["link"].to_str().expect("ascii").to_owned();
        assert!(
            link.starts_with("</.well-known/mercure>; rel=\"mercure\"; last-event-id=\""),
            "{link}"
        );
        let etag = list.headers()["etag"].clone();
        let body: Value = list.json().await.expect("json");
        assert_eq!(body["type"], "subscriptions");
        let listed: Vec<&Value> = body["subscriptions"]
            .as_array()
            .expect("array")
            .iter()
            .filter(|s| s["match"] == "/room")
            .collect();
        assert_eq!(listed.len(), 1);
        let subscriber = listed[0]["subscriber"].as_str().expect("id").to_owned();

        let cached = reqwest::Client::new()
            .get(server.url(SUBSCRIPTIONS))
            .bearer_auth(&token)
            .header("if-none-match", etag)
            .send()
            .await
            .expect("request");
        assert_eq!(cached.status(), 304);

        let one_path = format!("/exact/%2Froom/{}", subscriber.replace(':', "%3A"));
        let one = subscriptions_get(&server, &one_path, Some(&token)).await;
        assert_eq!(one.status(), 200);
        let unknown = subscriptions_get(&server, "/exact/%2Froom/urn%3Auuid%3Anone", Some(&token)).await;
        assert_eq!(unknown.status(), 404);
    }

    #[tokio::test]
    async fn the_subscriptions_api_needs_a_token_that_may_read_it() {
        let server = start(&[]).await;
        assert_eq!(subscriptions_get(&server, "", None).await.status(), 401);
        let no_grant = subscriber_token(
            &server,
            json!([detail(&["subscribe"], json!([{ "match": "/room" }]))]),
        );
        assert_eq!(subscriptions_get(&server, "", Some(&no_grant)).await.status(), 403);
        let token = subscriptions_reader(&server);
        assert_eq!(subscriptions_get(&server, "/regex/x", Some(&token)).await.status(), 400);
    }

    #[tokio::test]
    async fn the_metadata_names_the_resource_and_the_detail_type() {
        let server = start(&[]).await;
        let metadata: Value =
            reqwest::get(server.url("/.well-known/oauth-protected-resource/.well-known/mercure"))
                .await
                .expect("request")
                .json()
                .await
                .expect("json");
        assert_eq!(metadata["resource"], audience(&server));
        assert_eq!(metadata["mercure_subscriptions"], true);
        assert_eq!(
            metadata["authorization_details_types_supported"],
            json!([DETAIL])
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_stops_reading_is_cut_off_without_slowing_others() {
        let server = start(&["--subscriber-queue", "8", "--stall-timeout", "500ms"]).await;
        let hub_metrics = server.state.metrics.hub.clone();
        // A client with a tiny receive buffer that never reads.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("small buffer");
        let mut stalled = socket.connect(server.addr).await.expect("connect");
        stalled
            .write_all(
                format!(
                    "GET {HUB}?match=%2Fbig HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
                    server.addr
                )
                .as_bytes(),
            )
            .await
            .expect("send");
        let mut reader = subscribe(&server, &[("match", "/big")], None).await;
        subscribers(&server, 2).await;

        // The reader keeps up (it reads each update before the next is published); the
        // stalled client's socket buffers fill, then its queue, and the hub cuts it off.
        let payload = "p".repeat(60 * 1024);
        for _ in 0..200 {
            let id = publish_ok(&server, &[("topic", "/big"), ("data", &payload)]).await;
            assert_eq!(next(&mut reader).await.id, id);
        }
        assert!(
            eventually(Duration::from_secs(10), || async {
                hub_metrics.open() == 1
            })
            .await,
            "the stalled subscriber is still connected"
        );
        assert_eq!(server.state.hub.hub.subscriber_count(), 1);
        drop(stalled);
    }

    #[tokio::test]
    async fn tokens_are_checked_against_the_configured_resource_identifier() {
        let server = start(&[
            "--resource-identifier",
            "https://hub.example.com/.well-known/mercure",
        ])
        .await;
        let token = |aud: &str| {
            sign(
                PUBLISHER_KEY,
                Some("at+jwt"),
                &json!({ "iss": ISSUER, "aud": aud, "exp": later(),
                "authorization_details": [detail(&["publish"], json!([{ "match": "*" }]))] }),
            )
        };
        let form = [("topic", "/t"), ("data", "x")];
        assert_eq!(
            publish(
                &server,
                &token("https://hub.example.com/.well-known/mercure"),
                &form
            )
            .await
            .status(),
            200
        );
        assert_eq!(
            publish(&server, &token(&audience(&server)), &form)
                .await
                .status(),
            401
        );
    }

    #[tokio::test]
    async fn cors_allows_only_configured_origins_with_credentials() {
        let server = start(&["--cors-origins", "https://app.example.com"]).await;
        let client = reqwest::Client::new();
        let preflight = client
            .request(reqwest::Method::OPTIONS, server.url(HUB))
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "last-event-id")
            .send()
            .await
            .expect("request");
        assert_eq!(
            preflight.headers()["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert_eq!(
            preflight.headers()["access-control-allow-credentials"],
            "true"
        );
        let stranger = client
            .request(reqwest::Method::OPTIONS, server.url(HUB))
            .header("origin", "https://evil.example.com")
            .header("access-control-request-method", "GET")
            .send()
            .await
            .expect("request");
        assert!(stranger
            .headers()
            .get("access-control-allow-origin")
            .is_none());
    }

    #[tokio::test]
    async fn compatibility_mode_serves_0x_subscribers_and_publishers() {
        let server = start(&["--protocol-version-compatibility", "8"]).await;
        let (legacy_publisher, legacy_subscriber) = legacy_tokens();

        let mut templated = subscribe(&server, &[("topic", BOOKS_TEMPLATE)], None).await;
        let by_query = legacy_subscribe(&server, &[("authorization", &legacy_subscriber)]).await;
        assert_eq!(by_query.status(), 200);
        let mut authorized = events(by_query);
        let by_cookie = reqwest::Client::new()
            .get(format!(
                "{}?topic=https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D",
                server.url(HUB)
            ))
            .header("accept", "text/event-stream")
            .header(
                "cookie",
                format!("mercureAuthorization={legacy_subscriber}"),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(by_cookie.status(), 200);
        let mut cookie_authorized = events(by_cookie);
        subscribers(&server, 3).await;

        let (secret, public) = publish_private_then_public(&server, &legacy_publisher).await;
        assert_eq!(next(&mut authorized).await.id, secret);
        assert_eq!(next(&mut authorized).await.id, public);
        assert_eq!(next(&mut cookie_authorized).await.id, secret);
        assert_eq!(
            next(&mut templated).await.id,
            public,
            "anonymous: public only"
        );
        let outside = publish(
            &server,
            &legacy_publisher,
            &[("topic", "https://example.com/users/1")],
        )
        .await;
        assert_eq!(outside.status(), 403);

        // Modern clients keep working alongside.
        let modern = publisher_token(&server, json!([{ "match": "*" }]));
        assert_eq!(
            publish(&server, &modern, &[("topic", "/m")]).await.status(),
            200
        );
    }

    #[tokio::test]
    async fn compatibility_mode_resumes_0x_cursors_and_hides_private_ids() {
        let server = start(&["--protocol-version-compatibility", "8"]).await;
        let (legacy_publisher, legacy_subscriber) = legacy_tokens();
        let (secret, public) = publish_private_then_public(&server, &legacy_publisher).await;

        // 0.x cursor: lastEventID, answered in Last-Event-ID as well, to a subscriber that may
        // read the update it names.
        let resumed = legacy_subscribe(
            &server,
            &[("lastEventID", &secret), ("authorization", &legacy_subscriber)],
        )
        .await;
        assert_eq!(resumed.headers()["last-event-id"], secret.as_str());
        assert_eq!(resumed.headers()["mercure-last-event-id"], secret.as_str());
        let mut resumed = events(resumed);
        assert_eq!(next(&mut resumed).await.id, public);
        // To anyone else, a private update's id is as unknown as one never published.
        let anonymous = legacy_subscribe(&server, &[("lastEventID", &secret)]).await;
        assert_eq!(anonymous.headers()["mercure-last-event-id"], "earliest");
        let mut anonymous = events(anonymous);
        assert_eq!(
            next(&mut anonymous).await.id,
            public,
            "replayed from the earliest"
        );
    }

    #[tokio::test]
    async fn modern_mode_refuses_0x_clients() {
        let server = start(&[]).await;
        let legacy_publisher = sign(
            PUBLISHER_KEY,
            None,
            &json!({ "mercure": { "publish": ["*"] } }),
        );
        assert_eq!(
            publish(&server, &legacy_publisher, &[("topic", "/t")])
                .await
                .status(),
            401
        );
        let response = subscribe_request(&server, &[("topic", "/t")], None, None).await;
        assert_eq!(response.status(), 400);
    }

    #[tokio::test]
    async fn the_token_command_mints_tokens_the_hub_accepts() {
        let server = start(&[]).await;
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_server"))
            .args([
                "--publisher-jwt-key",
                PUBLISHER_KEY,
                "--trusted-issuers",
                ISSUER,
                "token",
                "--publish",
                "urlpattern:/minted/:name",
                "--audience",
                &audience(&server),
            ])
            .output()
            .await
            .expect("run the token command");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let token = String::from_utf8(output.stdout)
            .expect("utf-8")
            .trim()
            .to_owned();
        assert_eq!(
            publish(&server, &token, &[("topic", "/minted/a")])
                .await
                .status(),
            200
        );
        assert_eq!(
            publish(&server, &token, &[("topic", "/other")])
                .await
                .status(),
            403
        );

        let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_server"))
            .args(["token", "--publish", "*"])
            .env_remove("MERCURE_PUBLISHER_JWT_KEY")
            .output()
            .await
            .expect("run the token command");
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("no publisher key is configured"));
    }

    #[tokio::test]
    async fn a_publisher_whose_body_never_ends_gets_408_and_subscribers_do_not() {
        let server = start(&["--request-timeout", "1s"]).await;
        let mut reader = subscribe(&server, &[("match", "/slow")], None).await;
        let token = publish_all(&server);
        let mut slow = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        let head = format!(
            "POST /.well-known/mercure HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntopic=/slow",
            server.addr
        );
        slow.write_all(head.as_bytes()).await.expect("send");
        let answer = read_until(&mut slow, b"\r\n\r\n", Duration::from_secs(5)).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        // The subscriber, open for longer than the limit, still gets what is published.
        let id = publish_ok(&server, &[("topic", "/slow"), ("data", "after")]).await;
        assert_eq!(next(&mut reader).await.id, id);
    }
}
