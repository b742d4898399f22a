//! The server-rendered pages.

mod common;

use common::TestServer;

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

/// The token a response sets in the page cookie, as `name=value`.
fn page_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with("mercure_access_token="))
        .and_then(|value| value.split(';').next())
        .map(str::to_owned)
}

async fn ask_for_token(server: &TestServer, cookie: &str, member: bool) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url("/api/token"))
        .header("cookie", cookie)
        .header("accept", "application/json")
        .form(&[("member", member.to_string())])
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn a_page_gets_a_new_token_only_when_the_hub_refuses_the_one_it_has() {
    let server = TestServer::start(&[]).await;
    let page = reqwest::get(server.url("/topics/renewal"))
        .await
        .expect("request");
    assert_eq!(page.status(), 200);
    let cookie = page_cookie(&page).expect("the page sets its hub token");
    // A session cookie: it outlives its token, so that a reconnect after the token ran out
    // is refused (and the page asks for a new one) instead of going without a token.
    let set_cookie = page.headers()["set-cookie"].to_str().expect("ascii");
    assert!(!set_cookie.contains("Max-Age"), "{set_cookie}");
    assert!(!set_cookie.contains("Expires"), "{set_cookie}");

    // A token the hub accepts is kept, whatever the page asks for: a page being left may
    // ask after the next one (joining the members, say) replaced it.
    let kept = ask_for_token(&server, &cookie, true).await;
    assert_eq!(kept.status(), 200);
    assert!(page_cookie(&kept).is_none());
    assert_eq!(kept.text().await.expect("body"), "false");

    // One it does not accept (signed with another key: a restarted server's) is replaced,
    // with the membership the page shows.
    let stale = "mercure_access_token=eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmVkIGVsc2V3aGVyZQ";
    let renewed = ask_for_token(&server, stale, true).await;
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
