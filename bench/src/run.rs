//! The benchmark run: every scenario against every target, one loadgen run at a time, each
//! with a freshly started server on free loopback ports, then the results files.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    charts,
    figures::Figures,
    goals,
    loadgen::{Invocation, LoadPlan, Mode},
    machine::{self, Machine},
    markdown, page,
    procs::{stopping, StopFlag},
    results::{Results, RunRecord, SCHEMA},
    scenarios::{Profile, Scenario},
    targets::{self, StreamSettings, Target, Tools},
    util::{
        fmt_bytes, fmt_cpu_s, fmt_percent, fmt_rate, fmt_us, thousands, unix_ms, utc_date, Result,
    },
};

/// What to run and where to write.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the results go (`bench/results`).
    pub out: PathBuf,
    /// The profile (full or quick).
    pub profile: Profile,
    /// Programs and folders.
    pub tools: Tools,
    /// Parts to run (`capacity`, `redis`, `fanout`, `counter`, `floor`, `latency`, `page`);
    /// empty: all.
    pub only: Vec<String>,
    /// The profile's targets were narrowed (`--targets`).
    pub partial_targets: bool,
}

impl Options {
    fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|name| name == part)
    }
}

/// Progress on stderr.
struct Progress {
    started: Instant,
    done: usize,
    planned: usize,
}

impl Progress {
    fn clock(&self) -> String {
        let seconds = self.started.elapsed().as_secs();
        format!("[{:>2}:{:02}]", seconds / 60, seconds % 60)
    }

    fn say(&self, text: &str) {
        eprintln!("{} {text}", self.clock());
    }
}

