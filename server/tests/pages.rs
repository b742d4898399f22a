//! The server-rendered pages.

mod common;

use common::{mercure, TestServer};
use serde_json::json;

#[tokio::test]
async fn home_page_is_rendered_on_the_server() {
    let server = TestServer::start(&["--stream-count", "7"]).await;
    let response = reqwest::get(server.url("/")).await.expect("request");
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/html"));
    let html = response.text().await.expect("body");
    assert!(
        html.contains("<title>Live counter · Pulse</title>"),
        "{html}"
    );
    assert!(html.contains("<h1>Live counter</h1>"), "{html}");
    assert!(html.contains("Connecting…"), "{html}");
    assert!(html.contains(" of 7 messages"), "{html}");
    assert!(
        html.contains("/pkg/pulse.js"),
        "the hydration script is linked: {html}"
    );
}

#[tokio::test]
async fn unknown_paths_are_404_pages() {
    let server = TestServer::start(&[]).await;
    let response = reqwest::get(server.url("/no/such/page"))
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    let html = response.text().await.expect("body");
    assert!(html.contains("Page not found"), "{html}");
}

/// The page cookie a response sets: its whole `Set-Cookie` value.
fn set_page_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("mercure_access_token="))
        .map(str::to_owned)
}

/// The page cookie a response sets, as a request sends it back (`name=value`).
fn page_cookie(response: &reqwest::Response) -> Option<String> {
    set_page_cookie(response).and_then(|value| value.split(';').next().map(str::to_owned))
}

async fn ask_for_token(server: &TestServer, cookie: &str, member: bool) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url("/api/token"))
        .header("cookie", cookie)
        .header("accept", "application/json")
        .form(&[
            ("topic", "renewal".to_owned()),
            ("member", member.to_string()),
        ])
        .send()
        .await
        .expect("request")
}

/// A page token for `server`'s hub as the server would mint one, signed with `key`.
fn page_token(server: &TestServer, key: &str, exp: u64) -> String {
    let claims = json!({
        "iss": "https://localhost",
        "aud": mercure::audience(server),
        "exp": exp,
        "authorization_details": [],
    });
    format!(
        "mercure_access_token={}",
        mercure::sign(key, Some("at+jwt"), &claims)
    )
}

#[tokio::test]
async fn a_page_gets_a_new_token_only_when_the_hub_refuses_the_one_it_has() {
    let server = TestServer::start(&["--subscriber-jwt-key", mercure::SUBSCRIBER_KEY]).await;
    let page = reqwest::get(server.url("/topics/renewal"))
        .await
        .expect("request");
    assert_eq!(page.status(), 200);
    // A session cookie: it outlives its token, so that a reconnect after the token ran out
    // is refused (and the page asks for a new one) instead of going without a token.
    let set_cookie = set_page_cookie(&page).expect("the page sets its hub token");
    assert!(!set_cookie.contains("Max-Age"), "{set_cookie}");
    assert!(!set_cookie.contains("Expires"), "{set_cookie}");

    // A token the hub accepts is kept, whatever the page asks for: a page being left may
    // ask after the next one (joining the members, say) replaced it.
    let valid = [
        page_cookie(&page).expect("name=value"),
        page_token(&server, mercure::SUBSCRIBER_KEY, mercure::later()),
    ];
    for cookie in valid {
        let kept = ask_for_token(&server, &cookie, true).await;
        assert_eq!(kept.status(), 200);
        assert!(set_page_cookie(&kept).is_none(), "{cookie}");
        assert_eq!(kept.text().await.expect("body"), "false");
    }

    // One it does not accept is replaced, with the membership the page shows: signed with
    // another key (a restarted server's), or run out.
    let now = mercure::later() - 3600;
    let refused = [
        page_token(
            &server,
            "another-key-of-at-least-32-bytes-long",
            mercure::later(),
        ),
        page_token(&server, mercure::SUBSCRIBER_KEY, now - 10),
    ];
    for cookie in refused {
        let renewed = ask_for_token(&server, &cookie, true).await;
        assert_eq!(renewed.status(), 200);
        let fresh = page_cookie(&renewed).expect("a new token");
        assert_eq!(renewed.text().await.expect("body"), "true");
        let html = reqwest::Client::new()
            .get(server.url("/topics/renewal"))
            .header("cookie", &fresh)
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body");
        assert!(html.contains("You are a member"), "{html}");
    }
}

