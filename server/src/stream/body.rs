//! The response body every event stream shares: already-encoded events joined into
//! writes, keep-alive comments, and the end at shutdown.

use std::{
    convert::Infallible,
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

use super::{shutdown::ShutdownWatch, sink::Sink, ticks::round_down};
use crate::wire::sse::KEEP_ALIVE;

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
}
