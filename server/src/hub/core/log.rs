//! The history: the updates kept for subscribers that resume.

use std::{collections::VecDeque, sync::Arc};

use crate::update::{self, Position, Update};

/// The history, in two rings of the same size: ordinary updates, and the hub's own
/// subscription events, which would otherwise push ordinary updates out when many clients
/// connect at once. Positions are shared, so replays merge the two in order.
pub struct Log {
    updates: VecDeque<Arc<Update>>,
    presence: VecDeque<Arc<Update>>,
    /// How many updates each ring keeps.
    size: usize,
}

impl Log {
    /// An empty history of `size` updates (and as many subscription events).
    pub fn new(size: usize) -> Self {
        Self {
            updates: VecDeque::new(),
            presence: VecDeque::new(),
            size: size.max(1),
        }
    }

    /// Keeps `update`, dropping the oldest of its ring past the size.
    pub fn push(&mut self, update: Arc<Update>) {
        let ring = if update::is_subscription_event(&update.topics) {
            &mut self.presence
        } else {
            &mut self.updates
        };
        ring.push_back(update);
        while ring.len() > self.size {
            ring.pop_front();
        }
    }

    /// The ordinary updates (not subscription events), oldest first.
    pub fn updates(&self) -> impl DoubleEndedIterator<Item = &Arc<Update>> {
        self.updates.iter()
    }

    pub fn newest(&self) -> Option<&Arc<Update>> {
        match (self.updates.back(), self.presence.back()) {
            (Some(a), Some(b)) => Some(if a.position >= b.position { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// The oldest kept update with `id`, if any.
    pub fn find(&self, id: &str) -> Option<&Arc<Update>> {
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
    pub fn newest_where(&self, visible: impl Fn(&Update) -> bool) -> Option<&Arc<Update>> {
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
    pub fn after(&self, position: Position) -> Vec<&Arc<Update>> {
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

/// The cursor that names `update`, or `earliest`.
pub fn cursor_of(update: Option<&Arc<Update>>) -> String {
    update.map_or_else(|| "earliest".to_owned(), |update| update.id.to_string())
}
