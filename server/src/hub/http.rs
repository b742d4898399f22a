//! The hub's HTTP endpoints: subscribe (`GET /.well-known/mercure`), publish (`POST`), the
//! subscriptions API and the protected-resource metadata.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{ConnectInfo, DefaultBodyLimit, Path, State},
    http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
    Extension, Json, Router,
};
use futures_util::Stream;
use tokio::{task::JoinHandle, time::Sleep};
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    timeout::TimeoutLayer,
};

use super::{
    auth::{self, AuthError, Grants, Role},
    core::{Cursor, CursorFound, SubscriberSpec, Subscription},
    names::{new_subscriber_id, new_update_id, HUB_PATH},
    request::{parse_publish, parse_subscribe, PublishError, SubscribeError},
    selector::{BudgetError, MatchType, PatternLease, SelectorError},
    service::HubService,
    subscriptions::{document, CollectionDoc, SUBSCRIPTIONS_PATH},
    text::{parse_form, FormError},
};
use crate::{
    broker::BrokerError,
    metrics::StreamTracker,
    net::{caps::AddressKey, streams::EventStreams},
    stream::{
        body::{self as sse, SseBody},
        sink::Direct,
    },
};

const METADATA_PATH: &str = "/.well-known/oauth-protected-resource/.well-known/mercure";
const MERCURE_LAST_EVENT_ID: HeaderName = HeaderName::from_static("mercure-last-event-id");
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// What the hub's endpoints need: the hub, and what every event stream shares.
#[derive(Clone)]
pub struct HubState {
    pub service: Arc<HubService>,
    pub streams: EventStreams,
}

/// The hub's routes, with their state.
pub fn router(state: HubState, request_timeout: Duration) -> Router {
    let service = &state.service;
    let body_limit = service.limits.max_update_bytes * 3 + 64 * 1024;
    let trace = crate::telemetry::trace_layer;
    // Publishing and the API have the pages' time limit (a body that trickles in forever
    // would hold its connection); subscribing has none.
    let timeout = || TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout);
    // The subscriptions API and metadata are logged like pages; subscribing is not (a
    // stream would keep its request span for its whole life).
    let api = Router::new()
        .route(SUBSCRIPTIONS_PATH, get(list_all))
        .route(
            &format!("{SUBSCRIPTIONS_PATH}/{{first}}"),
            get(list_one_segment),
        )
        .route(
            &format!("{SUBSCRIPTIONS_PATH}/{{first}}/{{second}}"),
            get(list_two_segments),
        )
        .route(
            &format!("{SUBSCRIPTIONS_PATH}/{{first}}/{{second}}/{{third}}"),
            get(show_subscription),
        )
        .route(METADATA_PATH, get(metadata))
        .route_layer(timeout())
        .route_layer(trace());
    let router = Router::new()
        .route(
            HUB_PATH,
            get(subscribe).merge(post(publish).route_layer(timeout()).layer(trace())),
        )
        .merge(api)
        .layer(DefaultBodyLimit::max(body_limit));
    let router = match cors(&service.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.with_state(state)
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::HEAD, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CACHE_CONTROL,
            LAST_EVENT_ID,
            header::CONTENT_TYPE,
        ])
        .expose_headers([header::LINK, MERCURE_LAST_EVENT_ID]);
    if origins.iter().any(|origin| origin == "*") {
        return Some(layer.allow_origin(tower_http::cors::Any));
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| origin.parse().ok())
        .collect();
    Some(
        layer
            .allow_origin(AllowOrigin::list(list))
            .allow_credentials(true),
    )
}

