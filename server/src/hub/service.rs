//! The hub's service: what its HTTP endpoints and the pages share, built from its
//! settings: the core, the broker, the token settings and the request limits.

use std::{sync::Arc, time::Duration};

use ::http::HeaderMap;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{
    auth::{AuthSettings, Key, KeyError},
    core::{HubLimits, SubscriberSpec, TopicHub},
    names::{new_update_id, HUB_PATH},
    rate_limit,
    request::RequestLimits,
    selector::{self, MatchBase},
    subscriptions,
};
use crate::{
    broker::{memory::MemoryBroker, redis::RedisBroker, Broker, BrokerError},
    metrics::StreamMetrics,
    stream::sink::QueueLimits,
    update::NewUpdate,
};

/// Where the hub keeps updates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerSettings {
    /// This process only.
    Memory,
    /// Redis Streams at `url` (`redis://host:port/db`), its keys under `prefix`.
    Redis { url: String, prefix: String },
}

/// Everything the hub is built from: a plain struct, which the command line fills in
/// (`config::HubArgs`) and tests build directly. [`HubSettings::default`] is the command
/// line's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct HubSettings {
    pub broker: BrokerSettings,
    /// Verifies publishers' tokens: a shared secret or a PEM public key (`None`: a random
    /// secret, so only this server's own pages can publish).
    pub publisher_jwt_key: Option<String>,
    pub publisher_jwt_alg: String,
    /// Verifies subscribers' tokens (`None`: a random secret, which signs the pages' tokens).
    pub subscriber_jwt_key: Option<String>,
    pub subscriber_jwt_alg: String,
    /// Accepted `iss` values; the first one signs the tokens this server mints.
    pub trusted_issuers: Vec<String>,
    /// The `aud` tokens must carry; derived from each request when `None`.
    pub resource_identifier: Option<String>,
    /// Whether subscribers without a token receive public updates.
    pub anonymous: bool,
    /// Accept 0.x clients and tokens.
    pub compat: bool,
    /// Publish subscription events and serve the subscriptions API.
    pub subscriptions: bool,
    /// Origins allowed to use the hub from a browser (CORS).
    pub cors_origins: Vec<String>,
    /// Origins whose pages may publish with a cookie's token, besides the hub's own.
    pub publish_origins: Vec<String>,
    /// The cookie that may carry a token (`None`: the default for the scheme).
    pub cookie_name: Option<String>,
    /// Updates kept for subscribers that resume.
    pub history_size: usize,
    pub limits: RequestLimits,
    /// Updates and bytes a subscriber may have waiting, and the distinct bytes all may.
    pub subscriber_queue: usize,
    pub subscriber_queue_bytes: usize,
    pub queued_bytes_total: usize,
    /// How long a queued update may wait (the server's stall timeout).
    pub stall_timeout: Duration,
    pub pattern_budget: selector::PatternBudget,
    /// Messages per second one client may publish from the composer, and its burst.
    pub composer_rate: f64,
    pub composer_burst: u32,
    /// Whether the server speaks TLS (for derived resource identifiers and cookie names).
    pub tls: bool,
}

impl Default for HubSettings {
    fn default() -> Self {
        Self {
            broker: BrokerSettings::Memory,
            publisher_jwt_key: None,
            publisher_jwt_alg: "HS256".into(),
            subscriber_jwt_key: None,
            subscriber_jwt_alg: "HS256".into(),
            trusted_issuers: vec!["https://localhost".into()],
            resource_identifier: None,
            anonymous: true,
            compat: false,
            subscriptions: true,
            cors_origins: Vec::new(),
            publish_origins: Vec::new(),
            cookie_name: None,
            history_size: 1000,
            limits: RequestLimits::default(),
            subscriber_queue: 1000,
            subscriber_queue_bytes: 4 << 20,
            queued_bytes_total: 256 << 20,
            stall_timeout: Duration::from_secs(30),
            pattern_budget: selector::PatternBudget::default(),
            composer_rate: 2.0,
            composer_burst: 5,
            tls: false,
        }
    }
}

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
    Broker(String),
}

