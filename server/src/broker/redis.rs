//! Updates shared by several instances through Redis Streams.
//!
//! Every accepted update is appended (`XADD`) to one stream, trimmed to about the history
//! size; subscription events go to a second stream, so a crowd connecting cannot push
//! updates out. Each instance reads both streams (`XREAD BLOCK`) from where it last was and
//! hands every entry to its local hub, the publishing instance included: every instance sees
//! the same updates, in the same order, at the same positions (the stream entry ids), so a
//! subscriber can resume on any of them.
//!
//! A publisher is answered once Redis has stored its update. When Redis is unreachable,
//! publishing answers 503 (nothing is acknowledged that was not stored), subscribers stay
//! connected, the hub tells pages it is degraded, and the reader reconnects with backoff;
//! when Redis returns, reading resumes after the last entry seen, so every stored update is
//! delivered. Run Redis with `appendonly yes` and `appendfsync always` so that a Redis crash
//! loses nothing it acknowledged.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use redis::{aio::MultiplexedConnection, AsyncConnectionConfig, Client, Value};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::{
    hub::topic_hub::TopicHub,
    update::{NewUpdate, Position},
};

/// How long one `XREAD` waits for new entries.
const BLOCK: Duration = Duration::from_secs(2);
/// How long a command may take before Redis counts as unreachable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Entries read per `XREAD`.
const BATCH: usize = 512;

/// Why Redis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("the update store (Redis) is unavailable: {0}")]
    Unavailable(String),
    #[error("invalid Redis URL {url:?}: {reason}")]
    Url { url: String, reason: String },
}

/// The Redis side of the broker.
pub struct RedisBroker {
    client: Client,
    updates_key: String,
    presence_key: String,
    max_len: usize,
    /// The publishing connection and the outage count when it was opened.
    publisher: Mutex<Option<(MultiplexedConnection, u64)>>,
    healthy: AtomicBool,
    /// How many times Redis became unreachable.
    outages: AtomicU64,
    hub: Arc<TopicHub>,
}

impl RedisBroker {
    /// Connects lazily to `url` and starts the reader that feeds `hub`; it stops when
    /// `shutdown` is cancelled.
    pub fn start(
        url: &str,
        prefix: &str,
        history_size: usize,
        hub: Arc<TopicHub>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, RedisError> {
        let client = Client::open(url).map_err(|error| RedisError::Url {
            url: url.to_owned(),
            reason: error.to_string(),
        })?;
        let broker = Arc::new(Self {
            client,
            updates_key: format!("{prefix}:updates"),
            presence_key: format!("{prefix}:presence"),
            max_len: history_size.max(1),
            publisher: Mutex::new(None),
            healthy: AtomicBool::new(true),
            outages: AtomicU64::new(0),
            hub,
        });
        tokio::spawn(read_forever(Arc::clone(&broker), shutdown));
        Ok(broker)
    }

    /// Whether Redis answered the last command.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    fn set_healthy(&self, healthy: bool) {
        if self.healthy.swap(healthy, Relaxed) != healthy {
            if !healthy {
                // The publisher's connection predates the outage: make the next publish
                // open a fresh one instead of failing on a dead socket.
                self.outages.fetch_add(1, Relaxed);
            }
            if healthy {
                tracing::info!("Redis is reachable again");
            } else {
                tracing::warn!("Redis is unreachable; publishing answers 503 until it returns");
            }
            self.hub.set_degraded(!healthy);
        }
    }

    async fn connect(&self, block: Duration) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT + block));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|error| RedisError::Unavailable(error.to_string()))
    }

    /// Stores `update`; returns once Redis has it.
    pub async fn publish(&self, update: &NewUpdate) -> Result<(), RedisError> {
        let key = if is_presence(update) {
            &self.presence_key
        } else {
            &self.updates_key
        };
        let mut command = redis::cmd("XADD");
        command
            .arg(key)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max_len)
            .arg("*")
            .arg("id")
            .arg(&update.id)
            .arg("topics")
            .arg(serde_json::to_string(&update.topics).unwrap_or_default())
            .arg("data")
            .arg(&update.data)
            .arg("private")
            .arg(if update.private { "1" } else { "0" });
        if let Some(kind) = &update.kind {
            command.arg("type").arg(kind);
        }
        if let Some(retry) = update.retry {
            command.arg("retry").arg(retry);
        }
        let mut slot = self.publisher.lock().await;
        let outages = self.outages.load(Relaxed);
        if slot
            .as_ref()
            .is_some_and(|(_, opened_at)| *opened_at != outages)
        {
            *slot = None;
        }
        let (connection, _) = match slot.as_mut() {
            Some(open) => open,
            None => {
                let connection = self
                    .connect(Duration::ZERO)
                    .await
                    .inspect_err(|_| self.set_healthy(false))?;
                slot.insert((connection, self.outages.load(Relaxed)))
            }
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, command.query_async::<Value>(connection)).await
        {
            Ok(Ok(_)) => {
                self.set_healthy(true);
                Ok(())
            }
            Ok(Err(error)) => {
                *slot = None;
                self.set_healthy(false);
                Err(RedisError::Unavailable(error.to_string()))
            }
            Err(_) => {
                *slot = None;
                self.set_healthy(false);
                Err(RedisError::Unavailable("no answer within 2 s".into()))
            }
        }
    }
}