#[tokio::test]
async fn membership_and_tokens_are_not_changed_from_another_site() {
    let server = TestServer::start(&[]).await;
    let client = reqwest::Client::new();
    for (path, member) in [("/api/token", "true"), ("/api/membership", "true")] {
        let response = client
            .post(server.url(path))
            .header("sec-fetch-site", "cross-site")
            .header("accept", "application/json")
            .form(&[("topic", "general"), ("member", member)])
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 403, "{path}");
        assert!(set_page_cookie(&response).is_none(), "{path}");
        let body = response.text().await.expect("body");
        assert!(body.contains("other sites"), "{path}: {body}");
    }
    // Browsers that do not say where a request comes from still name the page's origin.
    let host = server.addr.to_string();
    let cases = [
        (Some("same-site"), None, false),
        (None, Some("http://elsewhere.test".to_owned()), false),
        (None, Some("null".to_owned()), false),
        (None, Some(format!("https://{host}.elsewhere.test")), false),
        (Some("same-origin"), None, true),
        (Some("none"), None, true),
        (None, Some(format!("http://{host}")), true),
        // Not a browser's cross-site request: a client of its own.
        (None, None, true),
    ];
    for (site, origin, allowed) in cases {
        let mut request = client
            .post(server.url("/api/membership"))
            .header("accept", "application/json")
            .form(&[("topic", "general"), ("member", "true")]);
        if let Some(site) = site {
            request = request.header("sec-fetch-site", site);
        }
        if let Some(origin) = &origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.expect("request");
        assert_eq!(
            response.status().is_success(),
            allowed,
            "{site:?} {origin:?}"
        );
        assert_eq!(set_page_cookie(&response).is_some(), allowed);
    }
}

#[tokio::test]
async fn over_http2_the_page_token_names_the_host_the_page_was_asked_from() {
    let server = TestServer::start(&["--subscriber-jwt-key", mercure::SUBSCRIBER_KEY]).await;
    // HTTP/2 has no `Host` header: the host is the request's authority.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let page = client
        .get(server.url("/topics/h2"))
        .send()
        .await
        .expect("request");
    assert_eq!(page.version(), reqwest::Version::HTTP_2);
    let cookie = page_cookie(&page).expect("the page sets its hub token");
    let token = cookie.split_once('=').expect("name=value").1;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&[mercure::audience(&server)]);
    let decoded = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(mercure::SUBSCRIBER_KEY.as_bytes()),
        &validation,
    );
    assert!(decoded.is_ok(), "{decoded:?}");
    // And the hub takes it from a subscriber over HTTP/2 too.
    let stream = client
        .get(server.url("/.well-known/mercure?match=/topics/h2"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("request");
    assert_eq!(stream.status(), 200);
}

async fn watchers_of(server: &TestServer, topic: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url("/api/watchers"))
        .header("accept", "application/json")
        .form(&[("topic", topic)])
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn a_reconnected_page_can_ask_who_watches_its_topic() {
    let server = TestServer::start(&[]).await;
    let none: Vec<String> = watchers_of(&server, "lobby")
        .await
        .json()
        .await
        .expect("JSON");
    assert!(none.is_empty(), "{none:?}");

    let _watching = mercure::subscribe(&server, &[("match", "/topics/lobby")], None).await;
    let _elsewhere = mercure::subscribe(&server, &[("match", "/topics/other")], None).await;
    mercure::subscribers(&server, 2).await;
    let ids: Vec<String> = watchers_of(&server, "lobby")
        .await
        .json()
        .await
        .expect("JSON");
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(ids[0].starts_with("urn:uuid:"), "{ids:?}");

    let refused = watchers_of(&server, "..").await;
    assert!(!refused.status().is_success());
}
