//! The hub's names: its path, and the ids it makes for updates and subscribers.

/// The hub's path.
pub const HUB_PATH: &str = "/.well-known/mercure";

/// A new update id: `urn:uuid:` and a time-ordered UUID (v7), which the topic pages also
/// read as the update's time.
pub fn new_update_id() -> String {
    format!("urn:uuid:{}", uuid::Uuid::now_v7())
}

/// A new subscriber id: a random UUID, unique per connection.
pub fn new_subscriber_id() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}
