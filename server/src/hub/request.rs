//! Reading publish and subscribe requests into checked values.
//!
//! Pure functions over already-decoded pairs, so every rule is unit-tested without HTTP.

use super::{
    core::Cursor,
    selector::{MatchBase, MatchType, Selector, SelectorError, MAX_PATTERN_BYTES},
    text::is_protocol_string,
};
use crate::update::NewUpdate;

/// The longest update id accepted (it comes back in `Last-Event-ID` headers).
pub const MAX_ID_BYTES: usize = 1024;
/// The longest event type accepted.
pub const MAX_TYPE_BYTES: usize = 256;

/// Limits on what a request may ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest `data`, in bytes.
    pub max_update_bytes: usize,
    /// Most topics (canonical and alternates) in one update.
    pub max_topics: usize,
    /// Most topic matchers in one subscription.
    pub max_matchers: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_update_bytes: 64 * 1024,
            max_topics: 100,
            max_matchers: 100,
        }
    }
}

/// Why a publication was refused: `400`, or `413` when it is too large.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("missing \"topic\" parameter")]
    MissingTopic,
    #[error("too many topics in update (max {max})")]
    TooManyTopics { max: usize },
    #[error("the update's data is larger than {max} bytes")]
    TooLarge { max: usize },
    #[error("invalid topic: topics must be valid UTF-8 without control or format characters")]
    InvalidTopic,
    #[error("a topic is longer than {max} bytes")]
    TopicTooLong { max: usize },
    #[error("the \"{field}\" is longer than {max} bytes")]
    FieldTooLong { field: &'static str, max: usize },
    #[error("the topic \"*\" is reserved: it would match every subscription")]
    WildcardTopic,
    #[error("the topic is in the hub's reserved namespace (/.well-known/mercure)")]
    ReservedTopic,
    #[error("invalid \"id\": it must not start with \"#\", be \"earliest\", or contain control or format characters")]
    InvalidId,
    #[error(
        "invalid \"type\": it must not be \"mercure\" or contain control or format characters"
    )]
    InvalidType,
    #[error("invalid \"retry\" parameter: it must be a whole number of milliseconds")]
    InvalidRetry,
}

impl PublishError {
    /// Whether the answer is `413 Content Too Large` rather than `400`.
    pub fn is_too_large(&self) -> bool {
        matches!(self, Self::TooManyTopics { .. } | Self::TooLarge { .. })
    }
}

/// Reads a publication's form fields. `generate_id` makes an id when the publisher gave
/// none; `hub_path` is the hub's URL, whose namespace topics may not address.
pub fn parse_publish(
    pairs: Vec<(String, String)>,
    limits: &RequestLimits,
    hub_url: &url::Url,
    generate_id: impl FnOnce() -> String,
) -> Result<NewUpdate, PublishError> {
    let mut topics = Vec::new();
    let (mut data, mut id, mut kind, mut retry, mut private) = (None, None, None, None, false);
    for (name, value) in pairs {
        match name.as_str() {
            "topic" => topics.push(value),
            "data" => data = Some(value),
            "id" => id = Some(value),
            "type" => kind = Some(value),
            "retry" => retry = Some(value),
            "private" => private = true,
            _ => {}
        }
    }
    if topics.is_empty() {
        return Err(PublishError::MissingTopic);
    }
    if topics.len() > limits.max_topics {
        return Err(PublishError::TooManyTopics {
            max: limits.max_topics,
        });
    }
    let data = data.unwrap_or_default();
    if data.len() > limits.max_update_bytes {
        return Err(PublishError::TooLarge {
            max: limits.max_update_bytes,
        });
    }
    for topic in &topics {
        if topic.len() > MAX_PATTERN_BYTES {
            return Err(PublishError::TopicTooLong {
                max: MAX_PATTERN_BYTES,
            });
        }
        if !is_protocol_string(topic) {
            return Err(PublishError::InvalidTopic);
        }
        if topic == "*" {
            return Err(PublishError::WildcardTopic);
        }
        if is_reserved(topic, hub_url) {
            return Err(PublishError::ReservedTopic);
        }
    }
    for (field, value, max) in [("id", &id, MAX_ID_BYTES), ("type", &kind, MAX_TYPE_BYTES)] {
        if value.as_ref().is_some_and(|value| value.len() > max) {
            return Err(PublishError::FieldTooLong { field, max });
        }
    }
    if let Some(id) = &id {
        if id.starts_with('#') || id == "earliest" || !is_protocol_string(id) {
            return Err(PublishError::InvalidId);
        }
    }
    if let Some(kind) = &kind {
        if kind == "mercure" || !is_protocol_string(kind) {
            return Err(PublishError::InvalidType);
        }
    }
    let retry = match retry {
        None => None,
        Some(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => Some(
            text.parse::<u64>()
                .map_err(|_| PublishError::InvalidRetry)?,
        ),
        Some(_) => return Err(PublishError::InvalidRetry),
    };
    Ok(NewUpdate {
        id: match id {
            Some(id) if !id.is_empty() => id,
            _ => generate_id(),
        },
        topics,
        data,
        kind: kind.filter(|kind| !kind.is_empty()),
        retry,
        private,
    })
}

/// Whether `topic` addresses the hub's own namespace: resolved against the hub's URL, its
/// path (dot segments removed, unreserved characters decoded) is the hub's path or below.
pub fn is_reserved(topic: &str, hub_url: &url::Url) -> bool {
    let Ok(resolved) = hub_url.join(topic) else {
        return false;
    };
    if resolved.cannot_be_a_base() {
        return false;
    }
    let path = decode_unreserved(resolved.path());
    let hub_path = hub_url.path().trim_end_matches('/');
    path == hub_path || path.starts_with(&format!("{hub_path}/"))
}

fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(byte) = u8::from_str_radix(hex, 16) {
                if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                    out.push(char::from(byte));
                    i += 3;
                    continue;
                }
            }
        }
        out.push(char::from(bytes[i]));
        i += 1;
    }
    out
}

