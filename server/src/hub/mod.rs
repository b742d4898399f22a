//! The Mercure hub at `/.well-known/mercure`: subscribing, publishing, authorization,
//! history, active subscriptions.
//!
//! [`HubService`] ties the parts together for the HTTP handlers in [`http`]: the hub core
//! ([`topic_hub`]), the broker that stores and carries updates, and the token settings.

pub mod auth;
pub mod http;
pub mod rate_limit;
pub mod request;
pub mod selector;
pub mod subscriptions;
pub mod text;
pub mod topic_hub;

use std::{sync::Arc, time::Duration};

use ::http::HeaderMap;
use url::Url;

use self::{
    auth::{AuthSettings, Key, KeyError},
    request::RequestLimits,
    selector::MatchBase,
    topic_hub::{HubLimits, SubscriberSpec, TopicHub},
};
use tokio_util::sync::CancellationToken;

use crate::{
    broker::{redis::RedisBroker, Broker, BrokerError},
    config::{BrokerUrl, HubArgs},
    metrics::StreamMetrics,
    update::NewUpdate,
};

/// The hub's path.
pub const HUB_PATH: &str = "/.well-known/mercure";

/// Why the hub's settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum HubConfigError {
    #[error("MERCURE_PUBLISHER_JWT_KEY / --publisher-jwt-key: {0}")]
    PublisherKey(KeyError),
    #[error("MERCURE_SUBSCRIBER_JWT_KEY / --subscriber-jwt-key: {0}")]
    SubscriberKey(KeyError),
    #[error("MERCURE_RESOURCE_IDENTIFIER / --resource-identifier must be an absolute URL without fragment, got {0:?}")]
    ResourceIdentifier(String),
    #[error("MERCURE_TRUSTED_ISSUERS / --trusted-issuers must name at least one issuer")]
    NoIssuer,
    #[error(
        "MERCURE_CORS_ORIGINS / --cors-origins: {0:?} is not an origin like https://example.com"
    )]
    CorsOrigin(String),
    #[error(
        "MERCURE_PUBLISH_ORIGINS / --publish-origins: {0:?} is not an origin like https://example.com"
    )]
    PublishOrigin(String),
    #[error(
        "PULSE_COMPOSER_RATE / --composer-rate must be a positive number of messages per second"
    )]
    ComposerRate,
    #[error("PULSE_BROKER / --broker: {0}")]
    Broker(crate::broker::redis::RedisError),
}

/// Everything the hub's handlers share.
pub struct HubService {
    pub hub: Arc<TopicHub>,
    pub broker: Broker,
    pub auth: AuthSettings,
    pub limits: RequestLimits,
    /// Whether subscription events and the subscriptions API are on.
    pub subscriptions: bool,
    /// Origins allowed to call the hub from a browser.
    pub cors_origins: Vec<String>,
    /// Origins whose pages may publish with a cookie's token, besides the hub's own.
    pub publish_origins: Vec<String>,
    /// Counters of the hub's streams.
    pub metrics: Arc<StreamMetrics>,
    /// Limits how fast one client may publish from the pages' composer.
    pub composer_limit: rate_limit::RateLimiter,
    /// Whether the server speaks TLS (for derived resource identifiers).
    pub tls: bool,
}

impl HubService {
    /// A hub for `args`, on the current runtime; background work (the Redis reader) stops
    /// when `shutdown` is cancelled.
    pub fn new(
        args: &HubArgs,
        tls: bool,
        stall_timeout: Duration,
        shutdown: CancellationToken,
        metrics: Arc<StreamMetrics>,
    ) -> Result<Self, HubConfigError> {
        let auth = auth_settings(args, tls)?;
        let cors_origins = origins(&args.cors_origins).map_err(HubConfigError::CorsOrigin)?;
        let publish_origins =
            origins(&args.publish_origins).map_err(HubConfigError::PublishOrigin)?;
        if !(args.composer_rate.is_finite() && args.composer_rate > 0.0) {
            return Err(HubConfigError::ComposerRate);
        }
        let size = |bytes: u64| usize::try_from(bytes).unwrap_or(usize::MAX);
        let base = MatchBase::with_budget(
            args.resource_identifier.as_deref(),
            selector::PatternBudget {
                per_subscription: size(args.pattern_budget),
                per_address: size(args.pattern_budget_per_ip),
                total: size(args.pattern_budget_total),
            },
        );
        let hub = TopicHub::start(
            base,
            HubLimits {
                history_size: args.history_size as usize,
                queue_capacity: args.subscriber_queue as usize,
                queues: crate::sink::QueueLimits::new(
                    args.subscriber_queue_bytes as usize,
                    usize::try_from(args.queued_bytes_total).unwrap_or(usize::MAX),
                    stall_timeout,
                ),
            },
            Arc::clone(&metrics),
        );
        Ok(Self {
            broker: match &args.broker {
                BrokerUrl::Memory => Broker::Memory(Arc::clone(&hub)),
                BrokerUrl::Redis(url) => Broker::Redis(
                    RedisBroker::start(
                        url,
                        &args.redis_prefix,
                        args.history_size as usize,
                        Arc::clone(&hub),
                        shutdown,
                    )
                    .map_err(HubConfigError::Broker)?,
                ),
            },
            hub,
            auth,
            limits: RequestLimits {
                max_update_bytes: args.max_update_bytes as usize,
                max_topics: args.max_topics as usize,
                max_matchers: args.max_matchers as usize,
            },
            subscriptions: args.subscriptions,
            cors_origins,
            publish_origins,
            metrics,
            composer_limit: rate_limit::RateLimiter::new(args.composer_rate, args.composer_burst),
            tls,
        })
    }

