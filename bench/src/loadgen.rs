//! Running loadgen as a subprocess: its command line for each scenario, a time limit, and
//! its JSON results.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::{
    fail,
    procs::{stopping, Proc, StopFlag},
    targets::{Running, PUBLISHER_KEY},
    util::Result,
};

/// One loadgen run, before it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// The arguments.
    pub args: Vec<String>,
    /// Where loadgen writes its JSON.
    pub out: PathBuf,
    /// How long loadgen itself may take at most (duration, drain, ramp, margins).
    pub expected_s: f64,
}

/// What a run subscribes to and publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadPlan {
    /// Subscriptions.
    pub connections: usize,
    /// Connections opened per second.
    pub ramp_rate: f64,
    /// `--duration`, seconds.
    pub duration_s: f64,
    /// `--drain`, seconds.
    pub drain_s: f64,
    /// `--connect-timeout`, seconds.
    pub connect_timeout_s: u64,
    /// What to do.
    pub mode: Mode,
}

/// Publish updates to a topic, or read the counter stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Subscribe to `topic` and publish to it.
    Publish {
        /// The topic (one per run, so nothing from an earlier run is replayed).
        topic: String,
        /// Updates per second.
        rate: f64,
        /// Payload bytes.
        payload_size: usize,
    },
    /// Read `/stream` and check that every stream carries ids 1…`ids`.
    Counter {
        /// Messages per stream: the server's stream count.
        ids: u32,
    },
}

impl Invocation {
    /// loadgen's command line for `plan` against `target`.
    pub fn new(plan: &LoadPlan, target: &Running, out: &Path) -> Result<Self> {
        let mut args: Vec<String> = Vec::new();
        let mut push = |flag: &str, value: String| {
            args.push(flag.to_owned());
            args.push(value);
        };
        match &plan.mode {
            Mode::Publish {
                topic,
                rate,
                payload_size,
            } => {
                for url in &target.subscribe_urls {
                    push("--subscribe-url", url.clone());
                }
                push("--api", target.api.to_owned());
                push("--publish-url", target.publish_url.clone());
                push("--topic", topic.clone());
                push("--publish-rate", format_number(*rate));
                push("--payload-size", payload_size.to_string());
                // Enough requests in flight that a publisher answered after the fan-out
                // still reaches the rate for a while (the backlog is reported).
                push("--publish-concurrency", "16".to_owned());
            }
            Mode::Counter { .. } => {
                let url = target
                    .stream_url
                    .clone()
                    .ok_or_else(|| fail!("{} has no counter stream", target.target))?;
                push("--subscribe-url", url);
            }
        }
        push("--connections", plan.connections.to_string());
        push("--ramp-rate", format_number(plan.ramp_rate));
        push("--duration", format!("{}s", format_number(plan.duration_s)));
        push("--drain", format!("{}ms", (plan.drain_s * 1000.0).round()));
        push("--connect-timeout", format!("{}s", plan.connect_timeout_s));
        for pid in &target.server_pids {
            push("--server-pid", pid.to_string());
        }
        push("--out", out.display().to_string());
        match plan.mode {
            Mode::Publish { .. } => args.push("--publish-after-ramp".to_owned()),
            // Owed ids 1…N on every stream, not up to the highest each saw: a stream that
            // lost its last messages, or got none, shows as missing them.
            Mode::Counter { ids } => {
                args.push("--expect-ids".to_owned());
                args.push(ids.to_string());
            }
        }
        // loadgen stops on its own after duration + drain; it also needs time to settle
        // the ramp (up to the connect timeout) and to collect its workers' summaries.
        let expected_s = plan.duration_s + plan.drain_s + plan.connect_timeout_s as f64 + 30.0;
        Ok(Self {
            args,
            out: out.to_owned(),
            expected_s,
        })
    }

