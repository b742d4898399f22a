//! The server's settings: one typed struct, read from flags with environment fallbacks.
//!
//! Every value is checked when the server starts; a bad one stops it with a message that
//! names the flag, the variable and the accepted range.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

use crate::{
    hub::{
        request::RequestLimits,
        selector::PatternBudget,
        service::{BrokerSettings, HubSettings},
    },
    net::{caps, serve::ServeOptions, tls::TlsError},
};

/// Settings for the Pulse server.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "server",
    version,
    about = "Pulse: live data from Rust to the browser over Server-Sent Events"
)]
pub struct Config {
    /// Address and port to listen on.
    #[arg(long, env = "LEPTOS_SITE_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,

    /// Folder with the built site (the WASM, JS and CSS under `--site-pkg-dir`, and assets).
    #[arg(long, env = "LEPTOS_SITE_ROOT", default_value = "target/site")]
    pub site_root: String,

    /// Folder under the site root that holds the built WASM, JS and CSS.
    #[arg(long, env = "LEPTOS_SITE_PKG_DIR", default_value = "pkg")]
    pub site_pkg_dir: String,

    /// Base name of the built WASM, JS and CSS files.
    #[arg(long, env = "LEPTOS_OUTPUT_NAME", default_value = "pulse")]
    pub output_name: String,

    /// Port of cargo-leptos's live-reload websocket (only used under `cargo leptos watch`).
    #[arg(long, env = "LEPTOS_RELOAD_PORT", default_value_t = 3001)]
    pub reload_port: u32,

    /// How many `new_message` events one `/stream` sends before its `end_event`.
    #[arg(
        long,
        env = "PULSE_STREAM_COUNT",
        default_value_t = 20,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000),
    )]
    pub stream_count: u32,

    /// Time between two `/stream` messages, like `1s` or `50ms` (1ms to 1h).
    #[arg(
        long,
        env = "PULSE_STREAM_INTERVAL",
        default_value = "1s",
        value_parser = duration_in(Duration::from_millis(1), Duration::from_secs(3600)),
    )]
    pub stream_interval: Duration,

    /// The `retry:` delay `/stream` asks browsers to wait before reconnecting (0ms to 1h).
    #[arg(
        long,
        env = "PULSE_STREAM_RETRY",
        default_value = "15s",
        value_parser = duration_in(Duration::ZERO, Duration::from_secs(3600)),
    )]
    pub stream_retry: Duration,

    /// How long an event stream may stay silent before it gets a keep-alive comment (10ms to 1h).
    #[arg(
        long,
        env = "PULSE_KEEP_ALIVE",
        default_value = "15s",
        value_parser = duration_in(Duration::from_millis(10), Duration::from_secs(3600)),
    )]
    pub keep_alive: Duration,

    /// PEM certificate chain: serve HTTPS, with HTTP/2 (needs `--tls-key`).
    #[arg(
        long,
        env = "PULSE_TLS_CERT",
        requires = "tls_key",
        value_name = "PATH"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(
        long,
        env = "PULSE_TLS_KEY",
        requires = "tls_cert",
        value_name = "PATH"
    )]
    pub tls_key: Option<PathBuf>,

    /// Time from a new connection to its first complete request head, the TLS handshake
    /// included (100ms to 10m); an idle kept-alive connection gets as long for its next one.
    #[arg(
        long,
        env = "PULSE_HEADER_TIMEOUT",
        default_value = "10s",
        value_parser = duration_in(Duration::from_millis(100), Duration::from_secs(600)),
    )]
    pub header_timeout: Duration,

    /// A connection whose client stops reading is closed once a write has waited this long
    /// (100ms to 1h); the client can resume with Last-Event-ID.
    #[arg(
        long,
        env = "PULSE_STALL_TIMEOUT",
        default_value = "30s",
        value_parser = duration_in(Duration::from_millis(100), Duration::from_secs(3600)),
    )]
    pub stall_timeout: Duration,

    /// Most connections the server holds at once (more are answered `503` and closed).
    /// Default: the open-file limit less 64, so that the process can still open files and
    /// reach Redis when every connection is taken.
    #[arg(long, env = "PULSE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// Most connections one client address (an IPv6 /64) holds at once; more are answered
    /// `429` and closed. `0`: no cap (behind a reverse proxy, every client has its address).
    #[arg(long, env = "PULSE_MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: u32,

    /// Most event streams (hub subscriptions and `/stream`s) open at once over HTTP/2, which
    /// carries up to 128 on one connection; more are answered `503`. (An HTTP/1.1 stream is
    /// its connection, which `--max-connections` counts.)
    #[arg(long, env = "PULSE_MAX_STREAMS", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,

    /// Most event streams over HTTP/2 one client address (an IPv6 /64) holds at once, over
    /// however many connections; more are answered `429`. `0`: no cap.
    #[arg(long, env = "PULSE_MAX_STREAMS_PER_IP", default_value_t = 2000)]
    pub max_streams_per_ip: u32,

    /// Serve plain HTTP/1.1 event streams on the server's own lean path (`true`), or
    /// everything through hyper (`false`, to tell a problem of that path from others).
    #[arg(long, env = "PULSE_SSE_FAST_PATH", default_value_t = true, action = clap::ArgAction::Set)]
    pub sse_fast_path: bool,

    /// Time limit for page and API requests (event streams have none), 1s to 10m.
    #[arg(
        long,
        env = "PULSE_REQUEST_TIMEOUT",
        default_value = "30s",
        value_parser = duration_in(Duration::from_secs(1), Duration::from_secs(600)),
    )]
    pub request_timeout: Duration,

    /// Compress pages, scripts and styles (never event streams): `true` or `false`.
    #[arg(long, env = "PULSE_COMPRESSION", default_value_t = true, action = clap::ArgAction::Set)]
    pub compression: bool,

    /// The Mercure hub's settings.
    #[command(flatten)]
    pub hub: HubArgs,

    /// Log filter, in `tracing` syntax (`info`, `server=debug,tower_http=info`, …).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,

    /// Log format: human-readable `text`, or `json` for log collectors.
    #[arg(long, env = "PULSE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Instead of serving, do this and exit.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Things the binary does besides serving.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Print an access token for this hub, signed with the configured key (HS* secrets
    /// only), for local use: `server --publisher-jwt-key … token --publish '*'`.
    Token(TokenArgs),
}

