//! The registry: who is subscribed, indexed for the fan-out.

use std::{
    collections::HashMap,
    sync::{atomic::AtomicU64, Arc},
};

use slab::Slab;

use super::subscriber::SubscriberSpec;
use crate::{
    hub::selector::{MatchBase, Selector},
    stream::sink::Sink,
    update::{Position, Update},
};

/// One registered subscriber.
pub struct Entry {
    /// Unique for the hub's lifetime, unlike the slab key, which is reused.
    pub serial: u64,
    pub spec: Arc<SubscriberSpec>,
    pub queue: Arc<Sink>,
    /// Updates at or before this position were in its replay.
    pub after: Position,
    /// The fan-out round that last delivered to it (an update reached through several of its
    /// selectors is sent once).
    pub round: AtomicU64,
    /// When its token expires: the fan-out sends it nothing from then on (its stream ends
    /// then too, but the fan-out may write to its socket before the stream's task wakes).
    pub expires: Option<std::time::Instant>,
}

/// Who is registered, indexed two ways: by what each subscriber selected (for public
/// updates), and, for subscribers with a token, by what its grants let it read (for private
/// ones, the hub's subscription events among them). A private update is matched against
/// the grants of subscribers that have them, then against those few subscribers' own
/// selectors: never against every pattern of every anonymous subscriber.
#[derive(Default)]
pub struct Registry {
    pub entries: Slab<Entry>,
    /// Every subscriber, by its selectors.
    pub selected: Index,
    /// Subscribers with a token, by their grants' selectors.
    pub granted: Index,
}

/// Subscribers by selector: exact topics in a map, `*` in a list, and each distinct other
/// selector (URL pattern, template) once, with everyone who named it.
#[derive(Default)]
pub struct Index {
    pub exact: HashMap<Box<str>, Vec<usize>>,
    /// Selectors of one segment under a path ([`Selector::segment_parent`]), by that path.
    pub segments: HashMap<Box<str>, Vec<usize>>,
    pub wildcard: Vec<usize>,
    pub patterns: HashMap<(crate::hub::selector::MatchType, Box<str>), (Selector, Vec<usize>)>,
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
    pub fn matching(&self, update: &Update, base: &MatchBase, mut found: impl FnMut(usize)) -> u64 {
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
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.segments.is_empty()
            && self.wildcard.is_empty()
            && self.patterns.is_empty()
    }
}

impl Registry {
    /// Registers `entry`; returns its key.
    pub fn insert(&mut self, entry: Entry) -> usize {
        let spec = Arc::clone(&entry.spec);
        let key = self.entries.insert(entry);
        self.selected.insert(key, spec.selectors.iter());
        self.granted.insert(key, spec.grant_selectors());
        key
    }

    /// Removes the subscriber at `key`, if it is still the one with `serial`, and closes
    /// its queue.
    pub fn remove(&mut self, key: usize, serial: u64) {
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
        self.granted.remove(key, entry.spec.grant_selectors());
    }
}
