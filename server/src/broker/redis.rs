//! Updates shared by several instances through Redis Streams.
//!
//! Every accepted update is appended (`XADD`) to one stream, trimmed to about the history
//! size; subscription events go to a second stream, so a crowd connecting cannot push
//! updates out. The two streams share one order: a script gives each entry an id above the
//! newest of both streams (time-based, like Redis's own), so ids never tie across them and
//! follow the order Redis stored the entries in. Each instance reads both streams (`XREAD
//! BLOCK`) from where it last was and hands every entry to its local hub in id order, the
//! publishing instance included: every instance sees the same updates, in the same order,
//! at the same positions (the entry ids), so a subscriber can resume on any of them.
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
use tokio::sync::{watch, Mutex};
use tokio_util::sync::CancellationToken;

use super::{BoxFuture, Broker, BrokerError, Delivery, Presence, PresenceEntry};
use crate::update::{self, NewUpdate, Position};

/// How long one `XREAD` waits for new entries.
const BLOCK: Duration = Duration::from_secs(2);
/// How long a command may take before Redis counts as unreachable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Entries read per `XREAD`.
const BATCH: usize = 512;

/// Appends an entry to stream `KEYS[1]` (trimmed to about `ARGV[1]` entries; the fields
/// follow) with an id above the newest entry of both `KEYS[1]` and `KEYS[2]`: the server's
/// time in milliseconds, or the newest id's time with the next sequence number when that is
/// not below it. `XADD *` numbers each stream on its own, so an update and a subscription
/// event stored in the same millisecond would both get `<ms>-0`, and positions compared
/// across the streams would tie or run against the order they were stored in.
const APPEND_SCRIPT: &str = r"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local seq = 0
for i = 1, 2 do
  local newest = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)[1]
  if newest then
    local last_ms, last_seq = string.match(newest[1], '^(%d+)-(%d+)$')
    last_ms = tonumber(last_ms)
    last_seq = tonumber(last_seq)
    if last_ms > ms or (last_ms == ms and last_seq >= seq) then
      ms = last_ms
      seq = last_seq + 1
    end
  end
end
local id = string.format('%.0f-%.0f', ms, seq)
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id, unpack(ARGV, 2))
";

/// Why Redis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("the update store (Redis) is unavailable: {0}")]
    Unavailable(String),
    #[error("the update store (Redis) refused the update: {0}")]
    Refused(String),
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
    /// Whether the reader has tried once to load the history.
    loaded: watch::Sender<bool>,
    hub: Arc<dyn Delivery>,
}

impl RedisBroker {
    /// Connects lazily to `url` and starts the reader that feeds `hub`; it stops when
    /// `shutdown` is cancelled.
    pub fn start(
        url: &str,
        prefix: &str,
        history_size: usize,
        hub: Arc<dyn Delivery>,
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
            loaded: watch::Sender::new(false),
            hub,
        });
        tokio::spawn(read_forever(Arc::clone(&broker), shutdown));
        Ok(broker)
    }

    /// Returns once the reader has tried to load the history (done, or Redis did not
    /// answer): until then a subscriber's `Last-Event-ID` could not be found, and the
    /// history would reach it afterwards as if it were new.
    pub async fn history_loaded(&self) {
        let mut loaded = self.loaded.subscribe();
        // The sender lives as long as the broker, and the reader sets the flag however it
        // ends (see `read_forever`), so this cannot wait forever.
        let _ = loaded.wait_for(|loaded| *loaded).await;
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
            self.hub.health(healthy);
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
    pub async fn store(&self, update: &NewUpdate) -> Result<(), RedisError> {
        let (key, other) = if is_presence(update) {
            (&self.presence_key, &self.updates_key)
        } else {
            (&self.updates_key, &self.presence_key)
        };
        let mut command = redis::cmd("EVAL");
        command
            .arg(APPEND_SCRIPT)
            .arg(2)
            .arg(key)
            .arg(other)
            .arg(self.max_len)
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
        let mut connection = self.publishing_connection().await?;
        let failure = match tokio::time::timeout(
            COMMAND_TIMEOUT,
            command.query_async::<Value>(&mut connection),
        )
        .await
        {
            Ok(Ok(_)) => {
                self.set_healthy(true);
                return Ok(());
            }
            // Redis answered, and refused (out of memory, a read-only replica, no
            // permission…): it is reachable, so the hub does not turn degraded for it (the
            // reader's next read would turn it back, and pages would flicker).
            Ok(Err(error)) if is_refusal(&error) => {
                return Err(RedisError::Refused(error.to_string()));
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => "no answer within 2 s".to_owned(),
        };
        // The next publish opens a fresh connection.
        *self.publisher.lock().await = None;
        self.set_healthy(false);
        Err(RedisError::Unavailable(failure))
    }

    /// The publishing connection, opened if there is none or it predates the last outage.
    /// Only getting it is serialised: publishes share it, pipelined, rather than wait for
    /// each other's round trips.
    async fn publishing_connection(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut slot = self.publisher.lock().await;
        let outages = self.outages.load(Relaxed);
        if let Some((connection, opened_at)) = slot.as_ref() {
            if *opened_at == outages {
                return Ok(connection.clone());
            }
        }
        let connection = self
            .connect(Duration::ZERO)
            .await
            .inspect_err(|_| self.set_healthy(false))?;
        *slot = Some((connection.clone(), outages));
        Ok(connection)
    }
}

impl From<RedisError> for BrokerError {
    fn from(error: RedisError) -> Self {
        let store = "Redis";
        match error {
            RedisError::Refused(reason) => Self::Refused { store, reason },
            RedisError::Unavailable(reason) => Self::Unavailable { store, reason },
            RedisError::Url { url, reason } => Self::Unavailable {
                store,
                reason: format!("invalid URL {url:?}: {reason}"),
            },
        }
    }
}

impl Broker for RedisBroker {
    fn publish(&self, update: NewUpdate) -> BoxFuture<'_, Result<String, BrokerError>> {
        Box::pin(async move {
            self.store(&update).await?;
            Ok(update.id)
        })
    }

    fn history_loaded(&self) -> BoxFuture<'_, ()> {
        Box::pin(RedisBroker::history_loaded(self))
    }

    fn is_healthy(&self) -> bool {
        RedisBroker::is_healthy(self)
    }

    fn presence(&self) -> &dyn Presence {
        self
    }
}

