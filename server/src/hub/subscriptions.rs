//! Active subscriptions: the events the hub publishes when a subscription starts or ends,
//! and the documents the subscriptions API serves.
//!
//! Each topic matcher of a connection is one subscription. Its topic is
//! `/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}`, each variable
//! percent-encoded once; the event is private, of type `mercure`, and its data is the
//! subscription's JSON document.

use serde::Serialize;
use serde_json::Value;

use super::{
    core::SubscriberSpec,
    selector::{MatchBase, MatchType, Selector},
    text::escape_segment,
};
use crate::update::NewUpdate;

pub use crate::update::SUBSCRIPTIONS_PATH;

/// One subscription as JSON, in the specification's key order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscriptionDoc {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub subscriber: String,
    /// Set for 0.x (`topic=`) subscriptions only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matcher: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_type: Option<&'static str>,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

/// A collection of subscriptions.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionDoc {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub subscriptions: Vec<SubscriptionDoc>,
}

/// The topic of one subscription.
pub fn topic(selector: &Selector, subscriber: &str) -> String {
    match selector.kind() {
        MatchType::Legacy => format!(
            "{SUBSCRIPTIONS_PATH}/{}/{}",
            escape_segment(selector.raw()),
            escape_segment(subscriber)
        ),
        kind => format!(
            "{SUBSCRIPTIONS_PATH}/{}/{}/{}",
            kind.name(),
            escape_segment(selector.raw()),
            escape_segment(subscriber)
        ),
    }
}

/// The document of one subscription.
pub fn document(
    spec: &SubscriberSpec,
    selector: &Selector,
    active: bool,
    base: &MatchBase,
) -> SubscriptionDoc {
    let legacy = selector.kind() == MatchType::Legacy;
    SubscriptionDoc {
        id: topic(selector, &spec.id),
        kind: "subscription",
        subscriber: spec.id.clone(),
        topic: legacy.then(|| selector.raw().to_owned()),
        matcher: (!legacy).then(|| selector.raw().to_owned()),
        match_type: (!legacy).then(|| selector.kind().name()),
        active,
        payload: spec
            .grants
            .as_ref()
            .and_then(|grants| grants.payload_for(selector.raw(), base)),
    }
}

/// The updates announcing that every subscription of `spec` became `active` (or ended).
pub fn events(
    spec: &SubscriberSpec,
    active: bool,
    base: &MatchBase,
    mut new_id: impl FnMut() -> String,
) -> Vec<NewUpdate> {
    spec.selectors
        .iter()
        .map(|selector| {
            let doc = document(spec, selector, active, base);
            NewUpdate {
                id: new_id(),
                topics: vec![doc.id.clone()],
                data: serde_json::to_string_pretty(&doc).unwrap_or_default(),
                kind: Some("mercure".into()),
                retry: None,
                private: true,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::hub::auth::{Grants, SubscribeGrant};

    fn spec() -> SubscriberSpec {
        let base = MatchBase::default();
        SubscriberSpec {
            id: "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6".into(),
            selectors: vec![
                Selector::new(
                    MatchType::UrlPattern,
                    "https://example.com/:selector",
                    &base,
                )
                .expect("valid"),
                Selector::new(MatchType::Legacy, "https://example.com/books/{id}", &base)
                    .expect("valid"),
            ],
            grants: Some(Arc::new(Grants {
                subscribe: vec![SubscribeGrant {
                    selectors: vec![Selector::exact("*")],
                    payload: Some(json!({ "foo": "bar" })),
                }],
                ..Grants::default()
            })),
        }
    }

    #[test]
    fn documents_follow_the_specification() {
        let spec = spec();
        let doc = document(&spec, &spec.selectors[0], true, &MatchBase::default());
        assert_eq!(
            serde_json::to_value(&doc).expect("json"),
            json!({
                "id": "/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fexample.com%2F%3Aselector/urn%3Auuid%3Abb3de268-05b0-4c65-b44e-8f9acefc29d6",
                "type": "subscription",
                "subscriber": "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6",
                "match": "https://example.com/:selector",
                "match_type": "urlpattern",
                "active": true,
                "payload": { "foo": "bar" }
            })
        );
        let text = serde_json::to_string(&doc).expect("json");
        assert!(
            text.starts_with(r#"{"id":"#) && text.contains(r#""type":"subscription","subscriber""#)
        );
    }

    #[test]
    fn legacy_subscriptions_use_the_topic_shape() {
        let spec = spec();
        let doc = document(&spec, &spec.selectors[1], false, &MatchBase::default());
        assert_eq!(
            doc.id,
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D/urn%3Auuid%3Abb3de268-05b0-4c65-b44e-8f9acefc29d6"
        );
        assert_eq!(doc.topic.as_deref(), Some("https://example.com/books/{id}"));
        assert!(doc.matcher.is_none() && !doc.active);
    }

    #[test]
    fn events_are_private_mercure_updates_on_the_subscription_topic() {
        let spec = spec();
        let mut n = 0;
        let events = events(&spec, true, &MatchBase::default(), || {
            n += 1;
            format!("urn:uuid:{n}")
        });
        assert_eq!(events.len(), 2);
        let first = &events[0];
        assert!(first.private);
        assert_eq!(first.kind.as_deref(), Some("mercure"));
        assert_eq!(first.topics, [topic(&spec.selectors[0], &spec.id)]);
        let data: Value = serde_json::from_str(&first.data).expect("json data");
        assert_eq!(data["active"], true);
        assert!(
            first.data.contains('\n'),
            "pretty-printed over several data lines"
        );
    }
}
