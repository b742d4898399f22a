//! Server-Sent Events on the wire: encoding an event to bytes once, safely, and the
//! response body every stream shares.
//!
//! Field values that end up after `event:` or `id:` are checked: a CR, LF or NUL in them
//! could end the field early and forge another field or event, so such values are refused.
//! Data may hold any text; it is split into `data:` lines on CRLF, LF and CR exactly as a
//! browser joins them back, so no byte of it can start a field of its own.

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    http::{header, HeaderName, HeaderValue},
    response::{IntoResponse, Response},
};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use http_body::Frame;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::{shutdown::ShutdownWatch, sink::Sink, ticks::round_down};

/// The comment sent on idle streams so that proxies and browsers keep the connection open.
pub const KEEP_ALIVE: &[u8] = b":\n\n";

/// Why a value cannot be used as an event name or id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an event {field} must not contain CR, LF or NUL characters")]
pub struct InvalidField {
    /// `name` or `id`.
    pub field: &'static str,
}

/// A value that is safe after `event:` or `id:` (no CR, LF or NUL).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FieldValue<'a>(&'a str);

impl<'a> FieldValue<'a> {
    /// Checks a value from outside; `field` names it in the error.
    pub fn new(value: &'a str, field: &'static str) -> Result<Self, InvalidField> {
        if is_safe_field(value.as_bytes()) {
            Ok(Self(value))
        } else {
            Err(InvalidField { field })
        }
    }

    /// A value known when compiling; an unsafe one fails the build, not a request.
    pub const fn from_static(value: &'static str) -> FieldValue<'static> {
        assert!(is_safe_field(value.as_bytes()), "unsafe SSE field value");
        FieldValue(value)
    }

    /// The checked text.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

impl fmt::Debug for FieldValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

const fn is_safe_field(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if matches!(bytes[i], b'\r' | b'\n' | 0) {
            return false;
        }
        i += 1;
    }
    true
}

/// One event, encoded to its wire form by [`EventBuilder::build`].
#[derive(Debug, Default)]
pub struct EventBuilder<'a> {
    name: Option<FieldValue<'a>>,
    id: Option<EventId<'a>>,
    retry: Option<Duration>,
    data: Option<&'a str>,
}

impl<'a> EventBuilder<'a> {
    /// An event with no fields yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The event's type (`event:`); browsers dispatch it under this name.
    pub fn name(mut self, name: FieldValue<'a>) -> Self {
        self.name = Some(name);
        self
    }

    /// The event's id (`id:`), which the browser sends back as `Last-Event-ID`.
    pub fn id(mut self, id: FieldValue<'a>) -> Self {
        self.id = Some(EventId::Text(id));
        self
    }

    /// A numeric id, which is always safe.
    pub fn numeric_id(mut self, id: u64) -> Self {
        self.id = Some(EventId::Number(id));
        self
    }

    /// How long the browser waits before reconnecting (`retry:`, in milliseconds).
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The event's data; line breaks become separate `data:` lines.
    pub fn data(mut self, data: &'a str) -> Self {
        self.data = Some(data);
        self
    }

    /// The event's bytes, ending with the blank line that dispatches it.
    pub fn build(self) -> Bytes {
        let data_len = self
            .data
            .map_or(0, |data| data.len() + 8 * (1 + line_breaks(data)));
        let mut out = BytesMut::with_capacity(
            data_len
                + self.name.map_or(0, |name| name.0.len() + 8)
                + self.id.map_or(0, |id| id.len() + 5)
                + if self.retry.is_some() { 28 } else { 0 }
                + 1,
        );
        if let Some(name) = self.name {
            put_field(&mut out, b"event: ", name.0);
        }
        match self.id {
            Some(EventId::Text(id)) => put_field(&mut out, b"id: ", id.0),
            Some(EventId::Number(id)) => put_field(&mut out, b"id: ", &id.to_string()),
            None => {}
        }
        if let Some(retry) = self.retry {
            let millis = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX);
            out.put_slice(b"retry: ");
            out.put_slice(millis.to_string().as_bytes());
            out.put_u8(b'\n');
        }
        if let Some(data) = self.data {
            for line in split_lines(data) {
                put_field(&mut out, b"data: ", line);
            }
        }
        out.put_u8(b'\n');
        out.freeze()
    }
}

