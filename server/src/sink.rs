//! A subscriber's delivery point: the bounded queue between the hub's fan-out and the
//! subscriber's stream and, for streams served on the fast path ([`crate::stream_conn`]),
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

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use socket2::SockRef;
use tokio::{net::TcpStream, time::Instant};

use crate::update::Update;

/// A response extension: the stream's sink, for the fast path to attach the socket to.
#[derive(Clone, Debug)]
pub struct Direct(pub Arc<Sink>);

/// One subscriber's queue and, once attached, its socket.
pub struct Sink {
    state: Mutex<State>,
    /// The stream's task, woken when something is queued or left over.
    task: AtomicWaker,
    capacity: usize,
}

#[derive(Default)]
struct State {
    /// A replay's updates first (see [`Sink::preload`]), then the updates queued live.
    queue: VecDeque<Arc<Update>>,
    /// How many at the front of `queue` are the replay's (not counted against the capacity).
    replay: usize,
    /// No more updates will come (the subscriber was cut off or removed).
    closed: bool,
    /// The socket, while the stream is served on the fast path and its head is written.
    socket: Option<Arc<TcpStream>>,
    /// The task has taken updates it has not finished writing, or has an unfinished write.
    busy: bool,
    /// The end of a direct write the socket did not take; the task writes it first.
    leftover: Vec<u8>,
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
    /// Not taken: the queue is full (or closed).
    Full,
}

impl Sink {
    /// An empty sink holding at most `capacity` queued updates.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            task: AtomicWaker::new(),
            capacity: capacity.max(1),
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
                match write_now(socket, &[&update.chunk]) {
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
        state.queue.push_back(Arc::clone(update));
        drop(state);
        self.task.wake();
        Delivery::Queued
    }

    /// Puts `replay` (the updates a subscriber missed) before anything queued, however many
    /// there are: the stream's task sends them first, and while any is left the fan-out
    /// queues rather than writes to the socket, so no live update overtakes them.
    pub fn preload(&self, replay: Vec<Arc<Update>>) {
        if replay.is_empty() {
            return;
        }
        let mut state = self.state.lock();
        state.replay += replay.len();
        for update in replay.into_iter().rev() {
            state.queue.push_front(update);
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
    /// call; `None` once closed and drained. Taking an update marks the stream busy until
    /// [`Sink::write`] finishes writing it.
    pub fn poll_take(&self, cx: &mut Context<'_>) -> (Poll<Option<Arc<Update>>>, u64) {
        let mut state = self.state.lock();
        let direct = std::mem::take(&mut state.direct);
        if let Some(update) = state.queue.pop_front() {
            state.replay = state.replay.saturating_sub(1);
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
        let update = state.queue.pop_front();
        if update.is_some() {
            state.replay = state.replay.saturating_sub(1);
            state.busy = true;
        }
        update
    }

    /// Takes what a direct write left over, registering `cx` to hear of the next one.
    pub fn poll_leftover(&self, cx: &mut Context<'_>) -> Option<Vec<u8>> {
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
        write: impl FnOnce() -> io::Result<Option<Vec<u8>>>,
    ) -> io::Result<Option<Vec<u8>>> {
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

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Sink")
            .field("queued", &state.queue.len())
            .field("closed", &state.closed)
            .field("attached", &state.socket.is_some())
            .field("busy", &state.busy)
            .finish()
    }
}

/// Writes `{len:x}\r\n` into `out`; returns how many bytes it used.
pub fn chunk_header(len: usize, out: &mut [u8; 18]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut count = 0;
    loop {
        digits[count] = HEX[n & 0xf];
        count += 1;
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    for i in 0..count {
        out[i] = digits[count - 1 - i];
    }
    out[count] = b'\r';
    out[count + 1] = b'\n';
    count + 2
}

/// Writes what the socket takes of `parts` (at most five) in one system call, without
/// waiting; returns the rest, if any.
pub fn write_now(stream: &TcpStream, parts: &[&[u8]]) -> io::Result<Option<Vec<u8>>> {
    let mut slices = [IoSlice::new(&[]); 5];
    let mut count = 0;
    let mut total = 0;
    for part in parts.iter().filter(|part| !part.is_empty()) {
        if count == slices.len() {
            return Err(io::Error::other("too many parts in one write"));
        }
        slices[count] = IoSlice::new(part);
        count += 1;
        total += part.len();
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
    let mut rest = Vec::with_capacity(total - written);
    let mut skip = written;
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
        } else {
            rest.extend_from_slice(&part[skip..]);
            skip = 0;
        }
    }
    Ok(Some(rest))
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
        let (_client, socket) = crate::stream_conn::tests::connected().await;
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
}
