//! `server`: serves Pulse. Run `server --help` for its settings; under `cargo leptos watch`
//! the site's paths come from cargo-leptos's environment.

use std::process::ExitCode;

use clap::Parser;
use server::{config::Config, serve::serve, shutdown, telemetry, AppState};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(error) = telemetry::init(&config) {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    let listener = match TcpListener::bind(config.addr).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(addr = %config.addr, %error, "cannot listen");
            eprintln!("error: cannot listen on {}: {error}", config.addr);
            return ExitCode::FAILURE;
        }
    };
    let token = CancellationToken::new();
    shutdown::cancel_on_signal(token.clone());
    tracing::info!(addr = %config.addr, "listening on http://{}", config.addr);
    let app = server::app(AppState::new(&config, token.clone()));
    match serve(listener, app, token).await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "server failed");
            ExitCode::FAILURE
        }
    }
}
