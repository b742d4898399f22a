//! A subscriber's delivery point: the bounded queue between the hub's fan-out and the
//! subscriber's stream and, for streams served on the fast path ([`crate::net::fast_path`]),
//! the socket itself.
//!
//! While the stream's own task is idle (nothing queued, nothing taken and not yet written),
//! the fan-out writes an update straight to the socket: no queue, no wake-up and no poll of
//! the stream's task, which is most of the work of an update besides the system call.
//! Otherwise the update is queued and the task sends it in order. Every write to the socket,
//! the fan-out's and the task's, happens under the sink's lock and only when nothing else is
//! in flight, so bytes never interleave and updates never overtake each other. When a direct
//! write is cut short by a full socket, its end is left for the task, which writes it before
//! anything else. A fan-out that falls behind (more updates waiting) queues instead, so that
//! each task sends what piled up in one write, and the writes spread over the worker threads.
//!
//! What a queue may hold is bounded three ways ([`QueueLimits`]): a count of updates, a
//! count of bytes, and the bytes of every update waiting in any queue of the process. A
//! queue whose oldest update has waited longer than the stall timeout belongs to a reader
//! that makes too little progress: it is emptied and its stream ends, and the client
//! resumes from the history. Queued updates are shared with the history and with every
//! other queue, never copied; so is the end of a write the socket did not take.

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use socket2::SockRef;
use tokio::{net::TcpStream, time::Instant};

use crate::update::Update;

/// A response extension: the stream's sink, for the fast path to attach the socket to.
#[derive(Clone, Debug)]
pub struct Direct(pub Arc<Sink>);

/// What a write left for later: the ends of its parts, shared where they were shared.
pub type Rest = Vec<Bytes>;

/// One part of a write.
#[derive(Clone, Copy)]
pub enum Part<'a> {
    /// Bytes shared with others (an event): what is not written stays shared.
    Shared(&'a Bytes),
    /// A few bytes of framing: what is not written is copied.
    Slice(&'a [u8]),
}

impl Part<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Shared(bytes) => bytes,
            Self::Slice(slice) => slice,
        }
    }

    fn rest_from(&self, offset: usize) -> Bytes {
        match self {
            Self::Shared(bytes) => bytes.slice(offset..),
            Self::Slice(slice) => Bytes::copy_from_slice(&slice[offset..]),
        }
    }
}

/// The bounds on the hub's queues besides their count, shared by every queue of a hub.
#[derive(Debug)]
pub struct QueueLimits {
    /// Most bytes of live updates waiting in one queue.
    pub max_bytes: usize,
    /// Most bytes of the distinct updates waiting in any queue.
    pub max_total: usize,
    /// A queue whose oldest update has waited this long is emptied and its stream ends.
    pub stall: Duration,
    /// Bytes of the distinct updates waiting in any queue now.
    total: AtomicUsize,
}

impl QueueLimits {
    /// Limits of `max_bytes` a queue, `max_total` in all, and `stall` for the oldest update.
    pub fn new(max_bytes: usize, max_total: usize, stall: Duration) -> Arc<Self> {
        Arc::new(Self {
            max_bytes,
            max_total,
            stall,
            total: AtomicUsize::new(0),
        })
    }

    /// Bytes of the distinct updates waiting in any queue now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// `update` joined a queue.
    fn hold(&self, update: &Update) {
        if update.queued_in.fetch_add(1, Ordering::AcqRel) == 0 {
            self.total.fetch_add(update.chunk.len(), Ordering::Relaxed);
        }
    }

    /// `update` left a queue.
    fn release(&self, update: &Update) {
        if update.queued_in.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.total.fetch_sub(update.chunk.len(), Ordering::Relaxed);
        }
    }

    /// Whether one more queue may hold `update`.
    fn has_room_for(&self, update: &Update) -> bool {
        update.queued_in.load(Ordering::Acquire) > 0
            || self.total() + update.chunk.len() <= self.max_total
    }
}

