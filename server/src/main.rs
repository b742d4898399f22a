//! `server`: serves Pulse. Run `server --help` for its settings; under `cargo leptos watch`
//! the site's paths come from cargo-leptos's environment.

use std::process::ExitCode;

use clap::Parser;
use server::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    match server::run(Config::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "stopped");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
