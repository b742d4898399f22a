//! The hub's core: the history of recent updates, the registry of subscribers, and the
//! fan-out that hands each accepted update to every matching subscriber.
//!
//! Ordering and exactly-once delivery come from one rule: an update enters the history and
//! the fan-out queue under the same lock, and a subscriber is registered under that lock
//! too, after reading the history it must replay. Every update is therefore either in the
//! subscriber's replay or delivered live (never both: live updates at or before the replay's
//! end are skipped), and all arrive in log order.
//!
//! Fan-out runs in its own task, so a publisher is answered as soon as its update is
//! accepted. Each subscriber has a bounded queue; the fan-out never waits for one. A
//! subscriber whose queue is full is cut off after what it already has: its stream ends and
//! the client resumes with `Last-Event-ID` from the history, so nothing is lost and no
//! slow reader slows the others or grows memory without bound.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
};

use parking_lot::{Mutex, RwLock};
use slab::Slab;
use tokio::sync::mpsc;

use super::{
    auth::Grants,
    selector::{MatchBase, Selector},
};
use crate::{
    metrics::StreamMetrics,
    sink::{Delivery, QueueLimits, Sink},
    update::{EncodeError, NewUpdate, Position, Update},
};

/// Where a subscriber wants its stream to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// Only updates published from now on.
    Live,
    /// Everything the history still holds.
    Earliest,
    /// Everything after the update with this id.
    After(String),
}

/// What the hub tells a resuming subscriber about its cursor (`Mercure-Last-Event-ID`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CursorFound {
    /// The id was found: the replay starts right after it.
    Id(String),
    /// The replay starts at the oldest update kept: the id was `earliest`, unknown, or
    /// already dropped from the history.
    Earliest,
}

/// How big the hub's buffers are.
#[derive(Clone, Debug)]
pub struct HubLimits {
    /// Updates kept for subscribers that resume.
    pub history_size: usize,
    /// Updates a subscriber may have waiting before it is cut off.
    pub queue_capacity: usize,
    /// Bytes a subscriber may have waiting, the distinct bytes all may have waiting, and
    /// how long the oldest may wait.
    pub queues: Arc<QueueLimits>,
}

impl HubLimits {
    /// Limits for tests and tools: `history_size` and `queue_capacity`, with generous bounds
    /// on bytes and a 30 s stall timeout.
    pub fn sized(history_size: usize, queue_capacity: usize) -> Self {
        Self {
            history_size,
            queue_capacity,
            queues: QueueLimits::new(64 << 20, 1 << 30, std::time::Duration::from_secs(30)),
        }
    }
}

/// A subscriber as the hub sees it.
#[derive(Debug)]
pub struct SubscriberSpec {
    /// The hub-generated id, unique per connection (`urn:uuid:…`).
    pub id: String,
    /// The topics it asked for.
    pub selectors: Vec<Selector>,
    /// What its token allows; `None` for an anonymous subscriber.
    pub grants: Option<Arc<Grants>>,
}

/// One registered subscriber.
struct Entry {
    /// Unique for the hub's lifetime, unlike the slab key, which is reused.
    serial: u64,
    spec: Arc<SubscriberSpec>,
    queue: Arc<Sink>,
    /// Updates at or before this position were in its replay.
    after: Position,
    /// The fan-out round that last delivered to it (an update reached through several of its
    /// selectors is sent once).
    round: AtomicU64,
    /// When its token expires: the fan-out sends it nothing from then on (its stream ends
    /// then too, but the fan-out may write to its socket before the stream's task wakes).
    expires: Option<std::time::Instant>,
}

/// Who is registered, indexed two ways: by what each subscriber selected (for public
/// updates), and, for subscribers with a token, by what its grants let it read (for private
/// ones, the hub's subscription events among them). A private update is matched against
/// the grants of subscribers that have them, then against those few subscribers' own
/// selectors: never against every pattern of every anonymous subscriber.
#[derive(Default)]
struct Registry {
    entries: Slab<Entry>,
    /// Every subscriber, by its selectors.
    selected: Index,
    /// Subscribers with a token, by their grants' selectors.
    granted: Index,
}