fn is_presence(update: &NewUpdate) -> bool {
    update
        .topics
        .first()
        .is_some_and(|topic| topic.starts_with(crate::hub::subscriptions::SUBSCRIPTIONS_PATH))
}

/// Where the reader is in each stream.
struct Cursors {
    updates: String,
    presence: String,
}

/// Reads both streams into the hub until shutdown, reconnecting with backoff.
async fn read_forever(broker: Arc<RedisBroker>, shutdown: CancellationToken) {
    let mut cursors: Option<Cursors> = None;
    let mut backoff = BACKOFF_MIN;
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = read_session(&broker, &mut cursors) => outcome,
        };
        if let Err(error) = outcome {
            broker.set_healthy(false);
            tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "Redis reader lost its connection");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(jitter(backoff)) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        if broker.is_healthy() {
            backoff = BACKOFF_MIN;
        }
    }
}

/// One connection's worth of reading: loads the history the first time, then follows.
async fn read_session(
    broker: &RedisBroker,
    cursors: &mut Option<Cursors>,
) -> Result<(), RedisError> {
    let mut connection = broker.connect(BLOCK).await?;
    if cursors.is_none() {
        let updates = load_history(broker, &mut connection, &broker.updates_key).await?;
        let presence = load_history(broker, &mut connection, &broker.presence_key).await?;
        *cursors = Some(Cursors { updates, presence });
    }
    broker.set_healthy(true);
    loop {
        let Some(current) = cursors.as_mut() else {
            return Ok(());
        };
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&broker.updates_key)
            .arg(&broker.presence_key)
            .arg(&current.updates)
            .arg(&current.presence)
            .query_async(&mut connection)
            .await
            .map_err(|error| RedisError::Unavailable(error.to_string()))?;
        broker.set_healthy(true);
        for (key, entries) in streams(reply) {
            for (entry_id, fields) in entries {
                let cursor = if key == broker.updates_key {
                    &mut current.updates
                } else {
                    &mut current.presence
                };
                *cursor = entry_id.clone();
                ingest(broker, &entry_id, fields);
            }
        }
    }
}

/// Loads the newest entries of `key` into the hub; returns the id to read after.
async fn load_history(
    broker: &RedisBroker,
    connection: &mut MultiplexedConnection,
    key: &str,
) -> Result<String, RedisError> {
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(broker.max_len)
        .query_async(connection)
        .await
        .map_err(|error| RedisError::Unavailable(error.to_string()))?;
    let mut entries = entries(reply);
    entries.reverse();
    let last = entries
        .last()
        .map_or_else(|| "0-0".to_owned(), |(id, _)| id.clone());
    for (entry_id, fields) in entries {
        ingest(broker, &entry_id, fields);
    }
    Ok(last)
}

fn ingest(broker: &RedisBroker, entry_id: &str, fields: Vec<(String, String)>) {
    let Some(position) = parse_entry_id(entry_id) else {
        tracing::warn!(entry_id, "skipping a Redis entry with an unreadable id");
        return;
    };
    let Some(update) = decode(fields) else {
        tracing::warn!(entry_id, "skipping a Redis entry that is not an update");
        return;
    };
    if let Err(error) = broker.hub.ingest(update, position) {
        tracing::warn!(entry_id, %error, "skipping an update that cannot be encoded");
    }
}

/// `1700000000000-3` → position (milliseconds, sequence).
pub fn parse_entry_id(id: &str) -> Option<Position> {
    let (major, minor) = id.split_once('-')?;
    Some(Position {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
    })
}

