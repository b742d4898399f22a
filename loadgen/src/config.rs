//! The command line, and the checks that turn it into a [`Plan`] before anything runs.
//!
//! Every run is bounded (duration, connection count, rates), every URL is checked to be on
//! this machine ([`crate::target`]), and contradictory flags are refused with a message
//! naming them, so that a mistyped command fails at once instead of measuring nonsense.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{builder::RangedU64ValueParser, Args, Parser, Subcommand};
use serde::Serialize;

use crate::{
    http1,
    jwt::{self, Action, MercureClaims},
    protocol::{SubscribeTarget, Tracking, WorkerSpec},
    publisher::{Api, PublishPlan},
    sse::DEFAULT_MAX_EVENT_BYTES,
    target::{expand_topic, Target, TargetError, MAX_SOURCE_ADDRS},
};

/// Most connections one run may open.
pub const MAX_CONNECTIONS: usize = 200_000;
/// Most connections one worker process holds (the open-file limit is 20 000 per process).
pub const MAX_CONNS_PER_WORKER: usize = 19_000;
/// Longest run.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Highest connection or publish rate, per second.
pub const MAX_RATE: f64 = 100_000.0;
/// Lowest connection or publish rate, per second (one an hour is slower than any run).
pub const MIN_RATE: f64 = 0.001;
/// Largest payload.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Most connections to an IPv6 target (one source address, one ephemeral port range).
pub const MAX_IPV6_CONNECTIONS: usize = 25_000;
/// Most `--subscribe-url`s in one run.
pub const MAX_SUBSCRIBE_URLS: usize = 64;
/// Most publish requests in flight.
pub const MAX_PUBLISH_CONCURRENCY: usize = 1024;
/// Shortest `--max-event-bytes`.
pub const MIN_EVENT_BYTES: usize = 64;
/// Longest `--max-event-bytes`.
pub const MAX_EVENT_BYTES: usize = 64 << 20;
/// Longest `--drain`.
pub const MAX_DRAIN: Duration = Duration::from_secs(60);
/// Longest `--connect-timeout` and `--publish-timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

const AFTER_HELP: &str = "\
Targets must be on this machine: 127.0.0.0/8, [::1] or localhost.
In URLs, {topic} is replaced by the percent-encoded --topic.

Publish APIs (--api) and the requests loadgen sends to --publish-url:
  mercure    POST, Content-Type: application/x-www-form-urlencoded,
             body topic=<topic>&data=<payload>&id=<unique id>,
             Authorization: Bearer <HS256 JWT: iss, aud, exp, authorization_details
             [{type: https://mercure.rocks/authorization-detail, actions: [publish],
             topics: [{match: *}]}]>. Subscribe with GET <hub>?match={topic}.
  nchan      POST, Content-Type: application/json, body = payload.
             Subscribe with GET .../sub?id={topic} (EventSource).
  starlette  POST, Content-Type: application/json, body = payload, to e.g.
             /publish?topic={topic}; the app must answer 2xx and send the body
             unchanged as the data of one event to every GET /subscribe?topic={topic}.
  none       no publishing; the stream emits events by itself.

The payload is {\"seq\":N,\"t\":<send time, ns since the Unix epoch>,\"pad\":\"xx…\"},
padded to --payload-size bytes; it must arrive verbatim in an event's data (other
fields around it are fine).

Results: a JSON document to --out (or stdout); a status line every second on stderr.
Exit status: 0 when the run completed (whatever it measured), 1 for setup errors,
2 for usage errors.";

/// The `loadgen` command line.
#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Load generator for Server-Sent Events servers on this machine",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// Internal: run as a worker process.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The run.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Internal: a worker process, driven over stdin/stdout by the coordinator.
    #[command(hide = true)]
    Worker,
}

