//! The fan-out: hands each accepted update, in log order, to every matching subscriber.
//!
//! It runs in its own task, so a publisher is answered as soon as its update is accepted.
//! Each subscriber has a bounded queue; the fan-out never waits for one. A subscriber whose
//! queue is full is cut off after what it already has: its stream ends and the client
//! resumes with `Last-Event-ID` from the history, so nothing is lost and no slow reader
//! slows the others or grows memory without bound.

use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    Arc, Weak,
};

use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

use super::registry::Registry;
use crate::{
    hub::selector::MatchBase,
    metrics::StreamMetrics,
    stream::sink::{Delivery, Sink},
    update::Update,
};

/// What the fan-out reads: the registry, the hub's URL, and where it counts its work.
pub struct Shared {
    pub registry: RwLock<Registry>,
    pub base: MatchBase,
    /// Where the fan-out counts the updates it writes straight to sockets.
    pub metrics: Arc<StreamMetrics>,
    /// Patterns the fan-out evaluated, one per distinct pattern and update.
    pub pattern_checks: AtomicU64,
}

/// The fan-out task: delivers each accepted update, in order, to every matching subscriber.
pub async fn fan_out(hub: Weak<Shared>, mut updates: mpsc::UnboundedReceiver<Arc<Update>>) {
    let mut round = 0u64;
    let mut lagged = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    while let Some(update) = updates.recv().await {
        let Some(hub) = hub.upgrade() else { return };
        round += 1;
        {
            // Who gets it, under the registry's lock; the writes come after, so that
            // subscribing and leaving never wait for a fan-out.
            let registry = hub.registry.read();
            let base = &hub.base;
            let now = std::time::Instant::now();
            let mut select = |key: usize| {
                let Some(entry) = registry.entries.get(key) else {
                    return;
                };
                if entry.round.swap(round, Relaxed) == round
                    || update.position <= entry.after
                    || entry.expires.is_some_and(|at| now >= at)
                {
                    return;
                }
                targets.push((key, entry.serial, Arc::clone(&entry.queue)));
            };
            let checks = if update.private {
                // Only subscribers whose grants cover one of its topics, and of those only
                // the ones that selected it.
                let mut own = 0u64;
                let granted = registry.granted.matching(&update, base, |key| {
                    let selected = registry.entries.get(key).is_some_and(|entry| {
                        entry.spec.selectors.iter().any(|selector| {
                            own += u64::from(selector.cost() > 0);
                            selector.matches_update(&update, base)
                        })
                    });
                    if selected {
                        select(key);
                    }
                });
                granted + own
            } else {
                registry.selected.matching(&update, base, &mut select)
            };
            hub.pattern_checks.fetch_add(checks, Relaxed);
        }
        // With updates waiting behind this one, the fan-out queues rather than writes: it
        // catches up sooner, and each subscriber's task sends what piled up in one write.
        let direct = updates.is_empty();
        let written = deliver(&update, direct, &mut targets, &mut lagged).await;
        hub.metrics.written_directly(written);
        if !lagged.is_empty() {
            // Removing a lagged subscriber closes its queue: its stream ends after what it
            // already has, and the client resumes from the history.
            tracing::info!(
                count = lagged.len(),
                "cutting off subscribers whose queue is full"
            );
            let mut registry = hub.registry.write();
            for (key, serial) in lagged.drain(..) {
                registry.remove(key, serial);
            }
        }
    }
}

/// Fewest subscribers worth a fan-out helper task of their own.
pub const PART_MIN: usize = 256;
/// Subscribers in one share of a split fan-out: small enough that when one worker is held
/// up (the load generator, another task), the others take on what it has not started, and
/// large enough that taking a share costs next to nothing.
const SHARE: usize = 128;

type Target = (usize, u64, Arc<Sink>);

/// A split fan-out: its targets in shares, taken by whichever helper is free next.
struct Shares {
    update: Arc<Update>,
    direct: bool,
    /// The shares left, the first at the end.
    left: Mutex<Vec<Vec<Target>>>,
}

impl Shares {
    /// Delivers shares until none is left; returns the subscribers whose queue was full
    /// and how many got the update written straight to their socket.
    fn work(&self) -> (Vec<(usize, u64)>, u64) {
        let mut lagged = Vec::new();
        let mut written = 0;
        loop {
            let Some(share) = self.left.lock().pop() else {
                return (lagged, written);
            };
            written += deliver_part(&self.update, self.direct, share.into_iter(), &mut lagged);
        }
    }
}

/// Hands `update` to every sink in `targets` (draining it), noting in `lagged` the
/// subscribers whose queue is full; returns how many got it written straight to their
/// socket. A large crowd is split over the runtime's worker
/// threads: most updates are written straight to sockets here, and one thread alone would
/// make the last subscriber wait for every write before its own. The crowd is cut into
/// small shares rather than one part per worker, so that a worker that is held up does not
/// hold back the end of the fan-out. All shares finish before the next update starts, so
/// each subscriber still gets updates in order.
async fn deliver(
    update: &Arc<Update>,
    direct: bool,
    targets: &mut Vec<Target>,
    lagged: &mut Vec<(usize, u64)>,
) -> u64 {
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    let helpers = workers.min(targets.len() / PART_MIN);
    if helpers < 2 {
        return deliver_part(update, direct, targets.drain(..), lagged);
    }
    let mut left = Vec::with_capacity(targets.len().div_ceil(SHARE));
    while !targets.is_empty() {
        left.push(targets.split_off(targets.len().saturating_sub(SHARE)));
    }
    let shares = Arc::new(Shares {
        update: Arc::clone(update),
        direct,
        left: Mutex::new(left),
    });
    // One helper task per worker: a task spawned last waits in its worker's next-task slot,
    // which other workers cannot take, so the helpers before it are the ones they run.
    let helpers: Vec<_> = (0..helpers)
        .map(|_| {
            let shares = Arc::clone(&shares);
            tokio::spawn(async move { shares.work() })
        })
        .collect();
    let mut written = 0;
    for helper in helpers {
        match helper.await {
            Ok((more, part)) => {
                lagged.extend(more);
                written += part;
            }
            Err(error) => tracing::error!(%error, "a fan-out helper failed"),
        }
    }
    written
}

/// [`deliver`] to one part; returns how many sinks had it written to their socket.
fn deliver_part(
    update: &Arc<Update>,
    direct: bool,
    targets: impl Iterator<Item = Target>,
    lagged: &mut Vec<(usize, u64)>,
) -> u64 {
    let mut written = 0;
    for (key, serial, sink) in targets {
        match sink.deliver(update, direct) {
            Delivery::Written => written += 1,
            Delivery::Queued => {}
            Delivery::Full => lagged.push((key, serial)),
        }
    }
    written
}
