//! Talking Mercure to a test server: tokens, publishing, subscribing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventsource_stream::{Event, EventStream, Eventsource};
use futures_util::{Stream, StreamExt};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::{eventually, TestServer};

pub const PUBLISHER_KEY: &str = "publisher-secret-of-at-least-32-bytes!";
pub const SUBSCRIBER_KEY: &str = "subscriber-secret-of-at-least-32-bytes";
pub const ISSUER: &str = "https://issuer.test";
pub const DETAIL: &str = "https://mercure.rocks/authorization-detail";
pub const HUB: &str = "/.well-known/mercure";

pub type Events =
    EventStream<std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>>;

pub async fn start(extra: &[&str]) -> TestServer {
    let mut flags = vec![
        "--publisher-jwt-key",
        PUBLISHER_KEY,
        "--subscriber-jwt-key",
        SUBSCRIBER_KEY,
        "--trusted-issuers",
        ISSUER,
    ];
    flags.extend_from_slice(extra);
    TestServer::start(&flags).await
}

pub fn audience(server: &TestServer) -> String {
    format!("http://{}{HUB}", server.addr)
}

pub fn later() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600
}

pub fn sign(key: &str, typ: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.typ = typ.map(str::to_owned);
    encode(&header, claims, &EncodingKey::from_secret(key.as_bytes())).expect("sign")
}

pub fn detail(actions: &[&str], topics: Value) -> Value {
    json!({ "type": DETAIL, "actions": actions, "topics": topics })
}

/// A token that may publish anywhere on a hub whose resource identifier is `audience`.
pub fn publisher_token_for(audience: &str) -> String {
    sign(
        PUBLISHER_KEY,
        Some("at+jwt"),
        &json!({ "iss": ISSUER, "aud": audience, "exp": later(),
                 "authorization_details": [detail(&["publish"], json!([{ "match": "*" }]))] }),
    )
}

pub fn publisher_token(server: &TestServer, topics: Value) -> String {
    sign(
        PUBLISHER_KEY,
        Some("at+jwt"),
        &json!({ "iss": ISSUER, "aud": audience(server), "exp": later(),
                 "authorization_details": [detail(&["publish"], topics)] }),
    )
}

pub fn subscriber_token(server: &TestServer, details: Value) -> String {
    sign(
        SUBSCRIBER_KEY,
        Some("at+jwt"),
        &json!({ "iss": ISSUER, "aud": audience(server), "exp": later(), "authorization_details": details }),
    )
}

pub fn publish_all(server: &TestServer) -> String {
    publisher_token(server, json!([{ "match": "*" }]))
}

pub async fn publish(server: &TestServer, token: &str, form: &[(&str, &str)]) -> reqwest::Response {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    reqwest::Client::new()
        .post(server.url(HUB))
        .bearer_auth(token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("publish request")
}

pub async fn publish_ok(server: &TestServer, form: &[(&str, &str)]) -> String {
    let response = publish(server, &publish_all(server), form).await;
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    response.text().await.expect("id")
}

pub fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

pub async fn subscribe_request(
    server: &TestServer,
    pairs: &[(&str, &str)],
    token: Option<&str>,
    last_id: Option<&str>,
) -> reqwest::Response {
    // As a browser's EventSource asks: on the fast path unless the server has it off.
    let mut request = reqwest::Client::new()
        .get(format!("{}?{}", server.url(HUB), query(pairs)))
        .header("accept", "text/event-stream");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(id) = last_id {
        request = request.header("Last-Event-ID", id);
    }
    request.send().await.expect("subscribe request")
}

/// `GET url` as an EventSource sends it.
pub async fn sse_get(url: String) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::new()
        .get(url)
        .header("accept", "text/event-stream")
        .send()
        .await
}

pub async fn subscribe(server: &TestServer, pairs: &[(&str, &str)], token: Option<&str>) -> Events {
    let response = subscribe_request(server, pairs, token, None).await;
    assert_eq!(response.status(), 200);
    events(response)
}

pub fn events(response: reqwest::Response) -> Events {
    let stream: std::pin::Pin<Box<dyn Stream<Item = reqwest::Result<bytes::Bytes>> + Send>> =
        Box::pin(response.bytes_stream());
    stream.eventsource()
}

pub async fn next(events: &mut Events) -> Event {
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event within 5 s")
        .expect("the stream goes on")
        .expect("a well-formed event")
}

pub async fn nothing_within(events: &mut Events, wait: Duration) {
    if let Ok(Some(event)) = tokio::time::timeout(wait, events.next()).await {
        panic!("unexpected event: {event:?}");
    }
}

/// Waits until the hub has `n` subscribers (subscribing is asynchronous for the client).
pub async fn subscribers(server: &TestServer, n: u64) {
    let metrics = server.state.metrics.hub.clone();
    assert!(
        eventually(Duration::from_secs(5), || async { metrics.open() == n }).await,
        "expected {n} hub streams, have {}",
        metrics.open()
    );
}