/// Everything the hub's handlers share.
pub struct HubService {
    pub hub: Arc<TopicHub>,
    pub broker: Arc<dyn Broker>,
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
    /// A hub for `settings`, on the current runtime; background work (the Redis reader)
    /// stops when `shutdown` is cancelled.
    pub fn new(
        settings: &HubSettings,
        shutdown: CancellationToken,
        metrics: Arc<StreamMetrics>,
    ) -> Result<Self, HubConfigError> {
        let auth = auth_settings(settings)?;
        let cors_origins = origins(&settings.cors_origins).map_err(HubConfigError::CorsOrigin)?;
        let publish_origins =
            origins(&settings.publish_origins).map_err(HubConfigError::PublishOrigin)?;
        if !(settings.composer_rate.is_finite() && settings.composer_rate > 0.0) {
            return Err(HubConfigError::ComposerRate);
        }
        let base = MatchBase::with_budget(
            settings.resource_identifier.as_deref(),
            settings.pattern_budget,
        );
        let hub = TopicHub::start(
            base,
            HubLimits {
                history_size: settings.history_size,
                queue_capacity: settings.subscriber_queue,
                queues: QueueLimits::new(
                    settings.subscriber_queue_bytes,
                    settings.queued_bytes_total,
                    settings.stall_timeout,
                ),
            },
            Arc::clone(&metrics),
        );
        let broker: Arc<dyn Broker> = match &settings.broker {
            BrokerSettings::Memory => MemoryBroker::new(Arc::clone(&hub) as _),
            BrokerSettings::Redis { url, prefix } => RedisBroker::start(
                url,
                prefix,
                settings.history_size,
                Arc::clone(&hub) as _,
                shutdown,
            )
            .map_err(|error| HubConfigError::Broker(error.to_string()))?,
        };
        Ok(Self {
            broker,
            hub,
            auth,
            limits: settings.limits.clone(),
            subscriptions: settings.subscriptions,
            cors_origins,
            publish_origins,
            metrics,
            composer_limit: rate_limit::RateLimiter::new(
                settings.composer_rate,
                settings.composer_burst,
            ),
            tls: settings.tls,
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

    /// Who watches `topic` (subscribed to it exactly) on every instance; `None` when the
    /// broker's presence knows only this instance's subscribers.
    pub fn watchers(&self, topic: &str) -> Option<Vec<String>> {
        let all = self.broker.presence().hub_wide(self.hub.presence())?;
        Some(watchers_of(all, topic))
    }

    /// Who watches `topic` (subscribed to it exactly) on this instance.
    pub fn local_watchers(&self, topic: &str) -> Vec<String> {
        watchers_of(self.hub.presence(), topic)
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

/// The subscribers among `entries` with an exact selector for `topic`, each once.
fn watchers_of(entries: Vec<crate::broker::PresenceEntry>, topic: &str) -> Vec<String> {
    let mut watchers: Vec<String> = entries
        .into_iter()
        .filter(|entry| entry.match_type == "exact" && entry.matcher == topic)
        .map(|entry| entry.subscriber)
        .collect();
    watchers.sort();
    watchers.dedup();
    watchers
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

/// The token settings of `settings`.
pub fn auth_settings(settings: &HubSettings) -> Result<AuthSettings, HubConfigError> {
    let publisher = key(
        settings.publisher_jwt_key.as_deref(),
        &settings.publisher_jwt_alg,
        "publisher",
    )
    .map_err(HubConfigError::PublisherKey)?;
    let subscriber = key(
        settings.subscriber_jwt_key.as_deref(),
        &settings.subscriber_jwt_alg,
        "subscriber",
    )
    .map_err(HubConfigError::SubscriberKey)?;
    let trusted_issuers: Vec<String> = settings
        .trusted_issuers
        .iter()
        .flat_map(|item| item.split_whitespace())
        .map(str::to_owned)
        .collect();
    if trusted_issuers.is_empty() {
        return Err(HubConfigError::NoIssuer);
    }
    if let Some(identifier) = &settings.resource_identifier {
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
        resource_identifier: settings.resource_identifier.clone(),
        compat: settings.compat,
        cookie_name: settings.cookie_name.clone().unwrap_or_else(|| {
            if settings.tls {
                "__Secure-mercure_access_token"
            } else {
                "mercure_access_token"
            }
            .to_owned()
        }),
        anonymous: settings.anonymous,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn update(id: &str) -> NewUpdate {
        NewUpdate {
            id: id.into(),
            topics: vec!["/t".into()],
            data: "x".into(),
            kind: None,
            retry: None,
            private: false,
        }
    }

    fn service(settings: &HubSettings) -> Result<HubService, HubConfigError> {
        HubService::new(settings, CancellationToken::new(), Arc::default())
    }

    #[tokio::test]
    async fn a_hub_built_from_plain_settings_keeps_what_they_say() {
        let settings = HubSettings {
            history_size: 2,
            ..HubSettings::default()
        };
        let service = service(&settings).expect("valid settings");
        for id in ["a", "b", "c"] {
            assert_eq!(service.publish(update(id)).await.expect("stored"), id);
        }
        let kept: Vec<String> = service
            .hub
            .recent(10, |_| true)
            .iter()
            .map(|update| update.id.to_string())
            .collect();
        assert_eq!(kept, ["b", "c"]);
        assert!(service.broker.is_healthy());
        assert_eq!(service.watchers("/t"), Some(Vec::new()));
    }

    #[test]
    fn unusable_settings_are_refused_with_the_setting_named() {
        let refused = |settings: HubSettings| match service(&settings) {
            Ok(_) => panic!("accepted {settings:?}"),
            Err(error) => error.to_string(),
        };
        let error = refused(HubSettings {
            composer_rate: 0.0,
            ..HubSettings::default()
        });
        assert!(error.contains("--composer-rate"), "{error}");
        let error = refused(HubSettings {
            trusted_issuers: Vec::new(),
            ..HubSettings::default()
        });
        assert!(error.contains("--trusted-issuers"), "{error}");
        let error = refused(HubSettings {
            cors_origins: vec!["not an origin".into()],
            ..HubSettings::default()
        });
        assert!(error.contains("--cors-origins"), "{error}");
        let error = refused(HubSettings {
            publisher_jwt_key: Some("short".into()),
            ..HubSettings::default()
        });
        assert!(error.contains("--publisher-jwt-key"), "{error}");
    }
}
