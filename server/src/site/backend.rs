//! The topic pages' view of the hub: [`app::backend::TopicBackend`] implemented on the
//! server's [`HubService`], provided to the pages as Leptos context.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use app::{
    api::{TopicMessage, TopicSummary},
    backend::{BoxFuture, TopicBackend, TopicView},
};
use http::request::Parts;

use crate::{
    hub::{
        auth::{self, Role, TokenRequest},
        core::HEALTH_TOPIC,
        names::new_update_id,
        selector::{MatchType, Selector},
        service::{HubService, PAGE_TOKEN_LIFETIME},
        text::{escape_segment, unescape_segment},
    },
    update::{NewUpdate, Update},
};

/// The event type of members-only messages from the composer; pages mark them.
pub const MEMBERS_EVENT: &str = "members";
/// What members may read besides: private messages of every topic.
const MEMBER_PATTERN: &str = "/topics/*";
const TOPIC_PREFIX: &str = "/topics/";
/// The topic pages whose watchers one page token may read: the page's own and those of the
/// last pages the reader opened before (each tab's next connection sends the newest cookie).
pub const PRESENCE_TOPICS_KEPT: usize = 8;
/// The grant of a topic page's watchers, around its topic percent-encoded once.
const PRESENCE_PREFIX: &str = "/.well-known/mercure/subscriptions/exact/";
const PRESENCE_SUFFIX: &str = "/:subscriber";

/// The pattern of who watches the topic `topic` (an IRI): its subscription events.
fn presence_pattern(topic: &str) -> String {
    format!(
        "{PRESENCE_PREFIX}{}{PRESENCE_SUFFIX}",
        escape_segment(topic)
    )
}

/// The grant to read who watches the topic page `name`: its subscription events, and no
/// other topic's (`urlpattern:` marks the selector type for [`auth::mint`]).
pub fn presence_grant(name: &str) -> String {
    format!(
        "urlpattern:{}",
        presence_pattern(&app::api::topic_iri(name))
    )
}

/// The topic page `selector` grants the watchers of, if it is a [`presence_grant`].
fn presence_topic(selector: &str) -> Option<String> {
    let encoded = selector
        .strip_prefix(PRESENCE_PREFIX)?
        .strip_suffix(PRESENCE_SUFFIX)?;
    let name = unescape_segment(encoded)?
        .strip_prefix(TOPIC_PREFIX)?
        .to_owned();
    app::api::check_topic_name(&name).ok()?;
    Some(name)
}

/// The hub, as the pages use it.
pub struct HubBackend(pub Arc<HubService>);

impl TopicBackend for HubBackend {
    fn snapshot(&self, topic: &str, limit: usize, member: bool) -> TopicView {
        let hub = &self.0.hub;
        let on_topic = |update: &Update| update.topics.iter().any(|t| **t == *topic);
        // The page resumes from the newest update its reader may see, by the grants of the
        // token it is given: any public one, its topic's watchers, and members-only messages
        // for a member. Never a private update of anyone else, whose id would tell that it
        // exists.
        let base = hub.base();
        let grant = |pattern: &str| Selector::new(MatchType::UrlPattern, pattern, base).ok();
        let watchers = grant(&presence_pattern(topic));
        let members = if member { grant(MEMBER_PATTERN) } else { None };
        let visible = |update: &Update| {
            !update.private
                || [&watchers, &members]
                    .into_iter()
                    .flatten()
                    .any(|selector| selector.matches_update(update, base))
        };
        let (updates, older, cursor) = hub.snapshot(
            limit,
            |update| on_topic(update) && (member || !update.private),
            visible,
        );
        let messages = updates
            .iter()
            .map(|update| TopicMessage {
                id: update.id.to_string(),
                text: update.data.to_string(),
                time_ms: update.accepted_ms,
                members_only: update.private,
            })
            .collect();
        TopicView {
            messages,
            older: u32::try_from(older).unwrap_or(u32::MAX),
            watchers: self.0.local_watchers(topic),
            cursor,
        }
    }

    fn watchers(&self, topic: &str) -> Option<Vec<String>> {
        // Known only when the broker's presence knows every instance's subscribers (with
        // Redis, the others' reach pages as subscription events, and a list of this
        // instance's alone would drop them).
        self.0.watchers(topic)
    }

