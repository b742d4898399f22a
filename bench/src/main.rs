//! The `bench` command: `bench run` measures and writes the results; `bench render`
//! redoes the report and charts from a results file.
//!
//! Exit status: 0 when the run completed (whatever the goals say), 1 when it could not be
//! carried out, 2 for usage errors, 130 when interrupted (partial results are written).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{atomic::AtomicBool, Arc},
};

use bench::{
    goals,
    results::Results,
    run::{self, Options},
    scenarios::Profile,
    targets::Tools,
};
use clap::{Args, Parser, Subcommand};

/// Benchmarks Pulse next to nginx + nchan and FastAPI + sse-starlette.
#[derive(Debug, Parser)]
#[command(name = "bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the benchmark and write the results (about 20 minutes; `--quick`: about 4).
    Run(Box<RunArgs>),
    /// Serve as the floor target: the least a server can do (loopback only; runs until
    /// killed). `bench run` starts it by itself.
    FloorServer {
        /// The port on 127.0.0.1.
        #[arg(long)]
        port: u16,
        /// Messages per `/stream`.
        #[arg(long, default_value_t = 20)]
        stream_count: u32,
        /// Milliseconds between two `/stream` messages.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
        stream_interval_ms: u64,
    },
    /// Write the report and charts again from a results file.
    Render {
        /// A `bench/results/<date>.json`.
        results: PathBuf,
        /// Where to write (default: beside the file).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Where the results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// A much shorter run with small crowds, to check the tooling.
    #[arg(long)]
    quick: bool,
    /// Only these parts: capacity, redis, fanout, counter, floor, latency, page
    /// (comma-separated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these targets for the single-instance scenarios: pulse, nchan, starlette, and
    /// floor (the minimal server, measured at the goals' points).
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// Start no new step after this many minutes [default: 35, quick: 10].
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Pulse's release binary.
    #[arg(long, default_value = "target/release/server")]
    server: PathBuf,
    /// loadgen's release binary.
    #[arg(long, default_value = "target/release/loadgen")]
    loadgen: PathBuf,
    /// The Python venv with the sse-starlette app's packages.
    #[arg(long, default_value = "bench/.venv")]
    venv: PathBuf,
    /// nginx.
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// The nchan module (Debian's libnginx-mod-nchan).
    #[arg(long, default_value = "/usr/lib/nginx/modules/ngx_nchan_module.so")]
    nchan_module: PathBuf,
    /// redis-server.
    #[arg(long, default_value = "/usr/bin/redis-server")]
    redis_server: PathBuf,
    /// node (for the page measurement) [default: from PATH].
    #[arg(long)]
    node: Option<PathBuf>,
    /// Debian's chromium.
    #[arg(long, default_value = "/usr/bin/chromium")]
    chromium: PathBuf,
    /// The built site (`cargo leptos build --release` writes it).
    #[arg(long, default_value = "target/site")]
    site_root: PathBuf,
    /// Scratch space for logs and loadgen's files.
    #[arg(long, default_value = "bench/work")]
    work: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run_command(*args),
        Command::Render { results, out } => render_command(&results, out),
        Command::FloorServer {
            port,
            stream_count,
            stream_interval_ms,
        } => floor_command(port, stream_count, stream_interval_ms),
    }
}

