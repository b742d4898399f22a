//! The figures the report uses, read out of one loadgen results document.
//!
//! loadgen's JSON carries everything; this keeps what the tables and goals need, typed,
//! plus two derived figures: CPU per delivered update (server and loadgen) over the
//! *publishing window* only, from the once-a-second samples, so that the cost of opening
//! thousands of connections during the ramp does not count as fan-out cost.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::util::thousands;

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest.
    pub max_us: f64,
}

/// The publisher's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Publish {
    /// Updates per second asked for.
    pub target_rate: f64,
    /// Updates sent.
    pub sent: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// Failed.
    pub failed: u64,
    /// Updates per second actually sent.
    pub achieved_rate: f64,
    /// Times the schedule waited for a free connection.
    pub backlogged: u64,
    /// Time to the publish response.
    pub latency: Latency,
}

/// The server's figures (summed over its processes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// RSS before the first connection, KiB.
    pub rss_kb_before: u64,
    /// RSS when every connection was made, KiB.
    pub rss_kb_after_ramp: Option<u64>,
    /// Connections open then.
    pub open_after_ramp: Option<u64>,
    /// (after ramp − before) ÷ open, bytes.
    pub rss_bytes_per_connection: Option<f64>,
    /// Largest RSS seen, KiB.
    pub rss_kb_peak: u64,
    /// CPU seconds over the run.
    pub cpu_s: f64,
    /// Average CPU, percent of one core.
    pub cpu_percent_avg: f64,
}

/// CPU and deliveries while updates were being published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Seconds covered.
    pub seconds: f64,
    /// Server CPU seconds.
    pub server_cpu_s: f64,
    /// loadgen CPU seconds.
    pub loadgen_cpu_s: f64,
    /// Stamped events received.
    pub deliveries: f64,
}

impl Window {
    /// Server CPU microseconds per delivered update.
    pub fn server_us_per_delivery(&self) -> Option<f64> {
        (self.deliveries > 0.0).then(|| self.server_cpu_s * 1e6 / self.deliveries)
    }

    /// loadgen CPU microseconds per delivered update.
    pub fn loadgen_us_per_delivery(&self) -> Option<f64> {
        (self.deliveries > 0.0).then(|| self.loadgen_cpu_s * 1e6 / self.deliveries)
    }

    /// Server CPU, percent of one core.
    pub fn server_percent(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.server_cpu_s / self.seconds * 100.0)
    }

    /// loadgen CPU, percent of one core.
    pub fn loadgen_percent(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.loadgen_cpu_s / self.seconds * 100.0)
    }
}

/// What one loadgen run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Why loadgen stopped.
    pub stop_reason: String,
    /// Seconds from the first connection to the stop.
    pub elapsed_s: f64,
    /// Connections asked for.
    pub requested: u64,
    /// Connections that got their event-stream head.
    pub established: u64,
    /// Connections that did not.
    pub failed: u64,
    /// Established and still open at the stop.
    pub open_at_stop: u64,
    /// Most connections open at once.
    #[serde(default)]
    pub peak_open: u64,
    /// Established and ended by the server.
    pub closed_by_server: u64,
    /// Established and ended in an error.
    pub errored: u64,
    /// Why connections failed or errored.
    pub failures: BTreeMap<String, u64>,
    /// Seconds until every connection was made or had failed.
    pub ramp_s: Option<f64>,
    /// Events received.
    pub events: u64,
    /// Events with a loadgen stamp (deliveries of published updates).
    pub stamped: u64,
    /// Updates owed (published while a connection was open), or ids owed.
    pub owed: u64,
    /// Owed and never received.
    pub missing: u64,
    /// Received twice.
    pub duplicates: u64,
    /// Connections that missed at least one.
    pub connections_with_missing: u64,
    /// Streams the server ended with every owed id received exactly once and nothing else
    /// (loadgen's `connections_complete`; absent from results of older loadgens).
    #[serde(default)]
    pub complete: Option<u64>,
    /// `1 − missing ÷ owed`; `None` when nothing was owed.
    pub delivered_ratio: Option<f64>,
    /// Stamped events per second of publishing.
    pub deliveries_per_s: Option<f64>,
    /// Publish-to-receive latency.
    pub latency: Latency,
    /// The publisher, if any.
    pub publish: Option<Publish>,
    /// The server, if sampled.
    pub server: Option<Server>,
    /// loadgen's CPU seconds (all its processes).
    pub loadgen_cpu_s: f64,
    /// loadgen's average CPU, percent of one core.
    pub loadgen_cpu_percent_avg: f64,
    /// While publishing.
    pub window: Option<Window>,
}