    /// The base URL for URL patterns and reserved-topic checks.
    pub fn base(&self) -> &MatchBase {
        self.hub.base()
    }

    /// The resource identifier tokens must name for a request with `headers` to `uri`: the
    /// configured one, or `<scheme>://<host>/.well-known/mercure`, the host being the URI's
    /// authority (HTTP/2 has no `Host` header), else the `Host` header.
    pub fn resource_identifier(&self, headers: &HeaderMap, uri: &::http::Uri) -> String {
        if let Some(identifier) = &self.auth.resource_identifier {
            return identifier.clone();
        }
        let host = uri
            .authority()
            .map(|authority| authority.as_str())
            .or_else(|| {
                headers
                    .get(::http::header::HOST)
                    .and_then(|value| value.to_str().ok())
            })
            .unwrap_or("localhost");
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}{HUB_PATH}")
    }

    /// Publishes `update` through the broker; returns its id once it is stored.
    pub async fn publish(&self, update: NewUpdate) -> Result<String, BrokerError> {
        self.broker.publish(update).await
    }

    /// Announces that `spec`'s subscriptions started (`active`) or ended.
    pub async fn announce(&self, spec: &SubscriberSpec, active: bool) {
        if !self.subscriptions {
            return;
        }
        for event in subscriptions::events(spec, active, self.base(), new_update_id) {
            if let Err(error) = self.publish(event).await {
                tracing::warn!(%error, "cannot publish a subscription event");
            }
        }
    }
}

/// The origins listed in `items` (each may hold several, separated by spaces); the first
/// one that is not `*` or an origin like `https://example.com` is the error.
fn origins(items: &[String]) -> Result<Vec<String>, String> {
    let origins: Vec<String> = items
        .iter()
        .flat_map(|item| item.split_whitespace())
        .map(str::to_owned)
        .collect();
    for origin in &origins {
        let valid = origin == "*"
            || Url::parse(origin).is_ok_and(|url| {
                url.origin().ascii_serialization() == origin.trim_end_matches('/')
            });
        if !valid {
            return Err(origin.clone());
        }
    }
    Ok(origins)
}

/// The token settings of `args`.
pub fn auth_settings(args: &HubArgs, tls: bool) -> Result<AuthSettings, HubConfigError> {
    let publisher = key(
        args.publisher_jwt_key.as_deref(),
        &args.publisher_jwt_alg,
        "publisher",
    )
    .map_err(HubConfigError::PublisherKey)?;
    let subscriber = key(
        args.subscriber_jwt_key.as_deref(),
        &args.subscriber_jwt_alg,
        "subscriber",
    )
    .map_err(HubConfigError::SubscriberKey)?;
    let trusted_issuers: Vec<String> = args
        .trusted_issuers
        .iter()
        .flat_map(|item| item.split_whitespace())
        .map(str::to_owned)
        .collect();
    if trusted_issuers.is_empty() {
        return Err(HubConfigError::NoIssuer);
    }
    if let Some(identifier) = &args.resource_identifier {
        let valid = Url::parse(identifier)
            .is_ok_and(|url| url.fragment().is_none() && !url.cannot_be_a_base());
        if !valid {
            return Err(HubConfigError::ResourceIdentifier(identifier.clone()));
        }
    }
    Ok(AuthSettings {
        publisher,
        subscriber,
        trusted_issuers,
        resource_identifier: args.resource_identifier.clone(),
        compat: args.protocol_version_compatibility.is_some(),
        cookie_name: args.cookie_name.clone().unwrap_or_else(|| {
            if tls {
                "__Secure-mercure_access_token"
            } else {
                "mercure_access_token"
            }
            .to_owned()
        }),
        anonymous: args.anonymous,
    })
}

/// A new update id: `urn:uuid:` and a time-ordered UUID (v7), which the topic pages also
/// read as the update's time.
pub fn new_update_id() -> String {
    format!("urn:uuid:{}", uuid::Uuid::now_v7())
}

/// A new subscriber id: a random UUID, unique per connection.
pub fn new_subscriber_id() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

fn key(text: Option<&str>, algorithm: &str, role: &str) -> Result<Key, KeyError> {
    match text {
        Some(text) => Key::new(text, algorithm),
        None => {
            let secret = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            tracing::warn!(
                "no {role} JWT key configured: using a random secret, so only tokens this server mints are accepted"
            );
            Key::new(&secret, "HS256")
        }
    }
}

/// How long tokens the server mints for its own pages live.
pub const PAGE_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);
