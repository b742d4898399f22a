//! SVG charts of a run, drawn with plotters' SVG backend (text is left to the viewer's
//! fonts, so no font files are needed).
//!
//! - `capacity-rss`: server RSS per subscriber, by crowd size and target.
//! - `fanout-latency`: p99 publish-to-receive latency against deliveries per second, one
//!   line per target and crowd (log–log).
//! - `counter-cost`: the counter job's server CPU seconds and peak RSS, by clients.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::{
    fail,
    results::Results,
    scenarios::Scenario,
    targets::Target,
    util::{thousands, Result},
};

const WIDTH: u32 = 900;
const HEIGHT: u32 = 520;

/// The colour of a target in every chart.
pub fn color(target: Target) -> RGBColor {
    match target {
        Target::Pulse => RGBColor(0x25, 0x63, 0xeb),
        Target::PulseRedis => RGBColor(0x60, 0xa5, 0xfa),
        Target::Nchan => RGBColor(0x16, 0xa3, 0x4a),
        Target::Starlette => RGBColor(0xea, 0x58, 0x0c),
        Target::Floor => RGBColor(0x6b, 0x72, 0x80),
    }
}

/// The legend, the same on every chart: upper left, on a light box.
fn draw_legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>) -> Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(draw_error)
}

fn draw_error(error: impl std::fmt::Display) -> crate::util::Error {
    fail!("chart: {error}")
}

/// Writes every chart as `<dir>/<prefix><name>.svg`; returns the paths.
pub fn write_all(results: &Results, dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let path = |name: &str| dir.join(format!("{prefix}{name}.svg"));
    let capacity = path("capacity-rss");
    capacity_rss(results, &capacity)?;
    let fanout = path("fanout-latency");
    fanout_latency(results, &fanout)?;
    let counter = path("counter-cost");
    counter_cost(results, &counter)?;
    Ok(vec![capacity, fanout, counter])
}

/// A group of bars: one label, a value per target.
struct Group {
    label: String,
    bars: Vec<(Target, f64)>,
}

/// A horizontal line across a bar chart: the value an issue goal sets.
struct GoalLine {
    value: f64,
    label: String,
}

/// Grouped bars on `area`.
fn grouped_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    groups: &[Group],
    value_label: fn(f64) -> String,
    goal: Option<GoalLine>,
) -> Result<()> {
    // Bars in the same order in every group: Pulse first.
    let groups: Vec<Group> = groups
        .iter()
        .map(|group| {
            let mut bars = group.bars.clone();
            bars.sort_by_key(|(target, _)| *target);
            Group {
                label: group.label.clone(),
                bars,
            }
        })
        .collect();
    let max = groups
        .iter()
        .flat_map(|group| group.bars.iter().map(|(_, value)| *value))
        .chain(goal.as_ref().map(|goal| goal.value))
        .fold(0.0_f64, f64::max);
    let top = if max > 0.0 { max * 1.2 } else { 1.0 };
    // Group i is centred on x = i: with at most a label per unit, the axis labels land on
    // the groups, and the formatter names them.
    let count = groups.len().max(1);
    let labels: Vec<String> = groups.iter().map(|group| group.label.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5..count as f64 - 0.5, 0.0..top)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(count + 2)
        .x_label_formatter(&|x| {
            let index = x.round();
            if (x - index).abs() < 1e-6 && index >= 0.0 && (index as usize) < labels.len() {
                labels[index as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc(y_desc)
        .draw()
        .map_err(draw_error)?;
    if groups.iter().all(|group| group.bars.is_empty()) {
        chart
            .draw_series(std::iter::once(Text::new(
                "no data".to_owned(),
                (count as f64 / 2.0 - 0.6, top / 2.0),
                ("sans-serif", 16),
            )))
            .map_err(draw_error)?;
        return Ok(());
    }
    let mut targets: Vec<Target> = groups
        .iter()
        .flat_map(|group| group.bars.iter().map(|(target, _)| *target))
        .collect();
    targets.sort();
    targets.dedup();
    for target in targets {
        let fill = color(target);
        let bars: Vec<(f64, f64, f64)> = groups
            .iter()
            .enumerate()
            .filter_map(|(index, group)| {
                let slot = group.bars.iter().position(|(t, _)| *t == target)?;
                let width = 0.8 / group.bars.len() as f64;
                let x0 = index as f64 - 0.4 + width * slot as f64;
                Some((x0, x0 + width * 0.92, group.bars[slot].1))
            })
            .collect();
        chart
            .draw_series(
                bars.iter().map(|&(x0, x1, value)| {
                    Rectangle::new([(x0, 0.0), (x1, value)], fill.filled())
                }),
            )
            .map_err(draw_error)?
            .label(target.label())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], fill.filled()));
        chart
            .draw_series(bars.iter().map(|&(x0, x1, value)| {
                Text::new(
                    value_label(value),
                    ((x0 + x1) / 2.0 - (x1 - x0) * 0.4, value + top * 0.02),
                    ("sans-serif", 11),
                )
            }))
            .map_err(draw_error)?;
    }
    if let Some(goal) = goal {
        let style = BLACK.mix(0.6).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(-0.5, goal.value), (count as f64 - 0.5, goal.value)],
                6,
                4,
                style,
            ))
            .map_err(draw_error)?
            .label(goal.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], style));
    }
    draw_legend(&mut chart)?;
    Ok(())
}