/// Each instance knows only its own subscribers: the others' reach pages as subscription
/// events, and a list of this instance's alone would drop them.
impl Presence for RedisBroker {
    fn hub_wide(&self, _local: Vec<PresenceEntry>) -> Option<Vec<PresenceEntry>> {
        None
    }
}

/// Whether `error` is Redis refusing a command it received (an error reply, such as `OOM`,
/// `READONLY` or `NOPERM`), rather than Redis being unreachable or not ready (still loading
/// its data, no primary, a cluster that is down).
fn is_refusal(error: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    match error.kind() {
        // An error reply with a code the client library does not name (`OOM`, say).
        ErrorKind::Extension => true,
        ErrorKind::Server(kind) => !matches!(
            kind,
            ServerErrorKind::BusyLoading
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::TryAgain
        ),
        _ => false,
    }
}

fn is_presence(update: &NewUpdate) -> bool {
    update::is_subscription_event(&update.topics)
}

/// Where the reader is in each stream.
struct Cursors {
    updates: String,
    presence: String,
}

/// One of the two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Updates,
    Presence,
}

/// Reads both streams into the hub until shutdown, reconnecting with backoff.
async fn read_forever(broker: Arc<RedisBroker>, shutdown: CancellationToken) {
    // However the reader ends (shutdown, a panic), subscribers stop waiting for the history.
    let _loaded = MarkLoaded(&broker.loaded);
    let mut cursors: Option<Cursors> = None;
    let mut backoff = BACKOFF_MIN;
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = read_session(&broker, &mut cursors, &mut backoff) => outcome,
        };
        // Loaded, or Redis is down: subscribers wait no longer (while it is down they get
        // the history when it returns, as the reader does).
        broker.loaded.send_replace(true);
        if let Err(error) = outcome {
            broker.set_healthy(false);
            tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "Redis reader lost its connection");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(jitter(backoff)) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Sets the `loaded` flag when dropped.
struct MarkLoaded<'a>(&'a watch::Sender<bool>);

impl Drop for MarkLoaded<'_> {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// One connection's worth of reading: loads the history the first time, then follows.
/// `backoff` starts over once a read succeeds: the next outage is retried quickly again.
async fn read_session(
    broker: &RedisBroker,
    cursors: &mut Option<Cursors>,
    backoff: &mut Duration,
) -> Result<(), RedisError> {
    let mut connection = broker.connect(BLOCK).await?;
    if cursors.is_none() {
        let (updates, presence) = load_history(broker, &mut connection).await?;
        let mut loaded = Cursors {
            updates: "0-0".to_owned(),
            presence: "0-0".to_owned(),
        };
        hand_over(broker, &mut loaded, in_order(updates, presence, None));
        *cursors = Some(loaded);
        broker.loaded.send_replace(true);
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
        *backoff = BACKOFF_MIN;
        let (mut updates, mut presence) = (Vec::new(), Vec::new());
        for (key, entries) in streams(reply) {
            if key == broker.updates_key {
                updates = entries;
            } else if key == broker.presence_key {
                presence = entries;
            }
        }
        hand_over(broker, current, in_order(updates, presence, Some(BATCH)));
    }
}