/// Carries out the benchmark; returns the results and the report's path.
pub fn run(options: &Options, stop: &StopFlag) -> Result<(Results, PathBuf)> {
    let profile = &options.profile;
    let tools = &options.tools;
    std::fs::create_dir_all(&tools.work)?;
    if !tools.loadgen.exists() {
        return Err(crate::fail!(
            "loadgen is missing: {} (cargo build --release -p loadgen)",
            tools.loadgen.display()
        ));
    }
    let started_unix_ms = unix_ms();
    let mut results = Results {
        schema: SCHEMA,
        date: utc_date(started_unix_ms),
        quick: profile.quick,
        partial: !options.only.is_empty() || options.partial_targets,
        started_unix_ms,
        finished_unix_ms: started_unix_ms,
        interrupted: false,
        machine: Machine::read(),
        versions: machine::versions(tools),
        profile: profile.clone(),
        runs: Vec::new(),
        page: None,
        goals: Vec::new(),
        notes: Vec::new(),
    };
    for target in [
        Target::Pulse,
        Target::PulseRedis,
        Target::Nchan,
        Target::Starlette,
        Target::Floor,
    ] {
        if let Some(missing) = tools.missing_for(target) {
            results.notes.push(format!(
                "{}: {missing}; its steps are skipped",
                target.label()
            ));
        }
    }
    let mut progress = Progress {
        started: Instant::now(),
        done: 0,
        planned: profile.planned_runs(),
    };
    eprintln!(
        "bench: {} run, up to {} loadgen runs, about {:.0} minutes at most; machine: {}",
        if profile.quick { "quick" } else { "full" },
        progress.planned,
        profile.estimate_s() / 60.0,
        results.machine.summary()
    );
    let budget = Instant::now() + Duration::from_secs_f64(profile.max_minutes * 60.0);
    let mut runner = Runner {
        options,
        stop,
        budget,
        progress: &mut progress,
        notes: Vec::new(),
    };

    if options.wants("page") && !stopping(stop) {
        runner
            .progress
            .say("page: WASM sizes and the first message in chromium");
        let page = page::measure(tools, profile.page_runs, stop);
        runner.progress.say(&page_summary(&page));
        results.page = Some(page);
    }

    if options.wants("capacity") {
        for &size in &profile.capacity_sizes {
            for &target in &profile.targets {
                if let Some(record) = runner.publish_step(
                    Scenario::Capacity,
                    target,
                    size,
                    profile.capacity_rate,
                    profile.capacity_hold_s,
                    None,
                ) {
                    results.runs.push(record);
                }
            }
        }
    }
    // Two Pulse instances: part of the capacity scenario when Pulse is among the targets.
    let redis_wanted = options.only.iter().any(|part| part == "redis")
        || (options.wants("capacity") && profile.targets.contains(&Target::Pulse));
    if redis_wanted && profile.redis_size > 0 {
        if let Some(record) = runner.publish_step(
            Scenario::Capacity,
            Target::PulseRedis,
            profile.redis_size,
            profile.capacity_rate,
            profile.capacity_hold_s,
            None,
        ) {
            results.runs.push(record);
        }
    }

    if options.wants("fanout") {
        for series in &profile.fanout {
            for &target in &profile.targets {
                for (step, &rate) in series.rates.iter().enumerate() {
                    let Some(mut record) = runner.publish_step(
                        Scenario::Fanout,
                        target,
                        series.subscribers,
                        rate,
                        profile.fanout_hold_s,
                        None,
                    ) else {
                        break;
                    };
                    let behind = record.figures.as_ref().map(|f| profile.ends_series(f));
                    if record
                        .figures
                        .as_ref()
                        .is_some_and(|f| !f.measured_delivery())
                    {
                        runner.notes.push(format!(
                            "fan-out · {} · {} subscribers × {rate}/s: nothing was delivered \
                             (publishing starts once every connection is in, and the crowd \
                             was not in by the end of the step); the series stops there",
                            target.label(),
                            thousands(series.subscribers as u64)
                        ));
                    }
                    record.behind = behind;
                    results.runs.push(record);
                    if behind != Some(false) {
                        let goal = profile.goal_rate_after_stop(series, step);
                        let skipped = series.rates.len() - step - 1 - usize::from(goal.is_some());
                        runner.progress.planned = runner.progress.planned.saturating_sub(skipped);
                        if skipped > 0 {
                            runner.progress.say(&format!(
                                "       {} fell behind at {rate}/s with {} subscribers: {skipped} faster step(s) not run{}",
                                target.label(),
                                thousands(series.subscribers as u64),
                                goal.map(|goal| format!(" ({goal}/s, the goal's point, is)"))
                                    .unwrap_or_default()
                            ));
                        }
                        if let Some(goal) = goal {
                            if let Some(mut record) = runner.publish_step(
                                Scenario::Fanout,
                                target,
                                series.subscribers,
                                goal,
                                profile.fanout_hold_s,
                                None,
                            ) {
                                record.behind =
                                    record.figures.as_ref().map(|f| profile.ends_series(f));
                                results.runs.push(record);
                            }
                        }
                        break;
                    }
                }
            }
        }
    }

    if options.wants("counter") {
        for &clients in &profile.counter_clients {
            for &target in &profile.targets {
                if target == Target::Nchan {
                    continue;
                }
                if let Some(record) = runner.counter_step(target, clients) {
                    results.runs.push(record);
                }
            }
        }
    }

    // The floor, at the points the goals are read at: what any server would pay here.
    if options.wants("floor") && profile.floor {
        let points = profile.points;
        let capacity = runner.publish_step(
            Scenario::Capacity,
            Target::Floor,
            points.p99_at,
            profile.capacity_rate,
            profile.capacity_hold_s,
            None,
        );
        let fanout = runner.publish_step(
            Scenario::Fanout,
            Target::Floor,
            points.cpu_subscribers,
            points.cpu_rate,
            profile.fanout_hold_s,
            None,
        );
        let counter = runner.counter_step(Target::Floor, points.counter_clients);
        results
            .runs
            .extend([capacity, fanout, counter].into_iter().flatten());
    }

    // The p99 goal's point again, round by round (so that a slow spell of the machine
    // does not fall on one server's runs only): the goal reads the median.
    if options.wants("latency") {
        for round in 1..=profile.latency_repeats {
            for target in profile.latency_targets() {
                if let Some(record) = runner.publish_step(
                    Scenario::Latency,
                    target,
                    profile.points.p99_at,
                    profile.capacity_rate,
                    profile.capacity_hold_s,
                    Some(round),
                ) {
                    results.runs.push(record);
                }
            }
        }
    }

    results.notes.append(&mut runner.notes);
    results.interrupted = stopping(stop);
    results.finished_unix_ms = unix_ms();
    results.goals = goals::evaluate(&results);
    let report = write_results(&results, &options.out)?;
    Ok((results, report))
}