fn capacity_rss(results: &Results, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let groups: Vec<Group> = results
        .sizes_in(Scenario::Capacity)
        .into_iter()
        .map(|size| Group {
            label: format!("{} subscribers", thousands(size as u64)),
            bars: results
                .of(Scenario::Capacity)
                .filter(|run| run.subscribers == size)
                .filter_map(|run| {
                    let bytes = run
                        .figures
                        .as_ref()?
                        .server
                        .as_ref()?
                        .rss_bytes_per_connection?;
                    Some((run.target, bytes / 1024.0))
                })
                .collect(),
        })
        .collect();
    grouped_bars(
        &root,
        "Server memory per subscriber (RSS growth ÷ connections)",
        "KiB per subscriber",
        &groups,
        |kib| format!("{kib:.1}"),
        Some(GoalLine {
            value: 8_000.0 / 1024.0,
            label: "goal: 8 KB".to_owned(),
        }),
    )?;
    root.present().map_err(draw_error)
}

/// One line of the fan-out chart: a target, its crowd, and (deliveries/s, p99 ms) points.
type Series = (Target, usize, Vec<(f64, f64)>);

fn fanout_latency(results: &Results, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    // (target, subscribers) → points (deliveries/s, p99 ms).
    let mut series: Vec<Series> = Vec::new();
    for run in results.of(Scenario::Fanout) {
        let Some(f) = &run.figures else { continue };
        let (Some(rate), true) = (f.deliveries_per_s, f.latency.count > 0) else {
            continue;
        };
        if rate <= 0.0 {
            continue;
        }
        let point = (rate, (f.latency.p99_us / 1000.0).max(0.01));
        match series
            .iter_mut()
            .find(|(target, subs, _)| *target == run.target && *subs == run.subscribers)
        {
            Some((_, _, points)) => points.push(point),
            None => series.push((run.target, run.subscribers, vec![point])),
        }
    }
    let xs = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| p.0));
    let ys = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| p.1));
    let (x_min, x_max) = xs.fold((f64::MAX, 0.0_f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (y_min, y_max) = ys.fold((f64::MAX, 0.0_f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (x_range, y_range) = if series.is_empty() {
        ((100.0, 1e6), (0.1, 1000.0))
    } else {
        ((x_min / 1.5, x_max * 1.5), (y_min / 2.0, y_max * 2.0))
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Fan-out: p99 publish-to-receive latency vs deliveries per second",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (x_range.0..x_range.1).log_scale(),
            (y_range.0..y_range.1).log_scale(),
        )
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_labels(8)
        .y_labels(8)
        .max_light_lines(2)
        .x_desc("deliveries per second (log)")
        .y_desc("p99 latency, ms (log)")
        .x_label_formatter(&|x| crate::util::fmt_rate(*x))
        .y_label_formatter(&|y| {
            if *y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .draw()
        .map_err(draw_error)?;
    if series.is_empty() {
        chart
            .draw_series(std::iter::once(Text::new(
                "no data".to_owned(),
                (1e3, 10.0),
                ("sans-serif", 16),
            )))
            .map_err(draw_error)?;
    }
    series.sort_by_key(|(target, subs, _)| (*target, *subs));
    let smallest = series.iter().map(|(_, subs, _)| *subs).min().unwrap_or(0);
    for (target, subs, mut points) in series {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let stroke = color(target);
        let dashed = subs != smallest;
        let style = if dashed {
            stroke.mix(0.7).stroke_width(2)
        } else {
            stroke.stroke_width(2)
        };
        chart
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(draw_error)?
            .label(format!(
                "{}, {} subscribers",
                target.label(),
                thousands(subs as u64)
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
        if dashed {
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&point| TriangleMarker::new(point, 5, stroke.filled())),
                )
                .map_err(draw_error)?;
        } else {
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&point| Circle::new(point, 4, stroke.filled())),
                )
                .map_err(draw_error)?;
        }
    }
    draw_legend(&mut chart)?;
    root.present().map_err(draw_error)
}

fn counter_cost(results: &Results, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let panels = root.split_evenly((1, 2));
    let sizes = results.sizes_in(Scenario::Counter);
    let groups = |pick: fn(&crate::figures::Server) -> f64| -> Vec<Group> {
        sizes
            .iter()
            .map(|&size| Group {
                label: format!("{} clients", thousands(size as u64)),
                bars: results
                    .of(Scenario::Counter)
                    .filter(|run| run.subscribers == size)
                    .filter_map(|run| {
                        Some((run.target, pick(run.figures.as_ref()?.server.as_ref()?)))
                    })
                    .collect(),
            })
            .collect()
    };
    grouped_bars(
        &panels[0],
        "Counter job: server CPU",
        "CPU seconds",
        &groups(|server| server.cpu_s),
        |seconds| format!("{seconds:.2}"),
        None,
    )?;
    grouped_bars(
        &panels[1],
        "Counter job: server peak memory",
        "peak RSS, MiB",
        &groups(|server| server.rss_kb_peak as f64 / 1024.0),
        |mib| format!("{mib:.0}"),
        None,
    )?;
    root.present().map_err(draw_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goals::tests::results;

    #[test]
    fn draws_every_chart_as_svg() {
        let dir = tempfile::tempdir().unwrap();
        let results = results();
        let paths = write_all(&results, dir.path(), "2026-11-25-").unwrap();
        assert_eq!(paths.len(), 3);
        for path in &paths {
            let svg = std::fs::read_to_string(path).unwrap();
            assert!(svg.starts_with("<svg"), "{}", path.display());
            assert!(svg.trim_end().ends_with("</svg>"));
        }
        let capacity = std::fs::read_to_string(&paths[0]).unwrap();
        assert!(capacity.contains("Pulse") && capacity.contains("nginx + nchan"));
        assert!(capacity.contains("19,900 subscribers"));
        let fanout = std::fs::read_to_string(&paths[1]).unwrap();
        assert!(fanout.contains("sse-starlette, 1,000 subscribers"));
        assert!(fanout.contains("<polyline") || fanout.contains("<path"));
    }

    #[test]
    fn empty_results_still_give_charts() {
        let dir = tempfile::tempdir().unwrap();
        let mut results = results();
        results.runs.clear();
        for path in write_all(&results, dir.path(), "").unwrap() {
            let svg = std::fs::read_to_string(path).unwrap();
            assert!(svg.contains("no data"));
        }
    }
}
