//! The update: what a publisher sends and every matching subscriber receives.
//!
//! Used by the hub and by every broker alike, so it sits below both. An update is encoded
//! to its SSE bytes once, when it is accepted; each subscriber's stream then shares those
//! bytes (`Bytes` is reference-counted), so delivering to N subscribers costs no encoding
//! and no copy of the payload.

use std::{cmp::Ordering, fmt, sync::Arc};

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{
    chunk::chunk_header,
    sse::{EventBuilder, FieldValue},
};

pub use topic_url::TopicUrl;

pub mod topic_url;

/// The path under which the hub's subscription events live (their topics are
/// `/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}`).
pub const SUBSCRIPTIONS_PATH: &str = "/.well-known/mercure/subscriptions";

/// Whether an update with these topics is one of the hub's subscription events (its
/// canonical topic, the first, is under [`SUBSCRIPTIONS_PATH`]): the history keeps those
/// apart, so that a crowd connecting cannot push ordinary updates out.
pub fn is_subscription_event(topics: &[impl AsRef<str>]) -> bool {
    topics
        .first()
        .is_some_and(|topic| topic.as_ref().starts_with(SUBSCRIPTIONS_PATH))
}

/// Where an update sits in the hub's log: updates are delivered and replayed in this order.
///
/// In memory it counts up from 1; with Redis it is the stream entry id (milliseconds and a
/// sequence number), the same on every instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub major: u64,
    pub minor: u64,
}

impl Position {
    /// The position before every update.
    pub const ZERO: Self = Self { major: 0, minor: 0 };
    /// The position after every update.
    pub const MAX: Self = Self {
        major: u64::MAX,
        minor: u64::MAX,
    };

    /// An in-memory position.
    pub const fn seq(n: u64) -> Self {
        Self { major: 0, minor: n }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.major, self.minor)
    }
}

/// An update as a publisher describes it, checked but not yet accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewUpdate {
    /// The update's id: the publisher's, or one the hub generated.
    pub id: String,
    /// The canonical topic first, then alternate topics.
    pub topics: Vec<String>,
    /// The payload, any UTF-8 text.
    pub data: String,
    /// The SSE event type (`event:`), if set.
    pub kind: Option<String>,
    /// The reconnection delay (`retry:`) in milliseconds, if set.
    pub retry: Option<u64>,
    /// Whether only subscribers allowed to read one of its topics may receive it.
    pub private: bool,
}

/// An accepted update, with its place in the log and its encoded bytes.
pub struct Update {
    pub id: Box<str>,
    pub topics: Box<[Box<str>]>,
    pub data: Box<str>,
    pub kind: Option<Box<str>>,
    pub retry: Option<u64>,
    pub private: bool,
    pub position: Position,
    /// When the update was accepted, in milliseconds since the epoch (not sent on the wire).
    pub accepted_ms: u64,
    /// The SSE event, encoded once and shared by every stream that sends it.
    pub wire: Bytes,
    /// `wire` as one HTTP/1.1 chunk (size line, event, CRLF), in the same allocation: what
    /// the fan-out writes to each socket with one plain `send`.
    pub chunk: Bytes,
    /// In how many subscribers' live queues the update waits now (see [`crate::stream::sink`]).
    pub(crate) queued_in: std::sync::atomic::AtomicU32,
    /// The topics read as URLs, the first time a URL pattern needs them.
    urls: std::sync::OnceLock<Box<[Option<TopicUrl>]>>,
}

impl fmt::Debug for Update {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Update")
            .field("id", &self.id)
            .field("topics", &self.topics)
            .field("kind", &self.kind)
            .field("private", &self.private)
            .field("position", &self.position)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// Why an update cannot be encoded: its id or type would break the SSE framing. Updates are
/// validated before they get here, so this only guards the invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(transparent)]
pub struct EncodeError(#[from] crate::wire::sse::InvalidField);

/// `wire` and `wire` framed as one HTTP/1.1 chunk, sharing one allocation. Nothing is
/// framed as nothing: an empty chunk would end the body.
fn framed(wire: &[u8]) -> (Bytes, Bytes) {
    if wire.is_empty() {
        return (Bytes::new(), Bytes::new());
    }
    let mut size = [0u8; 18];
    let used = chunk_header(wire.len(), &mut size);
    let mut chunk = BytesMut::with_capacity(used + wire.len() + 2);
    chunk.put_slice(&size[..used]);
    chunk.put_slice(wire);
    chunk.put_slice(b"\r\n");
    let chunk = chunk.freeze();
    (chunk.slice(used..used + wire.len()), chunk)
}

impl Update {
    /// Accepts `new` at `position`, encoding its event once. Positions from a broker carry
    /// their time (`major` is in milliseconds); in-memory ones are stamped now.
    pub fn accept(new: NewUpdate, position: Position) -> Result<Arc<Self>, EncodeError> {
        let event = encode(&new, true)?;
        Ok(Self::with_event(new, position, &event))
    }

    fn with_event(new: NewUpdate, position: Position, event: &Bytes) -> Arc<Self> {
        let (wire, chunk) = framed(event);
        let accepted_ms = if position.major > 0 {
            position.major
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| {
                    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
                })
        };
        Arc::new(Self {
            id: new.id.into_boxed_str(),
            topics: new.topics.into_iter().map(String::into_boxed_str).collect(),
            data: new.data.into_boxed_str(),
            kind: new.kind.map(String::into_boxed_str),
            retry: new.retry,
            private: new.private,
            position,
            accepted_ms,
            wire,
            chunk,
            queued_in: Default::default(),
            urls: std::sync::OnceLock::new(),
        })
    }

    /// The update's topics read as URLs against `base` (the hub's URL, always the same one
    /// for an update), for URL patterns: split once, then shared by every match.
    pub fn topic_urls(&self, base: &url::Url) -> &[Option<TopicUrl>] {
        self.urls.get_or_init(|| {
            self.topics
                .iter()
                .map(|topic| TopicUrl::parse(topic, base))
                .collect()
        })
    }

    /// An update that is delivered live but never stored (the hub's health notices): it
    /// sorts after every stored update. Its event has no `id:` line, so a browser keeps the
    /// id of the last stored update it read and resumes from there, not from an id the hub
    /// never kept (which would replay the whole history).
    pub fn ephemeral(new: NewUpdate) -> Result<Arc<Self>, EncodeError> {
        let event = encode(&new, false)?;
        let mut update = Self::with_event(new, Position::ZERO, &event);
        if let Some(update) = Arc::get_mut(&mut update) {
            update.position = Position::MAX;
        }
        Ok(update)
    }

    /// An event that is only its bytes on the wire, for streams outside the hub (the
    /// counter's): no id, topics or data of its own, never stored.
    pub fn raw(wire: Bytes) -> Arc<Self> {
        let (wire, chunk) = framed(&wire);
        Arc::new(Self {
            id: Box::default(),
            topics: Box::default(),
            data: Box::default(),
            kind: None,
            retry: None,
            private: false,
            position: Position::MAX,
            accepted_ms: 0,
            wire,
            chunk,
            queued_in: Default::default(),
            urls: std::sync::OnceLock::new(),
        })
    }
}

impl PartialEq for Update {
    fn eq(&self, other: &Self) -> bool {
        self.position == other.position && self.id == other.id
    }
}

impl PartialOrd for Update {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.position.cmp(&other.position))
    }
}

