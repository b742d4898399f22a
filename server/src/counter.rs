//! The original example's job: `GET /stream` counts `Counter value 1` to `Counter value N`,
//! one `new_message` a tick, then sends `end_event` and ends the response.
//!
//! Every connection has its own counter. A client that comes back with `Last-Event-ID: k`
//! (or `?lastEventId=k`) continues at `k + 1`, so a reconnect neither repeats nor skips a
//! message. When the client goes away, the response body is dropped and with it the
//! stream's timer: no work is left ticking.

use std::time::Duration;

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_util::{stream, Stream};
use serde::Deserialize;
use tokio::time::MissedTickBehavior;

use crate::{
    metrics::StreamTracker,
    sse::{self, EventBuilder, FieldValue, SseBody},
    AppState,
};

/// The event name of each counter message.
pub const NEW_MESSAGE: FieldValue<'static> = FieldValue::from_static("new_message");
/// The event name of the final event.
pub const END_EVENT: FieldValue<'static> = FieldValue::from_static("end_event");
/// The data of the final event.
pub const END_DATA: &str = "End of the stream";

/// How `/stream` runs; from [`crate::config::Config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterSettings {
    /// Messages per stream.
    pub count: u32,
    /// Time between two events.
    pub interval: Duration,
    /// The `retry:` delay sent with each message.
    pub retry: Duration,
}

/// The query parameters `/stream` reads; others are ignored.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    /// For clients that cannot set headers; the `Last-Event-ID` header wins when both are set.
    #[serde(rename = "lastEventId")]
    last_event_id: Option<String>,
}

/// Why `/stream` refused a request.
#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error("Last-Event-ID must be a whole number from 0 to {count}, got {given:?}")]
    InvalidLastEventId { given: String, count: u32 },
}

impl IntoResponse for CounterError {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, format!("{self}\n")).into_response()
    }
}

/// `GET /stream`.
pub async fn stream(
    State(state): State<AppState>,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, CounterError> {
    let settings = state.counter;
    let last_id = headers
        .get("last-event-id")
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .or(query.last_event_id);
    let resume_after = match last_id.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(given) => parse_last_id(given, settings.count)?,
    };
    let tracker = StreamTracker::start(state.metrics.counter.clone(), resume_after > 0);
    let events = counter_events(settings, resume_after + 1, tracker);
    let body = SseBody::new(
        events,
        state.shutdown.clone().cancelled_owned(),
        Some(state.keep_alive),
    );
    Ok(sse::response(body))
}

/// Reads a `Last-Event-ID` this stream could have sent: a decimal number up to `count`.
fn parse_last_id(given: &str, count: u32) -> Result<u32, CounterError> {
    given
        .parse::<u32>()
        .ok()
        .filter(|id| *id <= count && given.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| CounterError::InvalidLastEventId {
            given: given.chars().take(40).collect(),
            count,
        })
}

/// The events of one connection: messages `first..=count`, a tick apart, then `end_event`.
/// The first message goes out at once.
fn counter_events(
    settings: CounterSettings,
    first: u32,
    tracker: StreamTracker,
) -> impl Stream<Item = Bytes> + Send + 'static {
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    stream::unfold(
        (Some(first), ticks, tracker),
        move |(next, mut ticks, mut tracker)| async move {
            let n = next?;
            ticks.tick().await;
            tracker.sent(1);
            if n <= settings.count {
                Some((message(n, settings.retry), (Some(n + 1), ticks, tracker)))
            } else {
                tracker.finish();
                Some((end_event(), (None, ticks, tracker)))
            }
        },
    )
}

/// `new_message` number `n`.
pub fn message(n: u32, retry: Duration) -> Bytes {
    EventBuilder::new()
        .name(NEW_MESSAGE)
        .numeric_id(n.into())
        .retry(retry)
        .data(&format!("Counter value {n}"))
        .build()
}

/// The final event.
pub fn end_event() -> Bytes {
    EventBuilder::new().name(END_EVENT).data(END_DATA).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_the_stream_sent() {
        assert_eq!(parse_last_id("0", 20).ok(), Some(0));
        assert_eq!(parse_last_id("7", 20).ok(), Some(7));
        assert_eq!(parse_last_id("20", 20).ok(), Some(20));
    }

    #[test]
    fn refuses_anything_else() {
        for bad in [
            "-1",
            "+3",
            "21",
            "1e3",
            "abc",
            "99999999999999999999999",
            "3 4",
            "٣",
        ] {
            let error = parse_last_id(bad, 20).expect_err(bad).to_string();
            assert!(error.contains("from 0 to 20"), "{error}");
        }
    }

    #[test]
    fn quotes_at_most_forty_characters_of_bad_input() {
        let error = parse_last_id(&"x".repeat(10_000), 20)
            .expect_err("too long")
            .to_string();
        assert!(error.len() < 120, "{error}");
    }

    #[test]
    fn messages_match_the_original_example() {
        assert_eq!(
            message(3, Duration::from_secs(15)),
            "event: new_message\nid: 3\nretry: 15000\ndata: Counter value 3\n\n"
        );
        assert_eq!(end_event(), "event: end_event\ndata: End of the stream\n\n");
    }
}