/// What a minted token allows.
#[derive(clap::Args, Debug, Clone)]
pub struct TokenArgs {
    /// Topic selectors it may publish to (`*`, a topic, or `urlpattern:<pattern>`);
    /// makes a publisher token.
    #[arg(long)]
    pub publish: Vec<String>,

    /// Topic selectors whose private updates it may read; makes a subscriber token when
    /// `--publish` is not given.
    #[arg(long)]
    pub subscribe: Vec<String>,

    /// The `aud` claim. Default: the resource identifier, else `http://<addr>/.well-known/mercure`.
    #[arg(long)]
    pub audience: Option<String>,

    /// How long the token is valid, like `1h` or `30d`.
    #[arg(long, default_value = "1h", value_parser = duration_in(Duration::from_secs(1), Duration::from_secs(366 * 86_400)))]
    pub lifetime: Duration,

    /// JSON payload attached to its subscriptions.
    #[arg(long, value_parser = parse_json)]
    pub payload: Option<serde_json::Value>,
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|error| format!("not valid JSON: {error}"))
}

/// The hub's settings; the environment variables carry the reference hub's names.
#[derive(clap::Args, Debug, Clone)]
pub struct HubArgs {
    /// Where updates and their history live: `memory` (this process only) or
    /// `redis://host:port/db` (shared by every instance on that Redis).
    #[arg(long, env = "PULSE_BROKER", default_value = "memory", value_parser = parse_broker)]
    pub broker: BrokerUrl,

    /// Prefix of the Redis keys (`<prefix>:updates`, `<prefix>:presence`).
    #[arg(long, env = "PULSE_REDIS_PREFIX", default_value = "pulse")]
    pub redis_prefix: String,