fn decode(fields: Vec<(String, String)>) -> Option<NewUpdate> {
    let mut update = NewUpdate {
        id: String::new(),
        topics: Vec::new(),
        data: String::new(),
        kind: None,
        retry: None,
        private: false,
    };
    for (name, value) in fields {
        match name.as_str() {
            "id" => update.id = value,
            "topics" => update.topics = serde_json::from_str(&value).ok()?,
            "data" => update.data = value,
            "type" => update.kind = Some(value),
            "retry" => update.retry = value.parse().ok(),
            "private" => update.private = value == "1",
            _ => {}
        }
    }
    (!update.id.is_empty() && !update.topics.is_empty()).then_some(update)
}

type Entry = (String, Vec<(String, String)>);

/// The `(stream, entries)` pairs of an `XREAD` reply (nil when it timed out).
fn streams(reply: Value) -> Vec<(String, Vec<Entry>)> {
    let items = match reply {
        Value::Array(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    let mut pending_key: Option<String> = None;
    for item in items {
        match item {
            Value::Array(pair) if pair.len() == 2 && pending_key.is_none() => {
                let mut pair = pair.into_iter();
                if let (Some(key), Some(list)) = (pair.next().and_then(text), pair.next()) {
                    out.push((key, entries(list)));
                }
            }
            other => match pending_key.take() {
                None => pending_key = text(other),
                Some(key) => out.push((key, entries(other))),
            },
        }
    }
    out
}

/// The entries of an `XRANGE`-shaped reply.
fn entries(reply: Value) -> Vec<Entry> {
    let Value::Array(items) = reply else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let mut pair = pair.into_iter();
            let id = pair.next().and_then(text)?;
            let fields = match pair.next()? {
                Value::Array(flat) => {
                    let mut flat = flat.into_iter();
                    let mut fields = Vec::new();
                    while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
                        fields.push((text(name)?, text(value)?));
                    }
                    fields
                }
                Value::Map(pairs) => pairs
                    .into_iter()
                    .map(|(name, value)| Some((text(name)?, text(value)?)))
                    .collect::<Option<Vec<_>>>()?,
                _ => return None,
            };
            Some((id, fields))
        })
        .collect()
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

/// `delay` ± 20 %, so that instances do not reconnect in lockstep.
fn jitter(delay: Duration) -> Duration {
    let spread = (uuid::Uuid::new_v4().as_u128() % 41) as u32;
    delay * (80 + spread) / 100
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn reads_entry_ids_as_positions() {
        assert_eq!(
            parse_entry_id("1700000000000-3"),
            Some(Position {
                major: 1_700_000_000_000,
                minor: 3
            })
        );
        assert_eq!(parse_entry_id("0-0"), Some(Position::ZERO));
        assert_eq!(parse_entry_id("junk"), None);
        assert_eq!(parse_entry_id("1-x"), None);
    }

    #[test]
    fn decodes_xread_replies() {
        let entry = |id: &str, update_id: &str| {
            Value::Array(vec![
                bulk(id),
                Value::Array(vec![
                    bulk("id"),
                    bulk(update_id),
                    bulk("topics"),
                    bulk(r#"["/a","/b"]"#),
                    bulk("data"),
                    bulk("line 1\nline 2"),
                    bulk("private"),
                    bulk("1"),
                    bulk("type"),
                    bulk("price"),
                    bulk("retry"),
                    bulk("250"),
                ]),
            ])
        };
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("pulse:updates"),
            Value::Array(vec![entry("5-0", "u1"), entry("5-1", "u2")]),
        ])]);
        let streams = streams(reply);
        assert_eq!(streams.len(), 1);
        let (key, entries) = &streams[0];
        assert_eq!(key, "pulse:updates");
        assert_eq!(entries.len(), 2);
        let update = decode(entries[1].1.clone()).expect("an update");
        assert_eq!(update.id, "u2");
        assert_eq!(update.topics, ["/a", "/b"]);
        assert_eq!(update.data, "line 1\nline 2");
        assert!(update.private);
        assert_eq!(update.kind.as_deref(), Some("price"));
        assert_eq!(update.retry, Some(250));
        assert!(super::streams(Value::Nil).is_empty());
    }

    #[test]
    fn entries_without_id_or_topics_are_not_updates() {
        assert!(decode(vec![("data".into(), "x".into())]).is_none());
        assert!(decode(vec![
            ("id".into(), "a".into()),
            ("topics".into(), "not json".into())
        ])
        .is_none());
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..100 {
            let delay = jitter(Duration::from_millis(1000));
            assert!(
                delay >= Duration::from_millis(800) && delay <= Duration::from_millis(1200),
                "{delay:?}"
            );
        }
    }
}