    fn topics(&self, limit: usize) -> Vec<TopicSummary> {
        let hub = &self.0.hub;
        let mut counts: HashMap<String, (u32, u32)> = HashMap::new();
        for update in hub.recent(usize::MAX, |update| !update.private) {
            if let Some(name) = update
                .topics
                .first()
                .and_then(|t| t.strip_prefix(TOPIC_PREFIX))
            {
                counts.entry(name.to_owned()).or_default().0 += 1;
            }
        }
        for active in hub.subscribers() {
            for selector in &active.spec.selectors {
                if let Some(name) = selector
                    .exact_topic()
                    .and_then(|t| t.strip_prefix(TOPIC_PREFIX))
                {
                    counts.entry(name.to_owned()).or_default().1 += 1;
                }
            }
        }
        let mut topics: Vec<TopicSummary> = counts
            .into_iter()
            .filter(|(name, _)| app::api::check_topic_name(name).is_ok())
            .map(|(name, (messages, watchers))| TopicSummary {
                name,
                messages,
                watchers,
            })
            .collect();
        topics.sort_by(|a, b| {
            (b.watchers, b.messages, &a.name).cmp(&(a.watchers, a.messages, &b.name))
        });
        topics.truncate(limit);
        topics
    }

    fn publish(
        &self,
        topic: String,
        text: String,
        members_only: bool,
    ) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(async move {
            let update = NewUpdate {
                id: new_update_id(),
                topics: vec![topic],
                data: text,
                kind: members_only.then(|| MEMBERS_EVENT.to_owned()),
                retry: None,
                private: members_only,
            };
            self.0
                .publish(update)
                .await
                .map_err(|error| error.to_string())
        })
    }

    fn check_rate(&self, client: IpAddr) -> Result<(), u32> {
        self.0
            .composer_limit
            .check(client)
            .map_err(|wait| u32::try_from(wait.as_secs() + 1).unwrap_or(u32::MAX))
    }

    fn token_cookie(&self, head: &Parts, topic: &str, member: bool) -> Result<String, String> {
        let service = &self.0;
        let mut subscribe = vec![HEALTH_TOPIC.to_owned()];
        for name in presence_topics(service, head, topic) {
            subscribe.push(presence_grant(&name));
        }
        if member {
            subscribe.push(format!("urlpattern:{MEMBER_PATTERN}"));
        }
        let request = TokenRequest {
            subscribe,
            lifetime: PAGE_TOKEN_LIFETIME.as_secs(),
            ..TokenRequest::default()
        };
        let audience = service.resource_identifier(&head.headers, &head.uri);
        let token = auth::mint(&request, Role::Subscriber, &audience, &service.auth)
            .map_err(|error| error.to_string())?;
        let secure = if service.tls { "; Secure" } else { "" };
        // Lax, not Strict: a visitor who follows a link from another site to a topic must
        // still be sent the cookie, or the page would not know they are a member and would
        // hand them a new, non-member one. Other sites' requests from within a page (an
        // EventSource, a form POST) still go without it.
        //
        // A session cookie, which outlives its token: the hub ends a stream when its token
        // runs out, and the page's reconnect must then be refused (so that the page asks
        // for a new token) rather than go without a cookie and be served as anonymous,
        // without presence or members-only messages.
        Ok(format!(
            "{}={token}; Path=/; HttpOnly; SameSite=Lax{secure}",
            service.auth.cookie_name,
        ))
    }

    fn membership(&self, head: &Parts) -> Option<bool> {
        let service = &self.0;
        let Ok(Some((token, _))) = auth::extract_token(&head.headers, &[], &service.auth) else {
            return None;
        };
        let audience = service.resource_identifier(&head.headers, &head.uri);
        auth::validate(
            &token,
            Role::Subscriber,
            &audience,
            &service.auth,
            service.base(),
        )
        .ok()
        .map(|grants| grants.may_read(&["/topics/any"], service.base()))
    }
}

/// The topic pages a new page token for `topic` grants the watchers of: `topic` first, then
/// those the request's current token grants (newest first), [`PRESENCE_TOPICS_KEPT`] in all.
/// The current token is read even when it is no longer valid (it ran out, or another key
/// signed it): all it contributes is names of topic pages, whose watchers any visitor of
/// those pages may see anyway.
fn presence_topics(service: &HubService, head: &Parts, topic: &str) -> Vec<String> {
    let mut names = vec![topic.to_owned()];
    let earlier = auth::extract_token(&head.headers, &[], &service.auth)
        .ok()
        .flatten()
        .map(|(token, _)| auth::unverified_subscribe_selectors(&token))
        .unwrap_or_default();
    for name in earlier
        .iter()
        .filter_map(|selector| presence_topic(selector))
    {
        if names.len() == PRESENCE_TOPICS_KEPT {
            break;
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}