/// Hands `entries` to the hub in their order, moving each one's stream cursor past it.
fn hand_over(broker: &RedisBroker, cursors: &mut Cursors, entries: Vec<(Stream, Entry)>) {
    for (stream, (entry_id, fields)) in entries {
        let cursor = match stream {
            Stream::Updates => &mut cursors.updates,
            Stream::Presence => &mut cursors.presence,
        };
        cursor.clone_from(&entry_id);
        ingest(broker, &entry_id, fields);
    }
}

/// The entries of one read of both streams, merged in id order: the order Redis stored
/// them in (see [`APPEND_SCRIPT`]), which every instance hands to its hub alike. When a
/// stream's list is `batch` long (more may follow it), entries of the other stream past its
/// last id wait for the next read: entries not read yet might come before them.
fn in_order(
    updates: Vec<Entry>,
    presence: Vec<Entry>,
    batch: Option<usize>,
) -> Vec<(Stream, Entry)> {
    let full_up_to = |entries: &[Entry]| {
        batch
            .filter(|batch| entries.len() >= *batch)
            .and_then(|_| entries.last())
            .and_then(|(id, _)| parse_entry_id(id))
    };
    let limit = match (full_up_to(&updates), full_up_to(&presence)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut merged: Vec<(Option<Position>, Stream, Entry)> = updates
        .into_iter()
        .map(|entry| (Stream::Updates, entry))
        .chain(presence.into_iter().map(|entry| (Stream::Presence, entry)))
        .map(|(stream, entry)| (parse_entry_id(&entry.0), stream, entry))
        .filter(|(position, _, _)| match (position, limit) {
            (Some(position), Some(limit)) => *position <= limit,
            _ => true,
        })
        .collect();
    // Stable: entries of one stream keep their order, whatever their ids.
    merged.sort_by_key(|(position, _, _)| *position);
    merged
        .into_iter()
        .map(|(_, stream, entry)| (stream, entry))
        .collect()
}

/// The newest entries of both streams (up to the history size each), oldest first, read
/// in one transaction: two reads apart could miss an entry stored between them that is
/// older than what the second one saw.
async fn load_history(
    broker: &RedisBroker,
    connection: &mut MultiplexedConnection,
) -> Result<(Vec<Entry>, Vec<Entry>), RedisError> {
    let newest = |key: &str| {
        let mut command = redis::cmd("XREVRANGE");
        command
            .arg(key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(broker.max_len);
        command
    };
    let (updates, presence): (Value, Value) = redis::pipe()
        .atomic()
        .add_command(newest(&broker.updates_key))
        .add_command(newest(&broker.presence_key))
        .query_async(connection)
        .await
        .map_err(|error| RedisError::Unavailable(error.to_string()))?;
    let oldest_first = |reply: Value| {
        let mut entries = entries(reply);
        entries.reverse();
        entries
    };
    Ok((oldest_first(updates), oldest_first(presence)))
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
    if let Err(error) = broker.hub.deliver(update, position) {
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
    fn both_streams_merge_in_id_order() {
        let entry = |id: &str| (id.to_owned(), Vec::new());
        let ids = |merged: Vec<(Stream, Entry)>| {
            merged
                .into_iter()
                .map(|(stream, (id, _))| (stream, id))
                .collect::<Vec<_>>()
        };
        let updates = vec![entry("5-0"), entry("5-2"), entry("7-0")];
        let presence = vec![entry("5-1"), entry("6-0")];
        assert_eq!(
            ids(in_order(updates.clone(), presence.clone(), None)),
            [
                (Stream::Updates, "5-0".to_owned()),
                (Stream::Presence, "5-1".to_owned()),
                (Stream::Updates, "5-2".to_owned()),
                (Stream::Presence, "6-0".to_owned()),
                (Stream::Updates, "7-0".to_owned()),
            ]
        );
        // A full list (3 here) may have more after it: the other stream's entries past its
        // last id wait for the next read.
        let full = vec![entry("5-0"), entry("5-2"), entry("5-3")];
        assert_eq!(
            ids(in_order(full.clone(), presence.clone(), Some(3))),
            [
                (Stream::Updates, "5-0".to_owned()),
                (Stream::Presence, "5-1".to_owned()),
                (Stream::Updates, "5-2".to_owned()),
                (Stream::Updates, "5-3".to_owned()),
            ]
        );
        assert_eq!(
            ids(in_order(full, presence, Some(2))),
            [
                (Stream::Updates, "5-0".to_owned()),
                (Stream::Presence, "5-1".to_owned()),
                (Stream::Updates, "5-2".to_owned()),
                (Stream::Updates, "5-3".to_owned()),
            ],
            "both lists full: up to the smaller of their last ids (5-3, not 6-0)"
        );
        assert!(in_order(Vec::new(), Vec::new(), Some(2)).is_empty());
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
