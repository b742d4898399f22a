//! Where accepted updates go: straight into this process's hub, or (with Redis) into a
//! shared log that every instance's hub reads.

use std::sync::Arc;

use crate::{
    hub::topic_hub::TopicHub,
    update::{NewUpdate, Update},
};

/// Why an update was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Encode(#[from] crate::update::EncodeError),
}

/// The update store and transport.
#[derive(Clone)]
pub enum Broker {
    /// Updates live in this process only.
    Memory(Arc<TopicHub>),
}

impl Broker {
    /// Accepts `update`: once this returns, the update is in the log and will reach every
    /// matching subscriber.
    pub async fn publish(&self, update: NewUpdate) -> Result<Arc<Update>, BrokerError> {
        match self {
            Self::Memory(hub) => Ok(hub.publish(update)?),
        }
    }

    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
        }
    }
}
