//! The server as one application: the state every part is built from, the routes they
//! serve, and running it until a signal stops it.

use std::{sync::Arc, time::Duration};

use app::api::CounterSettings as PageCounterSettings;
use axum::{http::StatusCode, Router};
use leptos::prelude::LeptosOptions;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::{
    catch_panic::CatchPanicLayer, compression::CompressionLayer, timeout::TimeoutLayer,
};

use crate::{
    config::{self, Config},
    counter::{self, Counter, CounterSettings, CounterState},
    hub::{
        self,
        http::HubState,
        service::{HubConfigError, HubService},
    },
    metrics::{self, Metrics},
    net::{caps, request_guard, serve::serve, streams::EventStreams, tls},
    site,
    stream::shutdown,
    telemetry,
};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Where the built site lives and what its files are called.
    pub leptos: LeptosOptions,
    /// How `/stream` runs, and the clock its streams share.
    pub counter: Counter,
    /// The server's counters.
    pub metrics: Arc<Metrics>,
    /// Time limit of page and API requests.
    pub request_timeout: Duration,
    /// Whether pages, scripts and styles are compressed.
    pub compression: bool,
    /// The Mercure hub.
    pub hub: Arc<HubService>,
    /// What every event stream shares: the shutdown token, the keep-alive interval, and the
    /// caps on streams HTTP/2 carries (an HTTP/1.1 stream is its connection, which the
    /// connection caps count).
    pub streams: EventStreams,
}

impl AppState {
    /// The state for `config`; `shutdown` is the token that stops the server. Starts the
    /// hub's fan-out and the counter's clock on the current runtime.
    pub fn new(config: &Config, shutdown: CancellationToken) -> Result<Self, HubConfigError> {
        let metrics = Arc::new(Metrics::default());
        let hub = HubService::new(
            &config
                .hub
                .settings(config.tls_cert.is_some(), config.stall_timeout),
            shutdown.clone(),
            Arc::clone(&metrics.hub),
        )?;
        Ok(Self {
            leptos: LeptosOptions::builder()
                .output_name(config.output_name.as_str())
                .site_root(config.site_root.as_str())
                .site_pkg_dir(config.site_pkg_dir.as_str())
                .site_addr(config.addr)
                .reload_port(config.reload_port)
                .build(),
            counter: Counter::start(
                CounterSettings {
                    count: config.stream_count,
                    interval: config.stream_interval,
                    retry: config.stream_retry,
                },
                Arc::clone(&metrics.counter),
            ),
            metrics,
            request_timeout: config.request_timeout,
            compression: config.compression,
            hub: Arc::new(hub),
            streams: EventStreams {
                shutdown,
                keep_alive: config.keep_alive,
                caps: caps::Caps::new(
                    config.max_streams as usize,
                    config.max_streams_per_ip as usize,
                ),
            },
        })
    }

    /// The counter settings as the page sees them.
    fn page_counter_settings(&self) -> PageCounterSettings {
        let millis = |duration: Duration| u32::try_from(duration.as_millis()).unwrap_or(u32::MAX);
        PageCounterSettings {
            count: self.counter.settings.count,
            interval_ms: millis(self.counter.settings.interval),
            retry_ms: millis(self.counter.settings.retry),
        }
    }
}

/// Every route of the server: the pages, their server functions, `/stream`, `/metrics`
/// and the built site's static files.
///
/// Pages get a time limit; event streams do not. Compression skips event streams (by their
/// content type), so no layer here ever holds an event back.
pub fn app(state: AppState) -> Router {
    let pages = site::router(
        state.leptos.clone(),
        state.page_counter_settings(),
        Arc::clone(&state.hub),
    )
    .merge(metrics::router(Arc::clone(&state.metrics)))
    .layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        state.request_timeout,
    ));
    let pages = if state.compression {
        pages.layer(CompressionLayer::new())
    } else {
        pages
    };
    // A panic while rendering a page (the renderer is the biggest body of code a request
    // reaches) becomes a `500` answer instead of a dropped connection.
    let pages = pages
        .layer(CatchPanicLayer::custom(handler_panicked))
        .layer(telemetry::trace_layer());
    // Streams stay outside the page layers: no time limit, no compression, no request span
    // kept for the stream's lifetime; each layer would also make every open stream's
    // response body larger. Every request passes the guard first: methods, targets, Host.
    Router::new()
        .merge(counter::router(CounterState {
            counter: state.counter.clone(),
            metrics: Arc::clone(&state.metrics.counter),
            streams: state.streams.clone(),
        }))
        .merge(hub::http::router(
            HubState {
                service: Arc::clone(&state.hub),
                streams: state.streams.clone(),
            },
            state.request_timeout,
        ))
        .merge(pages)
        .layer(request_guard::RequestGuardLayer)
}

/// The answer when a handler panicked: the panic is a bug, logged with what it said.
fn handler_panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "a request handler panicked");
    axum::response::IntoResponse::into_response((
        StatusCode::INTERNAL_SERVER_ERROR,
        "the server failed to answer this request\n",
    ))
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Hub(#[from] HubConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
    #[error("cannot make a token: {0}")]
    Token(String),
}

/// Runs the server for `config` until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), StartError> {
    telemetry::init(&config.log, config.log_format)?;
    let options = config.serve_options()?;
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.addr,
            source,
        })?;
    let token = CancellationToken::new();
    shutdown::cancel_on_signal(token.clone());
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(addr = %config.addr, "listening on {scheme}://{}", config.addr);
    let router = app(AppState::new(&config, token.clone())?);
    // Accepting on a worker thread, not this one (the runtime's main thread): a connection
    // spawned from a worker starts on that worker, where one spawned from here would first
    // have to wake a worker (a system call and a context switch per connection).
    tokio::spawn(serve(listener, router, token, options))
        .await
        .map_err(|failed| StartError::Serve(std::io::Error::other(failed)))?
        .map_err(StartError::Serve)?;
    tracing::info!("stopped");
    Ok(())
}

/// Prints the token `args` asks for (the `token` subcommand).
pub fn print_token(config: &Config, args: &config::TokenArgs) -> Result<(), StartError> {
    let settings = config
        .hub
        .settings(config.tls_cert.is_some(), config.stall_timeout);
    let auth = hub::service::auth_settings(&settings)?;
    let role = if args.publish.is_empty() {
        hub::auth::Role::Subscriber
    } else {
        hub::auth::Role::Publisher
    };
    let configured = match role {
        hub::auth::Role::Publisher => config.hub.publisher_jwt_key.is_some(),
        hub::auth::Role::Subscriber => config.hub.subscriber_jwt_key.is_some(),
    };
    if !configured {
        return Err(StartError::Token(format!(
            "no {} key is configured (MERCURE_{}_JWT_KEY), so no server would accept the token",
            if role == hub::auth::Role::Publisher {
                "publisher"
            } else {
                "subscriber"
            },
            if role == hub::auth::Role::Publisher {
                "PUBLISHER"
            } else {
                "SUBSCRIBER"
            },
        )));
    }
    let scheme = if config.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let audience = args
        .audience
        .clone()
        .or_else(|| config.hub.resource_identifier.clone())
        .unwrap_or_else(|| format!("{scheme}://{}{}", config.addr, hub::names::HUB_PATH));
    let request = hub::auth::TokenRequest {
        publish: args.publish.clone(),
        subscribe: args.subscribe.clone(),
        payload: args.payload.clone(),
        lifetime: args.lifetime.as_secs(),
    };
    let token = hub::auth::mint(&request, role, &audience, &auth)
        .map_err(|error| StartError::Token(error.to_string()))?;
    println!("{token}");
    Ok(())
}