/// The flags of a run.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Event-stream URL to subscribe to; `{topic}` is replaced by --topic. Repeat it to
    /// spread the connections round-robin over several URLs (e.g. several instances).
    #[arg(long, value_name = "URL", required = true)]
    pub subscribe_url: Vec<String>,

    /// Concurrent subscriptions to open.
    #[arg(short = 'c', long, default_value_t = 100, value_parser = count(1, MAX_CONNECTIONS))]
    pub connections: usize,

    /// Connections opened per second.
    #[arg(long, value_name = "PER_SEC", default_value_t = 500.0, value_parser = parse_rate)]
    pub ramp_rate: f64,

    /// How long the run lasts from the first connection (publishing stops then), e.g. `30s`.
    #[arg(short = 'd', long, value_parser = parse_run_duration, default_value = "30s")]
    pub duration: Duration,

    /// After publishing stops, how long to wait for deliveries before closing.
    #[arg(long, value_parser = parse_drain, default_value = "2s")]
    pub drain: Duration,

    /// Longest wait for a connection and its response head.
    #[arg(long, value_parser = parse_timeout, default_value = "10s")]
    pub connect_timeout: Duration,

    /// Extra header for subscribe requests, `Name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,

    /// Publish API, which selects the request shape and auth.
    #[arg(long, value_enum, default_value_t = Api::None)]
    pub api: Api,

    /// Where to publish; `{topic}` is replaced by --topic.
    #[arg(long, value_name = "URL")]
    pub publish_url: Option<String>,

    /// The topic or channel.
    #[arg(long, default_value = "loadgen", value_parser = parse_topic)]
    pub topic: String,

    /// Updates published per second.
    #[arg(long, value_name = "PER_SEC", default_value_t = 10.0, value_parser = parse_rate)]
    pub publish_rate: f64,

    /// Start publishing only once every connection has been opened (or failed).
    #[arg(long)]
    pub publish_after_ramp: bool,

    /// Payload size in bytes (at least the stamp itself).
    #[arg(long, default_value_t = 128, value_parser = count(0, MAX_PAYLOAD))]
    pub payload_size: usize,

    /// Publish requests in flight at most.
    #[arg(long, default_value_t = 8, value_parser = count(1, MAX_PUBLISH_CONCURRENCY))]
    pub publish_concurrency: usize,

    /// Longest wait for a publish response.
    #[arg(long, value_parser = parse_timeout, default_value = "10s")]
    pub publish_timeout: Duration,

    /// Extra header for publish requests, `Name: value` (repeatable).
    #[arg(long = "publish-header", value_name = "NAME: VALUE")]
    pub publish_headers: Vec<String>,

    /// Mercure: HS256 key for the JWT.
    #[arg(
        long,
        env = "LOADGEN_JWT_KEY",
        default_value = jwt::DEFAULT_KEY,
        hide_env_values = true,
        hide_default_value = true
    )]
    pub jwt_key: String,

    /// Mercure: the JWT's `iss`.
    #[arg(long, default_value = "https://localhost")]
    pub jwt_issuer: String,

    /// Mercure: the JWT's `aud` [default: the publish URL without its query].
    #[arg(long)]
    pub jwt_audience: Option<String>,

    /// Mercure: also send a subscriber JWT on subscribe requests.
    #[arg(long)]
    pub subscriber_jwt: bool,

    /// Mercure: HS256 key for the subscriber JWT [default: --jwt-key].
    #[arg(long, env = "LOADGEN_SUBSCRIBER_JWT_KEY", hide_env_values = true)]
    pub subscriber_jwt_key: Option<String>,

    /// Check that event ids count 1, 2, 3, … on every connection (the counter stream).
    #[arg(long)]
    pub expect_sequential_ids: bool,

    /// Every connection must carry ids 1 to N (implies --expect-sequential-ids): ids that
    /// never came count as missing, the last ones and all N of a stream that carried none
    /// included. Without it a connection is owed ids up to the highest it saw.
    #[arg(long, value_name = "N", value_parser = parse_id_count)]
    pub expect_ids: Option<u64>,

    /// Server process to sample for memory and CPU (repeatable; summed).
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,

    /// Write the JSON results here instead of stdout.
    #[arg(short, long, value_name = "PATH")]
    pub out: Option<PathBuf>,

    /// No status line.
    #[arg(short, long)]
    pub quiet: bool,

    /// Connections per worker process.
    #[arg(
        long,
        default_value_t = MAX_CONNS_PER_WORKER,
        value_parser = count(1, MAX_CONNS_PER_WORKER)
    )]
    pub conns_per_worker: usize,

    /// Source addresses to spread connections over [default: one per 25 000].
    #[arg(long, value_name = "N", value_parser = count(1, MAX_SOURCE_ADDRS))]
    pub source_addrs: Option<usize>,

    /// Run workers as threads of this process (one process's file limit applies).
    #[arg(long)]
    pub in_process: bool,

    /// Longest event-stream line or event accepted, bytes.
    #[arg(
        long,
        default_value_t = DEFAULT_MAX_EVENT_BYTES,
        value_parser = count(MIN_EVENT_BYTES, MAX_EVENT_BYTES)
    )]
    pub max_event_bytes: usize,
}

/// Why a command line cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A URL is not usable.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A value is out of range.
    #[error("--{flag} must be {rule} (got {got})")]
    Range {
        /// The flag.
        flag: &'static str,
        /// The allowed range.
        rule: String,
        /// The value given.
        got: String,
    },
    /// Flags that do not go together, or one that needs another.
    #[error("{0}")]
    Conflict(String),
    /// A header is not `Name: value` with a token name and a printable ASCII value.
    #[error("bad header {0:?}: expected `Name: value` in printable ASCII")]
    Header(String),
    /// The JWT could not be minted.
    #[error(transparent)]
    Jwt(#[from] jwt::JwtError),
}