/// Why a subscription request was refused (`400`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("missing \"match\" subscription parameter")]
    NoMatcher,
    #[error(
        "unknown topic matcher query parameter: {0:?} (use \"match\" or \"match_urlpattern\")"
    )]
    UnknownMatcher(String),
    #[error("too many matchers (max {max})")]
    TooManyMatchers { max: usize },
    #[error(transparent)]
    Selector(#[from] SelectorError),
    #[error(transparent)]
    Budget(#[from] super::selector::BudgetError),
}

/// A subscription request, checked.
#[derive(Debug)]
pub struct SubscribeRequest {
    pub selectors: Vec<Selector>,
    pub cursor: Option<Cursor>,
    /// Whether the request named a cursor (then the response carries
    /// `Mercure-Last-Event-ID`).
    pub cursor_given: bool,
}

impl SubscribeRequest {
    /// What the subscription's patterns cost together (see [`super::selector`]).
    pub fn pattern_cost(&self) -> usize {
        self.selectors.iter().map(Selector::cost).sum()
    }
}

/// Reads the subscription query (`pairs`) and the `Last-Event-ID` header; its patterns may
/// cost at most `budget_left` (what the client's address has left).
pub fn parse_subscribe(
    pairs: &[(String, String)],
    last_event_id_header: Option<&str>,
    limits: &RequestLimits,
    compat: bool,
    base: &MatchBase,
    budget_left: usize,
) -> Result<SubscribeRequest, SubscribeError> {
    let mut named: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    // Sorted by name, for a deterministic order of subscriptions.
    named.sort_by(|a, b| a.0.cmp(b.0));
    let mut selectors = Vec::new();
    let mut cost = 0;
    for (name, value) in &named {
        let kind = match *name {
            "match" | "match_exact" => MatchType::Exact,
            "match_urlpattern" => MatchType::UrlPattern,
            "topic" if compat => MatchType::Legacy,
            "topic" => return Err(SubscribeError::UnknownMatcher((*name).to_owned())),
            other
                if other
                    .get(..5)
                    .is_some_and(|p| p.eq_ignore_ascii_case("match")) =>
            {
                return Err(SubscribeError::UnknownMatcher(
                    other.chars().take(64).collect(),
                ))
            }
            _ => continue,
        };
        if selectors.len() == limits.max_matchers {
            return Err(SubscribeError::TooManyMatchers {
                max: limits.max_matchers,
            });
        }
        let selector = Selector::for_subscription(kind, value, base)?;
        // Checked as the patterns come, so that one subscription too complex in itself is
        // told so (`400`) before its patterns could fill the hub's budget (`429`), and an
        // address that has spent its share costs no more compiling.
        cost += selector.cost();
        let max = base.patterns().budget().per_subscription;
        if cost > max {
            return Err(super::selector::BudgetError::Subscription { cost, max }.into());
        }
        if cost > budget_left {
            return Err(super::selector::BudgetError::Address.into());
        }
        selectors.push(selector);
    }
    if selectors.is_empty() {
        return Err(SubscribeError::NoMatcher);
    }
    let query_value = |name: &str| named.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let header = last_event_id_header.filter(|value| !value.is_empty());
    let given = header.or_else(|| query_value("last_event_id")).or_else(|| {
        compat
            .then(|| query_value("lastEventID").or_else(|| query_value("Last-Event-ID")))
            .flatten()
    });
    let cursor_given = last_event_id_header.is_some()
        || query_value("last_event_id").is_some()
        || (compat
            && (query_value("lastEventID").is_some() || query_value("Last-Event-ID").is_some()));
    let cursor = given.map(|id| match id {
        "" => Cursor::Live,
        "earliest" => Cursor::Earliest,
        id => Cursor::After(id.to_owned()),
    });
    Ok(SubscribeRequest {
        selectors,
        cursor,
        cursor_given,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub_url() -> url::Url {
        url::Url::parse("https://hub.example.com/.well-known/mercure").expect("url")
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn publish(items: &[(&str, &str)]) -> Result<NewUpdate, PublishError> {
        parse_publish(pairs(items), &RequestLimits::default(), &hub_url(), || {
            "generated".into()
        })
    }

    #[test]
    fn reads_every_publish_field() {
        let update = publish(&[
            ("topic", "https://example.com/a"),
            ("topic", "https://example.com/alt"),
            ("data", "a\r\nb"),
            ("id", "urn:uuid:1"),
            ("type", "price"),
            ("retry", "2500"),
            ("private", ""),
            ("unknown", "ignored"),
        ])
        .expect("valid");
        assert_eq!(
            update.topics,
            ["https://example.com/a", "https://example.com/alt"]
        );
        assert_eq!(update.data, "a\r\nb");
        assert_eq!(update.id, "urn:uuid:1");
        assert_eq!(update.kind.as_deref(), Some("price"));
        assert_eq!(update.retry, Some(2500));
        assert!(update.private);
        assert_eq!(publish(&[("topic", "t")]).expect("valid").id, "generated");
    }

    #[test]
    fn refuses_bad_publications() {
        let cases: &[(&[(&str, &str)], PublishError)] = &[
            (&[("data", "x")], PublishError::MissingTopic),
            (&[("topic", "*")], PublishError::WildcardTopic),
            (&[("topic", "a\nb")], PublishError::InvalidTopic),
            (&[("topic", "")], PublishError::ReservedTopic),
            (
                &[("topic", "/.well-known/mercure/subscriptions/x")],
                PublishError::ReservedTopic,
            ),
            (
                &[(
                    "topic",
                    "https://example.com/.well-known/%6Dercure/subscriptions/foo",
                )],
                PublishError::ReservedTopic,
            ),
            (
                &[(
                    "topic",
                    "https://example.com\\.well-known\\mercure\\subscriptions\\foo",
                )],
                PublishError::ReservedTopic,
            ),
            (
                &[("topic", "mercure/subscriptions/foo")],
                PublishError::ReservedTopic,
            ),
            (&[("topic", "t"), ("id", "#1")], PublishError::InvalidId),
            (
                &[("topic", "t"), ("id", "earliest")],
                PublishError::InvalidId,
            ),
            (&[("topic", "t"), ("id", "a\nb")], PublishError::InvalidId),
            (
                &[("topic", "t"), ("type", "mercure")],
                PublishError::InvalidType,
            ),
            (
                &[("topic", "t"), ("type", "a\rb")],
                PublishError::InvalidType,
            ),
            (
                &[("topic", "t"), ("retry", "1a")],
                PublishError::InvalidRetry,
            ),
            (
                &[("topic", "t"), ("retry", "-1")],
                PublishError::InvalidRetry,
            ),
            (
                &[("topic", "t"), ("retry", "99999999999999999999999")],
                PublishError::InvalidRetry,
            ),
            (
                &[("topic", &"t".repeat(4097))],
                PublishError::TopicTooLong { max: 4096 },
            ),
            (
                &[("topic", "t"), ("id", &"i".repeat(1025))],
                PublishError::FieldTooLong {
                    field: "id",
                    max: 1024,
                },
            ),
            (
                &[("topic", "t"), ("type", &"y".repeat(257))],
                PublishError::FieldTooLong {
                    field: "type",
                    max: 256,
                },
            ),
        ];
        for (items, expected) in cases {
            assert_eq!(publish(items).as_ref(), Err(expected), "{items:?}");
        }
    }

    #[test]
    fn limits_give_413() {
        let big = "x".repeat(64 * 1024 + 1);
        let error = publish(&[("topic", "t"), ("data", &big)]).expect_err("too big");
        assert!(error.is_too_large());
        let many: Vec<(&str, &str)> = (0..101).map(|_| ("topic", "t")).collect();
        assert!(publish(&many).expect_err("too many").is_too_large());
        assert!(!PublishError::MissingTopic.is_too_large());
    }

    #[test]
    fn the_reserved_namespace_is_a_path_test_not_a_substring_test() {
        for free in [
            "https://example.com/foo/.well-known/mercure/bar",
            "https://example.com/.well-known/mercure-dashboard",
            "urn:example:mercure",
            "/topics/.well-known",
        ] {
            assert!(!is_reserved(free, &hub_url()), "{free}");
        }
        assert!(is_reserved(
            "https://example.com/.well-known/mercure",
            &hub_url()
        ));
    }

    fn subscribe(
        items: &[(&str, &str)],
        header: Option<&str>,
        compat: bool,
    ) -> Result<SubscribeRequest, SubscribeError> {
        parse_subscribe(
            &pairs(items),
            header,
            &RequestLimits::default(),
            compat,
            &MatchBase::default(),
            usize::MAX,
        )
    }

    #[test]
    fn reads_matchers_and_cursors() {
        let request = subscribe(
            &[
                ("match_urlpattern", "/b/:id"),
                ("match", "/a"),
                ("last_event_id", "q"),
                ("other", "x"),
            ],
            None,
            false,
        )
        .expect("valid");
        let kinds: Vec<_> = request
            .selectors
            .iter()
            .map(|s| (s.kind(), s.raw().to_owned()))
            .collect();
        assert_eq!(
            kinds,
            [
                (MatchType::Exact, "/a".into()),
                (MatchType::UrlPattern, "/b/:id".into())
            ]
        );
        assert_eq!(request.cursor, Some(Cursor::After("q".into())));
        assert!(request.cursor_given);

        let header_wins =
            subscribe(&[("match", "/a"), ("last_event_id", "q")], Some("h"), false).expect("valid");
        assert_eq!(header_wins.cursor, Some(Cursor::After("h".into())));
        let earliest = subscribe(
            &[("match", "/a"), ("last_event_id", "earliest")],
            None,
            false,
        )
        .expect("valid");
        assert_eq!(earliest.cursor, Some(Cursor::Earliest));
        let none = subscribe(&[("match", "/a")], None, false).expect("valid");
        assert_eq!(none.cursor, None);
        assert!(!none.cursor_given);
        let empty =
            subscribe(&[("match", "/a"), ("last_event_id", "")], None, false).expect("valid");
        assert!(empty.cursor_given);
    }

    #[test]
    fn refuses_unknown_and_missing_matchers() {
        for name in [
            "Match",
            "match_URLPattern",
            "matches",
            "match_regex",
            "MATCH_exact",
            "topic",
        ] {
            let error = subscribe(&[(name, "x")], None, false).expect_err(name);
            assert!(
                matches!(error, SubscribeError::UnknownMatcher(_)),
                "{name}: {error}"
            );
        }
        assert_eq!(
            subscribe(&[("other", "x")], None, false).expect_err("none"),
            SubscribeError::NoMatcher
        );
        // Names are decoded text: one whose fifth byte falls inside a character is just
        // another unknown parameter, not a panic.
        for name in ["abcd\u{e9}", "\u{e9}\u{e9}\u{e9}", "ma\u{e9}"] {
            let parsed = subscribe(&[("match", "/a"), (name, "1")], None, false);
            assert!(parsed.is_ok(), "{name:?}: {parsed:?}");
        }
        let many: Vec<(&str, &str)> = (0..101).map(|_| ("match", "t")).collect();
        assert_eq!(
            subscribe(&many, None, false).expect_err("too many"),
            SubscribeError::TooManyMatchers { max: 100 }
        );
        assert!(matches!(
            subscribe(
                &[("match_urlpattern", "https://example.com/(")],
                None,
                false
            ),
            Err(SubscribeError::Selector(SelectorError::InvalidPattern))
        ));
        assert!(
            subscribe(&[("match", "%00")], None, false).is_ok(),
            "a literal string is fine"
        );
        assert!(subscribe(&[("match", "\0")], None, false).is_err());
    }

    #[test]
    fn compat_mode_reads_topic_and_legacy_cursors() {
        let request = subscribe(
            &[
                ("topic", "https://example.com/books/{id}"),
                ("lastEventID", "7"),
            ],
            None,
            true,
        )
        .expect("valid");
        assert_eq!(request.selectors[0].kind(), MatchType::Legacy);
        assert_eq!(request.cursor, Some(Cursor::After("7".into())));
        let modern =
            subscribe(&[("match", "a"), ("lastEventID", "7")], None, false).expect("valid");
        assert_eq!(modern.cursor, None);
    }
}
