//! The in-memory broker: updates live in this process only, numbered here.

use std::sync::Arc;

use parking_lot::Mutex;

use super::{BoxFuture, Broker, BrokerError, Delivery, Presence, PresenceEntry};
use crate::update::{NewUpdate, Position};

/// Numbers each update (1, 2, …) and hands it to the hub at once; the hub's history is the
/// only store.
pub struct MemoryBroker {
    /// The next position, held while the update is delivered: numbering and delivery happen
    /// in one step, so that positions reach the hub in order.
    next: Mutex<u64>,
    hub: Arc<dyn Delivery>,
}

impl MemoryBroker {
    /// A broker that delivers to `hub`.
    pub fn new(hub: Arc<dyn Delivery>) -> Arc<Self> {
        Arc::new(Self {
            next: Mutex::new(1),
            hub,
        })
    }

    /// Stores `update` at the next position; returns its id.
    pub fn store(&self, update: NewUpdate) -> Result<String, BrokerError> {
        let mut next = self.next.lock();
        let id = update.id.clone();
        if self.hub.deliver(update, Position::seq(*next))?.is_some() {
            *next += 1;
        }
        Ok(id)
    }
}

impl Broker for MemoryBroker {
    fn publish(&self, update: NewUpdate) -> BoxFuture<'_, Result<String, BrokerError>> {
        let stored = self.store(update);
        Box::pin(async move { stored })
    }

    fn history_loaded(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    fn is_healthy(&self) -> bool {
        true
    }

    fn presence(&self) -> &dyn Presence {
        self
    }
}

/// One process is the whole hub: its own subscriptions are every subscription.
impl Presence for MemoryBroker {
    fn hub_wide(&self, local: Vec<PresenceEntry>) -> Option<Vec<PresenceEntry>> {
        Some(local)
    }
}
