//! The topic pages' view of the hub: [`app::backend::TopicBackend`] implemented on the
//! server's [`HubService`], provided to the pages as Leptos context.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use app::{
    api::{TopicMessage, TopicSummary},
    backend::{BoxFuture, TopicBackend, TopicView},
};
use http::request::Parts;

use crate::{
    broker::Broker,
    hub::{
        auth::{self, Role, TokenRequest},
        new_update_id,
        topic_hub::HEALTH_TOPIC,
        HubService, PAGE_TOKEN_LIFETIME,
    },
    update::NewUpdate,
};

/// The event type of members-only messages from the composer; pages mark them.
pub const MEMBERS_EVENT: &str = "members";
/// What every page may read: the subscription events of every topic (who is watching).
const PRESENCE_GRANT: &str =
    "urlpattern:/.well-known/mercure/subscriptions/exact/:topic/:subscriber";
/// What members may read besides: private messages of every topic.
const MEMBER_GRANT: &str = "urlpattern:/topics/*";
const TOPIC_PREFIX: &str = "/topics/";

/// The hub, as the pages use it.
pub struct HubBackend(pub Arc<HubService>);

impl HubBackend {
    /// The subscribers of this instance that watch `topic` (subscribed to it exactly).
    fn local_watchers(&self, topic: &str) -> Vec<String> {
        let mut watchers: Vec<String> = self
            .0
            .hub
            .subscribers()
            .into_iter()
            .filter(|active| {
                active
                    .spec
                    .selectors
                    .iter()
                    .any(|s| s.exact_topic() == Some(topic))
            })
            .map(|active| active.spec.id.clone())
            .collect();
        watchers.sort();
        watchers.dedup();
        watchers
    }
}

impl TopicBackend for HubBackend {
    fn snapshot(&self, topic: &str, limit: usize, member: bool) -> TopicView {
        let hub = &self.0.hub;
        let (updates, older, cursor) = hub.snapshot(limit, |update| {
            update.topics.iter().any(|t| **t == *topic) && (member || !update.private)
        });
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
            watchers: self.local_watchers(topic),
            cursor,
        }
    }

    fn watchers(&self, topic: &str) -> Option<Vec<String>> {
        // With Redis, this instance knows only its own subscribers; the others' reach pages
        // as subscription events, and a list of this instance's would drop them.
        match self.0.broker {
            Broker::Memory(_) => Some(self.local_watchers(topic)),
            Broker::Redis(_) => None,
        }
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

    fn token_cookie(&self, head: &Parts, member: bool) -> Result<String, String> {
        let service = &self.0;
        let mut subscribe = vec![PRESENCE_GRANT.to_owned(), HEALTH_TOPIC.to_owned()];
        if member {
            subscribe.push(MEMBER_GRANT.to_owned());
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
        let Ok(Some(token)) = auth::extract_token(&head.headers, &[], &service.auth) else {
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