fn floor_command(port: u16, count: u32, interval_ms: u64) -> ExitCode {
    let settings = bench::floor::CounterSettings {
        count,
        interval: std::time::Duration::from_millis(interval_ms),
    };
    match bench::floor::start(port, settings) {
        Ok(addr) => {
            eprintln!("floor-server: listening on {addr}");
            loop {
                std::thread::park();
            }
        }
        Err(error) => {
            eprintln!("floor-server: cannot listen on 127.0.0.1:{port}: {error}");
            ExitCode::from(1)
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn find_in_path(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| PathBuf::from(program))
}

fn run_command(args: RunArgs) -> ExitCode {
    let repo = absolute(Path::new("."));
    if !repo.join("bench/nchan/nginx.conf").exists() {
        eprintln!("bench: run me from the repository's root (bench/nchan/nginx.conf not found)");
        return ExitCode::from(2);
    }
    let mut profile = if args.quick {
        Profile::quick()
    } else {
        Profile::full()
    };
    if let Some(minutes) = args.max_minutes {
        if !(minutes.is_finite() && minutes > 0.0 && minutes <= 120.0) {
            eprintln!("bench: --max-minutes must be more than 0 and at most 120");
            return ExitCode::from(2);
        }
        profile.max_minutes = minutes;
    }
    if !args.targets.is_empty() {
        let mut chosen = Vec::new();
        for name in &args.targets {
            match profile.targets.iter().find(|target| target.name() == name) {
                Some(target) => chosen.push(*target),
                None if name == "floor" => {}
                None => {
                    eprintln!("bench: unknown target {name:?} (pulse, nchan, starlette, floor)");
                    return ExitCode::from(2);
                }
            }
        }
        profile.targets = chosen;
        profile.floor = args.targets.iter().any(|name| name == "floor");
    }
    for part in &args.only {
        if ![
            "capacity", "redis", "fanout", "counter", "floor", "latency", "page",
        ]
        .contains(&part.as_str())
        {
            eprintln!(
                "bench: unknown part {part:?} (capacity, redis, fanout, counter, floor, latency, page)"
            );
            return ExitCode::from(2);
        }
    }
    let work = absolute(&args.work).join(format!("run-{}", bench::util::unix_ms()));
    prune_old_work(&absolute(&args.work));
    let tools = Tools {
        repo: repo.clone(),
        server: absolute(&args.server),
        loadgen: absolute(&args.loadgen),
        bench: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("target/release/bench")),
        venv: absolute(&args.venv),
        nginx: args.nginx,
        nchan_module: args.nchan_module,
        redis: args.redis_server,
        node: args.node.unwrap_or_else(|| find_in_path("node")),
        chromium: args.chromium,
        site_root: absolute(&args.site_root),
        work,
    };
    let options = Options {
        out: absolute(&args.out),
        profile,
        tools,
        only: args.only,
        partial_targets: !args.targets.is_empty(),
    };

    // Ctrl-C and SIGTERM set the flag: the current loadgen run stops early, every server
    // is stopped, and the results so far are written.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(error) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("bench: cannot handle signal {signal}: {error}");
            return ExitCode::FAILURE;
        }
    }
    match run::run(&options, &stop) {
        Ok((results, report)) => {
            eprintln!();
            eprintln!("{}", goals_text(&results));
            eprintln!("bench: report: {}", report.display());
            if results.interrupted {
                eprintln!("bench: interrupted; the results are partial");
                ExitCode::from(130)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("bench: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Keeps the three newest `run-*` scratch folders.
fn prune_old_work(work: &Path) {
    let Ok(entries) = std::fs::read_dir(work) else {
        return;
    };
    let mut runs: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_dir()
                && path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with("run-"))
        })
        .collect();
    runs.sort();
    let keep = 3;
    if runs.len() > keep {
        for old in &runs[..runs.len() - keep] {
            let _ = std::fs::remove_dir_all(old);
        }
    }
}

fn goals_text(results: &Results) -> String {
    let mut text = String::from("Goals:\n");
    for goal in &results.goals {
        text.push_str(&format!(
            "  {:<16} {}: Pulse {} | nchan {} | starlette {}\n",
            goal.status.label(),
            goal.goal,
            goal.pulse,
            goal.nchan,
            goal.starlette
        ));
    }
    text
}

fn render_command(path: &Path, out: Option<PathBuf>) -> ExitCode {
    let mut results: Results = match std::fs::read_to_string(path)
        .map_err(|error| error.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|error| error.to_string()))
    {
        Ok(results) => results,
        Err(error) => {
            eprintln!("bench: {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    };
    // The goals are evaluated again, so that a change in how they are judged shows.
    results.goals = goals::evaluate(&results);
    let dir = out.unwrap_or_else(|| path.parent().map(Path::to_owned).unwrap_or_default());
    match run::write_results(&results, &dir) {
        Ok(report) => {
            eprintln!("bench: report: {}", report.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bench: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_help_states_the_profiles_time_budgets() {
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("run")
            .unwrap()
            .render_long_help()
            .to_string();
        let budgets = format!(
            "[default: {}, quick: {}]",
            Profile::full().max_minutes,
            Profile::quick().max_minutes
        );
        assert!(help.contains(&budgets), "{budgets} not in\n{help}");
    }
}
