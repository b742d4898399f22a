//! Where accepted updates are stored and how they reach the hub of every instance that
//! shares them: the seam between the hub and its engines.
//!
//! The hub publishes through a [`Broker`] and is told what the broker stored through
//! [`Delivery`] (the hub implements it): updates at their positions in the shared log, in
//! order and each once, and whether the store answers. Who watches what across instances
//! comes from a broker's [`Presence`]. The engines here are [`memory`] (this process only)
//! and [`redis`] (Redis Streams, shared by every instance on one Redis); another one
//! implements these traits, without touching the hub.

pub mod memory;
pub mod redis;

use std::{future::Future, pin::Pin, sync::Arc};

use crate::update::{EncodeError, NewUpdate, Position, Update};

/// A boxed future, as trait objects need.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why an update was not stored.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The update cannot be encoded (its id or type would break the SSE framing).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The store (named) cannot be reached: nothing was stored.
    #[error("the update store ({store}) is unavailable: {reason}")]
    Unavailable { store: &'static str, reason: String },
    /// The store (named) answered and refused the update (out of memory, read-only, …).
    #[error("the update store ({store}) refused the update: {reason}")]
    Refused { store: &'static str, reason: String },
}

/// Stores updates and carries them to the hub of every instance sharing the store.
pub trait Broker: Send + Sync {
    /// Accepts `update`: once this returns `Ok`, the update is stored and will be delivered
    /// (through [`Delivery::deliver`]) to every instance's hub. Returns its id.
    fn publish(&self, update: NewUpdate) -> BoxFuture<'_, Result<String, BrokerError>>;

    /// Returns once the hub holds the stored history (at once in memory; with Redis, after
    /// the first attempt to load it), so that a new subscriber's cursor is looked up in it.
    fn history_loaded(&self) -> BoxFuture<'_, ()>;

    /// Whether the store answered last time it was asked.
    fn is_healthy(&self) -> bool;

    /// Who watches what across the instances sharing the store.
    fn presence(&self) -> &dyn Presence;
}

/// What a broker delivers to: the hub of this instance.
pub trait Delivery: Send + Sync {
    /// Takes an update the broker stored at `position`, the position in the shared log.
    /// Positions only grow: one at or before the newest seen is a repeat and is ignored
    /// (`Ok(None)`).
    fn deliver(
        &self,
        update: NewUpdate,
        position: Position,
    ) -> Result<Option<Arc<Update>>, EncodeError>;

    /// The store became unreachable (`false`) or reachable again (`true`).
    fn health(&self, healthy: bool);
}

/// One subscription, as presence keeps it (the specification's subscription document).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceEntry {
    /// The subscriber's id (`urn:uuid:…`, one per connection).
    pub subscriber: String,
    /// `exact`, `urlpattern`, or `topic` (0.x).
    pub match_type: &'static str,
    /// The topic selector as written.
    pub matcher: String,
}

/// Who watches what, across every instance that shares the hub.
pub trait Presence: Send + Sync {
    /// Every instance's subscriptions, given this instance's own (`local`); `None` when they
    /// are not known beyond this instance.
    fn hub_wide(&self, local: Vec<PresenceEntry>) -> Option<Vec<PresenceEntry>>;
}
