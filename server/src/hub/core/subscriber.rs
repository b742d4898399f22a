//! A subscriber as the hub sees it: what it selected, what its token allows, and where its
//! stream starts.

use std::sync::Arc;

use crate::{
    hub::{
        auth::Grants,
        selector::{MatchBase, Selector},
    },
    update::Update,
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

impl SubscriberSpec {
    /// The selectors of its token's subscribe grants.
    pub fn grant_selectors(&self) -> impl Iterator<Item = &Selector> {
        self.grants
            .iter()
            .flat_map(|grants| grants.subscribe.iter())
            .flat_map(|grant| grant.selectors.iter())
    }

    /// Whether it should receive `update`: one of its selectors matches one of the topics,
    /// and a private update needs a grant covering one of its topics.
    pub fn wants(&self, update: &Update, base: &MatchBase) -> bool {
        self.selectors
            .iter()
            .any(|selector| selector.matches_update(update, base))
            && self.may_read(update, base)
    }

    /// Whether it may read `update`: a public one, or a private one its grants cover.
    pub fn may_read(&self, update: &Update, base: &MatchBase) -> bool {
        !update.private
            || self
                .grant_selectors()
                .any(|selector| selector.matches_update(update, base))
    }
}