    /// Runs loadgen and reads its results; interrupted by `stop` (loadgen then stops early
    /// and still writes what it measured).
    pub fn run(&self, loadgen: &Path, log: &Path, stop: &StopFlag) -> Result<Value> {
        let _ = std::fs::remove_file(&self.out);
        let mut command = Command::new(loadgen);
        command
            .args(&self.args)
            // The key stays out of the process list.
            .env("LOADGEN_JWT_KEY", PUBLISHER_KEY);
        let mut proc = Proc::spawn("loadgen", &mut command, log, Duration::from_secs(25))?;
        let deadline = Instant::now() + Duration::from_secs_f64(self.expected_s);
        while !proc.wait_until(Instant::now() + Duration::from_millis(200)) {
            if stopping(stop) || Instant::now() >= deadline {
                if !stopping(stop) {
                    eprintln!(
                        "bench: loadgen is over its time ({:.0}s); stopping it",
                        self.expected_s
                    );
                }
                // loadgen stops early on SIGINT and still writes its results.
                proc.signal(Signal::SIGINT);
                if !proc.wait_until(Instant::now() + Duration::from_secs(30)) {
                    proc.stop();
                }
                break;
            }
        }
        let ended = proc.ended().unwrap_or_default();
        proc.stop();
        let text = std::fs::read_to_string(&self.out).map_err(|error| {
            fail!(
                "loadgen wrote no results ({ended}; {error}): {}",
                crate::procs::log_tail(log, 800)
            )
        })?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// A number without a needless fraction: `100`, `0.5`.
fn format_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::Target;

    fn running(target: Target, subscribe: Vec<&str>, publish: &str, api: &'static str) -> Running {
        Running::for_tests(
            target,
            subscribe.into_iter().map(str::to_owned).collect(),
            publish.to_owned(),
            api,
            Some("http://127.0.0.1:3000/stream".to_owned()),
            vec![11, 12],
        )
    }

    #[test]
    fn a_publish_run_spreads_over_every_subscribe_url() {
        let target = running(
            Target::PulseRedis,
            vec![
                "http://127.0.0.1:3001/.well-known/mercure?match={topic}",
                "http://127.0.0.1:3002/.well-known/mercure?match={topic}",
            ],
            "http://127.0.0.1:3001/.well-known/mercure",
            "mercure",
        );
        let plan = LoadPlan {
            connections: 39_800,
            ramp_rate: 2000.0,
            duration_s: 36.0,
            drain_s: 2.0,
            connect_timeout_s: 30,
            mode: Mode::Publish {
                topic: "bench-capacity-39800".into(),
                rate: 1.0,
                payload_size: 128,
            },
        };
        let invocation = Invocation::new(&plan, &target, Path::new("/w/x.json")).unwrap();
        let args = invocation.args.join(" ");
        assert_eq!(
            invocation
                .args
                .iter()
                .filter(|a| *a == "--subscribe-url")
                .count(),
            2
        );
        assert!(
            args.contains("--api mercure --publish-url http://127.0.0.1:3001/.well-known/mercure")
        );
        assert!(args.contains("--topic bench-capacity-39800 --publish-rate 1 --payload-size 128"));
        assert!(args.contains("--connections 39800 --ramp-rate 2000 --duration 36s --drain 2000ms"));
        assert!(args.contains("--server-pid 11 --server-pid 12"));
        assert!(args.contains("--out /w/x.json"));
        assert!(args.ends_with("--publish-after-ramp"));
        assert!(!args.contains(PUBLISHER_KEY));
        assert_eq!(invocation.expected_s, 36.0 + 2.0 + 30.0 + 30.0);
    }

    #[test]
    fn a_counter_run_checks_ids_and_needs_a_stream() {
        let target = running(Target::Pulse, vec!["x"], "y", "mercure");
        let plan = LoadPlan {
            connections: 5000,
            ramp_rate: 2000.0,
            duration_s: 0.5,
            drain_s: 0.0,
            connect_timeout_s: 10,
            mode: Mode::Counter { ids: 20 },
        };
        let invocation = Invocation::new(&plan, &target, Path::new("o.json")).unwrap();
        let args = invocation.args.join(" ");
        assert!(args.starts_with("--subscribe-url http://127.0.0.1:3000/stream --connections 5000"));
        assert!(args.contains("--duration 0.5s --drain 0ms"));
        assert!(args.ends_with("--expect-ids 20"), "{args}");
        assert!(!args.contains("--api"));

        let nchan = Running::for_tests(Target::Nchan, vec![], String::new(), "nchan", None, vec![]);
        assert!(Invocation::new(&plan, &nchan, Path::new("o.json")).is_err());
    }
}
