//! Where accepted updates go: straight into this process's hub, or (with Redis) into a
//! shared log that every instance's hub reads.

pub mod redis;

use std::sync::Arc;

use crate::{hub::topic_hub::TopicHub, update::NewUpdate};

/// Why an update was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Encode(#[from] crate::update::EncodeError),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// The update store and transport.
#[derive(Clone)]
pub enum Broker {
    /// Updates live in this process only.
    Memory(Arc<TopicHub>),
    /// Updates go through Redis Streams and reach every instance.
    Redis(Arc<redis::RedisBroker>),
}

impl Broker {
    /// Accepts `update`: once this returns `Ok`, the update is stored and will reach every
    /// matching subscriber. Returns its id.
    pub async fn publish(&self, update: NewUpdate) -> Result<String, BrokerError> {
        match self {
            Self::Memory(hub) => Ok(hub.publish(update)?.id.to_string()),
            Self::Redis(redis) => {
                redis.publish(&update).await?;
                Ok(update.id)
            }
        }
    }

    /// Returns once the hub holds the stored history (at once in memory; with Redis, after
    /// the first attempt to load it), so that a new subscriber's cursor is looked up in it.
    pub async fn history_loaded(&self) {
        if let Self::Redis(redis) = self {
            redis.history_loaded().await;
        }
    }
}
