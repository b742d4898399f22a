//! `server`: serves Pulse. Run `server --help` for its settings; under `cargo leptos watch`
//! the site's paths come from cargo-leptos's environment.

use std::process::ExitCode;

use clap::Parser;
use server::config::{Command, Config};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let outcome = match &config.command {
        Some(Command::Token(args)) => server::print_token(&config, args),
        None => server::run(config).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "stopped");
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