/// One subscriber's queue and, once attached, its socket.
pub struct Sink {
    state: Mutex<State>,
    /// The stream's task, woken when something is queued or left over.
    task: AtomicWaker,
    capacity: usize,
    /// The hub's bounds on bytes and age; the counter's streams have none.
    limits: Option<Arc<QueueLimits>>,
}

/// An update in the queue, and when it joined.
struct Queued {
    update: Arc<Update>,
    at: Instant,
}

#[derive(Default)]
struct State {
    /// A replay's updates first (see [`Sink::preload`]), then the updates queued live.
    queue: VecDeque<Queued>,
    /// How many at the front of `queue` are the replay's (not counted against the capacity).
    replay: usize,
    /// Bytes of the live updates in `queue`.
    live_bytes: usize,
    /// No more updates will come (the subscriber was cut off or removed).
    closed: bool,
    /// The queue was emptied because its reader made too little progress.
    stalled: bool,
    /// The socket, while the stream is served on the fast path and its head is written.
    socket: Option<Arc<TcpStream>>,
    /// The task has taken updates it has not finished writing, or has an unfinished write.
    busy: bool,
    /// The end of a direct write the socket did not take; the task writes it first.
    leftover: Rest,
    /// Updates written directly and not yet counted by the stream.
    direct: u64,
    /// When the last direct write went out: the stream's keep-alive timer counts from it.
    last_direct: Option<Instant>,
}

/// What [`Sink::deliver`] did with an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Written to the socket (or its end left for the task).
    Written,
    /// Queued for the stream's task.
    Queued,
    /// Not taken: the queue is full (by count, bytes, or the process's total), its reader
    /// makes too little progress, or it is closed.
    Full,
}

impl Sink {
    /// An empty sink holding at most `capacity` queued updates.
    pub fn new(capacity: usize) -> Arc<Self> {
        Self::build(capacity, None)
    }

    /// An empty sink holding at most `capacity` queued updates, within `limits`.
    pub fn with_limits(capacity: usize, limits: &Arc<QueueLimits>) -> Arc<Self> {
        Self::build(capacity, Some(Arc::clone(limits)))
    }