/// A checked run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where to subscribe: connection `i` goes to `subscribe[i % subscribe.len()]`; never
    /// empty.
    pub subscribe: Vec<Target>,
    /// Extra subscribe headers.
    pub subscribe_headers: Vec<(String, String)>,
    /// Connections in the run.
    pub connections: usize,
    /// Connections per second.
    pub ramp_rate: f64,
    /// From the first connection to the end of publishing.
    pub duration: Duration,
    /// Wait for deliveries after publishing.
    pub drain: Duration,
    /// Longest wait for a connection and its head.
    pub connect_timeout: Duration,
    /// Connections per worker.
    pub conns_per_worker: usize,
    /// Source addresses.
    pub source_addrs: Vec<IpAddr>,
    /// What connections check.
    pub tracking: Tracking,
    /// With [`Tracking::SequentialIds`]: the ids 1..=N each connection must carry.
    pub expected_ids: Option<u64>,
    /// Longest line or event.
    pub max_event_bytes: usize,
    /// Publishing, if any.
    pub publish: Option<PublishPlan>,
    /// Publish only after the ramp.
    pub publish_after_ramp: bool,
    /// Server processes to sample.
    pub server_pids: Vec<u32>,
    /// Where the JSON goes.
    pub out: Option<PathBuf>,
    /// No status line.
    pub quiet: bool,
    /// Workers as threads.
    pub in_process: bool,
    /// Stop early on Ctrl-C (the command line) rather than dying.
    pub handle_ctrl_c: bool,
}

/// The parameters of a run as the results record them (secrets left out).
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    /// Subscribe URL (the first one).
    pub subscribe_url: String,
    /// Every subscribe URL, in the round-robin order.
    pub subscribe_urls: Vec<String>,
    /// Names of extra subscribe headers.
    pub subscribe_header_names: Vec<String>,
    /// Connections.
    pub connections: usize,
    /// Connections per second.
    pub ramp_rate: f64,
    /// Seconds.
    pub duration_s: f64,
    /// Seconds.
    pub drain_s: f64,
    /// Seconds.
    pub connect_timeout_s: f64,
    /// Connections per worker.
    pub conns_per_worker: usize,
    /// Workers.
    pub workers: usize,
    /// Workers were threads.
    pub in_process: bool,
    /// Source addresses.
    pub source_addrs: Vec<IpAddr>,
    /// What was checked.
    pub tracking: Tracking,
    /// Ids 1..=N owed to each connection (`--expect-ids`); null: up to the highest seen.
    pub expected_ids: Option<u64>,
    /// Bytes.
    pub max_event_bytes: usize,
    /// Publish API.
    pub api: Api,
    /// Publish URL.
    pub publish_url: Option<String>,
    /// Topic.
    pub topic: Option<String>,
    /// Updates per second.
    pub publish_rate: Option<f64>,
    /// Bytes.
    pub payload_size: Option<usize>,
    /// Requests in flight.
    pub publish_concurrency: Option<usize>,
    /// Seconds.
    pub publish_timeout_s: Option<f64>,
    /// Publishing waited for the ramp.
    pub publish_after_ramp: bool,
    /// Names of extra publish headers.
    pub publish_header_names: Vec<String>,
    /// Sampled server processes.
    pub server_pids: Vec<u32>,
}

impl RunArgs {
    /// Checks everything and builds the plan.
    ///
    /// Single values are range-checked by clap as the flags are parsed (the `value_parser`s
    /// above), so `self` must come from [`Cli`]; what is checked here are the rules that
    /// involve several flags, and the URLs and headers.
    pub fn into_plan(self) -> Result<Plan, ConfigError> {
        self.check_in_process()?;
        let subscribe = self.subscribe_targets()?;
        let source_addrs = subscribe[0].source_addrs(self.connections, self.source_addrs);
        let mut subscribe_headers = parse_headers(&self.headers)?;
        let tracking = self.tracking()?;
        let publish = self.publish_plan(&mut subscribe_headers)?;
        Ok(Plan {
            subscribe,
            subscribe_headers,
            connections: self.connections,
            ramp_rate: self.ramp_rate,
            duration: self.duration,
            drain: self.drain,
            connect_timeout: self.connect_timeout,
            conns_per_worker: self.conns_per_worker,
            source_addrs,
            tracking,
            expected_ids: self.expect_ids,
            max_event_bytes: self.max_event_bytes,
            publish,
            publish_after_ramp: self.publish_after_ramp,
            server_pids: self.server_pids,
            out: self.out,
            quiet: self.quiet,
            in_process: self.in_process,
            handle_ctrl_c: true,
        })
    }

    /// Refuses more connections than one process holds when workers are threads.
    fn check_in_process(&self) -> Result<(), ConfigError> {
        if self.in_process && self.connections > MAX_CONNS_PER_WORKER {
            return Err(ConfigError::Conflict(format!(
                "--in-process holds every connection in one process: at most {MAX_CONNS_PER_WORKER}"
            )));
        }
        Ok(())
    }