/// Writes `<date>[-quick][-partial].json`, `.md` and the charts; for a complete full run
/// also `latest.md` and `latest-*.svg`. Returns the report's path.
pub fn write_results(results: &Results, out: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let mut stem = results.date.clone();
    if results.quick {
        stem.push_str("-quick");
    }
    if results.partial {
        stem.push_str("-partial");
    }
    std::fs::write(
        out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(results)? + "\n",
    )?;
    let prefix = format!("{stem}-");
    charts::write_all(results, out, &prefix)?;
    let report = out.join(format!("{stem}.md"));
    std::fs::write(&report, markdown::render(results, &prefix))?;
    if !results.quick && !results.partial {
        charts::write_all(results, out, "latest-")?;
        std::fs::write(out.join("latest.md"), markdown::render(results, "latest-"))?;
    }
    Ok(report)
}

struct Runner<'a> {
    options: &'a Options,
    stop: &'a StopFlag,
    budget: Instant,
    progress: &'a mut Progress,
    notes: Vec<String>,
}

impl Runner<'_> {
    /// Whether another step may start; notes why not.
    fn may_start(&mut self, what: &str) -> bool {
        if stopping(self.stop) {
            return false;
        }
        if Instant::now() >= self.budget {
            self.notes.push(format!(
                "{what}: not run, the run's time budget ({} min) was spent",
                self.options.profile.max_minutes
            ));
            return false;
        }
        true
    }

    /// A publishing step; `round` numbers a step measured more than once.
    fn publish_step(
        &mut self,
        scenario: Scenario,
        target: Target,
        subscribers: usize,
        rate: f64,
        hold_s: f64,
        round: Option<usize>,
    ) -> Option<RunRecord> {
        let profile = &self.options.profile;
        let what = format!(
            "{} · {} · {} subscribers × {rate}/s{}",
            scenario.name(),
            target.label(),
            thousands(subscribers as u64),
            round
                .map(|round| format!(" (again, {round})"))
                .unwrap_or_default()
        );
        if !self.may_start(&what) {
            return None;
        }
        let tag = format!(
            "{}-{}-{subscribers}-{rate}{}",
            scenario.name(),
            target.name(),
            round.map(|round| format!("-{round}")).unwrap_or_default()
        );
        let plan = LoadPlan {
            connections: subscribers,
            ramp_rate: profile.publish_ramp_rate(target),
            duration_s: profile.duration_s(target, subscribers, hold_s),
            drain_s: profile.drain_s,
            connect_timeout_s: profile.connect_timeout_s,
            mode: Mode::Publish {
                topic: format!("bench-{tag}-{}", unix_ms()),
                rate,
                payload_size: profile.payload_size,
            },
        };
        Some(self.step(
            scenario,
            target,
            subscribers,
            Some(rate),
            &what,
            &tag,
            &plan,
        ))
    }

    fn counter_step(&mut self, target: Target, clients: usize) -> Option<RunRecord> {
        let profile = &self.options.profile;
        let what = format!(
            "counter · {} · {} clients of /stream",
            target.label(),
            thousands(clients as u64)
        );
        if !self.may_start(&what) {
            return None;
        }
        let tag = format!("counter-{}-{clients}", target.name());
        let plan = LoadPlan {
            connections: clients,
            ramp_rate: profile.ramp_rate,
            duration_s: profile.counter_duration_s(clients),
            drain_s: 0.0,
            connect_timeout_s: profile.connect_timeout_s,
            mode: Mode::Counter {
                ids: profile.stream.count,
            },
        };
        Some(self.step(Scenario::Counter, target, clients, None, &what, &tag, &plan))
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        scenario: Scenario,
        target: Target,
        subscribers: usize,
        rate: Option<f64>,
        what: &str,
        tag: &str,
        plan: &LoadPlan,
    ) -> RunRecord {
        self.progress.done += 1;
        self.progress.say(&format!(
            "({}/{}) {what} …",
            self.progress.done, self.progress.planned
        ));
        let started = Instant::now();
        let busy_cores_before = machine::busy_cores(Duration::from_millis(500));
        let stream = match scenario {
            Scenario::Counter => self.options.profile.stream,
            _ => StreamSettings::default(),
        };
        let tools = &self.options.tools;
        let outcome = (|| -> Result<(serde_json::Value, Option<String>)> {
            let mut running = targets::start(target, tools, stream, tag)?;
            let invocation =
                Invocation::new(plan, &running, &tools.work.join(format!("{tag}.json")))?;
            let log = tools.work.join("logs").join(format!("{tag}-loadgen.log"));
            let json = invocation.run(&tools.loadgen, &log, self.stop)?;
            // A server that died during the run still has figures; say that it died.
            let crashed = running.check_alive().err().map(|error| error.0);
            let killed = running.stop();
            let problem = match (crashed, killed) {
                (Some(crash), _) => Some(crash),
                (None, true) => Some("the server had to be killed after the run".to_owned()),
                (None, false) => None,
            };
            Ok((json, problem))
        })();
        let wall_s = started.elapsed().as_secs_f64();
        let record = match outcome {
            Ok((json, problem)) => {
                let figures = Figures::from_loadgen(&json);
                self.progress
                    .say(&format!("       {}", run_summary(scenario, &figures)));
                if let Some(problem) = &problem {
                    self.progress.say(&format!("       warning: {problem}"));
                }
                RunRecord {
                    scenario,
                    target,
                    subscribers,
                    rate,
                    figures: Some(figures),
                    error: problem,
                    behind: None,
                    wall_s,
                    busy_cores_before,
                    loadgen: Some(json),
                }
            }
            Err(error) => {
                self.progress.say(&format!("       error: {error}"));
                self.notes.push(format!("{what}: {error}"));
                RunRecord {
                    scenario,
                    target,
                    subscribers,
                    rate,
                    figures: None,
                    error: Some(error.0),
                    behind: None,
                    wall_s,
                    busy_cores_before,
                    loadgen: None,
                }
            }
        };
        record
    }
}