/// Everything a hub request can fail with, and the response for each.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("{error}")]
    Auth { error: AuthError, metadata: String },
    #[error(transparent)]
    Form(#[from] FormError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    #[error("the update could not be stored: {0}")]
    Broker(#[from] BrokerError),
    #[error("subscriptions are turned off on this hub")]
    SubscriptionsOff,
    #[error("unsupported topic matcher type")]
    UnknownMatchType,
    #[error("no such subscription")]
    NoSuchSubscription,
    #[error(transparent)]
    Budget(#[from] super::selector::BudgetError),
    #[error("{}", .0.reason())]
    Streams(crate::net::caps::Refusal),
    #[error("a token from a cookie is only accepted from a page of an allowed origin (the request's Origin, or its Referer when it has no Origin)")]
    CrossSite,
}

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::Auth { error, .. } => match error {
                AuthError::Missing | AuthError::Invalid(_) => StatusCode::UNAUTHORIZED,
                AuthError::Malformed => StatusCode::BAD_REQUEST,
                AuthError::Forbidden => StatusCode::FORBIDDEN,
            },
            Self::Publish(error) if error.is_too_large() => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Subscribe(SubscribeError::Selector(SelectorError::HubFull))
            | Self::Budget(BudgetError::Address) => StatusCode::TOO_MANY_REQUESTS,
            Self::Budget(BudgetError::Subscription { .. })
            | Self::Subscribe(SubscribeError::Budget(BudgetError::Subscription { .. })) => {
                StatusCode::BAD_REQUEST
            }
            Self::Subscribe(SubscribeError::Budget(BudgetError::Address)) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::Form(_) | Self::Publish(_) | Self::Subscribe(_) | Self::UnknownMatchType => {
                StatusCode::BAD_REQUEST
            }
            Self::Broker(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::CrossSite => StatusCode::FORBIDDEN,
            Self::Streams(refusal) => refusal.status(),
            Self::SubscriptionsOff | Self::NoSuchSubscription => StatusCode::NOT_FOUND,
        };
        if let Self::Streams(refusal) = self {
            return refusal.into_response();
        }
        if status.is_server_error() {
            tracing::error!(error = %self, "hub request failed");
        }
        let mut response = (status, format!("{self}\n")).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
        }
        if let Self::Auth { error, metadata } = &self {
            let metadata = quoted(metadata);
            let challenge = match error.code() {
                Some(code) => format!("Bearer error=\"{code}\", resource_metadata=\"{metadata}\""),
                None => format!("Bearer resource_metadata=\"{metadata}\""),
            };
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

/// The request's view of the hub: its resource identifier, origin and metadata URL.
struct Audience {
    resource: String,
    origin: String,
    metadata: String,
}

fn audience(service: &HubService, headers: &HeaderMap, uri: &Uri) -> Audience {
    let resource = service.resource_identifier(headers, uri);
    let origin = url::Url::parse(&resource)
        .map(|url| url.origin().ascii_serialization())
        .unwrap_or_default();
    let metadata = format!("{origin}{METADATA_PATH}");
    Audience {
        resource,
        origin,
        metadata,
    }
}

/// `text` as the inside of a quoted string (RFC 9110, 5.6.4): `"` and `\` escaped.
fn quoted(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The grants of the request's token; `None` when it has none.
///
/// A publisher's token read from the cookie counts only for a request from a page of an
/// allowed origin (the specification's defence against cross-site request forgery): the
/// browser would send the cookie with a form another site's page posts here.
fn authenticate(
    service: &HubService,
    headers: &HeaderMap,
    query: &[(String, String)],
    role: Role,
    audience: &Audience,
) -> Result<Option<Grants>, HubError> {
    let auth_error = |error| HubError::Auth {
        error,
        metadata: audience.metadata.clone(),
    };
    let Some((token, source)) =
        auth::extract_token(headers, query, &service.auth).map_err(auth_error)?
    else {
        return Ok(None);
    };
    if role == Role::Publisher
        && source == auth::TokenSource::Cookie
        && !auth::cookie_origin_allowed(headers, &audience.origin, &service.publish_origins)
    {
        return Err(HubError::CrossSite);
    }
    auth::validate(
        &token,
        role,
        &audience.resource,
        &service.auth,
        service.base(),
    )
    .map(Some)
    .map_err(auth_error)
}

/// `POST /.well-known/mercure`: publish an update.
async fn publish(
    State(state): State<HubState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HubError> {
    let service = &state.service;
    let audience = audience(service, &headers, &uri);
    let query = parse_form(uri.query().unwrap_or_default().as_bytes(), "query")?;
    let grants =
        authenticate(service, &headers, &query, Role::Publisher, &audience)?.ok_or_else(|| {
            HubError::Auth {
                error: AuthError::Missing,
                metadata: audience.metadata.clone(),
            }
        })?;
    let pairs = parse_form(&body, "form")?;
    let update = parse_publish(pairs, &service.limits, service.base().url(), new_update_id)?;
    if !grants.may_publish(&update.topics, service.base()) {
        return Err(HubError::Auth {
            error: AuthError::Forbidden,
            metadata: audience.metadata,
        });
    }
    let id = service.publish(update).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        id,
    )
        .into_response())
}

/// `GET /.well-known/mercure`: subscribe.
async fn subscribe(
    State(state): State<HubState>,
    connected: Option<Extension<ConnectInfo<SocketAddr>>>,
    version: axum::http::Version,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, HubError> {
    let service = Arc::clone(&state.service);
    let peer = crate::net::caps::client_ip(connected.as_ref().map(|info| &info.0));
    let permit = crate::net::caps::admit_stream(&state.streams.caps, version, peer)
        .map_err(HubError::Streams)?;
    let audience = audience(&service, &headers, &uri);
    let query = parse_form(uri.query().unwrap_or_default().as_bytes(), "query")?;
    let grants = authenticate(&service, &headers, &query, Role::Subscriber, &audience)?;
    if grants.is_none() && !service.auth.anonymous {
        return Err(HubError::Auth {
            error: AuthError::Missing,
            metadata: audience.metadata,
        });
    }
    let header_id = headers
        .get(LAST_EVENT_ID)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    // The patterns' cost, against the budgets of one subscription and of its address.
    let address = AddressKey::of(peer);
    let request = parse_subscribe(
        &query,
        header_id.as_deref(),
        &service.limits,
        service.auth.compat,
        service.base(),
        service.base().patterns().left_for(address),
    )?;
    let lease = service.base().lease(address, request.pattern_cost())?;
    let expires_at = grants.as_ref().and_then(|grants| grants.expires_at);
    let spec = SubscriberSpec {
        id: new_subscriber_id(),
        selectors: request.selectors,
        grants: grants.map(Arc::new),
    };
    let cursor = request.cursor.clone().unwrap_or(Cursor::Live);
    service.broker.history_loaded().await;
    let subscription = service.hub.subscribe(spec, &cursor);
    // Announced by a task of its own: the stream starts without waiting for the broker, and
    // a client that leaves meanwhile still gets its `active` event, then its `inactive` one.
    let announced = service.subscriptions.then(|| {
        let service = Arc::clone(&service);
        let spec = Arc::clone(&subscription.spec);
        tokio::spawn(async move { service.announce(&spec, true).await })
    });

    let found = match &subscription.cursor {
        CursorFound::Id(id) => id.clone(),
        CursorFound::Earliest => "earliest".to_owned(),
    };
    let tracker = StreamTracker::start(Arc::clone(&service.metrics), request.cursor.is_some());
    let sink = Arc::clone(&subscription.queue);
    let stream = HubStream::new(
        subscription,
        expires_at,
        tracker,
        Arc::clone(&service),
        announced,
        (lease, permit),
    );
    let body = SseBody::new(
        stream,
        state.streams.shutdown.clone(),
        Some(state.streams.keep_alive),
    )
    .with_direct_writes(Arc::clone(&sink));
    let mut response = sse::response(body);
    // Served on the fast path, the stream's socket goes to the sink once the head is out.
    response.extensions_mut().insert(Direct(sink));
    if request.cursor_given {
        if let Ok(value) = HeaderValue::from_str(&found) {
            if service.auth.compat {
                response.headers_mut().insert(LAST_EVENT_ID, value.clone());
            }
            response.headers_mut().insert(MERCURE_LAST_EVENT_ID, value);
        }
    }
    Ok(response)
}

/// One subscriber's events: a first comment (so the client knows it is connected), the
/// replay, then live updates, until the queue closes or the token expires. Dropping it
/// unregisters the subscriber, then announces that its subscriptions ended.
struct HubStream {
    /// The first comment is still to be sent.
    greeting: bool,
    subscription: Option<Subscription>,
    expiry: Option<Pin<Box<Sleep>>>,
    tracker: StreamTracker,
    service: Arc<HubService>,
    /// The task announcing the subscriptions, which the `inactive` events wait for.
    announced: Option<JoinHandle<()>>,
    /// The subscription's share of its address's pattern budget, and its place under the
    /// stream caps.
    _held: (Option<PatternLease>, Option<crate::net::caps::Permit>),
}

impl HubStream {
    fn new(
        mut subscription: Subscription,
        expires_at: Option<f64>,
        tracker: StreamTracker,
        service: Arc<HubService>,
        announced: Option<JoinHandle<()>>,
        held: (Option<PatternLease>, Option<crate::net::caps::Permit>),
    ) -> Self {
        // The replay goes first through the queue, shared with the history (the body joins
        // updates into writes of up to 16 KiB, so nothing is copied per subscriber first).
        subscription
            .queue
            .preload(std::mem::take(&mut subscription.replay));
        // The token is valid while the time is before `exp`: the stream ends at `exp`
        // (the timer rounds up to the next millisecond, never down).
        let expiry = expires_at.map(|at| {
            let left = (at - auth::now_seconds()).clamp(0.0, 1e9);
            Box::pin(tokio::time::sleep(Duration::from_secs_f64(left)))
        });
        Self {
            greeting: true,
            subscription: Some(subscription),
            expiry,
            tracker,
            service,
            announced,
            _held: held,
        }
    }
}

impl Stream for HubStream {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        if std::mem::take(&mut this.greeting) {
            return Poll::Ready(Some(Bytes::from_static(b":\n\n")));
        }
        if let Some(expiry) = &mut this.expiry {
            if expiry.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        let Some(subscription) = &mut this.subscription else {
            return Poll::Ready(None);
        };
        // The replay, then live updates (the fan-out leaves out those the replay had).
        let (next, direct) = subscription.queue.poll_take(cx);
        // Updates the fan-out wrote straight to the socket count as sent too (the fan-out
        // already added them to the metrics).
        this.tracker.sent_directly(direct);
        match next {
            Poll::Ready(Some(update)) => {
                this.tracker.sent(1);
                Poll::Ready(Some(update.wire.clone()))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for HubStream {
    fn drop(&mut self) {
        let Some(subscription) = self.subscription.take() else {
            return;
        };
        self.tracker.sent_directly(subscription.queue.take_direct());
        let spec = Arc::clone(&subscription.spec);
        drop(subscription);
        if !self.service.subscriptions {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let service = Arc::clone(&self.service);
            let announced = self.announced.take();
            runtime.spawn(async move {
                if let Some(announced) = announced {
                    let _ = announced.await;
                }
                service.announce(&spec, false).await;
            });
        }
    }
}

// ---- Subscriptions API ----

/// Checks that the request may read the subscriptions at its own path; returns what its
/// token allows.
fn authorize_listing(
    service: &HubService,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Grants, HubError> {
    if !service.subscriptions {
        return Err(HubError::SubscriptionsOff);
    }
    let audience = audience(service, headers, uri);
    let query = parse_form(uri.query().unwrap_or_default().as_bytes(), "query")?;
    let grants =
        authenticate(service, headers, &query, Role::Subscriber, &audience)?.ok_or_else(|| {
            HubError::Auth {
                error: AuthError::Missing,
                metadata: audience.metadata.clone(),
            }
        })?;
    if grants.may_read(&[uri.path()], service.base()) {
        Ok(grants)
    } else {
        Err(HubError::Auth {
            error: AuthError::Forbidden,
            metadata: audience.metadata,
        })
    }
}

/// The listing `body`, with the cursor a client resumes subscription events from: the
/// newest update the listing's token may see (public, or private and granted), so that
/// it tells nothing of others.
fn respond_with<T: serde::Serialize>(
    service: &HubService,
    headers: &HeaderMap,
    grants: &Grants,
    body: &T,
) -> Response {
    let base = service.base();
    let last_id = service
        .hub
        .last_event_id(|update| !update.private || grants.may_read(&update.topics, base));
    let escaped = last_id.replace('\\', "\\\\").replace('"', "\\\"");
    let link = format!(
        "<{HUB_PATH}>; rel=\"mercure\"; last-event-id=\"{escaped}\"; type=\"mercure\"; content-type=\"application/json\""
    );
    let etag: String = format!(
        "\"{}\"",
        last_id
            .bytes()
            .map(|b| if b < 0x21 || b == b'"' || b == b'%' || b >= 0x7F {
                format!("%{b:02X}")
            } else {
                char::from(b).to_string()
            })
            .collect::<String>()
    );
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|value| value.as_bytes() == etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Json(body).into_response()
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&link) {
        headers.insert(header::LINK, value);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("must-revalidate"),
    );
    response
}

fn collection(
    service: &HubService,
    uri: &Uri,
    keep: impl Fn(MatchType, &str, &str) -> bool,
) -> CollectionDoc {
    let base = service.base();
    let subscriptions = service
        .hub
        .subscribers()
        .into_iter()
        .flat_map(|active| {
            active
                .spec
                .selectors
                .iter()
                .filter(|selector| keep(selector.kind(), selector.raw(), &active.spec.id))
                .map(|selector| document(&active.spec, selector, true, base))
                .collect::<Vec<_>>()
        })
        .collect();
    CollectionDoc {
        id: uri.path().to_owned(),
        kind: "subscriptions",
        subscriptions,
    }
}

/// `GET /.well-known/mercure/subscriptions`.
async fn list_all(
    State(state): State<HubState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, HubError> {
    let grants = authorize_listing(&state.service, &headers, &uri)?;
    let doc = collection(&state.service, &uri, |_, _, _| true);
    Ok(respond_with(&state.service, &headers, &grants, &doc))
}

/// `GET …/subscriptions/{topic}` (0.x clients, compatibility mode).
async fn list_one_segment(
    State(state): State<HubState>,
    Path(first): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, HubError> {
    if !state.service.auth.compat {
        return Err(HubError::UnknownMatchType);
    }
    let grants = authorize_listing(&state.service, &headers, &uri)?;
    let doc = collection(&state.service, &uri, |kind, raw, _| {
        kind == MatchType::Legacy && raw == first
    });
    Ok(respond_with(&state.service, &headers, &grants, &doc))
}

/// `GET …/subscriptions/{match_type}/{match}`, or in compatibility mode
/// `…/subscriptions/{topic}/{subscriber}`.
async fn list_two_segments(
    State(state): State<HubState>,
    Path((first, second)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, HubError> {
    let service = &state.service;
    match MatchType::from_name(&first) {
        Some(kind) => {
            let grants = authorize_listing(service, &headers, &uri)?;
            let doc = collection(service, &uri, |k, raw, _| k == kind && raw == second);
            Ok(respond_with(service, &headers, &grants, &doc))
        }
        None if service.auth.compat => {
            let grants = authorize_listing(service, &headers, &uri)?;
            single(service, &uri, &headers, &grants, |kind, raw, subscriber| {
                kind == MatchType::Legacy && raw == first && subscriber == second
            })
        }
        None => Err(HubError::UnknownMatchType),
    }
}

/// `GET …/subscriptions/{match_type}/{match}/{subscriber}`.
async fn show_subscription(
    State(state): State<HubState>,
    Path((kind, matcher, subscriber)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, HubError> {
    let service = &state.service;
    let kind = MatchType::from_name(&kind).ok_or(HubError::UnknownMatchType)?;
    let grants = authorize_listing(service, &headers, &uri)?;
    single(service, &uri, &headers, &grants, |k, raw, id| {
        k == kind && raw == matcher && id == subscriber
    })
}

fn single(
    service: &HubService,
    uri: &Uri,
    headers: &HeaderMap,
    grants: &Grants,
    keep: impl Fn(MatchType, &str, &str) -> bool,
) -> Result<Response, HubError> {
    let doc = collection(service, uri, keep)
        .subscriptions
        .into_iter()
        .next()
        .ok_or(HubError::NoSuchSubscription)?;
    Ok(respond_with(service, headers, grants, &doc))
}

/// `GET /.well-known/oauth-protected-resource/.well-known/mercure` (RFC 9728).
async fn metadata(State(state): State<HubState>, uri: Uri, headers: HeaderMap) -> Response {
    let service = &state.service;
    let audience = audience(service, &headers, &uri);
    let mut body = serde_json::json!({
        "resource": audience.resource,
        "bearer_methods_supported": ["header"],
        "authorization_details_types_supported": [auth::DETAIL_TYPE],
        "mercure_cookie": service.auth.cookie_name,
    });
    if service.subscriptions {
        body["mercure_subscriptions"] = serde_json::Value::Bool(true);
    }
    Json(body).into_response()
}
