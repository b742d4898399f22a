//! What a live feed holds and what state its connection is in.
//!
//! Plain data with no browser or reactive code, so every rule (cap, dedupe, state labels)
//! is unit-tested on the host.

use std::collections::VecDeque;

/// Where a subscription stands, as the page shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// The first connection is being made.
    Connecting,
    /// The stream is open and events arrive.
    Live,
    /// The connection dropped; the browser tries again after `retry_ms`.
    Reconnecting { retry_ms: u32 },
    /// The server said the stream is over and the page closed it.
    Ended,
    /// The browser gave up (for example the server or a proxy refused the request); the
    /// page opens a new connection after `retry_ms`, resuming from the last event it got.
    Failed { retry_ms: u32 },
    /// Connected, but the hub cannot store new messages for now (its Redis is down); what
    /// is sent meanwhile is refused, and live delivery resumes when it returns.
    Degraded,
}

impl ConnectionState {
    /// A short label for the status badge.
    pub fn label(self) -> String {
        match self {
            Self::Connecting => "Connecting…".into(),
            Self::Live => "Live".into(),
            Self::Reconnecting { retry_ms } => {
                format!("Reconnecting (retry in {})", format_delay(retry_ms))
            }
            Self::Ended => "Ended".into(),
            Self::Failed { retry_ms } => {
                format!("Disconnected (retry in {})", format_delay(retry_ms))
            }
            Self::Degraded => "Degraded".into(),
        }
    }

    /// The sentence announced to screen readers when the state changes.
    pub fn announcement(self) -> String {
        match self {
            Self::Connecting => "Connecting to the live stream.".into(),
            Self::Live => "Connected. Messages arrive live.".into(),
            Self::Reconnecting { retry_ms } => format!(
                "Connection lost. Reconnecting in {}.",
                format_delay(retry_ms)
            ),
            Self::Ended => "The stream has ended.".into(),
            Self::Failed { retry_ms } => format!(
                "The server refused the connection. Trying again in {}.",
                format_delay(retry_ms)
            ),
            Self::Degraded => {
                "The hub cannot store messages right now. Delivery resumes when it recovers.".into()
            }
        }
    }

    /// A stable machine-readable name, used as a CSS class and a `data-state` attribute.
    pub fn key(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Live => "live",
            Self::Reconnecting { .. } => "reconnecting",
            Self::Ended => "ended",
            Self::Failed { .. } => "failed",
            Self::Degraded => "degraded",
        }
    }
}

/// The longest wait before opening a connection again after the browser gave up (unless
/// the server's `retry:` asks for longer).
const MAX_REOPEN_MS: u32 = 60_000;

/// How long to wait before opening a connection again after the browser gave up on it
/// `failures` times in a row: the server's `retry_ms` (at least 250 ms), doubled after each
/// failure up to a minute, times `jitter` (from 0.8 to 1.2) so that pages refused together
/// do not all come back at the same moment.
pub fn reopen_delay(retry_ms: u32, failures: u32, jitter: f64) -> u32 {
    let base = u64::from(retry_ms.max(250));
    let cap = u64::from(MAX_REOPEN_MS.max(retry_ms));
    let delay = base.saturating_mul(1u64 << failures.min(16)).min(cap);
    let jittered = (delay as f64 * jitter.clamp(0.8, 1.2)).round();
    // At most 1.2 × u32::MAX ms before the cast: saturates rather than wraps.
    jittered as u32
}

/// Formats a delay in milliseconds the way a person reads it: `500 ms`, `15 s`, `1.5 s`.
pub fn format_delay(ms: u32) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{}.{} s", ms / 1000, ms % 1000 / 100)
    }
}

/// One entry of a feed.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedItem {
    /// The position of the item in this feed, unique and increasing.
    pub seq: u64,
    /// The event's id, if the server sent one.
    pub id: Option<String>,
    /// The event's data, shown as text.
    pub text: String,
    /// Whether this item marks the end of the stream.
    pub is_end: bool,
    /// When the server accepted it (milliseconds since the epoch), if known.
    pub time_ms: Option<u64>,
    /// Whether only members could read it.
    pub members_only: bool,
}

/// A message to add to a feed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewItem {
    pub id: Option<String>,
    pub text: String,
    pub time_ms: Option<u64>,
    pub members_only: bool,
}

impl NewItem {
    /// A message with an id and text only.
    pub fn text(id: Option<String>, text: String) -> Self {
        Self {
            id,
            text,
            ..Self::default()
        }
    }
}