/// Subscribers by selector: exact topics in a map, `*` in a list, and each distinct other
/// selector (URL pattern, template) once, with everyone who named it.
#[derive(Default)]
struct Index {
    exact: HashMap<Box<str>, Vec<usize>>,
    /// Selectors of one segment under a path ([`Selector::segment_parent`]), by that path.
    segments: HashMap<Box<str>, Vec<usize>>,
    wildcard: Vec<usize>,
    patterns: HashMap<(super::selector::MatchType, Box<str>), (Selector, Vec<usize>)>,
}

impl Index {
    fn insert<'a>(&mut self, key: usize, selectors: impl Iterator<Item = &'a Selector>) {
        for selector in selectors {
            if selector.is_wildcard() {
                self.wildcard.push(key);
            } else if let Some(topic) = selector.exact_topic() {
                self.exact.entry(topic.into()).or_default().push(key);
            } else if let Some(parent) = selector.segment_parent() {
                self.segments.entry(parent.into()).or_default().push(key);
            } else {
                self.patterns
                    .entry((selector.kind(), selector.raw().into()))
                    .or_insert_with(|| (selector.clone(), Vec::new()))
                    .1
                    .push(key);
            }
        }
    }

    fn remove<'a>(&mut self, key: usize, selectors: impl Iterator<Item = &'a Selector>) {
        let drop_key = |keys: &mut Vec<usize>| {
            if let Some(at) = keys.iter().position(|&k| k == key) {
                keys.swap_remove(at);
            }
        };
        for selector in selectors {
            if selector.is_wildcard() {
                drop_key(&mut self.wildcard);
            } else if let Some(topic) = selector.exact_topic() {
                if let Some(keys) = self.exact.get_mut(topic) {
                    drop_key(keys);
                    if keys.is_empty() {
                        self.exact.remove(topic);
                    }
                }
            } else if let Some(parent) = selector.segment_parent() {
                if let Some(keys) = self.segments.get_mut(parent) {
                    drop_key(keys);
                    if keys.is_empty() {
                        self.segments.remove(parent);
                    }
                }
            } else {
                let pattern_key = (selector.kind(), Box::<str>::from(selector.raw()));
                if let Some((_, keys)) = self.patterns.get_mut(&pattern_key) {
                    drop_key(keys);
                    if keys.is_empty() {
                        self.patterns.remove(&pattern_key);
                    }
                }
            }
        }
    }

    /// Calls `found` with every subscriber one of whose selectors here matches `update`
    /// (possibly more than once); returns how many patterns it evaluated.
    fn matching(&self, update: &Update, base: &MatchBase, mut found: impl FnMut(usize)) -> u64 {
        for topic in update.topics.iter() {
            if let Some(keys) = self.exact.get(topic) {
                keys.iter().copied().for_each(&mut found);
            }
        }
        if !self.segments.is_empty() {
            for url in update.topic_urls(base.url()).iter().flatten() {
                let keys = base
                    .parent_of(url)
                    .and_then(|parent| self.segments.get(parent));
                keys.into_iter().flatten().copied().for_each(&mut found);
            }
        }
        self.wildcard.iter().copied().for_each(&mut found);
        for (selector, keys) in self.patterns.values() {
            if selector.matches_update(update, base) {
                keys.iter().copied().for_each(&mut found);
            }
        }
        self.patterns.len() as u64
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.segments.is_empty()
            && self.wildcard.is_empty()
            && self.patterns.is_empty()
    }
}

/// The selectors of a subscriber's grants.
fn grant_selectors(spec: &SubscriberSpec) -> impl Iterator<Item = &Selector> {
    spec.grants
        .iter()
        .flat_map(|grants| grants.subscribe.iter())
        .flat_map(|grant| grant.selectors.iter())
}

/// The history, in two rings of the same size: ordinary updates, and the hub's own
/// subscription events, which would otherwise push ordinary updates out when many clients
/// connect at once. Positions are shared, so replays merge the two in order.
struct Log {
    updates: VecDeque<Arc<Update>>,
    presence: VecDeque<Arc<Update>>,
    next_seq: u64,
}