/// One line about a finished run, with loadgen's CPU next to the server's.
pub fn run_summary(scenario: Scenario, f: &Figures) -> String {
    let server = f.server.as_ref();
    let loadgen = format!(
        "loadgen {} ({})",
        fmt_percent(f.loadgen_cpu_percent_avg),
        fmt_cpu_s(f.loadgen_cpu_s)
    );
    let p99 = if f.latency.count > 0 {
        fmt_us(f.latency.p99_us)
    } else {
        "–".to_owned()
    };
    let failed = if f.failed + f.errored > 0 {
        format!(", {} failed", thousands(f.failed + f.errored))
    } else {
        String::new()
    };
    match scenario {
        Scenario::Capacity | Scenario::Latency => format!(
            "held {}/{}{failed}, {} published, missing {}, dup {}, p99 {}, RSS/conn {}, server CPU {} | {loadgen}",
            thousands(f.open_at_stop),
            thousands(f.requested),
            thousands(f.publish.as_ref().map_or(0, |p| p.ok)),
            thousands(f.missing),
            thousands(f.duplicates),
            p99,
            server
                .and_then(|s| s.rss_bytes_per_connection)
                .map_or_else(|| "–".into(), fmt_bytes),
            server.map_or_else(|| "–".into(), |s| fmt_cpu_s(s.cpu_s)),
        ),
        Scenario::Fanout => format!(
            "{} delivered ({}){failed}, p50 {}, p99 {}, server {} ({} per delivery) | {loadgen}",
            f.deliveries_per_s.map_or_else(|| "–".into(), fmt_rate),
            f.delivered_ratio
                .map_or_else(|| "–".into(), |ratio| format!("{:.2}%", ratio * 100.0)),
            if f.latency.count > 0 {
                fmt_us(f.latency.p50_us)
            } else {
                "–".to_owned()
            },
            p99,
            f.window
                .and_then(|w| w.server_percent())
                .map_or_else(|| "–".into(), fmt_percent),
            f.server_us_per_delivery()
                .map_or_else(|| "–".into(), |us| format!("{us:.2} µs")),
        ),
        Scenario::Counter => format!(
            "completed {}/{}{failed}, missing {}, server CPU {}, peak RSS {} | {loadgen}",
            f.completed_streams()
                .map_or_else(|| "–".into(), thousands),
            thousands(f.requested),
            thousands(f.missing),
            server.map_or_else(|| "–".into(), |s| fmt_cpu_s(s.cpu_s)),
            server.map_or_else(|| "–".into(), |s| fmt_bytes(s.rss_kb_peak as f64 * 1024.0)),
        ),
    }
}

