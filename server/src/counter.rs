//! The original example's job: `GET /stream` counts `Counter value 1` to `Counter value N`,
//! one `new_message` a tick, then sends `end_event` and ends the response.
//!
//! Every connection has its own counter. A client that comes back with `Last-Event-ID: k`
//! (or `?lastEventId=k`) continues at `k + 1`, so a reconnect neither repeats nor skips a
//! message. When the client goes away, the response body is dropped and with it the
//! stream's timer: no work is left ticking.

use std::{sync::OnceLock, time::Duration};

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_util::{stream, Stream};
use serde::Deserialize;
use tokio::time::Instant;

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
    let body = SseBody::new(events, state.shutdown.clone(), Some(state.keep_alive));
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
    let ticks = Ticks::new(settings.interval);
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

/// A stream's clock: the first tick at once, then one every `interval`, each woken on a
/// process-wide grid of [`grid`] steps.
///
/// Thousands of streams that started at scattered moments would each wake the runtime on
/// its own: one idle-to-busy cycle of the worker threads, with its system calls, per event.
/// On the grid, the streams due in the same step wake together and share one cycle. A tick
/// is late by less than one step (25 ms at a 1 s interval) and never early, and the lateness
/// does not add up: each tick is due one interval after the previous one was due, not after
/// it fired. After a stall (a busy runtime) the next tick is due an interval from then, so a
/// late stream does not burst.
struct Ticks {
    interval: Duration,
    grid: Duration,
    /// When the next tick is due, before rounding up to the grid; `None` before the first.
    due: Option<Instant>,
}

impl Ticks {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            grid: grid(interval),
            due: None,
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        let Some(due) = self.due else {
            self.due = Some(now + self.interval);
            return;
        };
        tokio::time::sleep_until(on_grid(due, self.grid)).await;
        let fired = Instant::now();
        // Delay after a stall rather than burst to catch up.
        let next = due + self.interval;
        self.due = Some(if next + self.grid < fired {
            fired + self.interval
        } else {
            next
        });
    }
}

/// The wake-up grid for a stream ticking every `interval`: a fortieth of it, at least 1 ms
/// (the timer's resolution) and at most 25 ms.
fn grid(interval: Duration) -> Duration {
    (interval / 40).clamp(Duration::from_millis(1), Duration::from_millis(25))
}

/// `due` rounded up to the next multiple of `grid` since a process-wide epoch.
fn on_grid(due: Instant, grid: Duration) -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let since = due.saturating_duration_since(epoch).as_nanos();
    let step = grid.as_nanos().max(1);
    let rounded = since.div_ceil(step) * step;
    let extra = u64::try_from(rounded - since).unwrap_or(0);
    due + Duration::from_nanos(extra)
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
    fn ticks_land_on_a_shared_grid_never_early() {
        let grid = grid(Duration::from_secs(1));
        assert_eq!(grid, Duration::from_millis(25));
        assert_eq!(
            super::grid(Duration::from_millis(20)),
            Duration::from_millis(1)
        );
        let start = Instant::now();
        let mut woken = Vec::new();
        for offset_us in [0, 1, 3_333, 24_999, 25_000, 123_456] {
            let due = start + Duration::from_micros(offset_us);
            let at = on_grid(due, grid);
            assert!(at >= due, "early by {:?}", due - at);
            assert!(at - due < grid, "late by {:?}", at - due);
            woken.push(at);
        }
        // Due times within one step share one wake-up.
        assert_eq!(
            on_grid(start + Duration::from_micros(2_001), grid),
            on_grid(start + Duration::from_micros(2_002), grid)
        );
        // Rounding is idempotent: a grid point stays where it is.
        for at in woken {
            assert_eq!(on_grid(at, grid), at);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_keep_the_interval_without_drift_and_without_bursts() {
        let interval = Duration::from_secs(1);
        // A tick is late by less than one grid step, plus the timer's 1 ms resolution.
        let late = grid(interval) + Duration::from_millis(1);
        let mut ticks = Ticks::new(interval);
        let start = Instant::now();
        ticks.tick().await;
        assert_eq!(Instant::now(), start, "the first tick is at once");
        for n in 1..=5u32 {
            ticks.tick().await;
            let elapsed = Instant::now() - start;
            assert!(elapsed >= interval * n, "tick {n} early: {elapsed:?}");
            assert!(
                elapsed < interval * n + late,
                "tick {n} drifted: {elapsed:?}"
            );
        }
        // A stall of 3.5 intervals: the next tick comes at once, then one interval later.
        tokio::time::advance(interval * 7 / 2).await;
        let before = Instant::now();
        ticks.tick().await;
        assert!(Instant::now() - before < late);
        let after_stall = Instant::now();
        ticks.tick().await;
        assert!(Instant::now() - after_stall >= interval - late);
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