    /// Key that verifies publishers' tokens: a shared secret (HS*, 32 bytes or more) or a PEM
    /// public key. Unset: a random secret, so only this server's own pages can publish.
    #[arg(long, env = "MERCURE_PUBLISHER_JWT_KEY", hide_env_values = true)]
    pub publisher_jwt_key: Option<String>,

    /// Algorithm of the publisher key (HS256, RS256, ES256, EdDSA, …); tokens must use it.
    #[arg(long, env = "MERCURE_PUBLISHER_JWT_ALG", default_value = "HS256")]
    pub publisher_jwt_alg: String,

    /// Key that verifies subscribers' tokens. Unset: a random secret, which this server uses
    /// for the tokens it gives its own pages.
    #[arg(long, env = "MERCURE_SUBSCRIBER_JWT_KEY", hide_env_values = true)]
    pub subscriber_jwt_key: Option<String>,

    /// Algorithm of the subscriber key.
    #[arg(long, env = "MERCURE_SUBSCRIBER_JWT_ALG", default_value = "HS256")]
    pub subscriber_jwt_alg: String,

    /// Accepted token issuers (`iss`), separated by spaces or commas; the first one signs
    /// the tokens this server mints.
    #[arg(
        long,
        env = "MERCURE_TRUSTED_ISSUERS",
        default_value = "https://localhost",
        value_delimiter = ','
    )]
    pub trusted_issuers: Vec<String>,

    /// The hub's resource identifier: the `aud` tokens must carry. Unset: derived from each
    /// request's URL (`<scheme>://<host>/.well-known/mercure`), as the reference hub does.
    #[arg(long, env = "MERCURE_RESOURCE_IDENTIFIER")]
    pub resource_identifier: Option<String>,

    /// Let subscribers without a token receive public updates.
    #[arg(long, env = "MERCURE_ANONYMOUS", default_value_t = true, action = clap::ArgAction::Set)]
    pub anonymous: bool,

    /// Accept 0.x clients: `8` enables `topic=` selectors (URI templates), the `mercure`
    /// token claim, tokens without `typ`, `aud`, `exp` or `iss`, the `authorization` query
    /// parameter and the `mercureAuthorization` cookie.
    #[arg(long, env = "MERCURE_PROTOCOL_VERSION_COMPATIBILITY", value_parser = clap::value_parser!(u8).range(8..=8))]
    pub protocol_version_compatibility: Option<u8>,

    /// Publish subscription events and serve the subscriptions API.
    #[arg(long, env = "MERCURE_SUBSCRIPTIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub subscriptions: bool,

    /// Origins allowed to use the hub from a browser (CORS), separated by spaces or commas.
    #[arg(long, env = "MERCURE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Origins whose pages may publish with a token held in the cookie, besides the hub's
    /// own, separated by spaces or commas (`*`: any). A cookie-authorized publication must
    /// name its origin in `Origin` (or `Referer`); one from elsewhere, or naming neither,
    /// gets `403`.
    #[arg(long, env = "MERCURE_PUBLISH_ORIGINS", value_delimiter = ',')]
    pub publish_origins: Vec<String>,

    /// The cookie that may carry a token. Default: `__Secure-mercure_access_token` over
    /// HTTPS, `mercure_access_token` over plain HTTP (browsers refuse `__Secure-` there).
    #[arg(long, env = "MERCURE_COOKIE_NAME")]
    pub cookie_name: Option<String>,

    /// Updates kept for subscribers that reconnect (1 to 1,000,000).
    #[arg(long, env = "PULSE_HISTORY_SIZE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub history_size: u32,

    /// Largest update data in bytes (1 to 16 MiB).
    #[arg(long, env = "PULSE_MAX_UPDATE_BYTES", default_value_t = 65536, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub max_update_bytes: u32,

    /// Most topics in one update.
    #[arg(long, env = "PULSE_MAX_TOPICS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_topics: u32,

    /// Most topic matchers in one subscription.
    #[arg(long, env = "PULSE_MAX_MATCHERS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_matchers: u32,

    /// What one subscription's URL patterns may cost together, in bytes of memory they are
    /// estimated to hold (about 2 kB a simple pattern); more is refused with `400`.
    #[arg(long, env = "PULSE_PATTERN_BUDGET", default_value_t = 256 << 10, value_parser = clap::value_parser!(u64).range(4096..=1 << 30))]
    pub pattern_budget: u64,

    /// What the live subscriptions of one client address (an IPv6 /64) may cost together
    /// in URL patterns; more is refused with `429`. `0`: no cap.
    #[arg(long, env = "PULSE_PATTERN_BUDGET_PER_IP", default_value_t = 4 << 20)]
    pub pattern_budget_per_ip: u64,

    /// What every distinct URL pattern on the hub may cost together; a subscription that
    /// would add more is refused with `429` (patterns already in use cost nothing more).
    #[arg(long, env = "PULSE_PATTERN_BUDGET_TOTAL", default_value_t = 32 << 20, value_parser = clap::value_parser!(u64).range(4096..=64 << 30))]
    pub pattern_budget_total: u64,

    /// Updates a subscriber may have waiting before it is cut off (it resumes from history).
    #[arg(long, env = "PULSE_SUBSCRIBER_QUEUE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub subscriber_queue: u32,

    /// Bytes of updates a subscriber may have waiting before it is cut off (64 KiB to 1 GiB).
    #[arg(long, env = "PULSE_SUBSCRIBER_QUEUE_BYTES", default_value_t = 4 << 20, value_parser = clap::value_parser!(u32).range(65_536..=1 << 30))]
    pub subscriber_queue_bytes: u32,

    /// Bytes of distinct updates all subscribers together may have waiting; past it, a
    /// subscriber that falls behind is cut off at once (1 MiB to 64 GiB).
    #[arg(long, env = "PULSE_QUEUED_BYTES_TOTAL", default_value_t = 256 << 20, value_parser = clap::value_parser!(u64).range(1 << 20..=64 << 30))]
    pub queued_bytes_total: u64,

    /// Messages per second one client may publish from the topic pages' composer.
    #[arg(long, env = "PULSE_COMPOSER_RATE", default_value_t = 2.0)]
    pub composer_rate: f64,

    /// Messages one client may publish in a burst from the composer.
    #[arg(long, env = "PULSE_COMPOSER_BURST", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub composer_burst: u32,
}

