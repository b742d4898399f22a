//! `attack`: plays the hostile clients of `SECURITY.md` against a release Pulse on loopback
//! and prints what each attack costs it (memory, CPU, a healthy subscriber's latency, how
//! fast it answers). Figures, not verdicts: the targets are printed next to them.
//!
//! ```sh
//! cargo build --release -p server -p attack
//! target/release/attack                 # every scenario, about 2 minutes
//! target/release/attack --only patterns
//! ```
//!
//! Each scenario starts its own server (`--server`, default `target/release/server`) on a
//! free loopback port and stops it by its PID; every client is on 127.0.0.0/8, bounded in
//! count and time.

mod client;
mod pulse;
mod scenarios;

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;

/// Plays hostile clients against a release Pulse on loopback and prints what they cost it.
#[derive(Debug, Parser)]
#[command(name = "attack", version)]
pub struct Cli {
    /// Pulse's release binary.
    #[arg(long, default_value = "target/release/server")]
    pub server: PathBuf,
    /// Only these scenarios: patterns, slow-readers, connections (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// How long each attack lasts, in seconds.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    pub seconds: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.server.is_file() {
        eprintln!(
            "error: no server binary at {} (build it: cargo build --release -p server)",
            cli.server.display()
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(scenarios::run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
