//! The markdown report: the goals, then one table per scenario with the targets side by
//! side, loadgen's CPU next to every figure, and the charts.

use std::fmt::Write as _;

use crate::{
    figures::Figures,
    results::{Results, RunRecord},
    scenarios::Scenario,
    targets::Target,
    util::{
        fmt_bytes, fmt_cpu_s, fmt_percent, fmt_rate, fmt_ratio, fmt_us, median, thousands, utc_time,
    },
};

/// The chart files, by name without prefix and extension, with their titles.
pub const CHARTS: [(&str, &str); 3] = [
    ("capacity-rss", "Server memory per subscriber"),
    (
        "fanout-latency",
        "Fan-out: p99 latency against deliveries per second",
    ),
    ("counter-cost", "Counter job: server CPU and peak memory"),
];

const DASH: &str = "–";

/// Cores busy with other work before a step above which the report warns.
const BUSY_CORES: f64 = 0.25;

/// A markdown table: a header and rows, every row as wide as the header.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns; a name starting with `>` is right-aligned (numbers).
    pub fn new(columns: &[&str]) -> Self {
        Self {
            header: columns
                .iter()
                .map(|name| name.trim_start_matches('>').to_owned())
                .collect(),
            right: columns.iter().map(|name| name.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row, padded or cut to the header's width.
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// The markdown text.
    pub fn render(&self) -> String {
        let escape = |text: &str| text.replace('|', "\\|").replace('\n', " ");
        let mut out = String::new();
        let line = |cells: &[String]| {
            format!(
                "| {} |\n",
                cells
                    .iter()
                    .map(|cell| escape(cell))
                    .collect::<Vec<_>>()
                    .join(" | ")
            )
        };
        out.push_str(&line(&self.header));
        let rule: Vec<String> = self
            .right
            .iter()
            .map(|&right| if right { "---:".into() } else { "---".into() })
            .collect();
        out.push_str(&format!("| {} |\n", rule.join(" | ")));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

fn opt<T>(value: Option<T>, format: impl Fn(T) -> String) -> String {
    value.map_or_else(|| DASH.to_owned(), format)
}

fn loadgen_cell(f: &Figures) -> String {
    format!(
        "{} ({})",
        fmt_percent(f.loadgen_cpu_percent_avg),
        fmt_cpu_s(f.loadgen_cpu_s)
    )
}

fn error_row(run: &RunRecord, leading: Vec<String>, width: usize) -> Vec<String> {
    let mut cells = leading;
    cells.push(run.target.label().to_owned());
    cells.push(format!(
        "**error:** {}",
        run.error.as_deref().unwrap_or("no figures")
    ));
    cells.resize(width, String::new());
    cells
}

/// The report; charts are linked as `<chart_prefix><name>.svg`.
pub fn render(results: &Results, chart_prefix: &str) -> String {
    let mut out = String::new();
    let kind = if results.quick { " (quick run)" } else { "" };
    let _ = writeln!(out, "# Pulse benchmarks, {}{kind}\n", results.date);
    if results.quick {
        out.push_str(
            "> **Quick run**: small crowds and short holds, to check the tooling. The goals are \
             evaluated at these reduced sizes and say nothing about the real targets; run \
             `scripts/bench.sh` without `--quick` for those.\n\n",
        );
    }
    if results.partial {
        out.push_str("> **Partial run**: only some scenarios or targets were run.\n\n");
    }
    if results.interrupted {
        out.push_str("> **Interrupted**: the run was stopped early; some steps are missing.\n\n");
    }
    let minutes = (results
        .finished_unix_ms
        .saturating_sub(results.started_unix_ms)) as f64
        / 60_000.0;
    let _ = writeln!(
        out,
        "Run on {} from {} UTC, {:.1} minutes. Machine: {}.\n",
        results.date,
        utc_time(results.started_unix_ms),
        minutes,
        results.machine.summary()
    );
    out.push_str(
        "Every server and the load generator (`loadgen`) share this machine's cores and talk \
         over loopback. loadgen's own CPU is shown next to every figure (as % of one core and \
         CPU seconds): where it used most of a core, the figure partly measures loadgen.\n\n",
    );
    let busy: Vec<String> = results
        .runs
        .iter()
        .filter(|run| {
            run.busy_cores_before
                .is_some_and(|cores| cores > BUSY_CORES)
        })
        .map(|run| {
            format!(
                "{} · {} · {}{} ({:.1} cores)",
                run.scenario.name(),
                run.target.label(),
                thousands(run.subscribers as u64),
                run.rate
                    .map(|rate| format!(" × {rate}/s"))
                    .unwrap_or_default(),
                run.busy_cores_before.unwrap_or(0.0)
            )
        })
        .collect();
    if results
        .machine
        .busy_cores_at_start
        .is_some_and(|cores| cores > BUSY_CORES)
        || !busy.is_empty()
    {
        let _ = writeln!(
            out,
            "> **The machine was busy**: other processes kept {} cores busy at the start{}. \
             They shared the cores with the servers and loadgen, so these figures are noisier \
             than a quiet machine's.\n",
            results
                .machine
                .busy_cores_at_start
                .map_or_else(|| DASH.to_owned(), |cores| format!("{cores:.1}")),
            if busy.is_empty() {
                String::new()
            } else {
                format!(
                    ", and more than {BUSY_CORES} cores just before {} of {} steps (e.g. {})",
                    busy.len(),
                    results.runs.len(),
                    busy.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
                )
            }
        );
    }
    if !results.versions.is_empty() {
        out.push_str("Versions: ");
        let versions: Vec<String> = results
            .versions
            .iter()
            .map(|(name, version)| format!("{name} `{version}`"))
            .collect();
        out.push_str(&versions.join("; "));
        out.push_str(".\n\n");
    }
    out.push_str("Reproduce with `scripts/bench.sh` (add `--quick` for a short check).\n\n");

    goals_section(results, &mut out);
    capacity_section(results, chart_prefix, &mut out);
    latency_section(results, &mut out);
    fanout_section(results, chart_prefix, &mut out);
    counter_section(results, chart_prefix, &mut out);
    page_section(results, &mut out);

    if !results.notes.is_empty() {
        out.push_str("## Notes\n\n");
        for note in &results.notes {
            let _ = writeln!(out, "- {note}");
        }
        out.push('\n');
    }
    out.push_str(HOW_TO_READ);
    out
}

const HOW_TO_READ: &str = "## How to read\n\n\
- **held**: connections open at the end of the run out of those asked for; **missing** and \
**dup**: updates owed to a connection (published while it was open) that never came, or came \
twice (loadgen checks every update on every connection).\n\
- **RSS/conn**: (server RSS once every connection is open − RSS before) ÷ open connections.\n\
- **latency**: from just before the publish request is written to the moment the subscriber \
parses the event (both on this machine's clock); **publish**: the publish request's own \
response time.\n\
- **CPU/delivery**: server CPU while updates were being published (from loadgen's \
once-a-second samples, leaving out the ramp) ÷ updates delivered; the same for loadgen.\n\
- A fan-out step **fell behind** when fewer than 99% of owed updates arrived, p99 passed \
1 s, or the publisher got less than 90% of the rate accepted (**published/s**: the server \
answers publish requests only so fast); the series stops there.\n\
- Pulse runs with the memory broker unless it says Redis; nginx + nchan and uvicorn run one \
worker process each; ratios are Pulse ÷ peer.\n";

fn goals_section(results: &Results, out: &mut String) {
    out.push_str("## The issue's goals\n\n");
    let mut table = Table::new(&[
        "goal",
        ">Pulse",
        ">nginx + nchan",
        ">sse-starlette",
        ">Pulse ÷ nchan",
        ">Pulse ÷ starlette",
        "verdict",
        ">floor",
        ">floor ÷ peer",
        "how",
    ]);
    for goal in &results.goals {
        table.row(vec![
            goal.goal.clone(),
            goal.pulse.clone(),
            goal.nchan.clone(),
            goal.starlette.clone(),
            opt(goal.vs_nchan, fmt_ratio),
            opt(goal.vs_starlette, fmt_ratio),
            goal.status.label().to_owned(),
            if goal.floor.is_empty() {
                "–".to_owned()
            } else {
                goal.floor.clone()
            },
            opt(goal.floor_vs_peer, fmt_ratio),
            goal.note.clone(),
        ]);
    }
    out.push_str(&table.render());
    out.push_str(
        "\n**floor**: `bench floor-server`, a practical floor: the least a server does that \
         writes each event to each subscriber with a system call of its own, as every server \
         here does (blocking writes from plain threads, no framework, subscribers never \
         read), measured by the same loadgen at the goals' points. **floor ÷ peer** is its \
         ratio against the peer the goal is a ratio of; where it is already past the goal's \
         ratio, no such server meets that goal on this machine.\n",
    );
    out.push('\n');
}

fn chart(out: &mut String, prefix: &str, name: &str) {
    if let Some((_, title)) = CHARTS.iter().find(|(chart, _)| *chart == name) {
        let _ = writeln!(out, "![{title}]({prefix}{name}.svg)\n");
    }
}

fn capacity_section(results: &Results, prefix: &str, out: &mut String) {
    let profile = &results.profile;
    let _ = writeln!(
        out,
        "## Capacity: subscribers to one topic at {}/s\n\n\
         Connections open at {}/s ({}/s for sse-starlette, which needs about 1 ms of CPU to \
         accept each); once all are open (or failed), one update a second for {} s.\n",
        profile.capacity_rate, profile.ramp_rate, profile.slow_ramp_rate, profile.capacity_hold_s
    );
    chart(out, prefix, "capacity-rss");
    let columns = [
        ">subscribers",
        "server",
        ">held",
        ">failed",
        ">missing",
        ">dup",
        ">RSS/conn",
        ">peak RSS",
        ">server CPU",
        ">p50",
        ">p99",
        ">max",
        ">publish p50",
        ">loadgen CPU",
    ];
    let mut table = Table::new(&columns);
    let mut runs: Vec<&RunRecord> = results.of(Scenario::Capacity).collect();
    runs.sort_by_key(|run| (run.subscribers, run.target));
    for run in runs {
        let size = thousands(run.subscribers as u64);
        let Some(f) = &run.figures else {
            table.row(error_row(run, vec![size], columns.len()));
            continue;
        };
        let server = f.server.as_ref();
        table.row(vec![
            size,
            run.target.label().to_owned(),
            format!("{}/{}", thousands(f.open_at_stop), thousands(f.requested)),
            thousands(f.failed + f.errored),
            thousands(f.missing),
            thousands(f.duplicates),
            opt(server.and_then(|s| s.rss_bytes_per_connection), fmt_bytes),
            opt(server.map(|s| s.rss_kb_peak as f64 * 1024.0), fmt_bytes),
            opt(server.map(|s| s.cpu_s), fmt_cpu_s),
            latency_cell(f, |f| f.latency.p50_us),
            latency_cell(f, |f| f.latency.p99_us),
            latency_cell(f, |f| f.latency.max_us),
            opt(f.publish_latency().map(|latency| latency.p50_us), fmt_us),
            loadgen_cell(f),
        ]);
    }
    out.push_str(&table.render());
    failure_lines(results, Scenario::Capacity, out);
    out.push('\n');
}

/// The p99 goal's point, every run of it: the capacity run and the latency scenario's.
fn latency_section(results: &Results, out: &mut String) {
    let again: Vec<&RunRecord> = results.of(Scenario::Latency).collect();
    let Some(first) = again.first() else {
        return;
    };
    let (size, rate) = (first.subscribers, first.rate.unwrap_or(0.0));
    let mut targets: Vec<Target> = again.iter().map(|run| run.target).collect();
    targets.sort();
    targets.dedup();
    let _ = writeln!(
        out,
        "## Publish-to-receive p99 at {} × {rate}/s, run by run\n\n\
         One run's p99 here moves by about ±10 ms from run to run, as much as the goal's \
         margin, so this point is measured again after the other scenarios, round by round \
         (each round runs every server once, the same way as the capacity run). The goal \
         reads the median (of all its runs: an even count takes the mean of the middle two).\n",
        thousands(size as u64)
    );
    let mut table = Table::new(&[
        "server",
        ">runs",
        ">p99 of each run, in order",
        ">median p99",
        ">p50 of each run",
        ">missing",
        ">dup",
        ">loadgen CPU, most of a run",
    ]);
    for target in targets {
        let runs = results.runs_at(target, size, rate).len();
        let measured = results.latency_figures_at(target, size, rate);
        let each = |pick: fn(&Figures) -> f64| {
            measured
                .iter()
                .map(|f| fmt_us(pick(f)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let p99s: Vec<f64> = measured.iter().map(|f| f.latency.p99_us).collect();
        table.row(vec![
            target.label().to_owned(),
            format!("{}/{runs}", measured.len()),
            each(|f| f.latency.p99_us),
            opt(median(&p99s), |us| format!("**{}**", fmt_us(us))),
            each(|f| f.latency.p50_us),
            thousands(measured.iter().map(|f| f.missing).sum()),
            thousands(measured.iter().map(|f| f.duplicates).sum()),
            measured
                .iter()
                .max_by(|a, b| {
                    a.loadgen_cpu_percent_avg
                        .total_cmp(&b.loadgen_cpu_percent_avg)
                })
                .map_or_else(|| DASH.to_owned(), |f| loadgen_cell(f)),
        ]);
    }
    out.push_str(&table.render());
    failure_lines(results, Scenario::Latency, out);
    out.push('\n');
}

fn latency_cell(f: &Figures, pick: fn(&Figures) -> f64) -> String {
    if f.latency.count == 0 {
        DASH.to_owned()
    } else {
        fmt_us(pick(f))
    }
}

/// Lists why connections failed, per run, under a table.
fn failure_lines(results: &Results, scenario: Scenario, out: &mut String) {
    for run in results.of(scenario) {
        let Some(f) = &run.figures else { continue };
        if f.failures.is_empty() {
            continue;
        }
        let reasons: Vec<String> = f
            .failures
            .iter()
            .map(|(reason, count)| format!("{reason} ×{}", thousands(*count)))
            .collect();
        let rate = run
            .rate
            .map(|rate| format!(" at {rate}/s"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "\n{} with {}{rate}: connection failures: {}.",
            run.target.label(),
            thousands(run.subscribers as u64),
            reasons.join(", ")
        );
    }
}

fn fanout_section(results: &Results, prefix: &str, out: &mut String) {
    let profile = &results.profile;
    let _ = writeln!(
        out,
        "## Fan-out: a fixed crowd, a rising publish rate\n\n\
         Each step opens the crowd (as above), publishes for {} s at the rate, and stops; a \
         series stops at the first step that falls behind (a goal's point, 1,000 × 100/s, is \
         measured anyway).\n",
        profile.fanout_hold_s
    );
    chart(out, prefix, "fanout-latency");
    let columns = [
        ">subscribers",
        ">rate",
        "server",
        ">published/s",
        ">deliveries/s",
        ">delivered",
        ">p50",
        ">p99",
        ">max",
        ">publish p99",
        ">server CPU",
        ">CPU/delivery",
        ">loadgen CPU",
        ">loadgen CPU/delivery",
        "step",
    ];
    let mut table = Table::new(&columns);
    let mut runs: Vec<&RunRecord> = results.of(Scenario::Fanout).collect();
    runs.sort_by(|a, b| {
        (a.subscribers, a.target)
            .cmp(&(b.subscribers, b.target))
            .then(
                a.rate
                    .partial_cmp(&b.rate)
                    .unwrap_or(std::cmp::Ordering::Equal),
            )
    });
    for run in runs {
        let lead = vec![
            thousands(run.subscribers as u64),
            opt(run.rate, |rate| format!("{rate}/s")),
        ];
        let Some(f) = &run.figures else {
            table.row(error_row(run, lead, columns.len()));
            continue;
        };
        let window = f.window;
        let mut cells = lead;
        cells.extend([
            run.target.label().to_owned(),
            opt(f.publish.as_ref().map(|p| p.achieved_rate), |rate| {
                format!("{rate:.0}")
            }),
            opt(f.deliveries_per_s, fmt_rate),
            opt(f.delivered_ratio, |ratio| format!("{:.2}%", ratio * 100.0)),
            latency_cell(f, |f| f.latency.p50_us),
            latency_cell(f, |f| f.latency.p99_us),
            latency_cell(f, |f| f.latency.max_us),
            opt(f.publish_latency().map(|latency| latency.p99_us), fmt_us),
            opt(window.and_then(|w| w.server_percent()), fmt_percent),
            opt(f.server_us_per_delivery(), |us| format!("{us:.2} µs")),
            opt(window.and_then(|w| w.loadgen_percent()), fmt_percent),
            opt(f.loadgen_us_per_delivery(), |us| format!("{us:.2} µs")),
            match run.behind {
                Some(true) if !f.measured_delivery() => "**nothing delivered**".to_owned(),
                Some(true) => "**fell behind**".to_owned(),
                Some(false) => "kept up".to_owned(),
                None => String::new(),
            },
        ]);
        table.row(cells);
    }
    out.push_str(&table.render());
    failure_lines(results, Scenario::Fanout, out);
    out.push('\n');
}

fn counter_section(results: &Results, prefix: &str, out: &mut String) {
    let stream = results.profile.stream;
    let _ = writeln!(
        out,
        "## The counter job: concurrent `/stream` clients\n\n\
         Each client reads {} `new_message` events {} ms apart, then `end_event`; loadgen \
         owes every stream ids 1…{} (`--expect-ids`): **completed** counts the streams the \
         server ended after each of those ids arrived exactly once. A run counts toward the \
         goals only when every client completed. Same count and interval on both servers.\n",
        stream.count, stream.interval_ms, stream.count
    );
    chart(out, prefix, "counter-cost");
    let columns = [
        ">clients",
        "server",
        ">completed",
        ">most open at once",
        ">failed",
        ">missing",
        ">dup",
        ">server CPU",
        ">CPU/stream",
        ">peak RSS",
        ">RSS growth",
        ">loadgen CPU",
    ];
    let mut table = Table::new(&columns);
    let mut runs: Vec<&RunRecord> = results.of(Scenario::Counter).collect();
    runs.sort_by_key(|run| (run.subscribers, run.target));
    for run in runs {
        let clients = thousands(run.subscribers as u64);
        let Some(f) = &run.figures else {
            table.row(error_row(run, vec![clients], columns.len()));
            continue;
        };
        let server = f.server.as_ref();
        let completed = f.completed_streams();
        table.row(vec![
            clients,
            run.target.label().to_owned(),
            format!("{}/{}", opt(completed, thousands), thousands(f.requested)),
            thousands(f.peak_open),
            thousands(f.failed + f.errored),
            thousands(f.missing),
            thousands(f.duplicates),
            opt(server.map(|s| s.cpu_s), fmt_cpu_s),
            opt(
                server
                    .zip(completed.filter(|&done| done > 0))
                    .map(|(s, done)| s.cpu_s * 1e6 / done as f64),
                fmt_us,
            ),
            opt(server.map(|s| s.rss_kb_peak as f64 * 1024.0), fmt_bytes),
            opt(
                server.map(|s| (s.rss_kb_peak as f64 - s.rss_kb_before as f64) * 1024.0),
                fmt_bytes,
            ),
            loadgen_cell(f),
        ]);
    }
    out.push_str(&table.render());
    failure_lines(results, Scenario::Counter, out);
    for run in results.of(Scenario::Counter) {
        let Some(f) = &run.figures else { continue };
        let shortfall = f.counter_shortfall(stream.count);
        if !shortfall.is_empty() {
            let _ = writeln!(
                out,
                "\n{} with {}: not counted toward the goals: {}.",
                run.target.label(),
                thousands(run.subscribers as u64),
                shortfall.join(", ")
            );
        }
    }
    out.push('\n');
}

fn page_section(results: &Results, out: &mut String) {
    out.push_str("## The page\n\n");
    let Some(page) = &results.page else {
        out.push_str("Not measured.\n\n");
        return;
    };
    let _ = writeln!(out, "Built site: `{}`.\n", page.site_root);
    if page.looks_like_debug() {
        out.push_str(
            "> The WASM is larger than a release build can be: this is a debug build. Run \
             `cargo leptos build --release` before the benchmark.\n\n",
        );
    }
    let mut table = Table::new(&["file", ">raw", ">gzip -9", ">brotli 11"]);
    for file in page.wasm.iter().chain(&page.other) {
        table.row(vec![
            format!("`{}`", file.file),
            fmt_bytes(file.raw as f64),
            fmt_bytes(file.gzip as f64),
            fmt_bytes(file.brotli as f64),
        ]);
    }
    if !table.rows.is_empty() {
        out.push_str(&table.render());
        out.push('\n');
    }
    match &page.first_message {
        Some(first) => {
            let mut sorted = first.dom_content_loaded_ms.clone();
            sorted.sort_by(f64::total_cmp);
            let dcl = sorted.get(sorted.len() / 2).copied();
            let _ = writeln!(
                out,
                "Navigation to the first counter message in Debian's chromium (fresh context \
                 each time, first message sent at once): median **{}** over {} navigations \
                 (min {}, max {}); `DOMContentLoaded` median {}. Each: {}.\n",
                opt(first.median_ms, |ms| format!("{ms:.0} ms")),
                first.runs_ms.len(),
                opt(first.min_ms, |ms| format!("{ms:.0} ms")),
                opt(first.max_ms, |ms| format!("{ms:.0} ms")),
                opt(dcl, |ms| format!("{ms:.0} ms")),
                first
                    .runs_ms
                    .iter()
                    .map(|ms| format!("{ms:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for error in &first.errors {
                let _ = writeln!(out, "- {error}");
            }
        }
        None => out.push_str("The browser measurement did not run.\n\n"),
    }
    if let Some(error) = &page.error {
        let _ = writeln!(out, "**Error:** {error}\n");
    }
}

/// Rows of a target in one scenario, for the charts.
pub fn target_runs(results: &Results, scenario: Scenario, target: Target) -> Vec<&RunRecord> {
    results
        .of(scenario)
        .filter(|run| run.target == target)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goals::{evaluate, tests::results};

    #[test]
    fn tables_are_rectangular_and_escape_pipes() {
        let mut table = Table::new(&["name", ">value"]);
        table.row(vec!["a|b".into(), "1".into(), "extra".into()]);
        table.row(vec!["c".into()]);
        let text = table.render();
        assert_eq!(
            text,
            "| name | value |\n| --- | ---: |\n| a\\|b | 1 |\n| c |  |\n"
        );
    }

    #[test]
    fn the_report_has_every_section_and_rectangular_tables() {
        let mut results = results();
        results.goals = evaluate(&results);
        results.notes.push("nchan at 19,900: skipped".into());
        let text = render(&results, "2026-11-25-");
        for needle in [
            "# Pulse benchmarks, 2026-11-25",
            "## The issue's goals",
            "## Capacity",
            "## Fan-out",
            "## The counter job",
            "## The page",
            "## Notes",
            "![Server memory per subscriber](2026-11-25-capacity-rss.svg)",
            "2026-11-25-fanout-latency.svg",
            "2026-11-25-counter-cost.svg",
            "✅ met",
            "❌ not met",
            "| 19,900 | Pulse | 1,000/1,000 |",
            "median **130 ms** over 3 navigations",
            "`pulse.wasm`",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("Quick run"));
        // Every table row has as many cells as its header.
        let mut width = None;
        for line in text.lines() {
            if line.starts_with('|') {
                let cells = line.matches(" | ").count();
                match width {
                    None => width = Some(cells),
                    Some(expected) => assert_eq!(cells, expected, "{line}"),
                }
            } else {
                width = None;
            }
        }
        assert!(!text.contains("The machine was busy"));
        results.quick = true;
        assert!(render(&results, "latest-").contains("**Quick run**"));
        results.runs[0].busy_cores_before = Some(1.2);
        let busy = render(&results, "");
        assert!(busy.contains("The machine was busy"), "{busy}");
        assert!(busy.contains("(1.2 cores)"), "{busy}");
    }

    #[test]
    fn repeated_p99_runs_get_their_own_table_with_the_median() {
        let mut results = results();
        let plain = render(&results, "");
        assert!(!plain.contains("run by run"), "no section without repeats");
        crate::goals::tests::add_latency_runs(&mut results, Target::Pulse, &[5_000.0, 4_000.0]);
        crate::goals::tests::add_latency_runs(&mut results, Target::Nchan, &[9_000.0]);
        let text = render(&results, "");
        assert!(
            text.contains("## Publish-to-receive p99 at 10,000 × 1/s, run by run\n\nOne run's"),
            "{text}"
        );
        assert!(
            text.contains("| Pulse | 3/3 | 3.00 ms, 5.00 ms, 4.00 ms | **4.00 ms** |"),
            "{text}"
        );
        assert!(
            text.contains("| nginx + nchan | 2/2 | 8.00 ms, 9.00 ms | **8.50 ms** |"),
            "{text}"
        );
    }

    #[test]
    fn counter_runs_show_whether_every_stream_completed() {
        let mut results = results();
        let text = render(&results, "");
        assert!(text.contains("| 5,000 | Pulse | 5,000/5,000 |"), "{text}");
        assert!(!text.contains("not counted toward the goals"), "{text}");
        let f = results
            .runs
            .iter_mut()
            .find(|run| run.scenario == Scenario::Counter && run.target == Target::Pulse)
            .and_then(|run| run.figures.as_mut())
            .unwrap();
        // The server closed every stream, but 7 of them lost their last id.
        f.missing = 7;
        f.complete = Some(4_993);
        let text = render(&results, "");
        assert!(text.contains("| 5,000 | Pulse | 4,993/5,000 |"), "{text}");
        assert!(
            text.contains(
                "Pulse with 5,000: not counted toward the goals: 4,993/5,000 streams complete, \
                 7 ids missing."
            ),
            "{text}"
        );
    }

    #[test]
    fn nothing_owed_shows_no_delivered_share() {
        let mut results = results();
        for run in results.runs.iter_mut() {
            if let Some(f) = run.figures.as_mut() {
                f.delivered_ratio = None;
            }
        }
        let text = render(&results, "");
        let row = text
            .lines()
            .find(|line| line.starts_with("| 1,000 | 100/s | Pulse |"))
            .unwrap();
        assert!(row.contains("| – | 700 µs |"), "{row}");
        assert!(!text.contains("100.00%"), "{text}");
    }

    #[test]
    fn failed_runs_show_their_error() {
        let mut results = results();
        let run = results
            .runs
            .iter_mut()
            .find(|run| run.scenario == Scenario::Capacity && run.target == Target::Nchan)
            .unwrap();
        run.figures = None;
        run.error = Some("nginx: missing".into());
        let text = render(&results, "");
        assert!(
            text.contains("| nginx + nchan | **error:** nginx: missing |"),
            "{text}"
        );
    }
}