/// Where the hub keeps updates, as the command line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerUrl {
    Memory,
    Redis(String),
}

impl HubArgs {
    /// The hub's settings these flags say, for a server that speaks TLS when `tls` and
    /// whose stall timeout is `stall_timeout`.
    pub fn settings(&self, tls: bool, stall_timeout: Duration) -> HubSettings {
        let size = |bytes: u64| usize::try_from(bytes).unwrap_or(usize::MAX);
        HubSettings {
            broker: match &self.broker {
                BrokerUrl::Memory => BrokerSettings::Memory,
                BrokerUrl::Redis(url) => BrokerSettings::Redis {
                    url: url.clone(),
                    prefix: self.redis_prefix.clone(),
                },
            },
            publisher_jwt_key: self.publisher_jwt_key.clone(),
            publisher_jwt_alg: self.publisher_jwt_alg.clone(),
            subscriber_jwt_key: self.subscriber_jwt_key.clone(),
            subscriber_jwt_alg: self.subscriber_jwt_alg.clone(),
            trusted_issuers: self.trusted_issuers.clone(),
            resource_identifier: self.resource_identifier.clone(),
            anonymous: self.anonymous,
            compat: self.protocol_version_compatibility.is_some(),
            subscriptions: self.subscriptions,
            cors_origins: self.cors_origins.clone(),
            publish_origins: self.publish_origins.clone(),
            cookie_name: self.cookie_name.clone(),
            history_size: self.history_size as usize,
            limits: RequestLimits {
                max_update_bytes: self.max_update_bytes as usize,
                max_topics: self.max_topics as usize,
                max_matchers: self.max_matchers as usize,
            },
            subscriber_queue: self.subscriber_queue as usize,
            subscriber_queue_bytes: self.subscriber_queue_bytes as usize,
            queued_bytes_total: size(self.queued_bytes_total),
            stall_timeout,
            pattern_budget: PatternBudget {
                per_subscription: size(self.pattern_budget),
                per_address: size(self.pattern_budget_per_ip),
                total: size(self.pattern_budget_total),
            },
            composer_rate: self.composer_rate,
            composer_burst: self.composer_burst,
            tls,
        }
    }
}

