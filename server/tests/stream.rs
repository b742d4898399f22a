//! `/stream` against the real server: framing, order, the end, resume and disconnects, on
//! both of the server's paths (see `common::on_both_paths`).

mod common;

use std::time::Duration;

use common::{eventually, mercure::sse_get, TestServer};
use eventsource_stream::{Event, Eventsource};
use futures_util::StreamExt;

const FAST: &[&str] = &["--stream-count", "5", "--stream-interval", "10ms"];

async fn events(response: reqwest::Response) -> Vec<Event> {
    response
        .bytes_stream()
        .eventsource()
        .map(|event| event.expect("well-formed event"))
        .collect()
        .await
}

fn counter_ids_and_data(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|event| event.event == "new_message")
        .map(|event| (event.id.clone(), event.data.clone()))
        .collect()
}

fn expected(range: std::ops::RangeInclusive<u32>) -> Vec<(String, String)> {
    range
        .map(|n| (n.to_string(), format!("Counter value {n}")))
        .collect()
}

on_both_paths! {
    #[tokio::test]
    async fn sends_the_counter_then_the_end_and_closes() {
        let server = TestServer::start(FAST).await;
        let response = sse_get(server.url("/stream")).await.expect("request");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        assert_eq!(response.headers()["cache-control"], "no-cache");
        assert_eq!(response.headers()["x-accel-buffering"], "no");

        // Collecting only finishes when the server ends the response.
        let events = tokio::time::timeout(Duration::from_secs(5), events(response))
            .await
            .expect("the response ends by itself");
        assert_eq!(counter_ids_and_data(&events), expected(1..=5));
        for event in &events[..5] {
            assert_eq!(event.retry, Some(Duration::from_secs(15)));
        }
        let last = events.last().expect("an end event");
        assert_eq!(last.event, "end_event");
        assert_eq!(last.data, "End of the stream");
        assert_eq!(events.len(), 6);
    }

    #[tokio::test]
    async fn frames_each_event_exactly() {
        let server = TestServer::start(&[
            "--stream-count",
            "2",
            "--stream-interval",
            "5ms",
            "--stream-retry",
            "250ms",
        ])
        .await;
        let body = sse_get(server.url("/stream"))
            .await
            .expect("request")
            .text()
            .await
            .expect("body");
        assert_eq!(
            body,
            "event: new_message\nid: 1\nretry: 250\ndata: Counter value 1\n\n\
             event: new_message\nid: 2\nretry: 250\ndata: Counter value 2\n\n\
             event: end_event\ndata: End of the stream\n\n"
        );
    }

    #[tokio::test]
    async fn two_clients_count_independently() {
        let server = TestServer::start(&["--stream-count", "6", "--stream-interval", "20ms"]).await;
        let first = sse_get(server.url("/stream"))
            .await
            .expect("first request");
        let mut first = first.bytes_stream().eventsource();
        for n in 1..=3 {
            let event = first.next().await.expect("event").expect("valid");
            assert_eq!(event.data, format!("Counter value {n}"));
        }
        // The second client starts at 1 although the first is already at 3.
        let second = sse_get(server.url("/stream"))
            .await
            .expect("second request");
        let (rest_of_first, second) = tokio::join!(
            first.map(|event| event.expect("valid")).collect::<Vec<_>>(),
            events(second)
        );
        assert_eq!(counter_ids_and_data(&rest_of_first), expected(4..=6));
        assert_eq!(counter_ids_and_data(&second), expected(1..=6));
        assert_eq!(
            second.last().map(|event| event.event.as_str()),
            Some("end_event")
        );
    }

    #[tokio::test]
    async fn a_client_that_leaves_stops_its_stream() {
        let server =
            TestServer::start(&["--stream-count", "100000", "--stream-interval", "10ms"]).await;
        let metrics = server.state.metrics.counter.clone();
        let response = sse_get(server.url("/stream")).await.expect("request");
        let mut events = response.bytes_stream().eventsource();
        events.next().await.expect("event").expect("valid");
        events.next().await.expect("event").expect("valid");
        assert_eq!(metrics.open(), 1);
        drop(events);

        assert!(
            eventually(Duration::from_secs(1), || async { metrics.open() == 0 }).await,
            "the stream is still open a second after its client left"
        );
        assert_eq!(metrics.disconnects(), 1);
        // Nothing keeps ticking: the count of sent events stays where it stopped.
        let sent = metrics.events();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(metrics.events(), sent);
    }

    #[tokio::test]
    async fn resumes_after_the_last_event_id() {
        let server = TestServer::start(FAST).await;
        let client = reqwest::Client::new();

        let by_header = client
            .get(server.url("/stream"))
            .header("accept", "text/event-stream")
            .header("Last-Event-ID", "3")
            .send()
            .await
            .expect("request");
        assert_eq!(
            counter_ids_and_data(&events(by_header).await),
            expected(4..=5)
        );

        let by_query = sse_get(server.url("/stream?lastEventId=2"))
            .await
            .expect("request");
        assert_eq!(
            counter_ids_and_data(&events(by_query).await),
            expected(3..=5)
        );

        let header_wins = client
            .get(server.url("/stream?lastEventId=1"))
            .header("Last-Event-ID", "4")
            .send()
            .await
            .expect("request");
        assert_eq!(
            counter_ids_and_data(&events(header_wins).await),
            expected(5..=5)
        );

        let at_the_end = client
            .get(server.url("/stream"))
            .header("accept", "text/event-stream")
            .header("Last-Event-ID", "5")
            .send()
            .await
            .expect("request");
        let rest = events(at_the_end).await;
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].event, "end_event");
        assert_eq!(server.state.metrics.counter.resumes(), 4);
    }

    #[tokio::test]
    async fn refuses_a_last_event_id_it_never_sent() {
        let server = TestServer::start(FAST).await;
        let client = reqwest::Client::new();
        for bad in ["-1", "6", "abc", "99999999999999999999999999", "1.5"] {
            let response = client
                .get(server.url("/stream"))
            .header("accept", "text/event-stream")
                .header("Last-Event-ID", bad)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 400, "{bad}");
            let message = response.text().await.expect("body");
            assert!(
                message.contains("Last-Event-ID must be a whole number from 0 to 5"),
                "{message}"
            );
        }
        let response = sse_get(server.url("/stream?lastEventId=x"))
            .await
            .expect("request");
        assert_eq!(response.status(), 400);
        assert_eq!(server.state.metrics.counter.started(), 0);
    }

    #[tokio::test]
    async fn metrics_count_streams() {
        let server = TestServer::start(FAST).await;
        let response = sse_get(server.url("/stream")).await.expect("request");
        let _ = events(response).await;
        let text = reqwest::get(server.url("/metrics"))
            .await
            .expect("request")
            .text()
            .await
            .expect("body");
        assert!(
            text.contains("pulse_streams_started_total{stream=\"counter\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pulse_events_sent_total{stream=\"counter\"} 6"),
            "{text}"
        );
        assert!(
            text.contains("pulse_streams_open{stream=\"counter\"} 0"),
            "{text}"
        );
    }
}
