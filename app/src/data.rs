//! The data the pages and the server exchange: the counter's settings, topic messages,
//! snapshots and summaries, their checks, and the errors a topic request can meet.

use leptos::{
    prelude::*,
    server_fn::{codec::JsonEncoding, error::ServerFnErrorErr},
};
use serde::{Deserialize, Serialize};

/// How the server runs `/stream`, so the page can show progress and the reconnect delay.
///
/// The server provides it as Leptos context; fields are `u32` because `usize` differs
/// between the server and WASM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSettings {
    /// How many `new_message` events one stream sends before `end_event`.
    pub count: u32,
    /// Milliseconds between two messages.
    pub interval_ms: u32,
    /// The `retry:` delay the stream asks browsers to wait before reconnecting.
    pub retry_ms: u32,
}

impl Default for CounterSettings {
    /// The original example's stream: 20 messages a second apart, `retry: 15000`.
    fn default() -> Self {
        Self {
            count: 20,
            interval_ms: 1000,
            retry_ms: 15_000,
        }
    }
}

/// Why a topic request failed, in words for the reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TopicError {
    #[error("{0}")]
    Invalid(String),
    #[error("You are sending messages too fast. Try again in {0} s.")]
    TooFast(u32),
    #[error("Join as a member to send members-only messages.")]
    NotMember,
    #[error("The message could not be sent: {0}")]
    Unavailable(String),
    #[error("The server could not be reached: {0}")]
    Transport(String),
}

impl FromServerFnError for TopicError {
    type Encoder = JsonEncoding;

    fn from_server_fn_error(error: ServerFnErrorErr) -> Self {
        Self::Transport(error.to_string())
    }
}

/// The longest message the composer accepts, in characters.
pub const MAX_MESSAGE_CHARS: usize = 1000;
/// How many messages a topic page shows at most.
pub const TOPIC_PAGE_MESSAGES: usize = 200;

/// One message of a topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicMessage {
    pub id: String,
    pub text: String,
    /// When the hub accepted it, in milliseconds since the epoch.
    pub time_ms: u64,
    pub members_only: bool,
}

/// What a topic page renders before it subscribes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopicSnapshot {
    pub topic: String,
    pub messages: Vec<TopicMessage>,
    /// Older messages the hub holds that are not in `messages`.
    pub older: u32,
    /// Subscriber ids watching the topic.
    pub watchers: Vec<String>,
    /// The hub's cursor when the snapshot was taken: the page subscribes from here.
    pub cursor: String,
    /// Whether this reader sees members-only messages.
    pub member: bool,
}

/// A topic in the list of topics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSummary {
    pub name: String,
    pub messages: u32,
    pub watchers: u32,
}

/// The topic IRI of the topic named `name`.
pub fn topic_iri(name: &str) -> String {
    format!("/topics/{name}")
}

/// Checks a topic name: 1 to 64 letters, digits, `-`, `_` or `.`.
pub fn check_topic_name(name: &str) -> Result<(), TopicError> {
    let valid = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name != "."
        && name != "..";
    if valid {
        Ok(())
    } else {
        Err(TopicError::Invalid(
            "A topic name has 1 to 64 letters, digits, dashes, dots or underscores, and is \
             not just `.` or `..`."
                .into(),
        ))
    }
}

/// Checks a message: not blank, at most [`MAX_MESSAGE_CHARS`] characters.
pub fn check_message(text: &str) -> Result<(), TopicError> {
    if text.trim().is_empty() {
        return Err(TopicError::Invalid("Write a message first.".into()));
    }
    let length = text.chars().count();
    if length > MAX_MESSAGE_CHARS {
        return Err(TopicError::Invalid(format!(
            "Messages are limited to {MAX_MESSAGE_CHARS} characters; this one has {length}."
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The islands read these encodings in the browser by field name, without serde
    /// (`live::page_data`, `live::post`): a renamed field or variant must fail here.
    #[test]
    fn island_data_and_errors_keep_the_json_shape_the_browser_reads() {
        let settings = serde_json::to_value(CounterSettings::default()).unwrap();
        assert_eq!(
            settings,
            serde_json::json!({"count": 20, "interval_ms": 1000, "retry_ms": 15000})
        );
        let snapshot = TopicSnapshot {
            topic: "general".into(),
            messages: vec![TopicMessage {
                id: "urn:uuid:1".into(),
                text: "hi".into(),
                time_ms: 1_700_000_000_000,
                members_only: true,
            }],
            older: 3,
            watchers: vec!["w1".into()],
            cursor: "urn:uuid:1".into(),
            member: false,
        };
        assert_eq!(
            serde_json::to_value(&snapshot).unwrap(),
            serde_json::json!({
                "topic": "general",
                "messages": [{"id": "urn:uuid:1", "text": "hi", "time_ms": 1_700_000_000_000u64, "members_only": true}],
                "older": 3,
                "watchers": ["w1"],
                "cursor": "urn:uuid:1",
                "member": false,
            })
        );
        let errors = [
            (TopicError::Invalid("x".into()), r#"{"Invalid":"x"}"#),
            (TopicError::TooFast(3), r#"{"TooFast":3}"#),
            (TopicError::NotMember, r#""NotMember""#),
            (
                TopicError::Unavailable("x".into()),
                r#"{"Unavailable":"x"}"#,
            ),
            (TopicError::Transport("x".into()), r#"{"Transport":"x"}"#),
        ];
        for (error, json) in errors {
            assert_eq!(serde_json::to_string(&error).unwrap(), json);
        }
    }

    #[test]
    fn topic_names_are_short_slugs() {
        for good in ["general", "a", "rust-lang", "v1.2_beta", &"x".repeat(64)] {
            assert!(check_topic_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a b",
            "a/b",
            "ü",
            &"x".repeat(65),
            "<script>",
        ] {
            assert!(check_topic_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn messages_are_checked_for_length_and_content() {
        assert!(check_message("hello").is_ok());
        assert!(check_message("é".repeat(MAX_MESSAGE_CHARS).as_str()).is_ok());
        assert!(check_message("   \n").is_err());
        let error = check_message(&"x".repeat(MAX_MESSAGE_CHARS + 1)).expect_err("too long");
        assert!(error.to_string().contains("1001"));
    }
}