    /// The subscribe URLs as targets (topic filled in): one to [`MAX_SUBSCRIBE_URLS`], all on
    /// this machine and of one address family, and few enough connections for IPv6.
    fn subscribe_targets(&self) -> Result<Vec<Target>, ConfigError> {
        if self.subscribe_url.is_empty() {
            return Err(ConfigError::Conflict("--subscribe-url is required".into()));
        }
        check_range(
            "subscribe-url (count)",
            self.subscribe_url.len(),
            1,
            MAX_SUBSCRIBE_URLS,
        )?;
        let subscribe = self
            .subscribe_url
            .iter()
            .map(|url| Target::parse(&expand_topic(url, &self.topic)))
            .collect::<Result<Vec<_>, _>>()?;
        let first = &subscribe[0];
        // Source addresses are of one family: so must every target be.
        if subscribe
            .iter()
            .any(|target| target.addr.is_ipv6() != first.addr.is_ipv6())
        {
            return Err(ConfigError::Conflict(
                "--subscribe-url: mixing IPv4 and IPv6 targets is not supported".into(),
            ));
        }
        if first.addr.is_ipv6() && self.connections > MAX_IPV6_CONNECTIONS {
            return Err(ConfigError::Conflict(format!(
                "an IPv6 target has one source address: at most {MAX_IPV6_CONNECTIONS} connections"
            )));
        }
        Ok(subscribe)
    }

    /// What connections check: published updates with `--api`, event ids with
    /// `--expect-sequential-ids` or `--expect-ids` (which refuse `--api`), or nothing.
    fn tracking(&self) -> Result<Tracking, ConfigError> {
        let sequential = self.expect_sequential_ids || self.expect_ids.is_some();
        match (self.api, sequential) {
            (Api::None, false) => Ok(Tracking::Off),
            (Api::None, true) => Ok(Tracking::SequentialIds),
            (_, false) => Ok(Tracking::Published),
            (_, true) => Err(ConfigError::Conflict(
                "--expect-sequential-ids and --expect-ids check streams that number their \
                 own events; they cannot be combined with --api"
                    .into(),
            )),
        }
    }

    /// The publishing side, if `--api` and `--publish-url` ask for it (one needs the other,
    /// and the publish-only flags need both); a subscriber token goes to `subscribe_headers`.
    fn publish_plan(
        &self,
        subscribe_headers: &mut Vec<(String, String)>,
    ) -> Result<Option<PublishPlan>, ConfigError> {
        match (self.api, &self.publish_url) {
            (Api::None, None) => {
                if self.subscriber_jwt || self.publish_after_ramp {
                    return Err(ConfigError::Conflict(
                        "--subscriber-jwt and --publish-after-ramp need --api".into(),
                    ));
                }
                Ok(None)
            }
            (Api::None, Some(_)) => Err(ConfigError::Conflict(
                "--publish-url needs --api mercure, nchan or starlette".into(),
            )),
            (api, None) => Err(ConfigError::Conflict(format!(
                "--api {} needs --publish-url",
                api_name(api)
            ))),
            (api, Some(url)) => self.publishing(api, url, subscribe_headers).map(Some),
        }
    }

    /// The plan of a publisher using `api` at `url`, with its headers and, for Mercure, its
    /// tokens.
    fn publishing(
        &self,
        api: Api,
        url: &str,
        subscribe_headers: &mut Vec<(String, String)>,
    ) -> Result<PublishPlan, ConfigError> {
        let target = Target::parse(&expand_topic(url, &self.topic))?;
        let mut headers = parse_headers(&self.publish_headers)?;
        if api == Api::Mercure {
            self.add_mercure_tokens(&target, &mut headers, subscribe_headers)?;
        } else if self.subscriber_jwt || self.subscriber_jwt_key.is_some() {
            return Err(ConfigError::Conflict(
                "--subscriber-jwt needs --api mercure".into(),
            ));
        }
        Ok(PublishPlan {
            api,
            target,
            topic: self.topic.clone(),
            rate: self.publish_rate,
            payload_size: self.payload_size,
            concurrency: self.publish_concurrency,
            timeout: self.publish_timeout,
            headers,
            id_prefix: format!("urn:loadgen:{}:", crate::payload::unix_nanos()),
        })
    }

    /// Mercure: adds the publisher's `Authorization` to `headers` and, with
    /// `--subscriber-jwt`, a subscriber's to `subscribe_headers`; the audience is
    /// `--jwt-audience` or the publish URL without its query.
    fn add_mercure_tokens(
        &self,
        target: &Target,
        headers: &mut Vec<(String, String)>,
        subscribe_headers: &mut Vec<(String, String)>,
    ) -> Result<(), ConfigError> {
        let audience = self
            .jwt_audience
            .clone()
            .unwrap_or_else(|| target.url.split('?').next().unwrap_or_default().to_owned());
        let now = crate::payload::unix_nanos() / 1_000_000_000;
        let bearer = |key: &str, action| -> Result<String, ConfigError> {
            let claims = MercureClaims::new(action, &self.jwt_issuer, &audience, now);
            Ok(format!("Bearer {}", jwt::mint(key.as_bytes(), &claims)?))
        };
        headers.push((
            "Authorization".into(),
            bearer(&self.jwt_key, Action::Publish)?,
        ));
        if self.subscriber_jwt {
            let key = self.subscriber_jwt_key.as_deref().unwrap_or(&self.jwt_key);
            subscribe_headers.push(("Authorization".into(), bearer(key, Action::Subscribe)?));
        }
        Ok(())
    }
}