fn u64_at(json: &Value, pointer: &str) -> u64 {
    json.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

fn f64_at(json: &Value, pointer: &str) -> Option<f64> {
    json.pointer(pointer).and_then(Value::as_f64)
}

fn latency_at(json: &Value, pointer: &str) -> Latency {
    let Some(latency) = json.pointer(pointer) else {
        return Latency::default();
    };
    Latency {
        count: u64_at(latency, "/count"),
        p50_us: f64_at(latency, "/p50_us").unwrap_or(0.0),
        p99_us: f64_at(latency, "/p99_us").unwrap_or(0.0),
        max_us: f64_at(latency, "/max_us").unwrap_or(0.0),
    }
}

impl Figures {
    /// Reads a loadgen results document.
    pub fn from_loadgen(json: &Value) -> Self {
        let publish = json
            .pointer("/publish")
            .filter(|publish| !publish.is_null())
            .map(|publish| Publish {
                target_rate: f64_at(publish, "/target_rate").unwrap_or(0.0),
                sent: u64_at(publish, "/sent"),
                ok: u64_at(publish, "/ok"),
                failed: u64_at(publish, "/failed"),
                achieved_rate: f64_at(publish, "/achieved_rate").unwrap_or(0.0),
                backlogged: u64_at(publish, "/backlogged"),
                latency: latency_at(publish, "/latency_us"),
            });
        let server = json
            .pointer("/server")
            .filter(|server| !server.is_null())
            .map(|server| Server {
                rss_kb_before: u64_at(server, "/rss_kb_before"),
                rss_kb_after_ramp: server.pointer("/rss_kb_after_ramp").and_then(Value::as_u64),
                open_after_ramp: server.pointer("/open_after_ramp").and_then(Value::as_u64),
                rss_bytes_per_connection: f64_at(server, "/rss_bytes_per_connection"),
                rss_kb_peak: u64_at(server, "/rss_kb_peak"),
                cpu_s: f64_at(server, "/cpu_s").unwrap_or(0.0),
                cpu_percent_avg: f64_at(server, "/cpu_percent_avg").unwrap_or(0.0),
            });
        let failures = json
            .pointer("/connections/failures")
            .and_then(Value::as_object)
            .map(|map| {
                map.iter()
                    .map(|(reason, count)| (reason.clone(), count.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let samples: Vec<Sample> = json
            .pointer("/samples")
            .and_then(Value::as_array)
            .map(|samples| samples.iter().map(Sample::from_json).collect())
            .unwrap_or_default();
        Self {
            stop_reason: json
                .pointer("/run/stop_reason")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            elapsed_s: f64_at(json, "/run/elapsed_s").unwrap_or(0.0),
            requested: u64_at(json, "/connections/requested"),
            established: u64_at(json, "/connections/established"),
            failed: u64_at(json, "/connections/failed"),
            open_at_stop: u64_at(json, "/connections/open_at_stop"),
            peak_open: u64_at(json, "/connections/peak_open"),
            closed_by_server: u64_at(json, "/connections/closed_by_server"),
            errored: u64_at(json, "/connections/errored"),
            failures,
            ramp_s: f64_at(json, "/connections/ramp_s"),
            events: u64_at(json, "/events/total"),
            stamped: u64_at(json, "/events/stamped"),
            owed: u64_at(json, "/sequence/owed"),
            missing: u64_at(json, "/sequence/missing"),
            duplicates: u64_at(json, "/sequence/duplicates"),
            connections_with_missing: u64_at(json, "/sequence/connections_with_missing"),
            complete: json
                .pointer("/sequence/connections_complete")
                .and_then(Value::as_u64),
            delivered_ratio: f64_at(json, "/sequence/delivered_ratio"),
            deliveries_per_s: f64_at(json, "/events/deliveries_per_second"),
            latency: latency_at(json, "/latency_us"),
            window: publish.as_ref().and_then(|_| publishing_window(&samples)),
            publish,
            server,
            loadgen_cpu_s: f64_at(json, "/loadgen/cpu_s").unwrap_or(0.0),
            loadgen_cpu_percent_avg: f64_at(json, "/loadgen/cpu_percent_avg").unwrap_or(0.0),
        }
    }

    /// Whether every requested connection was made and stayed open to the end.
    pub fn all_held(&self) -> bool {
        self.requested > 0
            && self.established == self.requested
            && self.open_at_stop == self.requested
    }

    /// Whether every owed update arrived, once.
    pub fn every_update_once(&self) -> bool {
        self.owed > 0 && self.missing == 0 && self.duplicates == 0
    }

    /// Server CPU µs per delivered update: over the publishing window when known, else
    /// over the whole run.
    pub fn server_us_per_delivery(&self) -> Option<f64> {
        self.window
            .and_then(|window| window.server_us_per_delivery())
            .or_else(|| {
                let server = self.server.as_ref()?;
                (self.stamped > 0).then(|| server.cpu_s * 1e6 / self.stamped as f64)
            })
    }

    /// loadgen CPU µs per delivered update, the same way.
    pub fn loadgen_us_per_delivery(&self) -> Option<f64> {
        self.window
            .and_then(|window| window.loadgen_us_per_delivery())
            .or_else(|| (self.stamped > 0).then(|| self.loadgen_cpu_s * 1e6 / self.stamped as f64))
    }

    /// The publish requests' latency, if any was answered.
    pub fn publish_latency(&self) -> Option<&Latency> {
        self.publish
            .as_ref()
            .map(|publish| &publish.latency)
            .filter(|latency| latency.count > 0)
    }

    /// Whether updates were published and delivered at all (a server that took longer
    /// than the run to accept its crowd never saw publishing start).
    pub fn measured_delivery(&self) -> bool {
        self.publish.as_ref().is_some_and(|publish| publish.ok > 0) && self.latency.count > 0
    }

    /// Streams that ran to their end correctly (the counter job): ended by the server with
    /// every id received once. Results of older loadgens lack the per-stream count: there,
    /// streams the server ended, when no id was missing or repeated on any stream; `None`
    /// when some were (which streams is not known).
    pub fn completed_streams(&self) -> Option<u64> {
        self.complete.or_else(|| {
            (self.missing == 0 && self.duplicates == 0).then_some(self.closed_by_server)
        })
    }

    /// Why a counter run does not show the job done, if it does not: every client must have
    /// connected, read ids 1…`ids` once each and been closed by the server, with no error.
    /// Empty when it does.
    pub fn counter_shortfall(&self, ids: u32) -> Vec<String> {
        let mut problems = Vec::new();
        let requested = self.requested;
        if requested == 0 {
            problems.push("no clients".to_owned());
            return problems;
        }
        if self.failed + self.errored > 0 {
            problems.push(format!(
                "{} failed or broken",
                thousands(self.failed + self.errored)
            ));
        }
        match self.completed_streams() {
            Some(done) if done == requested => {}
            Some(done) => problems.push(format!(
                "{}/{} streams complete",
                thousands(done),
                thousands(requested)
            )),
            None => problems.push("streams not all complete".to_owned()),
        }
        let owed = requested.saturating_mul(u64::from(ids));
        if self.owed != owed {
            problems.push(format!(
                "{} ids owed, not {}",
                thousands(self.owed),
                thousands(owed)
            ));
        }
        if self.missing > 0 {
            problems.push(format!("{} ids missing", thousands(self.missing)));
        }
        if self.duplicates > 0 {
            problems.push(format!("{} ids repeated", thousands(self.duplicates)));
        }
        problems
    }
}

/// One of loadgen's once-a-second samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sample {
    t_s: f64,
    stamped_per_s: f64,
    published_per_s: f64,
    server_cpu_percent: Option<f64>,
    loadgen_cpu_percent: f64,
}

impl Sample {
    fn from_json(json: &Value) -> Self {
        Self {
            t_s: f64_at(json, "/t_s").unwrap_or(0.0),
            stamped_per_s: f64_at(json, "/stamped_per_s").unwrap_or(0.0),
            published_per_s: f64_at(json, "/published_per_s").unwrap_or(0.0),
            server_cpu_percent: f64_at(json, "/server_cpu_percent"),
            loadgen_cpu_percent: f64_at(json, "/loadgen_cpu_percent").unwrap_or(0.0),
        }
    }
}

/// Sums the samples taken while updates were being published. The first such sample is
/// left out when there are three or more, as it also covers the end of the ramp.
fn publishing_window(samples: &[Sample]) -> Option<Window> {
    let mut spans: Vec<(f64, &Sample)> = Vec::new();
    let mut previous_t = 0.0;
    for sample in samples {
        let dt = (sample.t_s - previous_t).max(0.0);
        previous_t = sample.t_s;
        if sample.published_per_s > 0.0 {
            spans.push((dt, sample));
        }
    }
    let skip = usize::from(spans.len() >= 3);
    let mut window = Window::default();
    for (dt, sample) in spans.into_iter().skip(skip) {
        window.seconds += dt;
        window.server_cpu_s += sample.server_cpu_percent? / 100.0 * dt;
        window.loadgen_cpu_s += sample.loadgen_cpu_percent / 100.0 * dt;
        window.deliveries += sample.stamped_per_s * dt;
    }
    (window.seconds > 0.0).then_some(window)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A loadgen results document in the shape loadgen writes.
    pub(crate) fn sample_report() -> Value {
        serde_json::json!({
            "loadgen_version": "0.1.0",
            "run": {"elapsed_s": 9.5, "stop_reason": "duration"},
            "connections": {
                "requested": 1000, "attempted": 1000, "established": 1000, "failed": 0,
                "closed_by_server": 0, "errored": 0, "open_at_stop": 1000, "peak_open": 1000,
                "ramp_s": 0.6, "failures": {}
            },
            "events": {"total": 400_000, "stamped": 399_000, "deliveries_per_second": 99_750.0},
            "sequence": {"mode": "published", "owed": 399_000, "missing": 0, "duplicates": 0,
                          "connections_with_missing": 0, "delivered_ratio": 1.0},
            "latency_us": {"count": 399_000, "min_us": 50, "mean_us": 900.0, "p50_us": 700,
                           "p90_us": 1500, "p99_us": 4100, "p999_us": 9000, "max_us": 12_000},
            "publish": {"api": "mercure", "target_rate": 100.0, "sent": 400, "ok": 400,
                        "failed": 0, "backlogged": 0, "achieved_rate": 100.0, "window_s": 4.0,
                        "latency_us": {"count": 400, "p50_us": 180, "p99_us": 600, "max_us": 900}},
            "server": {"pids": [1], "rss_kb_before": 10_000, "rss_kb_after_ramp": 16_000,
                       "open_after_ramp": 1000, "rss_bytes_per_connection": 6144.0,
                       "rss_kb_peak": 17_000, "rss_kb_end": 16_500, "cpu_s": 3.0,
                       "cpu_percent_avg": 31.0, "sample_errors": 0},
            "loadgen": {"processes": 2, "cpu_s": 4.5, "cpu_percent_avg": 47.0},
            "samples": [
                {"t_s": 1.0, "stamped_per_s": 0.0, "published_per_s": 0.0,
                 "server_cpu_percent": 80.0, "loadgen_cpu_percent": 60.0},
                {"t_s": 2.0, "stamped_per_s": 50_000.0, "published_per_s": 50.0,
                 "server_cpu_percent": 70.0, "loadgen_cpu_percent": 55.0},
                {"t_s": 3.0, "stamped_per_s": 100_000.0, "published_per_s": 100.0,
                 "server_cpu_percent": 50.0, "loadgen_cpu_percent": 70.0},
                {"t_s": 4.0, "stamped_per_s": 100_000.0, "published_per_s": 100.0,
                 "server_cpu_percent": 50.0, "loadgen_cpu_percent": 70.0},
                {"t_s": 5.0, "stamped_per_s": 100_000.0, "published_per_s": 100.0,
                 "server_cpu_percent": 50.0, "loadgen_cpu_percent": 70.0},
                {"t_s": 6.0, "stamped_per_s": 50_000.0, "published_per_s": 0.0,
                 "server_cpu_percent": 20.0, "loadgen_cpu_percent": 30.0}
            ]
        })
    }

    #[test]
    fn reads_a_loadgen_report() {
        let figures = Figures::from_loadgen(&sample_report());
        assert_eq!(figures.stop_reason, "duration");
        assert_eq!(figures.established, 1000);
        assert!(figures.all_held());
        assert!(figures.every_update_once());
        assert_eq!(figures.latency.p99_us, 4100.0);
        let publish = figures.publish.as_ref().unwrap();
        assert_eq!(publish.sent, 400);
        assert_eq!(publish.latency.p50_us, 180.0);
        let server = figures.server.as_ref().unwrap();
        assert_eq!(server.rss_bytes_per_connection, Some(6144.0));
        assert_eq!(figures.loadgen_cpu_s, 4.5);
        assert_eq!(figures.peak_open, 1000);
        assert!(figures.measured_delivery());
        assert_eq!(figures.publish_latency().unwrap().p50_us, 180.0);
    }

    #[test]
    fn cpu_per_delivery_counts_the_publishing_window_only() {
        let figures = Figures::from_loadgen(&sample_report());
        // Samples at 2..5 s published; the first of them (end of the ramp) is left out.
        let window = figures.window.unwrap();
        assert!((window.seconds - 3.0).abs() < 1e-9);
        assert!((window.server_cpu_s - 1.5).abs() < 1e-9);
        assert!((window.deliveries - 300_000.0).abs() < 1e-6);
        assert!((figures.server_us_per_delivery().unwrap() - 5.0).abs() < 1e-9);
        assert!((figures.loadgen_us_per_delivery().unwrap() - 7.0).abs() < 1e-9);
        assert!((window.server_percent().unwrap() - 50.0).abs() < 1e-9);

        // Without samples: the whole run.
        let mut json = sample_report();
        json["samples"] = serde_json::json!([]);
        let figures = Figures::from_loadgen(&json);
        assert!(figures.window.is_none());
        let whole = figures.server_us_per_delivery().unwrap();
        assert!((whole - 3.0 * 1e6 / 399_000.0).abs() < 1e-9);
    }

    /// A counter run's loadgen document: `clients` streams of ids 1…20.
    pub(crate) fn counter_report(clients: u64) -> Value {
        serde_json::json!({
            "run": {"elapsed_s": 30.0, "stop_reason": "all_streams_ended"},
            "connections": {
                "requested": clients, "established": clients, "failed": 0,
                "closed_by_server": clients, "errored": 0, "open_at_stop": 0,
                "peak_open": clients, "failures": {}
            },
            "events": {"total": clients * 21, "stamped": 0},
            "sequence": {"mode": "sequential_ids", "owed": clients * 20, "missing": 0,
                          "duplicates": 0, "connections_with_missing": 0,
                          "connections_complete": clients, "delivered_ratio": 1.0},
            "latency_us": {"count": 0},
            "publish": null,
            "server": {"rss_kb_before": 10_000, "rss_kb_peak": 30_000, "cpu_s": 2.0},
            "loadgen": {"cpu_s": 1.0, "cpu_percent_avg": 10.0},
            "samples": []
        })
    }

    #[test]
    fn a_counter_run_counts_only_when_every_stream_carried_every_id() {
        let done = Figures::from_loadgen(&counter_report(1000));
        assert_eq!(done.completed_streams(), Some(1000));
        assert!(done.counter_shortfall(20).is_empty());
        // Asked for more ids per stream than the job was run with.
        assert_eq!(done.counter_shortfall(25), ["20,000 ids owed, not 25,000"]);

        // Ten streams lost their last id: the server closed them all, yet they are not
        // complete.
        let mut json = counter_report(1000);
        json["sequence"]["missing"] = 10.into();
        json["sequence"]["connections_with_missing"] = 10.into();
        json["sequence"]["connections_complete"] = 990.into();
        json["sequence"]["delivered_ratio"] = (1.0 - 10.0 / 20_000.0).into();
        let lossy = Figures::from_loadgen(&json);
        assert_eq!(lossy.completed_streams(), Some(990));
        assert_eq!(
            lossy.counter_shortfall(20),
            ["990/1,000 streams complete", "10 ids missing"]
        );

        // Connections that never got their stream owe nothing in loadgen: still short.
        let mut json = counter_report(1000);
        json["connections"]["established"] = 998.into();
        json["connections"]["failed"] = 2.into();
        json["connections"]["closed_by_server"] = 998.into();
        json["sequence"]["owed"] = (998 * 20).into();
        json["sequence"]["connections_complete"] = 998.into();
        let short = Figures::from_loadgen(&json);
        assert_eq!(
            short.counter_shortfall(20),
            [
                "2 failed or broken",
                "998/1,000 streams complete",
                "19,960 ids owed, not 20,000"
            ]
        );

        // An older loadgen's document: no per-stream count.
        let mut json = counter_report(1000);
        json["sequence"]
            .as_object_mut()
            .unwrap()
            .remove("connections_complete");
        let old = Figures::from_loadgen(&json);
        assert_eq!(old.completed_streams(), Some(1000));
        assert!(old.counter_shortfall(20).is_empty());
        json["sequence"]["duplicates"] = 3.into();
        let old = Figures::from_loadgen(&json);
        assert_eq!(old.completed_streams(), None);
        assert_eq!(
            old.counter_shortfall(20),
            ["streams not all complete", "3 ids repeated"]
        );
    }

    #[test]
    fn nothing_owed_is_no_delivered_ratio() {
        let mut json = sample_report();
        json["sequence"]["owed"] = 0.into();
        json["sequence"]["delivered_ratio"] = Value::Null;
        assert_eq!(Figures::from_loadgen(&json).delivered_ratio, None);
        assert_eq!(
            Figures::from_loadgen(&sample_report()).delivered_ratio,
            Some(1.0)
        );
    }

    #[test]
    fn missing_parts_are_not_errors() {
        let figures = Figures::from_loadgen(&serde_json::json!({"publish": null, "server": null}));
        assert!(figures.publish.is_none());
        assert!(figures.server.is_none());
        assert!(!figures.all_held());
        assert!(!figures.every_update_once());
        assert!(!figures.measured_delivery());
        assert!(figures.publish_latency().is_none());
        assert_eq!(figures.server_us_per_delivery(), None);
    }
}
