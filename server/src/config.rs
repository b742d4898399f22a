//! The server's settings: one typed struct, read from flags with environment fallbacks.
//!
//! Every value is checked when the server starts; a bad one stops it with a message that
//! names the flag, the variable and the accepted range.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

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

    /// Time a client gets to send its request head or finish the TLS handshake (100ms to 10m).
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

    /// Log filter, in `tracing` syntax (`info`, `server=debug,tower_http=info`, …).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log: String,

    /// Log format: human-readable `text`, or `json` for log collectors.
    #[arg(long, env = "PULSE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
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
