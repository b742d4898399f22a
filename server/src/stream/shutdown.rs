//! Turning SIGINT and SIGTERM into one cancellation token the whole server watches, and
//! watching that token from tens of thousands of streams without contention.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll, Wake, Waker},
};

use futures_util::task::AtomicWaker;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Cancels `token` on the first Ctrl-C (SIGINT) or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        tokio::select! {
            () = ctrl_c() => tracing::info!("SIGINT received, shutting down"),
            () = terminate() => tracing::info!("SIGTERM received, shutting down"),
            () = token.cancelled() => return,
        }
        token.cancel();
    });
}

async fn ctrl_c() {
    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::error!(%error, "cannot listen for Ctrl-C");
        std::future::pending::<()>().await;
    }
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending::<()>().await;
}

/// Watches the shutdown token from inside one stream, cheaply enough to check on every poll.
///
/// Polling the token's own future takes two locks shared by every stream in the process
/// (the token's and its `Notify`'s waiter list), and a stream is polled at least once per
/// event. This watch polls that future only on the first poll and after the future itself
/// woke the stream: it hands the future a waker of its own that raises a flag before
/// waking the stream's task. Every other poll is one atomic load.
pub struct ShutdownWatch {
    future: Pin<Box<WaitForCancellationFutureOwned>>,
    signal: Arc<Signal>,
    waker: Waker,
    armed: bool,
}

/// What the token's future wakes: raises `fired`, then wakes the stream's task.
#[derive(Default)]
struct Signal {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl ShutdownWatch {
    /// A watch on `token`.
    pub fn new(token: CancellationToken) -> Self {
        let signal = Arc::new(Signal::default());
        Self {
            future: Box::pin(token.cancelled_owned()),
            waker: Waker::from(Arc::clone(&signal)),
            signal,
            armed: false,
        }
    }

    /// Ready once the token is cancelled; otherwise wakes `cx` when it is.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.signal.task.register(cx.waker());
        if self.armed && !self.signal.fired.swap(false, Ordering::Acquire) {
            return Poll::Pending;
        }
        self.armed = true;
        self.future
            .as_mut()
            .poll(&mut Context::from_waker(&self.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::{future::poll_fn, time::Duration};

    use super::*;

    #[tokio::test]
    async fn ends_when_the_token_is_cancelled_after_many_quiet_polls() {
        let token = CancellationToken::new();
        let mut watch = ShutdownWatch::new(token.clone());
        // Quiet polls stay pending (the cheap path).
        for _ in 0..3 {
            let pending = poll_fn(|cx| Poll::Ready(watch.poll(cx).is_pending())).await;
            assert!(pending);
        }
        let cancel = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            cancel.cancel();
        });
        tokio::time::timeout(Duration::from_secs(5), poll_fn(|cx| watch.poll(cx)))
            .await
            .expect("the watch woke its task and ended");
    }

    #[tokio::test]
    async fn a_token_cancelled_before_the_first_poll_ends_it_at_once() {
        let token = CancellationToken::new();
        token.cancel();
        let mut watch = ShutdownWatch::new(token);
        let ready = poll_fn(|cx| Poll::Ready(watch.poll(cx).is_ready())).await;
        assert!(ready);
    }
}
