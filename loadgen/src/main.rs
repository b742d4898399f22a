//! The `loadgen` command: parse the flags, run, write the results.
//!
//! Exit status: 0 when the run completed, whatever it measured (misses are results);
//! 1 when it could not be set up or its results not written; 2 for usage errors.

use std::process::ExitCode;

use clap::Parser;
use loadgen::{fleet, report, Cli, Command, Launch};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Worker) = cli.command {
        return fleet::worker_main();
    }
    let plan = match cli.run.into_plan() {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("loadgen: {error}");
            return ExitCode::from(2);
        }
    };
    let launch = if plan.in_process {
        Launch::Threads
    } else {
        match std::env::current_exe() {
            Ok(exe) => Launch::Processes { exe },
            Err(error) => {
                eprintln!("loadgen: cannot find my own executable to start workers: {error}");
                return ExitCode::FAILURE;
            }
        }
    };
    let report = match loadgen::run(&plan, launch) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("loadgen: {error}");
            return ExitCode::FAILURE;
        }
    };
    if !plan.quiet {
        eprint!("{}", report.summary_text());
    }
    if let Err(error) = report::write_json(&report, plan.out.as_deref()) {
        eprintln!("loadgen: cannot write the results: {error}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
