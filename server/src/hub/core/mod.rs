//! The hub's core: the history of recent updates ([`log`]), the registry of subscribers
//! ([`registry`]), and the fan-out that hands each accepted update to every matching
//! subscriber ([`fanout`]).
//!
//! Ordering and exactly-once delivery come from one rule: an update enters the history and
//! the fan-out queue under the same lock, and a subscriber is registered under that lock
//! too, after reading the history it must replay. Every update is therefore either in the
//! subscriber's replay or delivered live (never both: live updates at or before the replay's
//! end are skipped), and all arrive in log order.
//!
//! Updates arrive from the broker ([`crate::broker::Delivery`], which the hub implements) at
//! the positions the broker gave them.

pub mod fanout;
pub mod log;
pub mod registry;
pub mod subscriber;

use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    Arc,
};

use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;

pub use self::subscriber::{Cursor, CursorFound, SubscriberSpec};
use self::{
    fanout::{fan_out, Shared},
    log::{cursor_of, Log},
    registry::Entry,
};
use super::{auth, names::new_update_id, selector::MatchBase};
use crate::{
    broker::{Delivery, PresenceEntry},
    metrics::StreamMetrics,
    stream::sink::{QueueLimits, Sink},
    update::{EncodeError, NewUpdate, Position, Update},
};

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

/// The hub: history, subscribers and fan-out.
pub struct TopicHub {
    limits: HubLimits,
    log: Mutex<Log>,
    /// The registry and what the fan-out reads with it.
    shared: Arc<Shared>,
    fanout: mpsc::UnboundedSender<Arc<Update>>,
    next_serial: AtomicU64,
    /// The current health notice, while the hub's store is unreachable.
    degraded: Mutex<Option<Arc<Update>>>,
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
    _registration: Registration,
}

/// A subscriber's place in the registry, given back when dropped.
struct Registration {
    shared: Arc<Shared>,
    key: usize,
    serial: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.registry.write().remove(self.key, self.serial);
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
        let shared = Arc::new(Shared {
            registry: RwLock::default(),
            base,
            metrics,
            pattern_checks: AtomicU64::new(0),
        });
        tokio::spawn(fan_out(Arc::downgrade(&shared), updates));
        Arc::new(Self {
            log: Mutex::new(Log::new(limits.history_size)),
            limits,
            shared,
            fanout,
            next_serial: AtomicU64::new(1),
            degraded: Mutex::new(None),
        })
    }

    /// The base URL for URL-pattern matching.
    pub fn base(&self) -> &MatchBase {
        &self.shared.base
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
        log.push(Arc::clone(&update));
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
            id: new_update_id(),
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
        let total = log.updates().filter(|update| accepts(update)).count();
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
            .updates()
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
    pub fn subscribe(&self, spec: SubscriberSpec, cursor: &Cursor) -> Subscription {
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
                .filter(|update| spec.may_read(update, self.base()))
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
                let left = (at - auth::now_seconds()).clamp(0.0, 1e9);
                std::time::Instant::now() + std::time::Duration::from_secs_f64(left)
            });
        let key = self.shared.registry.write().insert(Entry {
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
            .filter(|update| spec.wants(update, self.base()))
            .collect();
        if let Some(notice) = notice.filter(|notice| spec.wants(notice, self.base())) {
            replay.push(notice);
        }
        Subscription {
            spec,
            replay,
            cursor: found,
            queue,
            _registration: Registration {
                shared: Arc::clone(&self.shared),
                key,
                serial,
            },
        }
    }

    /// Every registered subscriber.
    pub fn subscribers(&self) -> Vec<ActiveSubscription> {
        self.shared
            .registry
            .read()
            .entries
            .iter()
            .map(|(_, entry)| ActiveSubscription {
                spec: Arc::clone(&entry.spec),
            })
            .collect()
    }

    /// This instance's subscriptions, one entry per selector, as presence keeps them.
    pub fn presence(&self) -> Vec<PresenceEntry> {
        let registry = self.shared.registry.read();
        registry
            .entries
            .iter()
            .flat_map(|(_, entry)| {
                entry.spec.selectors.iter().map(|selector| PresenceEntry {
                    subscriber: entry.spec.id.clone(),
                    match_type: selector.kind().name(),
                    matcher: selector.raw().to_owned(),
                })
            })
            .collect()
    }

    /// How many times the fan-out evaluated a URL pattern (or template) since the start.
    pub fn pattern_checks(&self) -> u64 {
        self.shared.pattern_checks.load(Relaxed)
    }

    /// Bytes of the distinct updates waiting in subscribers' queues now.
    pub fn queued_bytes(&self) -> usize {
        self.limits.queues.total()
    }

    /// How many subscribers are registered.
    pub fn subscriber_count(&self) -> usize {
        self.shared.registry.read().entries.len()
    }
}

impl Delivery for TopicHub {
    fn deliver(
        &self,
        update: NewUpdate,
        position: Position,
    ) -> Result<Option<Arc<Update>>, EncodeError> {
        self.ingest(update, position)
    }

    fn health(&self, healthy: bool) {
        self.set_degraded(!healthy);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::hub::{
        auth::{Grants, SubscribeGrant},
        selector::{MatchType, Selector},
    };
    use fanout::PART_MIN;

    /// What the in-memory broker does: the next position, then the hub.
    trait Publish {
        fn publish(&self, new: NewUpdate) -> Result<Arc<Update>, EncodeError>;
    }

    impl Publish for TopicHub {
        fn publish(&self, new: NewUpdate) -> Result<Arc<Update>, EncodeError> {
            let next = self
                .log
                .lock()
                .newest()
                .map_or(1, |update| update.position.minor + 1);
            Ok(self
                .ingest(new, Position::seq(next))?
                .expect("a position after the newest"))
        }
    }

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
            subscribe: vec![SubscribeGrant {
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
            subscribe: vec![SubscribeGrant {
                selectors: vec![Selector::exact("/a")],
                payload: None,
            }],
            expires_at: Some(auth::now_seconds() - 1.0),
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
        let registry = hub.shared.registry.read();
        assert!(registry.selected.patterns.is_empty());
        assert_eq!(registry.selected.exact.get("/a").map(Vec::len), Some(1));
        drop(registry);
        drop(second);
        assert_eq!(hub.subscriber_count(), 0);
        assert!(hub.shared.registry.read().selected.is_empty());
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
