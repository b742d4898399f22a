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