impl Log {
    fn newest(&self) -> Option<&Arc<Update>> {
        match (self.updates.back(), self.presence.back()) {
            (Some(a), Some(b)) => Some(if a.position >= b.position { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// The oldest kept update with `id`, if any.
    fn find(&self, id: &str) -> Option<&Arc<Update>> {
        fn first<'a>(ring: &'a VecDeque<Arc<Update>>, id: &str) -> Option<&'a Arc<Update>> {
            ring.iter().find(|u| *u.id == *id)
        }
        match (first(&self.updates, id), first(&self.presence, id)) {
            (Some(a), Some(b)) => Some(if a.position <= b.position { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// The newest kept update that `visible` allows, looking at no more than
    /// [`CURSOR_SCAN`] of the newest updates of each ring (past that, the newest public one).
    fn newest_where(&self, visible: impl Fn(&Update) -> bool) -> Option<&Arc<Update>> {
        fn newest<'a>(
            ring: &'a VecDeque<Arc<Update>>,
            visible: &impl Fn(&Update) -> bool,
        ) -> Option<&'a Arc<Update>> {
            ring.iter()
                .rev()
                .take(CURSOR_SCAN)
                .find(|update| visible(update))
                .or_else(|| ring.iter().rev().find(|update| !update.private))
        }
        match (
            newest(&self.updates, &visible),
            newest(&self.presence, &visible),
        ) {
            (Some(a), Some(b)) => Some(if a.position >= b.position { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Every kept update after `position`, in log order.
    fn after(&self, position: Position) -> Vec<&Arc<Update>> {
        let mut merged: Vec<&Arc<Update>> = self
            .updates
            .iter()
            .chain(self.presence.iter())
            .filter(|update| update.position > position)
            .collect();
        merged.sort_unstable_by_key(|update| update.position);
        merged
    }
}

/// How far back a cursor is looked for among updates a reader may not see. Past it, the
/// cursor is the newest public update: older than it could be, which only means a client
/// resuming from it is sent again what it may see and already has.
const CURSOR_SCAN: usize = 10_000;

/// Whether `update` is one of the hub's subscription events.
fn is_presence(update: &Update) -> bool {
    super::subscriptions::is_event(&update.topics)
}

/// The hub: history, subscribers and fan-out.
pub struct TopicHub {
    base: MatchBase,
    limits: HubLimits,
    log: Mutex<Log>,
    registry: RwLock<Registry>,
    fanout: mpsc::UnboundedSender<Arc<Update>>,
    next_serial: AtomicU64,
    /// The current health notice, while the hub's store is unreachable.
    degraded: Mutex<Option<Arc<Update>>>,
    /// Where the fan-out counts the updates it writes straight to sockets.
    metrics: Arc<StreamMetrics>,
    /// Patterns the fan-out evaluated, one per distinct pattern and update.
    pattern_checks: AtomicU64,
}

/// The topic of the hub's health notices (private, `event: mercure`).
pub const HEALTH_TOPIC: &str = "/.well-known/mercure/health";

/// A registered subscriber's side: its replay, its live queue and its registration, which
/// ends when this is dropped.
pub struct Subscription {
    pub spec: Arc<SubscriberSpec>,
    pub replay: Vec<Arc<Update>>,
    pub cursor: CursorFound,
    pub queue: Arc<Sink>,
    registration: Registration,
}

struct Registration {
    hub: Arc<TopicHub>,
    key: usize,
    serial: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.remove(self.key, self.serial);
    }
}

impl Subscription {
    /// The hub the subscription belongs to.
    pub fn hub(&self) -> &Arc<TopicHub> {
        &self.registration.hub
    }
}

/// A subscription as the subscriptions API lists it.
#[derive(Clone, Debug)]
pub struct ActiveSubscription {
    pub spec: Arc<SubscriberSpec>,
}

impl TopicHub {
    /// A hub and the fan-out task that serves it (spawned on the current runtime); the
    /// fan-out counts the updates it writes straight to sockets in `metrics`.
    pub fn start(base: MatchBase, limits: HubLimits, metrics: Arc<StreamMetrics>) -> Arc<Self> {
        let (fanout, updates) = mpsc::unbounded_channel();
        let hub = Arc::new(Self {
            base,
            limits,
            log: Mutex::new(Log {
                updates: VecDeque::new(),
                presence: VecDeque::new(),
                next_seq: 1,
            }),
            registry: RwLock::default(),
            fanout,
            next_serial: AtomicU64::new(1),
            degraded: Mutex::new(None),
            metrics,
            pattern_checks: AtomicU64::new(0),
        });
        tokio::spawn(fan_out(Arc::downgrade(&hub), updates));
        hub
    }

    /// The base URL for URL-pattern matching.
    pub fn base(&self) -> &MatchBase {
        &self.base
    }

    /// Accepts `new` at the next in-memory position.
    pub fn publish(&self, new: NewUpdate) -> Result<Arc<Update>, EncodeError> {
        let mut log = self.log.lock();
        let update = Update::accept(new, Position::seq(log.next_seq))?;
        log.next_seq += 1;
        self.append(&mut log, Arc::clone(&update));
        Ok(update)
    }

    /// Accepts an update a broker already placed in its log at `position`; one at or before
    /// the newest position seen (in either ring) is a repeat and is ignored (`None`).
    /// Positions only grow in the log, which is what lets the fan-out skip, for a new
    /// subscriber, exactly the updates its replay already had.
    pub fn ingest(
        &self,
        new: NewUpdate,
        position: Position,
    ) -> Result<Option<Arc<Update>>, EncodeError> {
        let mut log = self.log.lock();
        if log.newest().is_some_and(|last| last.position >= position) {
            return Ok(None);
        }
        let update = Update::accept(new, position)?;
        self.append(&mut log, Arc::clone(&update));
        Ok(Some(update))
    }

    fn append(&self, log: &mut Log, update: Arc<Update>) {
        let ring = if is_presence(&update) {
            &mut log.presence
        } else {
            &mut log.updates
        };
        ring.push_back(Arc::clone(&update));
        while ring.len() > self.limits.history_size {
            ring.pop_front();
        }
        // The fan-out task lives as long as the hub; a send can only fail while the runtime
        // shuts down, when nobody is left to deliver to.
        let _ = self.fanout.send(update);
    }

    /// Tells subscribers of [`HEALTH_TOPIC`] whether the hub's store is reachable: a notice
    /// is delivered live (never stored) when the state changes, and to every new subscriber
    /// while it is degraded.
    pub fn set_degraded(&self, degraded: bool) {
        let state = if degraded { "degraded" } else { "ok" };
        let notice = NewUpdate {
            id: super::new_update_id(),
            topics: vec![HEALTH_TOPIC.to_owned()],
            data: format!("{{\"type\":\"health\",\"state\":\"{state}\"}}"),
            kind: Some("mercure".to_owned()),
            retry: None,
            private: true,
        };
        let Ok(notice) = Update::ephemeral(notice) else {
            return;
        };
        *self.degraded.lock() = degraded.then(|| Arc::clone(&notice));
        let _ = self.fanout.send(notice);
    }

    /// Whether the hub's store is unreachable.
    pub fn is_degraded(&self) -> bool {
        self.degraded.lock().is_some()
    }

    /// The id of the newest update `visible` allows, or `earliest` when there is none: the
    /// cursor a client that read a snapshot now should resume from. `visible` says what the
    /// client may see, so that the cursor never names (nor betrays) an update it may not.
    pub fn last_event_id(&self, visible: impl Fn(&Update) -> bool) -> String {
        cursor_of(self.log.lock().newest_where(visible))
    }

    /// The newest `limit` updates that `accepts` allows (oldest first), how many more older
    /// ones it allows, and the cursor to resume after them among the updates `visible`
    /// allows, read together so that nothing falls between the snapshot and the cursor.
    pub fn snapshot(
        &self,
        limit: usize,
        accepts: impl Fn(&Update) -> bool,
        visible: impl Fn(&Update) -> bool,
    ) -> (Vec<Arc<Update>>, usize, String) {
        let log = self.log.lock();
        let cursor = cursor_of(log.newest_where(visible));
        let total = log.updates.iter().filter(|update| accepts(update)).count();
        let recent = Self::recent_in(&log, limit, accepts);
        let older = total - recent.len();
        (recent, older, cursor)
    }

    /// The newest `limit` updates that `accepts` allows, oldest first.
    pub fn recent(&self, limit: usize, accepts: impl Fn(&Update) -> bool) -> Vec<Arc<Update>> {
        Self::recent_in(&self.log.lock(), limit, accepts)
    }

    fn recent_in(log: &Log, limit: usize, accepts: impl Fn(&Update) -> bool) -> Vec<Arc<Update>> {
        let mut recent: Vec<Arc<Update>> = log
            .updates
            .iter()
            .rev()
            .filter(|update| accepts(update))
            .take(limit)
            .cloned()
            .collect();
        recent.reverse();
        recent
    }

    /// Registers a subscriber: returns the updates it missed after `cursor` (that it may
    /// see) and the queue that receives everything after them.
    pub fn subscribe(self: &Arc<Self>, spec: SubscriberSpec, cursor: &Cursor) -> Subscription {
        let spec = Arc::new(spec);
        let queue = Sink::with_limits(self.limits.queue_capacity, &self.limits.queues);
        let serial = self.next_serial.fetch_add(1, Relaxed);
        let log = self.log.lock();
        let after = log.newest().map_or(Position::ZERO, |last| last.position);
        let (start, found) = match cursor {
            Cursor::Live => (after, CursorFound::Earliest),
            Cursor::Earliest => (Position::ZERO, CursorFound::Earliest),
            // An id the subscriber may not see is as good as unknown: the answer must not
            // tell that a private update with that id exists.
            Cursor::After(id) => match log
                .find(id)
                .filter(|update| may_read(&spec, update, &self.base))
            {
                Some(update) => (update.position, CursorFound::Id(id.clone())),
                None => (Position::ZERO, CursorFound::Earliest),
            },
        };
        // The updates before the registration, taken under the log's lock (so that the
        // fan-out skips exactly these); which of them the subscriber wants is worked out
        // after, without holding up publishers.
        let missed: Vec<Arc<Update>> = log.after(start).into_iter().cloned().collect();
        let notice = self.degraded.lock().clone();
        let expires = spec
            .grants
            .as_ref()
            .and_then(|grants| grants.expires_at)
            .map(|at| {
                let left = (at - super::auth::now_seconds()).clamp(0.0, 1e9);
                std::time::Instant::now() + std::time::Duration::from_secs_f64(left)
            });
        let key = self.registry.write().insert(Entry {
            serial,
            spec: Arc::clone(&spec),
            queue: Arc::clone(&queue),
            after,
            round: AtomicU64::new(0),
            expires,
        });
        drop(log);
        let mut replay: Vec<Arc<Update>> = missed
            .into_iter()
            .filter(|update| wants(&spec, update, &self.base))
            .collect();
        if let Some(notice) = notice.filter(|notice| wants(&spec, notice, &self.base)) {
            replay.push(notice);
        }
        Subscription {
            spec,
            replay,
            cursor: found,
            queue,
            registration: Registration {
                hub: Arc::clone(self),
                key,
                serial,
            },
        }
    }

    fn remove(&self, key: usize, serial: u64) {
        self.registry.write().remove(key, serial);
    }

    /// Every registered subscriber.
    pub fn subscribers(&self) -> Vec<ActiveSubscription> {
        self.registry
            .read()
            .entries
            .iter()
            .map(|(_, entry)| ActiveSubscription {
                spec: Arc::clone(&entry.spec),
            })
            .collect()
    }

    /// How many times the fan-out evaluated a URL pattern (or template) since the start.
    pub fn pattern_checks(&self) -> u64 {
        self.pattern_checks.load(Relaxed)
    }

    /// Bytes of the distinct updates waiting in subscribers' queues now.
    pub fn queued_bytes(&self) -> usize {
        self.limits.queues.total()
    }

    /// How many subscribers are registered.
    pub fn subscriber_count(&self) -> usize {
        self.registry.read().entries.len()
    }
}

/// The cursor that names `update`, or `earliest`.
fn cursor_of(update: Option<&Arc<Update>>) -> String {
    update.map_or_else(|| "earliest".to_owned(), |update| update.id.to_string())
}

/// Whether `spec` should receive `update`: one of its selectors matches one of the topics,
/// and a private update needs a grant covering one of its topics.
fn wants(spec: &SubscriberSpec, update: &Update, base: &MatchBase) -> bool {
    spec.selectors
        .iter()
        .any(|selector| selector.matches_update(update, base))
        && may_read(spec, update, base)
}

fn may_read(spec: &SubscriberSpec, update: &Update, base: &MatchBase) -> bool {
    !update.private || grant_selectors(spec).any(|selector| selector.matches_update(update, base))
}

impl Registry {
    fn insert(&mut self, entry: Entry) -> usize {
        let spec = Arc::clone(&entry.spec);
        let key = self.entries.insert(entry);
        self.selected.insert(key, spec.selectors.iter());
        self.granted.insert(key, grant_selectors(&spec));
        key
    }

    fn remove(&mut self, key: usize, serial: u64) {
        if self
            .entries
            .get(key)
            .is_none_or(|entry| entry.serial != serial)
        {
            return;
        }
        let entry = self.entries.remove(key);
        // A subscriber cut off for lagging gets what is queued, then its stream ends.
        entry.queue.close();
        self.selected.remove(key, entry.spec.selectors.iter());
        self.granted.remove(key, grant_selectors(&entry.spec));
    }
}

/// The fan-out task: delivers each accepted update, in order, to every matching subscriber.
async fn fan_out(
    hub: std::sync::Weak<TopicHub>,
    mut updates: mpsc::UnboundedReceiver<Arc<Update>>,
) {
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
const PART_MIN: usize = 256;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::hub::selector::MatchType;

    fn hub(history: usize, queue: usize) -> Arc<TopicHub> {
        TopicHub::start(
            MatchBase::default(),
            HubLimits::sized(history, queue),
            Arc::default(),
        )
    }

    fn update(id: &str, topic: &str) -> NewUpdate {
        NewUpdate {
            id: id.into(),
            topics: vec![topic.into()],
            data: format!("data of {id}"),
            kind: None,
            retry: None,
            private: false,
        }
    }

    fn spec(selectors: &[(MatchType, &str)]) -> SubscriberSpec {
        SubscriberSpec {
            id: "urn:uuid:test".into(),
            selectors: selectors
                .iter()
                .map(|(kind, raw)| Selector::new(*kind, raw, &MatchBase::default()).expect("valid"))
                .collect(),
            grants: None,
        }
    }

    async fn next_id(subscription: &mut Subscription) -> String {
        tokio::time::timeout(Duration::from_secs(1), subscription.queue.recv())
            .await
            .expect("an update arrives")
            .expect("queue open")
            .id
            .to_string()
    }

    fn ids(updates: &[Arc<Update>]) -> Vec<String> {
        updates.iter().map(|u| u.id.to_string()).collect()
    }

    #[tokio::test]
    async fn delivers_matching_updates_once_in_order() {
        let hub = hub(10, 10);
        let mut subscription = hub.subscribe(
            spec(&[
                (MatchType::Exact, "/a"),
                (MatchType::UrlPattern, "/:name"),
                (MatchType::Exact, "*"),
            ]),
            &Cursor::Live,
        );
        hub.publish(update("1", "/a")).expect("valid");
        hub.publish(update("2", "/b")).expect("valid");
        assert_eq!(next_id(&mut subscription).await, "1");
        assert_eq!(next_id(&mut subscription).await, "2");
        assert!(subscription.queue.try_recv().is_none(), "nothing twice");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 3)]
    async fn a_crowd_split_over_workers_gets_every_update_once_in_order() {
        let hub = hub(10, 64);
        // Enough subscribers for helpers and several shares, a count that does not divide.
        let crowd: Vec<Subscription> = (0..3 * PART_MIN + 7)
            .map(|_| hub.subscribe(spec(&[(MatchType::Exact, "/crowd")]), &Cursor::Live))
            .collect();
        for n in 0..20 {
            hub.publish(update(&n.to_string(), "/crowd"))
                .expect("valid");
        }
        for mut subscription in crowd {
            for n in 0..20 {
                assert_eq!(next_id(&mut subscription).await, n.to_string());
            }
            assert!(subscription.queue.try_recv().is_none(), "nothing twice");
        }
    }

    #[tokio::test]
    async fn replays_after_a_known_id_then_goes_live() {
        let hub = hub(10, 10);
        for id in ["1", "2", "3"] {
            hub.publish(update(id, "/a")).expect("valid");
        }
        hub.publish(update("x", "/other")).expect("valid");
        let mut subscription = hub.subscribe(
            spec(&[(MatchType::Exact, "/a")]),
            &Cursor::After("1".into()),
        );
        assert_eq!(ids(&subscription.replay), ["2", "3"]);
        assert_eq!(subscription.cursor, CursorFound::Id("1".into()));
        hub.publish(update("4", "/a")).expect("valid");
        assert_eq!(next_id(&mut subscription).await, "4");
    }

    #[tokio::test]
    async fn an_unknown_or_dropped_id_replays_everything_kept() {
        let hub = hub(2, 10);
        for id in ["1", "2", "3"] {
            hub.publish(update(id, "/a")).expect("valid");
        }
        let subscription = hub.subscribe(
            spec(&[(MatchType::Exact, "/a")]),
            &Cursor::After("1".into()),
        );
        assert_eq!(ids(&subscription.replay), ["2", "3"]);
        assert_eq!(subscription.cursor, CursorFound::Earliest);
        let earliest = hub.subscribe(spec(&[(MatchType::Exact, "/a")]), &Cursor::Earliest);
        assert_eq!(ids(&earliest.replay), ["2", "3"]);
    }

    #[tokio::test]
    async fn duplicate_ids_resolve_to_the_earliest() {
        let hub = hub(10, 10);
        for (id, topic) in [("dup", "/a"), ("x", "/a"), ("dup", "/a"), ("y", "/a")] {
            hub.publish(update(id, topic)).expect("valid");
        }
        let subscription = hub.subscribe(
            spec(&[(MatchType::Exact, "/a")]),
            &Cursor::After("dup".into()),
        );
        assert_eq!(ids(&subscription.replay), ["x", "dup", "y"]);
    }

    #[tokio::test]
    async fn private_updates_need_a_grant() {
        let hub = hub(10, 10);
        let mut anonymous = hub.subscribe(spec(&[(MatchType::Exact, "*")]), &Cursor::Live);
        let mut allowed_spec = spec(&[(MatchType::Exact, "/a")]);
        allowed_spec.grants = Some(Arc::new(Grants {
            subscribe: vec![super::super::auth::SubscribeGrant {
                selectors: vec![Selector::exact("/alternate")],
                payload: None,
            }],
            ..Grants::default()
        }));
        let mut allowed = hub.subscribe(allowed_spec, &Cursor::Live);
        let mut secret = update("secret", "/a");
        secret.private = true;
        secret.topics.push("/alternate".into());
        hub.publish(secret).expect("valid");
        hub.publish(update("public", "/a")).expect("valid");
        assert_eq!(next_id(&mut allowed).await, "secret");
        assert_eq!(next_id(&mut allowed).await, "public");
        assert_eq!(next_id(&mut anonymous).await, "public");
    }

    #[tokio::test]
    async fn a_subscriber_whose_token_expired_gets_nothing_more() {
        let hub = hub(10, 10);
        let mut expired_spec = spec(&[(MatchType::Exact, "/a")]);
        expired_spec.grants = Some(Arc::new(Grants {
            subscribe: vec![super::super::auth::SubscribeGrant {
                selectors: vec![Selector::exact("/a")],
                payload: None,
            }],
            expires_at: Some(super::super::auth::now_seconds() - 1.0),
            ..Grants::default()
        }));
        let expired = hub.subscribe(expired_spec, &Cursor::Live);
        let mut live = hub.subscribe(spec(&[(MatchType::Exact, "/a")]), &Cursor::Live);
        let mut secret = update("secret", "/a");
        secret.private = true;
        hub.publish(secret).expect("valid");
        hub.publish(update("public", "/a")).expect("valid");
        assert_eq!(next_id(&mut live).await, "public");
        assert!(
            expired.queue.try_recv().is_none(),
            "not even the public one"
        );
    }

    #[tokio::test]
    async fn a_full_queue_cuts_the_subscriber_off_after_what_it_has() {
        let hub = hub(100, 2);
        let mut slow = hub.subscribe(spec(&[(MatchType::Exact, "/a")]), &Cursor::Live);
        let mut fast = hub.subscribe(spec(&[(MatchType::Exact, "/a")]), &Cursor::Live);
        for n in 1..=5 {
            hub.publish(update(&n.to_string(), "/a")).expect("valid");
            assert_eq!(next_id(&mut fast).await, n.to_string());
        }
        // The slow one got the two that fit, then its queue closed.
        assert_eq!(next_id(&mut slow).await, "1");
        assert_eq!(next_id(&mut slow).await, "2");
        let end = tokio::time::timeout(Duration::from_secs(1), slow.queue.recv())
            .await
            .expect("the queue closes");
        assert!(end.is_none());
        assert_eq!(hub.subscriber_count(), 1);
        // Resuming from its last id gets the rest from the history.
        let resumed = hub.subscribe(
            spec(&[(MatchType::Exact, "/a")]),
            &Cursor::After("2".into()),
        );
        assert_eq!(ids(&resumed.replay), ["3", "4", "5"]);
    }

    #[tokio::test]
    async fn dropping_a_subscription_unregisters_it() {
        let hub = hub(10, 10);
        let first = hub.subscribe(
            spec(&[(MatchType::Exact, "/a"), (MatchType::UrlPattern, "/:x")]),
            &Cursor::Live,
        );
        let second = hub.subscribe(spec(&[(MatchType::Exact, "/a")]), &Cursor::Live);
        assert_eq!(hub.subscriber_count(), 2);
        drop(first);
        assert_eq!(hub.subscriber_count(), 1);
        let registry = hub.registry.read();
        assert!(registry.selected.patterns.is_empty());
        assert_eq!(registry.selected.exact.get("/a").map(Vec::len), Some(1));
        drop(registry);
        drop(second);
        assert_eq!(hub.subscriber_count(), 0);
        assert!(hub.registry.read().selected.is_empty());
    }

    #[tokio::test]
    async fn ingest_ignores_positions_already_seen() {
        let hub = hub(10, 10);
        // Whether the hub took the update `id` on `topic` at position 5-`minor`.
        let taken = |id: &str, topic: &str, minor| {
            hub.ingest(update(id, topic), Position { major: 5, minor })
                .expect("valid")
                .is_some()
        };
        assert!(taken("a", "/a", 1));
        assert!(!taken("a", "/a", 1));
        assert!(taken("b", "/a", 2));
        assert_eq!(hub.last_event_id(|_| true), "b");
        // The two rings share one order: a subscription event at or before the newest
        // update is a repeat too, and so is an update at or before the newest of those.
        let presence = "/.well-known/mercure/subscriptions/exact/x/y";
        assert!(!taken("p1", presence, 2));
        assert!(taken("p1", presence, 3));
        assert!(!taken("c", "/a", 3));
        assert_eq!(hub.last_event_id(|_| true), "p1");
    }

    #[tokio::test]
    async fn subscription_events_do_not_push_updates_out_of_the_history() {
        let hub = hub(2, 10);
        hub.publish(update("a", "/t")).expect("valid");
        hub.publish(update("b", "/t")).expect("valid");
        for n in 0..5 {
            hub.publish(update(
                &format!("p{n}"),
                "/.well-known/mercure/subscriptions/exact/x/y",
            ))
            .expect("valid");
        }
        hub.publish(update("c", "/t")).expect("valid");
        let all = hub.subscribe(spec(&[(MatchType::Exact, "*")]), &Cursor::Earliest);
        // Two of each kind are kept, merged in log order.
        assert_eq!(ids(&all.replay), ["b", "p3", "p4", "c"]);
        let after_presence = hub.subscribe(
            spec(&[(MatchType::Exact, "/t")]),
            &Cursor::After("p3".into()),
        );
        assert_eq!(ids(&after_presence.replay), ["c"]);
        assert_eq!(after_presence.cursor, CursorFound::Id("p3".into()));
        assert_eq!(hub.last_event_id(|_| true), "c");
    }

    #[tokio::test]
    async fn history_is_bounded_and_recent_filters() {
        let hub = hub(3, 10);
        for n in 1..=5 {
            hub.publish(update(
                &n.to_string(),
                if n % 2 == 0 { "/even" } else { "/odd" },
            ))
            .expect("valid");
        }
        let odd = hub.recent(10, |u| &*u.topics[0] == "/odd");
        assert_eq!(ids(&odd), ["3", "5"]);
        assert_eq!(ids(&hub.recent(1, |_| true)), ["5"]);
    }
}
