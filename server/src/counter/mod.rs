//! The original example's job: `GET /stream` counts `Counter value 1` to `Counter value N`,
//! one `new_message` a tick, then sends `end_event` and ends the response.
//!
//! Every connection has its own counter. A client that comes back with `Last-Event-ID: k`
//! (or `?lastEventId=k`) continues at `k + 1`, so a reconnect neither repeats nor skips a
//! message. The first event goes out with the response head; the rest are sent by one
//! [`clock`] shared by every stream. When the client goes away, its stream is dropped and
//! the clock forgets it: no work is left ticking.

pub mod clock;

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_util::Stream;
use serde::Deserialize;

use crate::{
    metrics::{StreamMetrics, StreamTracker},
    net::{caps, streams::EventStreams},
    stream::{
        body::{self as sse, SseBody},
        sink::{Direct, Sink},
    },
    update::Update,
    wire::sse::{EventBuilder, FieldValue},
};
use clock::Clock;

/// The event name of each counter message.
pub const NEW_MESSAGE: FieldValue<'static> = FieldValue::from_static("new_message");
/// The event name of the final event.
pub const END_EVENT: FieldValue<'static> = FieldValue::from_static("end_event");
/// The data of the final event.
pub const END_DATA: &str = "End of the stream";

/// Events a stream may have waiting for a client that does not read; past that the stream
/// ends and the client resumes from its last id when it is ready.
const QUEUE_CAPACITY: usize = 16;

/// How `/stream` runs (the command line fills it in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterSettings {
    /// Messages per stream.
    pub count: u32,
    /// Time between two events.
    pub interval: Duration,
    /// The `retry:` delay sent with each message.
    pub retry: Duration,
}

/// `/stream`'s settings and the clock its streams share.
#[derive(Debug, Clone)]
pub struct Counter {
    pub settings: CounterSettings,
    clock: Clock,
}

impl Counter {
    /// Starts the streams' clock on the current runtime; events it writes straight to
    /// sockets are counted in `metrics` as they go out.
    pub fn start(settings: CounterSettings, metrics: Arc<StreamMetrics>) -> Self {
        Self {
            settings,
            clock: Clock::start(settings, metrics),
        }
    }
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
    #[error("{}", .0.reason())]
    Refused(caps::Refusal),
}

impl IntoResponse for CounterError {
    fn into_response(self) -> Response {
        match self {
            Self::Refused(refusal) => refusal.into_response(),
            Self::InvalidLastEventId { .. } => {
                (StatusCode::BAD_REQUEST, format!("{self}\n")).into_response()
            }
        }
    }
}

/// What `/stream` needs: the counter, its metrics, and what every event stream shares.
#[derive(Clone)]
pub struct CounterState {
    pub counter: Counter,
    pub metrics: Arc<StreamMetrics>,
    pub streams: EventStreams,
}

/// The `/stream` route, with its state.
pub fn router(state: CounterState) -> axum::Router {
    axum::Router::new()
        .route("/stream", axum::routing::get(stream))
        .with_state(state)
}

/// `GET /stream`.
pub async fn stream(
    State(state): State<CounterState>,
    connected: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    version: axum::http::Version,
    Query(query): Query<StreamQuery>,
    headers: HeaderMap,
) -> Result<Response, CounterError> {
    let settings = state.counter.settings;
    let permit = caps::admit_stream(
        &state.streams.caps,
        version,
        caps::client_ip(connected.as_ref().map(|info| &info.0)),
    )
    .map_err(CounterError::Refused)?;
    let last_id = headers
        .get("last-event-id")
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .or(query.last_event_id);
    let resume_after = match last_id.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(given) => parse_last_id(given, settings.count)?,
    };
    let tracker = StreamTracker::start(Arc::clone(&state.metrics), resume_after > 0);
    let first = resume_after + 1;
    let sink = Sink::new(QUEUE_CAPACITY);
    // Queued now, the first event goes out with the response head.
    if first > settings.count {
        sink.deliver(&Update::raw(end_event()), false);
        sink.close();
    } else {
        sink.deliver(&Update::raw(message(first, settings.retry)), false);
        if !state.counter.clock.register(&sink, first + 1) {
            tracing::error!("the counter's clock has stopped; ending the stream");
            sink.close();
        }
    }
    let events = CounterStream {
        sink: Arc::clone(&sink),
        tracker,
        left: u64::from(settings.count - resume_after) + 1,
        _permit: permit,
    };
    let body = SseBody::new(
        events,
        state.streams.shutdown.clone(),
        Some(state.streams.keep_alive),
    )
    .with_direct_writes(Arc::clone(&sink));
    let mut response = sse::response(body);
    // Served on the fast path, the stream's socket goes to the sink once the head is out.
    response.extensions_mut().insert(Direct(sink));
    Ok(response)
}

/// One stream's events: what the clock queued rather than wrote to the socket itself.
/// Counts every event sent, and the stream as finished once the end event went out.
struct CounterStream {
    sink: Arc<Sink>,
    tracker: StreamTracker,
    /// Events still to send, the end event included.
    left: u64,
    /// Its place under the stream caps (over HTTP/2).
    _permit: Option<caps::Permit>,
}

impl CounterStream {
    /// Counts one event this stream's task sent.
    fn count_sent(&mut self) {
        self.tracker.sent(1);
        self.left = self.left.saturating_sub(1);
    }

    /// Counts `n` events the clock wrote straight to the socket (already in the metrics).
    fn count_direct(&mut self, n: u64) {
        self.tracker.sent_directly(n);
        self.left = self.left.saturating_sub(n);
    }
}

impl Stream for CounterStream {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        let (next, direct) = this.sink.poll_take(cx);
        // Events the clock wrote straight to the socket count as sent too.
        this.count_direct(direct);
        match next {
            Poll::Ready(Some(event)) => {
                this.count_sent();
                Poll::Ready(Some(event.wire.clone()))
            }
            Poll::Ready(None) => {
                if this.left == 0 {
                    this.tracker.finish();
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for CounterStream {
    fn drop(&mut self) {
        let direct = self.sink.take_direct();
        self.count_direct(direct);
    }
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