/// A capped list of received events: the newest `capacity` are kept, older ones are only
/// counted, and an event whose id is still in the list is ignored.
///
/// While the reader scrolls back to read, the feed can be *held*: then it evicts nothing
/// until it reaches [`HELD_CAPACITY_FACTOR`] times its capacity, so the rows being read do
/// not vanish or move; releasing it trims it back to its capacity.
#[derive(Clone, Debug)]
pub struct Feed {
    items: VecDeque<FeedItem>,
    capacity: usize,
    evicted: u64,
    next_seq: u64,
    last_id: Option<String>,
    held: bool,
}

/// How many times its capacity a held [`Feed`] may grow before it evicts anyway.
pub const HELD_CAPACITY_FACTOR: usize = 4;

impl Feed {
    /// An empty feed that keeps at most `capacity` items (at least one), or
    /// [`HELD_CAPACITY_FACTOR`] times that while held.
    pub fn new(capacity: usize) -> Self {
        Self {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            evicted: 0,
            next_seq: 0,
            last_id: None,
            held: false,
        }
    }

    /// Appends a message; returns `false` and changes nothing when its id was seen before.
    pub fn push(&mut self, id: Option<String>, text: String) -> bool {
        self.insert(NewItem::text(id, text), false)
    }

    /// Appends a message with all its details; `false` when its id was seen before.
    pub fn push_item(&mut self, item: NewItem) -> bool {
        self.insert(item, false)
    }

    /// Appends the end-of-stream marker.
    pub fn push_end(&mut self, text: String) -> bool {
        self.insert(NewItem::text(None, text), true)
    }

    fn insert(&mut self, item: NewItem, is_end: bool) -> bool {
        let NewItem {
            id,
            text,
            time_ms,
            members_only,
        } = item;
        if let Some(id) = &id {
            // A scan of at most `capacity` items: cheaper in the WASM than a hash set.
            if self.items.iter().any(|item| item.id.as_ref() == Some(id)) {
                return false;
            }
            self.last_id = Some(id.clone());
        }
        self.items.push_back(FeedItem {
            seq: self.next_seq,
            id,
            text,
            is_end,
            time_ms,
            members_only,
        });
        self.next_seq += 1;
        self.trim();
        true
    }

    /// Holds the items (`true`) while the reader reads older ones, or releases them.
    pub fn hold(&mut self, held: bool) {
        self.held = held;
        self.trim();
    }

    fn trim(&mut self) {
        let limit = if self.held {
            self.capacity.saturating_mul(HELD_CAPACITY_FACTOR)
        } else {
            self.capacity
        };
        while self.items.len() > limit {
            self.items.pop_front();
            self.evicted += 1;
        }
    }

    /// Counts `n` older items that were never shown (the server left them out).
    pub fn count_evicted(&mut self, n: u64) {
        self.evicted += n;
    }

    /// The kept items, oldest first.
    pub fn items(&self) -> impl Iterator<Item = &FeedItem> {
        self.items.iter()
    }

    /// How many messages (not counting the end marker) this feed has received.
    pub fn message_count(&self) -> u64 {
        self.evicted + self.items.iter().filter(|item| !item.is_end).count() as u64
    }

    /// How many items were dropped from the front to respect the cap.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The id of the newest item that had one: where a resumed subscription starts.
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Whether the end marker has been received.
    pub fn has_ended(&self) -> bool {
        self.items.back().is_some_and(|item| item.is_end)
    }
}

/// Who is watching a topic: a set of subscriber ids, kept as a sorted list (a `BTreeSet`
/// would add 7 KB to the WASM for a set this small), kept up to date by subscription
/// events, and replaced by the server's list when the page asks for it (see [`Self::ask`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Watchers {
    ids: Vec<String>,
    /// The number of the latest question to the server.
    asked: u32,
    /// The changes seen since that question went out, while it is unanswered.
    since_asked: Option<Vec<(bool, String)>>,
}

impl Watchers {
    /// The set of `ids` (repeats count once).
    pub fn new(ids: impl IntoIterator<Item = String>) -> Self {
        let mut watchers = Self::default();
        watchers.replace(ids);
        watchers
    }

    fn replace(&mut self, ids: impl IntoIterator<Item = String>) {
        self.ids.clear();
        for id in ids {
            self.add(id);
        }
    }

    fn add(&mut self, id: String) -> bool {
        match self.ids.binary_search(&id) {
            Ok(_) => false,
            Err(at) => {
                self.ids.insert(at, id);
                true
            }
        }
    }

