//! Pulse's server: the server-rendered Leptos app, the counter stream and the metrics, as a
//! library so that tests can start the real router on an ephemeral port.

pub mod config;
pub mod counter;
pub mod metrics;
pub mod serve;
pub mod shutdown;
pub mod sse;
pub mod telemetry;

use std::{sync::Arc, time::Duration};

use app::{api::CounterSettings as PageCounterSettings, shell, App};
use axum::{extract::FromRef, routing::get, Router};
use leptos::prelude::{provide_context, LeptosOptions};
use leptos_axum::{file_and_error_handler_with_context, generate_route_list, LeptosRoutes};
use tokio_util::sync::CancellationToken;

use crate::{config::Config, counter::CounterSettings, metrics::Metrics};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Where the built site lives and what its files are called.
    pub leptos: LeptosOptions,
    /// How `/stream` runs.
    pub counter: CounterSettings,
    /// How long a stream may stay silent before it gets a keep-alive comment.
    pub keep_alive: Duration,
    /// The server's counters.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down; every open stream ends then.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// The state for `config`; `shutdown` is the token that stops the server.
    pub fn new(config: &Config, shutdown: CancellationToken) -> Self {
        Self {
            leptos: LeptosOptions::builder()
                .output_name(config.output_name.as_str())
                .site_root(config.site_root.as_str())
                .site_pkg_dir(config.site_pkg_dir.as_str())
                .site_addr(config.addr)
                .reload_port(config.reload_port)
                .build(),
            counter: CounterSettings {
                count: config.stream_count,
                interval: config.stream_interval,
                retry: config.stream_retry,
            },
            keep_alive: config.keep_alive,
            metrics: Arc::default(),
            shutdown,
        }
    }

    /// The counter settings as the page sees them.
    fn page_counter_settings(&self) -> PageCounterSettings {
        let millis = |duration: Duration| u32::try_from(duration.as_millis()).unwrap_or(u32::MAX);
        PageCounterSettings {
            count: self.counter.count,
            interval_ms: millis(self.counter.interval),
            retry_ms: millis(self.counter.retry),
        }
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos.clone()
    }
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

/// Every route of the server: the pages, their server functions, `/stream`, `/metrics`
/// and the built site's static files.
pub fn app(state: AppState) -> Router {
    let page_settings = state.page_counter_settings();
    let context = move || provide_context(page_settings);
    let leptos = state.leptos.clone();
    Router::new()
        .route("/stream", get(counter::stream))
        .route("/metrics", get(metrics::handler))
        .leptos_routes_with_context(&state, generate_route_list(App), context, move || {
            shell(leptos.clone())
        })
        .fallback(file_and_error_handler_with_context::<AppState, _>(
            context, shell,
        ))
        .with_state(state)
}