fn page_summary(page: &page::PageResult) -> String {
    let sizes: Vec<String> = page
        .wasm
        .iter()
        .map(|file| {
            format!(
                "{} {} raw, {} gzip, {} brotli",
                file.file,
                fmt_bytes(file.raw as f64),
                fmt_bytes(file.gzip as f64),
                fmt_bytes(file.brotli as f64)
            )
        })
        .collect();
    let first = page
        .first_message
        .as_ref()
        .and_then(|first| first.median_ms.map(|ms| (ms, first.runs_ms.len())))
        .map_or_else(
            || "no first-message figure".to_owned(),
            |(ms, runs)| format!("first message median {ms:.0} ms ({runs} navigations)"),
        );
    let error = page
        .error
        .as_ref()
        .map(|error| format!("; error: {error}"))
        .unwrap_or_default();
    format!("       page: {}; {first}{error}", sizes.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{figures::tests::sample_report, goals::tests::results};

    #[test]
    fn summaries_put_loadgen_next_to_the_server() {
        let f = Figures::from_loadgen(&sample_report());
        let line = run_summary(Scenario::Fanout, &f);
        assert!(line.contains("99.8k/s delivered (100.00%)"), "{line}");
        assert!(line.contains("loadgen 47% (4.50 s)"), "{line}");
        let line = run_summary(Scenario::Capacity, &f);
        assert!(
            line.contains("held 1,000/1,000, 400 published, missing 0"),
            "{line}"
        );
        assert!(line.contains("RSS/conn 6.0 KiB"), "{line}");
    }

    #[test]
    fn writes_dated_files_and_latest_for_full_runs_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut results = results();
        results.goals = goals::evaluate(&results);
        let report = write_results(&results, dir.path()).unwrap();
        assert_eq!(report, dir.path().join("2026-11-25.md"));
        for name in [
            "2026-11-25.json",
            "2026-11-25.md",
            "2026-11-25-capacity-rss.svg",
            "2026-11-25-fanout-latency.svg",
            "2026-11-25-counter-cost.svg",
            "latest.md",
            "latest-capacity-rss.svg",
            "latest-fanout-latency.svg",
            "latest-counter-cost.svg",
        ] {
            assert!(dir.path().join(name).exists(), "{name}");
        }
        let latest = std::fs::read_to_string(dir.path().join("latest.md")).unwrap();
        assert!(latest.contains("(latest-capacity-rss.svg)"));
        let json: Results = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("2026-11-25.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json, results);

        let quick_dir = tempfile::tempdir().unwrap();
        results.quick = true;
        let report = write_results(&results, quick_dir.path()).unwrap();
        assert_eq!(report, quick_dir.path().join("2026-11-25-quick.md"));
        assert!(quick_dir
            .path()
            .join("2026-11-25-quick-fanout-latency.svg")
            .exists());
        assert!(!quick_dir.path().join("latest.md").exists());

        let partial_dir = tempfile::tempdir().unwrap();
        results.quick = false;
        results.partial = true;
        let report = write_results(&results, partial_dir.path()).unwrap();
        assert_eq!(report, partial_dir.path().join("2026-11-25-partial.md"));
        assert!(!partial_dir.path().join("latest.md").exists());
    }

    /// The results files committed under `bench/results/` (whatever they are today).
    fn committed() -> Vec<(std::path::PathBuf, Results)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.path())
                    .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).unwrap();
                let results = serde_json::from_str(&text)
                    .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                (path, results)
            })
            .collect()
    }

    #[test]
    fn committed_results_still_parse_and_render() {
        let committed = committed();
        assert!(!committed.is_empty());
        for (path, mut results) in committed {
            // What `bench render` does with them.
            results.goals = goals::evaluate(&results);
            assert_eq!(results.goals.len(), goals::GOALS.len());
            let text = crate::markdown::render(&results, "x-");
            assert!(text.contains("## The counter job"), "{}", path.display());
        }
    }
}