    fn drop_id(&mut self, id: &str) -> bool {
        match self.ids.binary_search_by(|probe| probe.as_str().cmp(id)) {
            Ok(at) => {
                self.ids.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    /// A subscription event: `id` started watching (`active`) or stopped; `false` if that
    /// changed nothing.
    pub fn seen(&mut self, id: String, active: bool) -> bool {
        if let Some(changes) = &mut self.since_asked {
            changes.push((active, id.clone()));
        }
        if active {
            self.add(id)
        } else {
            self.drop_id(&id)
        }
    }

    /// Notes that the page asks the server who watches now; returns the question's number,
    /// for [`Self::answered`].
    pub fn ask(&mut self) -> u32 {
        self.asked = self.asked.wrapping_add(1);
        self.since_asked = Some(Vec::new());
        self.asked
    }

    /// The server's answer to `question` (`None`: it did not say): the set becomes `ids`,
    /// with the events seen since the question went out applied again on top, since the
    /// server may have made its list before them. Joining and leaving are set operations, so
    /// an event the list already holds changes nothing. An answer to an older question
    /// than the latest is ignored.
    pub fn answered(&mut self, question: u32, ids: Option<Vec<String>>) {
        if question != self.asked {
            return;
        }
        let changes = self.since_asked.take().unwrap_or_default();
        if let Some(ids) = ids {
            self.replace(ids);
            for (active, id) in changes {
                if active {
                    self.add(id);
                } else {
                    self.drop_id(&id);
                }
            }
        }
    }

    /// How many are watching.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nobody is.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_are_a_set() {
        let mut watchers = Watchers::new(["b", "a", "b"].map(String::from));
        assert_eq!(watchers.len(), 2);
        assert!(!watchers.seen("a".into(), true));
        assert!(watchers.seen("c".into(), true));
        assert_eq!(watchers.len(), 3);
        assert!(watchers.seen("b".into(), false));
        assert!(!watchers.seen("b".into(), false));
        assert!(!watchers.seen("zz".into(), false));
        assert!(watchers.seen("a".into(), false) && watchers.seen("c".into(), false));
        assert!(watchers.is_empty());
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|id| (*id).to_owned()).collect()
    }

    #[test]
    fn the_server_list_replaces_the_set_with_later_events_on_top() {
        // Before a restart: the page knew a, ghost and itself (old); after it, only the
        // server's list counts, and events that crossed the question are kept.
        let mut watchers = Watchers::new(ids(&["a", "ghost", "old"]));
        let question = watchers.ask();
        watchers.seen("new".into(), true); // in the list too: changes nothing
        watchers.seen("b".into(), true); // joined after the list was made
        watchers.seen("a".into(), false); // left after the list was made
        watchers.answered(question, Some(ids(&["a", "new"])));
        assert_eq!(watchers.ids, ids(&["b", "new"]));
        // Events after the answer apply as usual, and are no longer kept.
        watchers.seen("c".into(), true);
        assert_eq!(watchers.len(), 3);
        assert_eq!(watchers.since_asked, None);
    }

    #[test]
    fn only_the_latest_question_counts_and_no_answer_keeps_the_set() {
        let mut watchers = Watchers::new(ids(&["a"]));
        let first = watchers.ask();
        let second = watchers.ask();
        watchers.answered(first, Some(ids(&[])));
        assert_eq!(watchers.len(), 1, "an older answer is ignored");
        watchers.seen("b".into(), true);
        // The server could not say (several instances): the set stays as events made it.
        watchers.answered(second, None);
        assert_eq!(watchers.len(), 2);
        assert_eq!(watchers.since_asked, None);
    }

    fn texts(feed: &Feed) -> Vec<&str> {
        feed.items().map(|item| item.text.as_str()).collect()
    }

    #[test]
    fn appends_in_order_and_counts() {
        let mut feed = Feed::new(10);
        assert!(feed.push(Some("1".into()), "a".into()));
        assert!(feed.push(Some("2".into()), "b".into()));
        assert_eq!(texts(&feed), ["a", "b"]);
        assert_eq!(feed.message_count(), 2);
        assert_eq!(feed.last_id(), Some("2"));
        assert!(!feed.has_ended());
    }

    #[test]
    fn ignores_a_repeated_id() {
        let mut feed = Feed::new(10);
        assert!(feed.push(Some("7".into()), "first".into()));
        assert!(!feed.push(Some("7".into()), "again".into()));
        assert_eq!(texts(&feed), ["first"]);
        assert_eq!(feed.message_count(), 1);
    }

    #[test]
    fn keeps_items_without_id() {
        let mut feed = Feed::new(10);
        assert!(feed.push(None, "x".into()));
        assert!(feed.push(None, "x".into()));
        assert_eq!(feed.message_count(), 2);
        assert_eq!(feed.last_id(), None);
    }

    #[test]
    fn caps_and_counts_what_it_drops() {
        let mut feed = Feed::new(3);
        for n in 1..=5 {
            feed.push(Some(n.to_string()), format!("m{n}"));
        }
        assert_eq!(texts(&feed), ["m3", "m4", "m5"]);
        assert_eq!(feed.evicted(), 2);
        assert_eq!(feed.message_count(), 5);
        // An evicted id may come back (it is no longer on screen), a kept one may not.
        assert!(!feed.push(Some("5".into()), "dup".into()));
        assert!(feed.push(Some("1".into()), "old".into()));
    }

    #[test]
    fn a_held_feed_keeps_its_items_up_to_a_limit_and_trims_when_released() {
        let mut feed = Feed::new(2);
        for n in 1..=3 {
            feed.push(Some(n.to_string()), format!("m{n}"));
        }
        assert_eq!(texts(&feed), ["m2", "m3"]);
        feed.hold(true);
        for n in 4..=9 {
            feed.push(Some(n.to_string()), format!("m{n}"));
        }
        // Held: up to 2 × HELD_CAPACITY_FACTOR items stay.
        assert_eq!(
            texts(&feed),
            ["m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"]
        );
        assert_eq!(feed.evicted(), 1);
        feed.push(Some("10".into()), "m10".into());
        assert_eq!(feed.items().count(), 2 * HELD_CAPACITY_FACTOR);
        assert_eq!(
            feed.items().next().map(|item| item.text.as_str()),
            Some("m3")
        );
        assert_eq!(feed.evicted(), 2);
        feed.hold(false);
        assert_eq!(texts(&feed), ["m9", "m10"]);
        assert_eq!(feed.evicted(), 8);
        assert_eq!(feed.message_count(), 10);
    }

    #[test]
    fn positions_stay_unique_after_eviction() {
        let mut feed = Feed::new(2);
        for n in 0..5 {
            feed.push(None, n.to_string());
        }
        let seqs: Vec<u64> = feed.items().map(|item| item.seq).collect();
        assert_eq!(seqs, [3, 4]);
    }

    #[test]
    fn end_marker_is_not_a_message() {
        let mut feed = Feed::new(10);
        feed.push(Some("1".into()), "Counter value 1".into());
        feed.push_end("End of the stream".into());
        assert!(feed.has_ended());
        assert_eq!(feed.message_count(), 1);
        assert_eq!(texts(&feed), ["Counter value 1", "End of the stream"]);
    }

    #[test]
    fn zero_capacity_keeps_one() {
        let mut feed = Feed::new(0);
        feed.push(None, "a".into());
        feed.push(None, "b".into());
        assert_eq!(texts(&feed), ["b"]);
    }

    #[test]
    fn labels_say_what_happens() {
        assert_eq!(ConnectionState::Connecting.label(), "Connecting…");
        assert_eq!(
            ConnectionState::Reconnecting { retry_ms: 15_000 }.label(),
            "Reconnecting (retry in 15 s)"
        );
        assert_eq!(
            ConnectionState::Reconnecting { retry_ms: 250 }.announcement(),
            "Connection lost. Reconnecting in 250 ms."
        );
        assert_eq!(ConnectionState::Ended.key(), "ended");
        assert_eq!(
            ConnectionState::Failed { retry_ms: 2_000 }.label(),
            "Disconnected (retry in 2 s)"
        );
        assert_eq!(
            ConnectionState::Failed { retry_ms: 2_000 }.announcement(),
            "The server refused the connection. Trying again in 2 s."
        );
    }

    #[test]
    fn reopening_backs_off_from_the_servers_retry_up_to_a_minute() {
        let delays: Vec<u32> = (0..6).map(|n| reopen_delay(3_000, n, 1.0)).collect();
        assert_eq!(delays, [3_000, 6_000, 12_000, 24_000, 48_000, 60_000]);
        assert_eq!(reopen_delay(3_000, 40, 1.0), 60_000);
        // A server asking for more than the cap gets what it asked for.
        assert_eq!(reopen_delay(90_000, 3, 1.0), 90_000);
        // Never faster than 250 ms, even when the server says 0.
        assert_eq!(reopen_delay(0, 0, 1.0), 250);
        // Jitter spreads by at most a fifth either way.
        assert_eq!(reopen_delay(10_000, 0, 0.8), 8_000);
        assert_eq!(reopen_delay(10_000, 0, 1.2), 12_000);
        assert_eq!(reopen_delay(10_000, 0, 7.0), 12_000);
        assert_eq!(reopen_delay(u32::MAX, 0, 1.2), u32::MAX);
    }

    #[test]
    fn delays_read_naturally() {
        assert_eq!(format_delay(0), "0 ms");
        assert_eq!(format_delay(999), "999 ms");
        assert_eq!(format_delay(1000), "1 s");
        assert_eq!(format_delay(1500), "1.5 s");
    }
}