    fn build(capacity: usize, limits: Option<Arc<QueueLimits>>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            task: AtomicWaker::new(),
            capacity: capacity.max(1),
            limits,
        })
    }

    /// Hands `update` to the subscriber: straight to its socket when `direct` allows it and
    /// the stream is idle, otherwise into its queue.
    pub fn deliver(&self, update: &Arc<Update>, direct: bool) -> Delivery {
        let mut state = self.state.lock();
        if state.closed {
            return Delivery::Full;
        }
        if direct && state.queue.is_empty() && !state.busy {
            if let Some(socket) = &state.socket {
                match write_now(socket, &[Part::Shared(&update.chunk)]) {
                    Ok(None) => {
                        state.direct += 1;
                        state.last_direct = Some(Instant::now());
                        return Delivery::Written;
                    }
                    Ok(Some(rest)) => {
                        state.leftover = rest;
                        state.busy = true;
                        state.direct += 1;
                        state.last_direct = Some(Instant::now());
                        drop(state);
                        self.task.wake();
                        return Delivery::Written;
                    }
                    // The socket failed: the task sees it too and ends the stream. Queue the
                    // update meanwhile, as if the stream were busy.
                    Err(_) => {}
                }
            }
        }
        if state.queue.len() - state.replay >= self.capacity {
            return Delivery::Full;
        }
        let now = Instant::now();
        if let Some(limits) = &self.limits {
            let stalled = state
                .queue
                .front()
                .is_some_and(|oldest| now.saturating_duration_since(oldest.at) > limits.stall);
            if stalled
                || state.live_bytes + update.chunk.len() > limits.max_bytes
                || !limits.has_room_for(update)
            {
                return Delivery::Full;
            }
            limits.hold(update);
        }
        state.live_bytes += update.chunk.len();
        state.queue.push_back(Queued {
            update: Arc::clone(update),
            at: now,
        });
        drop(state);
        self.task.wake();
        Delivery::Queued
    }

    /// Puts `replay` (the updates a subscriber missed) before anything queued, however many
    /// there are: the stream's task sends them first, and while any is left the fan-out
    /// queues rather than writes to the socket, so no live update overtakes them. They are
    /// shared with the history and count against no bound but the stall timeout.
    pub fn preload(&self, replay: Vec<Arc<Update>>) {
        if replay.is_empty() {
            return;
        }
        let at = Instant::now();
        let mut state = self.state.lock();
        state.replay += replay.len();
        for update in replay.into_iter().rev() {
            state.queue.push_front(Queued { update, at });
        }
        drop(state);
        self.task.wake();
    }

    /// No more updates: the stream ends after what is queued.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.task.wake();
    }

    /// The next queued update, with the count of updates written directly since the last
    /// call; `None` once closed and drained, or once the oldest update waited longer than
    /// the stall timeout (the queue is emptied then). Taking an update marks the stream busy
    /// until [`Sink::write`] finishes writing it.
    pub fn poll_take(&self, cx: &mut Context<'_>) -> (Poll<Option<Arc<Update>>>, u64) {
        let mut state = self.state.lock();
        let direct = std::mem::take(&mut state.direct);
        if let (Some(limits), Some(oldest)) = (&self.limits, state.queue.front()) {
            if oldest.at.elapsed() > limits.stall {
                self.empty(&mut state);
                state.closed = true;
                state.stalled = true;
                return (Poll::Ready(None), direct);
            }
        }
        if let Some(update) = self.pop(&mut state) {
            state.busy = true;
            return (Poll::Ready(Some(update)), direct);
        }
        if state.closed {
            return (Poll::Ready(None), direct);
        }
        // Registered under the lock: an update queued after it wakes this task.
        self.task.register(cx.waker());
        (Poll::Pending, direct)
    }

    /// Takes the front of the queue, keeping the counts.
    fn pop(&self, state: &mut State) -> Option<Arc<Update>> {
        let Queued { update, .. } = state.queue.pop_front()?;
        if state.replay > 0 {
            state.replay -= 1;
        } else {
            state.live_bytes -= update.chunk.len();
            if let Some(limits) = &self.limits {
                limits.release(&update);
            }
        }
        Some(update)
    }

    /// Drops everything queued, keeping the counts.
    fn empty(&self, state: &mut State) {
        while self.pop(state).is_some() {}
    }

    /// Whether the queue was emptied because its reader made too little progress (its
    /// connection is then reset rather than closed, see [`crate::net::fast_path`]).
    pub fn stalled(&self) -> bool {
        self.state.lock().stalled
    }

    /// How many bytes of live updates wait in the queue.
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().live_bytes
    }

    /// The next queued update (for tests; streams use [`Sink::poll_take`]).
    #[cfg(test)]
    pub async fn recv(&self) -> Option<Arc<Update>> {
        std::future::poll_fn(|cx| self.poll_take(cx).0).await
    }

    /// The next queued update if there is one, without waiting (for tests: it leaves the
    /// stream busy, as a task that took an update and has not written it).
    #[cfg(test)]
    pub fn try_recv(&self) -> Option<Arc<Update>> {
        let mut state = self.state.lock();
        let update = self.pop(&mut state);
        if update.is_some() {
            state.busy = true;
        }
        update
    }

    /// Takes what a direct write left over, registering `cx` to hear of the next one.
    pub fn poll_leftover(&self, cx: &mut Context<'_>) -> Option<Rest> {
        let mut state = self.state.lock();
        if state.leftover.is_empty() {
            self.task.register(cx.waker());
            return None;
        }
        Some(std::mem::take(&mut state.leftover))
    }

    /// The stream task's write: runs `write` (which returns what the socket did not take)
    /// under the lock, so that no direct write can come between. Then direct writes may go
    /// to `socket` when the write is complete and `socket` is given (the stream continues
    /// on it), and stop for good when `socket` is `None` (the stream ends).
    pub fn write(
        &self,
        socket: Option<&Arc<TcpStream>>,
        write: impl FnOnce() -> io::Result<Option<Rest>>,
    ) -> io::Result<Option<Rest>> {
        let mut state = self.state.lock();
        let result = write();
        state.busy = !matches!(result, Ok(None));
        state.socket = match (&result, socket) {
            (Ok(_), Some(socket)) => Some(Arc::clone(socket)),
            _ => None,
        };
        result
    }

    /// The count of updates written directly since the last call.
    pub fn take_direct(&self) -> u64 {
        std::mem::take(&mut self.state.lock().direct)
    }

    /// When the fan-out last wrote an update straight to the socket, if it ever did.
    pub fn last_direct(&self) -> Option<Instant> {
        self.state.lock().last_direct
    }

    /// The task finished a write it had to wait for: direct writes may go on.
    pub fn written(&self) {
        self.state.lock().busy = false;
    }

    /// The stream is over: no more direct writes.
    pub fn detach(&self) {
        self.state.lock().socket = None;
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let mut state = std::mem::take(self.state.get_mut());
        self.empty(&mut state);
    }
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Sink")
            .field("queued", &state.queue.len())
            .field("queued_bytes", &state.live_bytes)
            .field("closed", &state.closed)
            .field("attached", &state.socket.is_some())
            .field("busy", &state.busy)
            .finish()
    }
}

