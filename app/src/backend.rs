//! What the topic pages need from the server, as a trait the server implements and
//! provides as Leptos context. It keeps this crate free of the server's hub types (the
//! server depends on this crate, not the other way round).

use std::{future::Future, net::IpAddr, pin::Pin, sync::Arc};

use crate::data::{TopicMessage, TopicSummary};

/// A boxed future, as trait objects need.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The hub as the pages see it.
pub trait TopicBackend: Send + Sync + 'static {
    /// What a reader (a member or not) sees of `topic` now, with at most `limit` messages.
    fn snapshot(&self, topic: &str, limit: usize, member: bool) -> TopicView;

    /// Who watches `topic` now, when this server knows them all (`None` when several
    /// instances share the hub: each knows only its own).
    fn watchers(&self, topic: &str) -> Option<Vec<String>>;

    /// Topics with recent messages or watchers, busiest first.
    fn topics(&self, limit: usize) -> Vec<TopicSummary>;

    /// Publishes `text` to `topic`; `members_only` makes it private. Returns its id.
    fn publish(
        &self,
        topic: String,
        text: String,
        members_only: bool,
    ) -> BoxFuture<'_, Result<String, String>>;

    /// Takes one message from `client`'s allowance; `Err` holds the seconds to wait.
    fn check_rate(&self, client: IpAddr) -> Result<(), u32>;

    /// The `Set-Cookie` value that gives the browser a subscriber token for the hub, for the
    /// page of the topic named `topic` (its watchers, and those of a few pages opened
    /// before; with members-only access when `member`), for `request` (its host is the
    /// token's audience).
    fn token_cookie(
        &self,
        request: &http::request::Parts,
        topic: &str,
        member: bool,
    ) -> Result<String, String>;

    /// Whether `request`'s token gives members-only access; `None` when it has no token the
    /// hub accepts (none, one that ran out, or one signed with another key).
    fn membership(&self, request: &http::request::Parts) -> Option<bool>;

    /// Whether `request`'s token gives members-only access.
    fn is_member(&self, request: &http::request::Parts) -> bool {
        self.membership(request) == Some(true)
    }
}

/// A topic as one reader sees it at one moment.
pub struct TopicView {
    /// The newest messages, oldest first.
    pub messages: Vec<TopicMessage>,
    /// How many older messages the hub still holds that are not in `messages`.
    pub older: u32,
    /// Subscriber ids watching the topic.
    pub watchers: Vec<String>,
    /// The hub's cursor at that moment: a page that rendered this view resumes from here.
    pub cursor: String,
}

/// The backend as it is stored in context.
pub type SharedBackend = Arc<dyn TopicBackend>;