impl Plan {
    /// How many workers the run uses.
    pub fn workers(&self) -> usize {
        self.connections
            .div_ceil(self.conns_per_worker.max(1))
            .max(1)
    }

    /// The spec of every worker.
    pub fn worker_specs(&self, start_unix_ns: u64, deadline_unix_ns: u64) -> Vec<WorkerSpec> {
        let targets: Vec<SubscribeTarget> = self
            .subscribe
            .iter()
            .map(|target| {
                let mut request = Vec::new();
                http1::write_get(&mut request, target, &self.subscribe_headers);
                SubscribeTarget {
                    addr: target.addr,
                    // Headers were checked to be ASCII, so this is lossless.
                    request: String::from_utf8_lossy(&request).into_owned(),
                }
            })
            .collect();
        let workers = self.workers();
        (0..workers)
            .map(|index| WorkerSpec {
                index,
                workers,
                connections: self.connections,
                ramp_rate: self.ramp_rate,
                start_unix_ns,
                deadline_unix_ns,
                targets: targets.clone(),
                source_addrs: self.source_addrs.clone(),
                tracking: self.tracking,
                expected_ids: self.expected_ids,
                connect_timeout_ms: u64::try_from(self.connect_timeout.as_millis())
                    .unwrap_or(u64::MAX),
                max_event_bytes: self.max_event_bytes,
            })
            .collect()
    }

    /// What the results record about the run's parameters.
    pub fn params(&self) -> Params {
        let names =
            |headers: &[(String, String)]| headers.iter().map(|(name, _)| name.clone()).collect();
        let publish = self.publish.as_ref();
        Params {
            subscribe_url: self
                .subscribe
                .first()
                .map(|target| target.url.clone())
                .unwrap_or_default(),
            subscribe_urls: self
                .subscribe
                .iter()
                .map(|target| target.url.clone())
                .collect(),
            subscribe_header_names: names(&self.subscribe_headers),
            connections: self.connections,
            ramp_rate: self.ramp_rate,
            duration_s: self.duration.as_secs_f64(),
            drain_s: self.drain.as_secs_f64(),
            connect_timeout_s: self.connect_timeout.as_secs_f64(),
            conns_per_worker: self.conns_per_worker,
            workers: self.workers(),
            in_process: self.in_process,
            source_addrs: self.source_addrs.clone(),
            tracking: self.tracking,
            expected_ids: self.expected_ids,
            max_event_bytes: self.max_event_bytes,
            api: publish.map_or(Api::None, |publish| publish.api),
            publish_url: publish.map(|publish| publish.target.url.clone()),
            topic: publish.map(|publish| publish.topic.clone()),
            publish_rate: publish.map(|publish| publish.rate),
            payload_size: publish.map(|publish| publish.payload_size),
            publish_concurrency: publish.map(|publish| publish.concurrency),
            publish_timeout_s: publish.map(|publish| publish.timeout.as_secs_f64()),
            publish_after_ramp: self.publish_after_ramp,
            publish_header_names: publish
                .map(|publish| names(&publish.headers))
                .unwrap_or_default(),
            server_pids: self.server_pids.clone(),
        }
    }
}

fn api_name(api: Api) -> &'static str {
    match api {
        Api::Mercure => "mercure",
        Api::Nchan => "nchan",
        Api::Starlette => "starlette",
        Api::None => "none",
    }
}

/// Refuses a `value` of `flag` outside `min..=max` (for what clap cannot check itself).
fn check_range(
    flag: &'static str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Range {
            flag,
            rule: format!("from {min} to {max}"),
            got: value.to_string(),
        })
    }
}

/// A clap parser for a count from `min` to `max`; clap names the flag and the range when
/// a value is outside it.
fn count(min: usize, max: usize) -> RangedU64ValueParser<usize> {
    // usize is at most 64 bits on every target, so these are lossless.
    RangedU64ValueParser::new().range(min as u64..=max as u64)
}

/// Parses a rate per second, from [`MIN_RATE`] to [`MAX_RATE`] (not NaN, not infinite).
fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.parse().map_err(|error| format!("{error}"))?;
    if rate.is_finite() && (MIN_RATE..=MAX_RATE).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("must be from {MIN_RATE} to {MAX_RATE}"))
    }
}

/// Parses `--topic`: any text but the empty one.
fn parse_topic(text: &str) -> Result<String, String> {
    if text.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(text.to_owned())
    }
}

/// Parses `--expect-ids`: a count of at least 1.
fn parse_id_count(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(count) => Ok(count),
        Err(error) => Err(error.to_string()),
    }
}