/// Writes what the socket takes of `parts` (at most five) in one system call, without
/// waiting; returns the rest, if any (shared parts stay shared).
pub fn write_now(stream: &TcpStream, parts: &[Part<'_>]) -> io::Result<Option<Rest>> {
    let mut slices = [IoSlice::new(&[]); 5];
    let mut count = 0;
    let mut total = 0;
    for part in parts.iter().filter(|part| !part.as_slice().is_empty()) {
        if count == slices.len() {
            return Err(io::Error::other("too many parts in one write"));
        }
        slices[count] = IoSlice::new(part.as_slice());
        count += 1;
        total += part.as_slice().len();
    }
    if total == 0 {
        return Ok(None);
    }
    // Straight to the socket, past tokio's readiness state: that is one more cache line per
    // subscriber in a fan-out, and all it would save is one failed write before a wait (the
    // socket is non-blocking; `writable()` after a `WouldBlock` here returns at once, and the
    // retry that fails there clears it). One part (a fan-out's pre-framed chunk) goes with a
    // plain `send`, which the kernel takes for less than a vectored write.
    let socket = SockRef::from(stream);
    let sent = match count {
        1 => socket.send(&slices[0]),
        _ => socket.send_vectored(&slices[..count]),
    };
    let written = match sent {
        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
        Ok(written) => written,
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
        Err(error) => return Err(error),
    };
    if written == total {
        return Ok(None);
    }
    Ok(Some(rest_after(parts, written)))
}

/// What is left of `parts` once `written` bytes of them went out.
pub fn rest_after(parts: &[Part<'_>], mut written: usize) -> Rest {
    let mut rest = Vec::with_capacity(parts.len());
    for part in parts {
        let len = part.as_slice().len();
        if written >= len {
            written -= len;
        } else {
            rest.push(part.rest_from(written));
            written = 0;
        }
    }
    rest
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll, Waker};

    use bytes::Bytes;

    use super::*;

    fn event(n: u32) -> Arc<Update> {
        Update::raw(Bytes::from(format!("data: {n}\n\n")))
    }

    /// What the stream's task takes next, written at once.
    fn take(sink: &Sink) -> Option<Bytes> {
        let mut cx = Context::from_waker(Waker::noop());
        match sink.poll_take(&mut cx).0 {
            Poll::Ready(Some(update)) => {
                sink.written();
                Some(update.wire.clone())
            }
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_replay_goes_out_before_any_live_update_whatever_the_capacity() {
        let (_client, socket) = crate::net::fast_path::tests::connected().await;
        let socket = Arc::new(socket);
        let sink = Sink::new(2);
        sink.preload((1..=5).map(event).collect());
        // The stream's first write (its head) attaches the socket.
        sink.write(Some(&socket), || Ok(None)).expect("attached");
        // While any of the replay is left, live updates queue behind it rather than go
        // straight to the socket, and the replay does not count against the capacity.
        assert_eq!(sink.deliver(&event(6), true), Delivery::Queued);
        assert_eq!(sink.deliver(&event(7), true), Delivery::Queued);
        assert_eq!(sink.deliver(&event(8), true), Delivery::Full);
        for n in 1..=7 {
            assert_eq!(take(&sink), Some(event(n).wire.clone()), "event {n}");
        }
        assert_eq!(take(&sink), None);
        // Idle again: a live update goes straight to the socket.
        assert_eq!(sink.deliver(&event(9), true), Delivery::Written);
    }

    /// An update whose chunk is `n` bytes of data and its framing.
    fn sized(n: usize) -> Arc<Update> {
        Update::raw(Bytes::from(vec![b'x'; n]))
    }

    #[tokio::test]
    async fn queues_are_bounded_in_bytes_each_and_in_all_counting_shared_updates_once() {
        let limits = QueueLimits::new(1000, 1500, Duration::from_secs(30));
        let mut sinks: Vec<Arc<Sink>> = (0..4).map(|_| Sink::with_limits(100, &limits)).collect();
        let [first, second, third] = [sized(600), sized(600), sized(600)];
        let size = first.chunk.len();
        assert_eq!(sinks[0].deliver(&first, false), Delivery::Queued);
        assert_eq!(
            sinks[0].deliver(&second, false),
            Delivery::Full,
            "two would pass one queue's bytes"
        );
        assert_eq!(sinks[1].deliver(&first, false), Delivery::Queued);
        assert_eq!(limits.total(), size, "one update in two queues counts once");
        assert_eq!(sinks[2].deliver(&second, false), Delivery::Queued);
        assert_eq!(limits.total(), 2 * size);
        assert_eq!(
            sinks[3].deliver(&third, false),
            Delivery::Full,
            "a third distinct update would pass the total"
        );
        assert_eq!(take(&sinks[0]), Some(first.wire.clone()));
        assert_eq!(limits.total(), 2 * size, "still waiting in another queue");
        drop(sinks.remove(1));
        assert_eq!(limits.total(), size, "a dropped queue gives its bytes back");
        let fourth = Sink::with_limits(100, &limits);
        assert_eq!(fourth.deliver(&third, false), Delivery::Queued);
        assert_eq!(fourth.queued_bytes(), size);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_whose_oldest_update_waited_past_the_stall_timeout_is_emptied() {
        let limits = QueueLimits::new(1 << 20, 1 << 20, Duration::from_secs(30));
        let sink = Sink::with_limits(100, &limits);
        sink.preload(vec![event(1)]);
        assert_eq!(sink.deliver(&event(2), false), Delivery::Queued);
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(take(&sink), Some(event(1).wire.clone()), "a slow reader");
        assert_eq!(sink.deliver(&event(3), false), Delivery::Queued);
        tokio::time::advance(Duration::from_secs(11)).await;
        // Event 2 has waited 31 s: the reader makes too little progress.
        assert_eq!(sink.deliver(&event(4), false), Delivery::Full);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(sink.poll_take(&mut cx).0, Poll::Ready(None)));
        assert!(sink.stalled());
        assert_eq!(sink.queued_bytes(), 0);
        assert_eq!(limits.total(), 0, "everything it held is given back");
    }

    #[tokio::test]
    async fn the_end_of_a_direct_write_stays_shared_with_the_update() {
        let update = sized(100);
        let rest = rest_after(&[Part::Shared(&update.chunk)], 10);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].as_ptr(), update.chunk[10..].as_ptr(), "not copied");
        let framing = rest_after(&[Part::Slice(b"ab"), Part::Shared(&update.chunk)], 1);
        assert_eq!(framing[0], &b"b"[..]);
        assert_eq!(framing[1].as_ptr(), update.chunk.as_ptr());
    }
}