fn parse_broker(text: &str) -> Result<BrokerUrl, String> {
    let text = text.trim();
    if text == "memory" {
        Ok(BrokerUrl::Memory)
    } else if text.starts_with("redis://") || text.starts_with("rediss://") {
        Ok(BrokerUrl::Redis(text.to_owned()))
    } else {
        Err("use `memory` or a URL like `redis://127.0.0.1:6379/0`".into())
    }
}

pub use crate::telemetry::LogFormat;

impl Config {
    /// The connection settings, with the TLS files loaded.
    pub fn serve_options(&self) -> Result<ServeOptions, TlsError> {
        let config = self;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(crate::net::tls::load(cert, key)?),
            _ => None,
        };
        let max_connections = match config.max_connections {
            Some(max) => max as usize,
            None => caps::default_max_connections(caps::raise_open_file_limit()),
        };
        Ok(ServeOptions {
            tls,
            header_timeout: config.header_timeout,
            stall_timeout: config.stall_timeout,
            fast_path: config.sse_fast_path,
            limits: caps::Caps::new(max_connections, config.max_connections_per_ip as usize),
            ..ServeOptions::default()
        })
    }
}

impl Config {
    /// The settings with every default, as if no flag or variable were given.
    pub fn defaults() -> Self {
        Self::parse_from(["server"])
    }
}

/// A value parser for durations written like `250ms`, `15s` or `1m`, limited to `min..=max`.
fn duration_in(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text| {
        let value = humantime::parse_duration(text.trim())
            .map_err(|error| format!("{error} (write it like `500ms`, `15s` or `1m`)"))?;
        if value < min || value > max {
            return Err(format!(
                "must be between {} and {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_lines_defaults_are_the_hubs_default_settings() {
        let config = Config::try_parse_from(["server"]).expect("defaults parse");
        assert_eq!(
            config.hub.settings(false, config.stall_timeout),
            HubSettings::default()
        );
    }

    #[test]
    fn defaults_match_the_original_example() {
        let config = Config::try_parse_from(["server"]).expect("defaults parse");
        assert_eq!(config.stream_count, 20);
        assert_eq!(config.stream_interval, Duration::from_secs(1));
        assert_eq!(config.stream_retry, Duration::from_secs(15));
    }

    #[test]
    fn short_intervals_parse() {
        let config = Config::try_parse_from([
            "server",
            "--stream-count",
            "5",
            "--stream-interval",
            "20ms",
            "--stream-retry",
            "250ms",
        ])
        .expect("valid flags parse");
        assert_eq!(config.stream_count, 5);
        assert_eq!(config.stream_interval, Duration::from_millis(20));
        assert_eq!(config.stream_retry, Duration::from_millis(250));
    }

    #[test]
    fn tls_needs_both_files() {
        let error = Config::try_parse_from(["server", "--tls-cert", "cert.pem"])
            .expect_err("a certificate without a key is refused")
            .to_string();
        assert!(error.contains("--tls-key"), "{error}");
    }

    #[test]
    fn rejects_values_out_of_range_with_a_clear_message() {
        for (flag, value, expected) in [
            ("--stream-count", "0", "0 is not in 1..=1000000"),
            ("--stream-interval", "0ms", "must be between 1ms and 1h"),
            ("--stream-interval", "soon", "write it like"),
            ("--stream-retry", "2h", "must be between 0s and 1h"),
        ] {
            let error = Config::try_parse_from(["server", flag, value])
                .expect_err("an invalid value is refused")
                .to_string();
            assert!(error.contains(flag), "{error}");
            assert!(error.contains(expected), "{error}");
        }
    }
}
