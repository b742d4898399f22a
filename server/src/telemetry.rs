//! Structured logs through `tracing`.

use tracing_subscriber::{fmt, EnvFilter};

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        filter: String,
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// Installs the global subscriber: `filter` (in `tracing` syntax) filters, `format` formats.
pub fn init(filter: &str, format: LogFormat) -> Result<(), TelemetryError> {
    let env_filter = EnvFilter::try_new(filter).map_err(|source| TelemetryError::Filter {
        filter: filter.to_owned(),
        source,
    })?;
    let builder = fmt().with_env_filter(env_filter).with_target(true);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|_| TelemetryError::AlreadyInstalled)
}

/// The span of one HTTP request: method, path and version. The query string is left out,
/// since it may carry credentials.
///
/// Event streams get no request span (the layer is never put on their routes): a span lives
/// as long as its response, and tens of thousands of open streams would each keep one in
/// memory. Streams log their own start and end (at debug level) instead.
pub fn request_span<B>(request: &http::Request<B>) -> tracing::Span {
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        version = ?request.version(),
    )
}

/// The request-logging layer built by [`trace_layer`].
pub type TraceLayer = tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    fn(&http::Request<axum::body::Body>) -> tracing::Span,
>;

/// The request-logging layer: one span a request, built by [`request_span`].
pub fn trace_layer() -> TraceLayer {
    tower_http::trace::TraceLayer::new_for_http().make_span_with(request_span::<axum::body::Body>)
}