/// `new`'s event, with its `id:` line when `with_id`.
fn encode(new: &NewUpdate, with_id: bool) -> Result<Bytes, EncodeError> {
    let mut event = EventBuilder::new();
    if with_id {
        event = event.id(FieldValue::new(&new.id, "id")?);
    }
    if let Some(kind) = &new.kind {
        event = event.name(FieldValue::new(kind, "type")?);
    }
    if let Some(retry) = new.retry {
        event = event.retry(std::time::Duration::from_millis(retry));
    }
    Ok(event.data(&new.data).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(id: &str, data: &str) -> NewUpdate {
        NewUpdate {
            id: id.into(),
            topics: vec!["https://example.com/a".into()],
            data: data.into(),
            kind: None,
            retry: None,
            private: false,
        }
    }

    #[test]
    fn encodes_once_with_every_field() {
        let mut update = new("urn:uuid:1", "line 1\n\nline 3");
        update.kind = Some("price".into());
        update.retry = Some(2500);
        let accepted = Update::accept(update, Position::seq(7)).expect("valid");
        assert_eq!(
            accepted.wire,
            "event: price\nid: urn:uuid:1\nretry: 2500\ndata: line 1\ndata: \ndata: line 3\n\n"
        );
        assert_eq!(accepted.position, Position::seq(7));
    }

    #[test]
    fn the_chunk_is_the_event_framed_in_the_same_bytes() {
        let accepted = Update::accept(new("7", "x"), Position::seq(7)).expect("valid");
        assert_eq!(accepted.wire, "id: 7\ndata: x\n\n");
        assert_eq!(accepted.chunk, "f\r\nid: 7\ndata: x\n\n\r\n");
        let long = Update::raw(Bytes::from(vec![b'a'; 300]));
        assert_eq!(&long.chunk[..5], b"12c\r\n");
        assert_eq!(&long.chunk[5..305], &long.wire[..]);
        assert_eq!(&long.chunk[305..], b"\r\n");
        // Shared, not copied: the event is a view into the chunk.
        assert_eq!(long.wire.as_ptr(), long.chunk[5..].as_ptr());
        // An empty chunk would end the body: nothing is framed as nothing.
        assert!(Update::raw(Bytes::new()).chunk.is_empty());
    }

    #[test]
    fn ephemeral_events_leave_the_browsers_last_id_alone() {
        let mut notice = new("urn:uuid:notice", "{}");
        notice.kind = Some("mercure".into());
        let notice = Update::ephemeral(notice).expect("valid");
        assert_eq!(notice.wire, "event: mercure\ndata: {}\n\n");
        assert_eq!(notice.chunk, "19\r\nevent: mercure\ndata: {}\n\n\r\n");
        assert_eq!(&*notice.id, "urn:uuid:notice");
        assert_eq!(notice.position, Position::MAX);
        assert!(notice.accepted_ms > 0, "stamped when it was made");
    }

    #[test]
    fn refuses_what_would_break_the_framing() {
        assert!(Update::accept(new("a\nid: b", "x"), Position::seq(1)).is_err());
        let mut update = new("a", "x");
        update.kind = Some("x\r\nevent: y".into());
        assert!(Update::accept(update, Position::seq(1)).is_err());
    }

    #[test]
    fn positions_order_by_major_then_minor() {
        let a = Position { major: 1, minor: 9 };
        let b = Position { major: 2, minor: 0 };
        assert!(a < b);
        assert!(Position::seq(3) < Position::seq(4));
        assert_eq!(Position { major: 5, minor: 1 }.to_string(), "5-1");
    }
}