#[derive(Debug, Clone, Copy)]
enum EventId<'a> {
    Text(FieldValue<'a>),
    Number(u64),
}

impl EventId<'_> {
    fn len(self) -> usize {
        match self {
            Self::Text(text) => text.0.len(),
            Self::Number(_) => 20,
        }
    }
}

/// An SSE comment (`: text`), which clients ignore; line breaks start new comment lines.
pub fn comment(text: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(text.len() + 4 * (1 + line_breaks(text)) + 1);
    for line in split_lines(text) {
        put_field(&mut out, b": ", line);
    }
    out.put_u8(b'\n');
    out.freeze()
}

fn put_field(out: &mut BytesMut, prefix: &[u8], value: &str) {
    out.put_slice(prefix);
    out.put_slice(value.as_bytes());
    out.put_u8(b'\n');
}

fn line_breaks(text: &str) -> usize {
    text.bytes().filter(|&b| b == b'\n' || b == b'\r').count()
}

/// Splits text into lines the way an SSE parser does: at CRLF, LF or a lone CR.
pub fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            Some(at) => {
                let skip = if current[at..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[at + skip..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// The most bytes of queued events joined into one write.
const MAX_BATCH: usize = 16 * 1024;

pin_project_lite::pin_project! {
    /// The body of every event stream: forwards already-encoded events from `source`, joins
    /// events that are ready together into one write, sends a keep-alive comment when the
    /// stream has been idle for the keep-alive interval, and ends at once when the server
    /// shuts down (without any final event, so that browsers reconnect).
    pub struct SseBody<S> {
        #[pin]
        source: S,
        shutdown: ShutdownWatch,
        keep_alive: Option<KeepAlive>,
        done: bool,
    }
}

/// The keep-alive timer. Sending an event only records the time; the timer is moved when
/// it fires, so a busy stream costs no timer update per event.
///
/// Its deadlines fall on a grid shared by every stream (see [`crate::ticks`]): a busy stream's
/// timer still fires once an interval to look, and on a grid the many streams' looks wake
/// the server a few times a second together instead of each on its own. A comment may thus
/// go out up to one grid step before the interval is over, never after.
struct KeepAlive {
    every: Duration,
    /// The grid step: a thirty-second of `every`, 1 ms to 1 s.
    grid: Duration,
    timer: Pin<Box<Sleep>>,
    last_sent: Instant,
    /// Where the hub writes updates straight to the socket, past this body: those writes
    /// count as sent too.
    direct: Option<Arc<Sink>>,
}

impl<S> SseBody<S>
where
    S: Stream<Item = Bytes>,
{
    /// A body that streams `source` until it ends or `shutdown` is cancelled.
    pub fn new(source: S, shutdown: CancellationToken, keep_alive: Option<Duration>) -> Self {
        Self {
            source,
            shutdown: ShutdownWatch::new(shutdown),
            keep_alive: keep_alive.map(|every| {
                let grid = (every / 32).clamp(Duration::from_millis(1), Duration::from_secs(1));
                let now = Instant::now();
                KeepAlive {
                    every,
                    grid,
                    timer: Box::pin(tokio::time::sleep_until(round_down(now + every, grid))),
                    last_sent: now,
                    direct: None,
                }
            }),
            done: false,
        }
    }

    /// Counts the updates the hub writes straight to the socket through `sink` as sent, so
    /// that a stream kept busy that way gets no keep-alive comments.
    pub fn with_direct_writes(mut self, sink: Arc<Sink>) -> Self {
        if let Some(keep_alive) = self.keep_alive.as_mut() {
            keep_alive.direct = Some(sink);
        }
        self
    }
}

impl<S> http_body::Body for SseBody<S>
where
    S: Stream<Item = Bytes>,
{
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        if this.shutdown.poll(cx).is_ready() {
            *this.done = true;
            return Poll::Ready(None);
        }
        match this.source.as_mut().poll_next(cx) {
            Poll::Ready(Some(first)) => {
                let mut batch: Option<BytesMut> = None;
                while batch.as_ref().map_or(first.len(), BytesMut::len) < MAX_BATCH {
                    match this.source.as_mut().poll_next(cx) {
                        Poll::Ready(Some(next)) => {
                            let joined = batch.get_or_insert_with(|| {
                                let mut joined = BytesMut::with_capacity(MAX_BATCH);
                                joined.put_slice(&first);
                                joined
                            });
                            joined.put_slice(&next);
                        }
                        Poll::Ready(None) => {
                            *this.done = true;
                            break;
                        }
                        Poll::Pending => break,
                    }
                }
                if let Some(keep_alive) = this.keep_alive.as_mut() {
                    keep_alive.last_sent = Instant::now();
                }
                let bytes = batch.map_or(first, BytesMut::freeze);
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            Poll::Ready(None) => {
                *this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if let Some(keep_alive) = this.keep_alive.as_mut() {
            while keep_alive.timer.as_mut().poll(cx).is_ready() {
                if let Some(at) = keep_alive
                    .direct
                    .as_ref()
                    .and_then(|sink| sink.last_direct())
                {
                    keep_alive.last_sent = keep_alive.last_sent.max(at);
                }
                let due = keep_alive.last_sent + keep_alive.every;
                if due > Instant::now() + keep_alive.grid {
                    // Something was sent since the timer was set: wait from then.
                    let at = round_down(due, keep_alive.grid);
                    keep_alive.timer.as_mut().reset(at);
                    continue;
                }
                keep_alive.reset();
                // Register the new deadline's wake-up before returning.
                let _ = keep_alive.timer.as_mut().poll(cx);
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(KEEP_ALIVE)))));
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl KeepAlive {
    fn reset(&mut self) {
        let now = Instant::now();
        self.last_sent = now;
        self.timer
            .as_mut()
            .reset(round_down(now + self.every, self.grid));
    }
}

/// An event-stream response around `body`, with the headers that keep every cache, proxy
/// and compression layer from holding events back.
pub fn response<S>(body: SseBody<S>) -> Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (X_ACCEL_BUFFERING, HeaderValue::from_static("no")),
        ],
        Body::new(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn idle_body(every: Duration) -> SseBody<futures_util::stream::Pending<Bytes>> {
        SseBody::new(
            futures_util::stream::pending(),
            CancellationToken::new(),
            Some(every),
        )
    }

    async fn next_comment(body: &mut SseBody<futures_util::stream::Pending<Bytes>>) -> Instant {
        let frame = body.frame().await.expect("a frame").expect("infallible");
        assert_eq!(frame.into_data().expect("data"), KEEP_ALIVE);
        Instant::now()
    }

    #[tokio::test(start_paused = true)]
    async fn idle_streams_get_their_keep_alives_together_on_the_grid() {
        let every = Duration::from_millis(320);
        let grid = Duration::from_millis(10);
        // Start 1 ms past a tick; a second stream opens 5 ms later.
        let now = Instant::now();
        let tick = round_down(now, grid) + grid;
        tokio::time::advance(tick + Duration::from_millis(1) - now).await;
        let mut first = idle_body(every);
        tokio::time::advance(Duration::from_millis(5)).await;
        let mut second = idle_body(every);

        let at = next_comment(&mut first).await;
        // On the tick before the interval is over (the timer's resolution is 1 ms).
        let on_tick = tick + every;
        assert!(
            at >= on_tick && at - on_tick <= Duration::from_millis(1),
            "{:?} after the tick",
            at.checked_duration_since(on_tick)
        );
        assert_eq!(next_comment(&mut second).await, at, "both on the same tick");
        // And so on, an interval apart, never later than the interval.
        let again = next_comment(&mut first).await;
        assert_eq!(again - at, every);
    }

    fn text(bytes: &Bytes) -> &str {
        std::str::from_utf8(bytes).expect("events are UTF-8")
    }

    #[test]
    fn encodes_every_field_in_order() {
        let event = EventBuilder::new()
            .name(FieldValue::from_static("new_message"))
            .id(FieldValue::from_static("7"))
            .retry(Duration::from_secs(15))
            .data("Counter value 7")
            .build();
        assert_eq!(
            text(&event),
            "event: new_message\nid: 7\nretry: 15000\ndata: Counter value 7\n\n"
        );
    }

    #[test]
    fn splits_data_on_every_kind_of_line_break() {
        let event = EventBuilder::new().data("a\r\nb\nc\rd").build();
        assert_eq!(text(&event), "data: a\ndata: b\ndata: c\ndata: d\n\n");
    }

    #[test]
    fn keeps_blank_lines_and_edges_of_data() {
        let event = EventBuilder::new().data("\nmiddle\n\n").build();
        assert_eq!(text(&event), "data: \ndata: middle\ndata: \ndata: \n\n");
        let event = EventBuilder::new().data("").build();
        assert_eq!(text(&event), "data: \n\n");
        let event = EventBuilder::new().data(" leading space").build();
        assert_eq!(text(&event), "data:  leading space\n\n");
    }

    #[test]
    fn data_cannot_forge_a_field_or_an_event() {
        let event = EventBuilder::new()
            .data("x\n\nevent: admin\r\nid: 999\rretry: 1")
            .build();
        for line in text(&event).lines().filter(|line| !line.is_empty()) {
            assert!(line.starts_with("data: "), "forged line {line:?}");
        }
        assert!(text(&event).ends_with("\n\n"));
        assert_eq!(text(&event).matches("\n\n").count(), 1);
    }

    #[test]
    fn refuses_unsafe_names_and_ids() {
        for bad in ["a\nb", "a\rb", "a\r\nb", "a\0b", "\n"] {
            assert_eq!(
                FieldValue::new(bad, "id"),
                Err(InvalidField { field: "id" }),
                "{bad:?}"
            );
        }
        assert!(FieldValue::new("urn:uuid:1234 é", "id").is_ok());
    }

    #[test]
    fn comments_stay_comments() {
        assert_eq!(text(&comment("hi\nthere")), ": hi\n: there\n\n");
    }

    #[test]
    fn split_lines_matches_the_sse_parser() {
        let lines: Vec<&str> = split_lines("a\r\n\r\nb\r").collect();
        assert_eq!(lines, ["a", "", "b", ""]);
        let lines: Vec<&str> = split_lines("plain").collect();
        assert_eq!(lines, ["plain"]);
    }

    /// What a browser's parser makes of `bytes`: every event, read by a standard SSE
    /// parser (the `eventsource-stream` crate).
    fn parse_events(bytes: Bytes) -> Vec<eventsource_stream::Event> {
        use eventsource_stream::Eventsource;
        use futures_util::StreamExt;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime.block_on(
            futures_util::stream::iter([Ok::<_, std::io::Error>(bytes)])
                .eventsource()
                .map(|event| event.expect("a well-formed event"))
                .collect(),
        )
    }

    proptest::proptest! {
        /// Any data, id, type and retry come back as exactly those fields (data with its
        /// line breaks as the parser joins them, LF).
        #[test]
        fn any_event_reads_back_as_its_fields(
            data in proptest::prelude::any::<String>(),
            id in "[^\r\n\x00]{0,40}",
            name in "[^\r\n\x00]{1,20}",
            retry in proptest::option::of(0u64..10_000_000),
        ) {
            let mut builder = EventBuilder::new()
                .name(FieldValue::new(&name, "name").expect("no line break"))
                .id(FieldValue::new(&id, "id").expect("no line break"))
                .data(&data);
            if let Some(retry) = retry {
                builder = builder.retry(Duration::from_millis(retry));
            }
            let events = parse_events(builder.build());
            proptest::prop_assert_eq!(events.len(), 1);
            let event = &events[0];
            proptest::prop_assert_eq!(&event.data, &data.replace("\r\n", "\n").replace('\r', "\n"));
            proptest::prop_assert_eq!(&event.id, &id);
            proptest::prop_assert_eq!(&event.event, &name);
            proptest::prop_assert_eq!(event.retry, retry.map(Duration::from_millis));
        }

        /// No text put in an id or a type can break the framing: it is refused or safe.
        #[test]
        fn field_values_with_line_breaks_are_refused(value in proptest::prelude::any::<String>()) {
            let unsafe_value = value.contains(['\r', '\n', '\0']);
            proptest::prop_assert_eq!(FieldValue::new(&value, "id").is_err(), unsafe_value);
        }
    }
}