/// Parses a humantime duration (`30s`, `1m`) of at most `max`, and more than zero unless
/// `zero_allowed`; `rule` says so in words.
fn parse_duration_up_to(
    text: &str,
    max: Duration,
    zero_allowed: bool,
    rule: &str,
) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if (duration.is_zero() && !zero_allowed) || duration > max {
        return Err(format!("must be {rule}"));
    }
    Ok(duration)
}

/// Parses `--duration`: more than zero, at most [`MAX_DURATION`].
fn parse_run_duration(text: &str) -> Result<Duration, String> {
    parse_duration_up_to(text, MAX_DURATION, false, "more than 0 and at most 1h")
}

/// Parses `--drain`: zero to [`MAX_DRAIN`].
fn parse_drain(text: &str) -> Result<Duration, String> {
    parse_duration_up_to(text, MAX_DRAIN, true, "at most 60s")
}

/// Parses `--connect-timeout` and `--publish-timeout`: more than zero, at most
/// [`MAX_TIMEOUT`].
fn parse_timeout(text: &str) -> Result<Duration, String> {
    parse_duration_up_to(text, MAX_TIMEOUT, false, "more than 0 and at most 120s")
}

/// Parses `Name: value` headers; names are HTTP tokens, values printable ASCII.
fn parse_headers(headers: &[String]) -> Result<Vec<(String, String)>, ConfigError> {
    headers
        .iter()
        .map(|header| {
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| ConfigError::Header(header.clone()))?;
            let (name, value) = (name.trim(), value.trim());
            let token =
                |byte: u8| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte);
            let printable = |byte: u8| byte == b'\t' || (b' '..=b'~').contains(&byte);
            if name.is_empty() || !name.bytes().all(token) || !value.bytes().all(printable) {
                return Err(ConfigError::Header(header.clone()));
            }
            Ok((name.to_owned(), value.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Plan, ConfigError> {
        let mut argv = vec!["loadgen"];
        argv.extend_from_slice(args);
        let cli =
            Cli::try_parse_from(argv).map_err(|error| ConfigError::Conflict(error.to_string()))?;
        cli.run.into_plan()
    }

    #[test]
    fn the_counter_scenario() {
        let plan = parse(&[
            "--subscribe-url",
            "http://127.0.0.1:3000/stream",
            "-c",
            "40000",
            "--expect-sequential-ids",
            "-d",
            "25s",
        ])
        .unwrap();
        assert_eq!(plan.tracking, Tracking::SequentialIds);
        assert_eq!(plan.expected_ids, None);
        assert!(plan.publish.is_none());
        assert_eq!(plan.workers(), 3);
        assert_eq!(plan.source_addrs.len(), 2);
        let specs = plan.worker_specs(1, 2);
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[2].targets.len(), 1);
        assert!(specs[2].targets[0]
            .request
            .starts_with("GET /stream HTTP/1.1\r\n"));
        assert_eq!(plan.duration, Duration::from_secs(25));
    }

    #[test]
    fn expect_ids_owes_every_stream_a_known_count() {
        let plan = parse(&[
            "--subscribe-url",
            "http://127.0.0.1:3000/stream",
            "--expect-ids",
            "20",
        ])
        .unwrap();
        // Implies the sequential check, and every worker learns the count.
        assert_eq!(plan.tracking, Tracking::SequentialIds);
        assert_eq!(plan.expected_ids, Some(20));
        assert_eq!(plan.worker_specs(1, 2)[0].expected_ids, Some(20));
        assert_eq!(plan.params().expected_ids, Some(20));
        let with_both = parse(&[
            "--subscribe-url",
            "http://127.0.0.1:3000/stream",
            "--expect-sequential-ids",
            "--expect-ids",
            "5",
        ])
        .unwrap();
        assert_eq!(with_both.expected_ids, Some(5));
    }

    #[test]
    fn a_mercure_run_gets_a_token_and_the_topic_in_both_urls() {
        let plan = parse(&[
            "--subscribe-url",
            "http://127.0.0.1:3000/.well-known/mercure?match={topic}",
            "--api",
            "mercure",
            "--publish-url",
            "http://127.0.0.1:3000/.well-known/mercure",
            "--topic",
            "https://example.com/a b",
            "--subscriber-jwt",
        ])
        .unwrap();
        assert_eq!(
            plan.subscribe[0].path_and_query,
            "/.well-known/mercure?match=https%3A%2F%2Fexample.com%2Fa%20b"
        );
        assert_eq!(plan.tracking, Tracking::Published);
        let publish = plan.publish.as_ref().unwrap();
        assert_eq!(publish.topic, "https://example.com/a b");
        let auth = &publish
            .headers
            .iter()
            .find(|(name, _)| name == "Authorization")
            .unwrap()
            .1;
        assert!(auth.starts_with("Bearer ey"));
        assert!(plan
            .subscribe_headers
            .iter()
            .any(|(name, _)| name == "Authorization"));
        // The parameters record header names, never the token.
        let params = serde_json::to_string(&plan.params()).unwrap();
        assert!(params.contains("Authorization"));
        assert!(!params.contains("Bearer"));
    }

    #[test]
    fn refuses_non_loopback_targets() {
        for args in [
            &["--subscribe-url", "http://10.1.2.3/stream"][..],
            &[
                "--subscribe-url",
                "http://127.0.0.1/sub",
                "--api",
                "nchan",
                "--publish-url",
                "http://192.168.0.1/pub",
            ][..],
        ] {
            let error = parse(args).unwrap_err();
            assert!(
                matches!(error, ConfigError::Target(TargetError::NotLoopback { .. })),
                "{error}"
            );
        }
    }

    #[test]
    fn refuses_contradictions() {
        let base = ["--subscribe-url", "http://127.0.0.1/s"];
        let cases: &[&[&str]] = &[
            &["--api", "nchan"],
            &["--publish-url", "http://127.0.0.1/p"],
            &[
                "--api",
                "nchan",
                "--publish-url",
                "http://127.0.0.1/p",
                "--expect-sequential-ids",
            ],
            &[
                "--api",
                "nchan",
                "--publish-url",
                "http://127.0.0.1/p",
                "--subscriber-jwt",
            ],
            &[
                "--api",
                "nchan",
                "--publish-url",
                "http://127.0.0.1/p",
                "--expect-ids",
                "20",
            ],
            &["--in-process", "-c", "19001"],
            &["--header", "Bad Name: x"],
            &["--header", "no colon"],
            &["--publish-after-ramp"],
        ];
        for case in cases {
            let mut args = base.to_vec();
            args.extend_from_slice(case);
            let cli = Cli::try_parse_from([&["loadgen"][..], &args].concat())
                .unwrap_or_else(|error| panic!("{case:?} did not parse: {error}"));
            assert!(cli.run.into_plan().is_err(), "{case:?} was accepted");
        }
        let ipv6 = parse(&["--subscribe-url", "http://[::1]:1/", "-c", "30000"]);
        assert!(matches!(ipv6, Err(ConfigError::Conflict(_))));

        let mut too_many = Vec::new();
        for _ in 0..=MAX_SUBSCRIBE_URLS {
            too_many.extend(["--subscribe-url", "http://127.0.0.1/s"]);
        }
        let error = parse(&too_many).unwrap_err();
        assert!(
            matches!(error, ConfigError::Range { flag, .. } if flag == "subscribe-url (count)"),
            "{error}"
        );
    }

    /// Clap alone, after a subscribe URL.
    fn clap_parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let argv = [
            &["loadgen", "--subscribe-url", "http://127.0.0.1/s"][..],
            args,
        ]
        .concat();
        Cli::try_parse_from(argv).map(|cli| cli.run)
    }

    #[test]
    fn clap_refuses_out_of_range_values_naming_the_flag() {
        let cases = [
            ("--connections", "0"),
            ("--connections", "200001"),
            ("--ramp-rate", "0"),
            ("--ramp-rate", "100001"),
            ("--ramp-rate", "NaN"),
            ("--ramp-rate", "inf"),
            ("--duration", "0s"),
            ("--duration", "2h"),
            ("--drain", "61s"),
            ("--connect-timeout", "0s"),
            ("--connect-timeout", "121s"),
            ("--topic", ""),
            ("--publish-rate", "0"),
            ("--publish-rate", "0.0001"),
            ("--payload-size", "1048577"),
            ("--publish-concurrency", "0"),
            ("--publish-concurrency", "1025"),
            ("--publish-timeout", "0s"),
            ("--publish-timeout", "121s"),
            ("--expect-ids", "0"),
            ("--conns-per-worker", "0"),
            ("--conns-per-worker", "20000"),
            ("--source-addrs", "0"),
            ("--source-addrs", "251"),
            ("--max-event-bytes", "63"),
            ("--max-event-bytes", "67108865"),
        ];
        for (flag, value) in cases {
            let error = clap_parse(&[flag, value])
                .map(|_| ())
                .expect_err(&format!("{flag} {value:?} was accepted"));
            let message = error.to_string();
            assert!(message.contains(flag), "{flag} {value:?}: {message}");
            // A usage error, like every other bad flag.
            assert_eq!(error.exit_code(), 2, "{flag} {value:?}: {message}");
        }
        let message = clap_parse(&["-d", "2h"]).unwrap_err().to_string();
        assert!(message.contains("more than 0 and at most 1h"), "{message}");
        let message = clap_parse(&["-c", "0"]).unwrap_err().to_string();
        assert!(message.contains("1..=200000"), "{message}");
    }

    #[test]
    fn clap_accepts_the_edges_of_each_range() {
        let args = clap_parse(&[
            "-c",
            "200000",
            "--ramp-rate",
            "0.001",
            "--publish-rate",
            "100000",
            "-d",
            "1h",
            "--drain",
            "0s",
            "--connect-timeout",
            "120s",
            "--publish-timeout",
            "1ms",
            "--payload-size",
            "0",
            "--publish-concurrency",
            "1024",
            "--expect-ids",
            "1",
            "--conns-per-worker",
            "19000",
            "--source-addrs",
            "250",
            "--max-event-bytes",
            "64",
        ])
        .unwrap();
        assert_eq!(args.connections, MAX_CONNECTIONS);
        assert_eq!(args.ramp_rate, MIN_RATE);
        assert_eq!(args.publish_rate, MAX_RATE);
        assert_eq!(args.duration, MAX_DURATION);
        assert_eq!(args.drain, Duration::ZERO);
        assert_eq!(args.connect_timeout, MAX_TIMEOUT);
        assert_eq!(args.publish_timeout, Duration::from_millis(1));
        assert_eq!(args.payload_size, 0);
        assert_eq!(args.publish_concurrency, MAX_PUBLISH_CONCURRENCY);
        assert_eq!(args.expect_ids, Some(1));
        assert_eq!(args.conns_per_worker, MAX_CONNS_PER_WORKER);
        assert_eq!(args.source_addrs, Some(MAX_SOURCE_ADDRS));
        assert_eq!(args.max_event_bytes, MIN_EVENT_BYTES);
        let args = clap_parse(&["--drain", "60s", "--max-event-bytes", "67108864"]).unwrap();
        assert_eq!(args.drain, MAX_DRAIN);
        assert_eq!(args.max_event_bytes, MAX_EVENT_BYTES);
        let defaults = clap_parse(&[]).unwrap();
        assert_eq!(defaults.connections, 100);
        assert_eq!(defaults.ramp_rate, 500.0);
        assert_eq!(defaults.duration, Duration::from_secs(30));
        assert_eq!(defaults.drain, Duration::from_secs(2));
        assert_eq!(defaults.connect_timeout, Duration::from_secs(10));
        assert_eq!(defaults.topic, "loadgen");
        assert_eq!(defaults.publish_rate, 10.0);
        assert_eq!(defaults.payload_size, 128);
        assert_eq!(defaults.publish_concurrency, 8);
        assert_eq!(defaults.publish_timeout, Duration::from_secs(10));
        assert_eq!(defaults.conns_per_worker, MAX_CONNS_PER_WORKER);
        assert_eq!(defaults.max_event_bytes, DEFAULT_MAX_EVENT_BYTES);
    }

    #[test]
    fn several_subscribe_urls_are_used_round_robin() {
        let plan = parse(&[
            "--subscribe-url",
            "http://127.0.0.1:3001/.well-known/mercure?match={topic}",
            "--subscribe-url",
            "http://127.0.0.1:3002/.well-known/mercure?match={topic}",
            "--api",
            "mercure",
            "--publish-url",
            "http://127.0.0.1:3001/.well-known/mercure",
            "--topic",
            "t",
            "-c",
            "39800",
        ])
        .unwrap();
        assert_eq!(plan.subscribe.len(), 2);
        assert_eq!(plan.source_addrs.len(), 2);
        let specs = plan.worker_specs(1, 2);
        assert_eq!(specs.len(), 3);
        for spec in &specs {
            assert_eq!(spec.targets.len(), 2);
            assert_eq!(spec.targets[0].addr.port(), 3001);
            assert_eq!(spec.targets[1].addr.port(), 3002);
            assert!(spec.targets[1]
                .request
                .contains("\r\nHost: 127.0.0.1:3002\r\n"));
            assert!(spec.targets[1]
                .request
                .starts_with("GET /.well-known/mercure?match=t HTTP/1.1\r\n"));
        }
        // Connection i goes to URL i % 2, whichever worker opens it.
        let slots: Vec<usize> = (0..6)
            .map(|index| specs[index % 3].target_slot(index))
            .collect();
        assert_eq!(slots, [0, 1, 0, 1, 0, 1]);
        let params = plan.params();
        assert_eq!(params.subscribe_url, plan.subscribe[0].url);
        assert_eq!(params.subscribe_urls.len(), 2);

        // Each URL is checked like the first.
        assert!(matches!(
            parse(&[
                "--subscribe-url",
                "http://127.0.0.1:1/s",
                "--subscribe-url",
                "http://10.0.0.1:1/s",
            ]),
            Err(ConfigError::Target(TargetError::NotLoopback { .. }))
        ));
        assert!(matches!(
            parse(&[
                "--subscribe-url",
                "http://127.0.0.1:1/s",
                "--subscribe-url",
                "http://[::1]:1/s",
            ]),
            Err(ConfigError::Conflict(_))
        ));
    }

    #[test]
    fn parses_headers() {
        assert_eq!(
            parse_headers(&["X-A:  b c ".into(), "Authorization: Bearer x".into()]).unwrap(),
            vec![
                ("X-A".into(), "b c".into()),
                ("Authorization".into(), "Bearer x".into())
            ]
        );
        assert!(parse_headers(&["X: a\u{e9}".into()]).is_err());
    }

    #[test]
    fn the_worker_subcommand_needs_no_flags() {
        let cli = Cli::try_parse_from(["loadgen", "worker"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Worker)));
        assert!(Cli::try_parse_from(["loadgen"]).is_err());
    }
}
