//! The servers under test and how to start each on free loopback ports.
//!
//! - `pulse`: our server, memory broker, one process.
//! - `pulse-redis`: two Pulse instances sharing the hub through a Redis the benchmark starts.
//! - `nchan`: nginx with the nchan module, one worker (`bench/nchan/nginx.conf`).
//! - `starlette`: FastAPI + sse-starlette on one uvicorn worker (`bench/starlette/app.py`).
//! - `floor`: the least a server can do, `bench floor-server` ([`crate::floor`]): what this
//!   machine's loopback costs, measured at the points the goals are read at.
//!
//! A [`Running`] target knows its URLs (with loadgen's `{topic}` placeholder), the
//! processes to sample, and stops everything it started when dropped.

use std::{
    fmt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    fail,
    procs::{children_of, Proc},
    util::{free_port, port_open, wait_until, Result},
};

/// The key Pulse verifies publishers' tokens with, and loadgen signs them with.
pub const PUBLISHER_KEY: &str = "bench-publisher-key-that-is-at-least-32-bytes";
/// The nginx template, with @PREFIX@, @PORT@, @NCHAN_MODULE@ and @WORKER_CONNECTIONS@.
pub const NGINX_TEMPLATE: &str = include_str!("../nchan/nginx.conf");
/// nginx's `worker_connections`. The open-file limit (20,000) caps the sockets; nchan also
/// takes connection slots that hold no socket, and with exactly 20,000 slots nginx ran out
/// ("worker_connections are not enough") at about 18,700 subscribers.
pub const NGINX_WORKER_CONNECTIONS: u32 = 30_000;
/// How long a server gets to accept connections after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Pulse, memory broker.
    Pulse,
    /// Two Pulse instances on one Redis.
    PulseRedis,
    /// nginx + nchan.
    Nchan,
    /// FastAPI + sse-starlette on uvicorn.
    Starlette,
    /// The minimal server ([`crate::floor`]).
    Floor,
}

impl Target {
    /// The name used in files and tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pulse => "pulse",
            Self::PulseRedis => "pulse-redis",
            Self::Nchan => "nchan",
            Self::Starlette => "starlette",
            Self::Floor => "floor",
        }
    }

    /// The name for readers.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pulse => "Pulse",
            Self::PulseRedis => "Pulse ×2 + Redis",
            Self::Nchan => "nginx + nchan",
            Self::Starlette => "sse-starlette",
            Self::Floor => "floor (minimal server)",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the programs are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tools {
    /// The repository (for `bench/starlette`, `bench/page`, `end2end/node_modules`).
    pub repo: PathBuf,
    /// Pulse's release binary.
    pub server: PathBuf,
    /// loadgen's release binary.
    pub loadgen: PathBuf,
    /// This program, which runs the floor server (`bench floor-server`).
    #[serde(default)]
    pub bench: PathBuf,
    /// The Python venv with uvicorn and sse-starlette.
    pub venv: PathBuf,
    /// nginx.
    pub nginx: PathBuf,
    /// Debian's nchan module.
    pub nchan_module: PathBuf,
    /// redis-server.
    pub redis: PathBuf,
    /// node, for the page measurement.
    pub node: PathBuf,
    /// Debian's chromium.
    pub chromium: PathBuf,
    /// The built site (`target/site`).
    pub site_root: PathBuf,
    /// Scratch space: logs, nginx prefixes, Redis files, loadgen's JSON.
    pub work: PathBuf,
}

impl Tools {
    /// What is missing to run `target`, if anything.
    pub fn missing_for(&self, target: Target) -> Option<String> {
        let need: Vec<(&str, PathBuf)> = match target {
            Target::Pulse => vec![("server", self.server.clone())],
            Target::PulseRedis => vec![
                ("server", self.server.clone()),
                ("redis-server", self.redis.clone()),
            ],
            Target::Nchan => vec![
                ("nginx", self.nginx.clone()),
                ("nchan module", self.nchan_module.clone()),
            ],
            Target::Starlette => vec![
                ("venv python", self.python()),
                ("app", self.starlette_dir().join("app.py")),
            ],
            Target::Floor => vec![("bench", self.bench.clone())],
        };
        let missing: Vec<String> = need
            .into_iter()
            .filter(|(_, path)| !path.exists())
            .map(|(what, path)| format!("{what} ({})", path.display()))
            .collect();
        (!missing.is_empty()).then(|| format!("missing: {}", missing.join(", ")))
    }

    /// The venv's python.
    pub fn python(&self) -> PathBuf {
        self.venv.join("bin/python")
    }

    /// `bench/starlette`.
    pub fn starlette_dir(&self) -> PathBuf {
        self.repo.join("bench/starlette")
    }
}

/// Settings of the counter stream, the same for every target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StreamSettings {
    /// Messages per stream.
    pub count: u32,
    /// Milliseconds between messages.
    pub interval_ms: u64,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            count: 20,
            interval_ms: 1000,
        }
    }
}

/// A started target.
pub struct Running {
    /// Which.
    pub target: Target,
    /// Subscribe URLs (loadgen spreads connections over them), with `{topic}`.
    pub subscribe_urls: Vec<String>,
    /// The publish URL, with `{topic}` where the API wants it.
    pub publish_url: String,
    /// loadgen's `--api`.
    pub api: &'static str,
    /// The counter stream, where the target has one.
    pub stream_url: Option<String>,
    /// Processes to sample (summed): the servers, not Redis.
    pub server_pids: Vec<u32>,
    /// Everything started, stopped in reverse order of start (servers before Redis).
    procs: Vec<Proc>,
}

impl Running {
    /// Stops everything (also done on drop); whether anything had to be killed.
    pub fn stop(mut self) -> bool {
        self.stop_all()
    }

    fn stop_all(&mut self) -> bool {
        let mut killed = false;
        while let Some(mut proc) = self.procs.pop() {
            killed |= proc.stop();
        }
        killed
    }

    /// An error if a process of the target has ended.
    pub fn check_alive(&mut self) -> Result<()> {
        self.procs.iter_mut().try_for_each(Proc::check_alive)
    }
}

#[cfg(test)]
impl Running {
    /// A target that runs nothing, for tests of what is built from it.
    pub(crate) fn for_tests(
        target: Target,
        subscribe_urls: Vec<String>,
        publish_url: String,
        api: &'static str,
        stream_url: Option<String>,
        server_pids: Vec<u32>,
    ) -> Self {
        Self {
            target,
            subscribe_urls,
            publish_url,
            api,
            stream_url,
            server_pids,
            procs: Vec::new(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Starts `target` with the counter stream set as `stream`; `tag` names its log files.
pub fn start(target: Target, tools: &Tools, stream: StreamSettings, tag: &str) -> Result<Running> {
    if let Some(missing) = tools.missing_for(target) {
        return Err(fail!("{target}: {missing}"));
    }
    let logs = tools.work.join("logs");
    match target {
        Target::Pulse => {
            let port = free_port()?;
            let proc = start_pulse(tools, port, None, stream, &logs.join(format!("{tag}.log")))?;
            let base = format!("http://127.0.0.1:{port}");
            Ok(Running {
                target,
                subscribe_urls: vec![format!("{base}/.well-known/mercure?match={{topic}}")],
                publish_url: format!("{base}/.well-known/mercure"),
                api: "mercure",
                stream_url: Some(format!("{base}/stream")),
                server_pids: vec![proc.pid()],
                procs: vec![proc],
            })
        }
        Target::PulseRedis => {
            let redis_port = free_port()?;
            let redis_dir = tools.work.join(format!("redis-{tag}"));
            std::fs::create_dir_all(&redis_dir)?;
            let mut redis = Proc::spawn(
                "redis-server",
                Command::new(&tools.redis).args(redis_args(redis_port, &redis_dir)),
                &logs.join(format!("{tag}-redis.log")),
                Duration::from_secs(5),
            )?;
            wait_until(START_TIMEOUT, "redis-server", || {
                redis.check_alive()?;
                Ok(port_open(redis_port))
            })?;
            let mut procs = vec![redis];
            // Both instances on the same Redis and the same key prefix: one hub.
            let broker = Broker {
                url: format!("redis://127.0.0.1:{redis_port}/0"),
                prefix: format!("bench{redis_port}"),
            };
            let mut urls = Vec::new();
            for instance in ["a", "b"] {
                let port = free_port()?;
                let proc = start_pulse(
                    tools,
                    port,
                    Some(&broker),
                    stream,
                    &logs.join(format!("{tag}-{instance}.log")),
                )?;
                procs.push(proc);
                urls.push(format!("http://127.0.0.1:{port}"));
            }
            Ok(Running {
                target,
                subscribe_urls: urls
                    .iter()
                    .map(|base| format!("{base}/.well-known/mercure?match={{topic}}"))
                    .collect(),
                publish_url: format!("{}/.well-known/mercure", urls[0]),
                api: "mercure",
                stream_url: Some(format!("{}/stream", urls[0])),
                server_pids: procs[1..].iter().map(Proc::pid).collect(),
                procs,
            })
        }
        Target::Nchan => {
            let port = free_port()?;
            let prefix = tools.work.join(format!("nginx-{tag}"));
            std::fs::create_dir_all(&prefix)?;
            let conf = prefix.join("nginx.conf");
            std::fs::write(
                &conf,
                render_nginx(&prefix, port, &tools.nchan_module, NGINX_WORKER_CONNECTIONS),
            )?;
            let mut master = Proc::spawn(
                "nginx",
                Command::new(&tools.nginx).args(nginx_args(&prefix, &conf)),
                &logs.join(format!("{tag}.log")),
                Duration::from_secs(10),
            )?;
            wait_until(START_TIMEOUT, "nginx", || {
                master.check_alive()?;
                Ok(port_open(port))
            })?;
            let mut workers = Vec::new();
            wait_until(Duration::from_secs(5), "nginx worker", || {
                workers = children_of(master.pid());
                Ok(!workers.is_empty())
            })?;
            let base = format!("http://127.0.0.1:{port}");
            let mut server_pids = vec![master.pid()];
            server_pids.extend(workers);
            Ok(Running {
                target,
                subscribe_urls: vec![format!("{base}/sub?id={{topic}}")],
                publish_url: format!("{base}/pub?id={{topic}}"),
                api: "nchan",
                stream_url: None,
                server_pids,
                procs: vec![master],
            })
        }
        Target::Starlette => {
            let port = free_port()?;
            let mut command = Command::new(tools.python());
            command
                .args(uvicorn_args(&tools.starlette_dir(), port))
                .envs(starlette_env(stream));
            let proc = spawn_listening(
                "uvicorn",
                &mut command,
                &logs.join(format!("{tag}.log")),
                // uvicorn winds down each of up to 19,900 streams in Python.
                Duration::from_secs(15),
                port,
            )?;
            let base = format!("http://127.0.0.1:{port}");
            Ok(Running {
                target,
                subscribe_urls: vec![format!("{base}/subscribe?topic={{topic}}")],
                publish_url: format!("{base}/publish?topic={{topic}}"),
                api: "starlette",
                stream_url: Some(format!("{base}/stream")),
                server_pids: vec![proc.pid()],
                procs: vec![proc],
            })
        }
        Target::Floor => {
            let port = free_port()?;
            let mut command = Command::new(&tools.bench);
            command.args(floor_args(port, stream));
            let proc = spawn_listening(
                "floor-server",
                &mut command,
                &logs.join(format!("{tag}.log")),
                Duration::from_secs(5),
                port,
            )?;
            let base = format!("http://127.0.0.1:{port}");
            Ok(Running {
                target,
                subscribe_urls: vec![format!("{base}/sub?id={{topic}}")],
                publish_url: format!("{base}/pub?id={{topic}}"),
                api: "nchan",
                stream_url: Some(format!("{base}/stream")),
                server_pids: vec![proc.pid()],
                procs: vec![proc],
            })
        }
    }
}

/// The floor server's flags: its port and the counter's settings.
pub fn floor_args(port: u16, stream: StreamSettings) -> Vec<String> {
    vec![
        "floor-server".to_owned(),
        "--port".to_owned(),
        port.to_string(),
        "--stream-count".to_owned(),
        stream.count.to_string(),
        "--stream-interval-ms".to_owned(),
        stream.interval_ms.to_string(),
    ]
}

/// A Redis broker shared by Pulse instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// `redis://host:port/db`.
    pub url: String,
    /// The key prefix, the same for every instance of one hub.
    pub prefix: String,
}

fn start_pulse(
    tools: &Tools,
    port: u16,
    broker: Option<&Broker>,
    stream: StreamSettings,
    log: &Path,
) -> Result<Proc> {
    let mut command = Command::new(&tools.server);
    command
        .args(pulse_args(port, broker, stream, &tools.site_root))
        // Keep the key out of the process list.
        .env("MERCURE_PUBLISHER_JWT_KEY", PUBLISHER_KEY)
        .env_remove("RUST_LOG")
        .env_remove("PULSE_BROKER");
    spawn_listening("server", &mut command, log, Duration::from_secs(5), port)
}

/// Starts `command` (stopped within `grace` when dropped) and waits until it accepts
/// connections on `port`.
fn spawn_listening(
    name: &'static str,
    command: &mut Command,
    log: &Path,
    grace: Duration,
    port: u16,
) -> Result<Proc> {
    let mut proc = Proc::spawn(name, command, log, grace)?;
    wait_until(START_TIMEOUT, name, || {
        proc.check_alive()?;
        Ok(port_open(port))
    })?;
    Ok(proc)
}

/// Pulse's flags: loopback, quiet logs, no subscription events (nobody reads them here), no
/// cap per client address (every simulated client is on 127.0.0.1, as behind a proxy), the
/// stream settings, and the broker.
pub fn pulse_args(
    port: u16,
    broker: Option<&Broker>,
    stream: StreamSettings,
    site_root: &Path,
) -> Vec<String> {
    let mut args = vec![
        "--addr".to_owned(),
        format!("127.0.0.1:{port}"),
        "--log".to_owned(),
        "warn".to_owned(),
        "--subscriptions".to_owned(),
        "false".to_owned(),
        "--max-connections-per-ip".to_owned(),
        "0".to_owned(),
        "--max-streams-per-ip".to_owned(),
        "0".to_owned(),
        "--site-root".to_owned(),
        site_root.display().to_string(),
        "--stream-count".to_owned(),
        stream.count.to_string(),
        "--stream-interval".to_owned(),
        format!("{}ms", stream.interval_ms),
    ];
    if let Some(broker) = broker {
        args.extend([
            "--broker".to_owned(),
            broker.url.clone(),
            "--redis-prefix".to_owned(),
            broker.prefix.clone(),
        ]);
    }
    args
}

/// redis-server's flags: loopback, no snapshots, the append-only file as the README advises
/// for Pulse (at the benchmark's publish rates its cost does not show), files in `dir`.
pub fn redis_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--protected-mode",
        "yes",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        &dir.display().to_string(),
        "--loglevel",
        "warning",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect()
}

/// The nginx configuration for one run.
pub fn render_nginx(prefix: &Path, port: u16, module: &Path, worker_connections: u32) -> String {
    NGINX_TEMPLATE
        .replace("@PREFIX@", &prefix.display().to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@NCHAN_MODULE@", &module.display().to_string())
        .replace("@WORKER_CONNECTIONS@", &worker_connections.to_string())
}

/// nginx's command line: in the foreground, everything under `prefix`.
pub fn nginx_args(prefix: &Path, conf: &Path) -> Vec<String> {
    vec![
        "-p".to_owned(),
        format!("{}/", prefix.display()),
        "-e".to_owned(),
        prefix.join("error.log").display().to_string(),
        "-c".to_owned(),
        conf.display().to_string(),
        "-g".to_owned(),
        "daemon off;".to_owned(),
    ]
}

/// uvicorn's command line: one worker on loopback, uvloop and httptools, no access log.
pub fn uvicorn_args(app_dir: &Path, port: u16) -> Vec<String> {
    [
        "-m",
        "uvicorn",
        "app:app",
        "--app-dir",
        &app_dir.display().to_string(),
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--log-level",
        "warning",
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "3",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect()
}

/// The app's stream settings, matching Pulse's.
pub fn starlette_env(stream: StreamSettings) -> Vec<(String, String)> {
    vec![
        ("STREAM_COUNT".to_owned(), stream.count.to_string()),
        (
            "STREAM_INTERVAL_S".to_owned(),
            format!("{}", stream.interval_ms as f64 / 1000.0),
        ),
        ("STREAM_RETRY_MS".to_owned(), "15000".to_owned()),
        ("KEEP_ALIVE_S".to_owned(), "15".to_owned()),
        ("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_nginx_template() {
        let conf = render_nginx(
            Path::new("/tmp/bench/nginx-x"),
            18081,
            Path::new("/usr/lib/nginx/modules/ngx_nchan_module.so"),
            20_000,
        );
        assert!(!conf.contains('@'), "a placeholder is left: {conf}");
        assert!(conf.contains("load_module /usr/lib/nginx/modules/ngx_nchan_module.so;"));
        assert!(conf.contains("worker_processes 1;"));
        assert!(conf.contains("worker_connections 20000;"));
        assert!(conf.contains("listen 127.0.0.1:18081 backlog=4096;"));
        assert!(conf.contains("pid /tmp/bench/nginx-x/nginx.pid;"));
        assert!(conf.contains("nchan_subscriber eventsource;"));
        assert!(conf.contains("nchan_publisher;"));
        assert_eq!(conf.matches("nchan_channel_id $arg_id;").count(), 2);
        assert!(conf.contains("nchan_message_buffer_length 10000;"));
        // Every line ends its directive or opens/closes a block.
        for line in conf.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            assert!(
                line.ends_with(';') || line.ends_with('{') || line == "}",
                "{line}"
            );
        }
        let args = nginx_args(Path::new("/tmp/p"), Path::new("/tmp/p/nginx.conf"));
        assert_eq!(
            args,
            [
                "-p",
                "/tmp/p/",
                "-e",
                "/tmp/p/error.log",
                "-c",
                "/tmp/p/nginx.conf",
                "-g",
                "daemon off;"
            ]
        );
    }

    #[test]
    fn pulse_gets_loopback_quiet_logs_and_matching_stream_settings() {
        let stream = StreamSettings {
            count: 5,
            interval_ms: 200,
        };
        let args = pulse_args(3001, None, stream, Path::new("target/site"));
        let joined = args.join(" ");
        assert!(joined.starts_with("--addr 127.0.0.1:3001 --log warn --subscriptions false"));
        assert!(joined.contains("--stream-count 5 --stream-interval 200ms"));
        assert!(!joined.contains("--broker"));
        let broker = Broker {
            url: "redis://127.0.0.1:6390/0".into(),
            prefix: "bench6390".into(),
        };
        // Two instances of one hub get the same broker and key prefix.
        for port in [3002, 3003] {
            let args = pulse_args(port, Some(&broker), stream, Path::new("s")).join(" ");
            assert!(args.contains("--broker redis://127.0.0.1:6390/0 --redis-prefix bench6390"));
        }
        let env = starlette_env(stream);
        assert!(env.contains(&("STREAM_COUNT".into(), "5".into())));
        assert!(env.contains(&("STREAM_INTERVAL_S".into(), "0.2".into())));
        let uvicorn = uvicorn_args(Path::new("/r/bench/starlette"), 8082).join(" ");
        assert!(uvicorn.starts_with("-m uvicorn app:app --app-dir /r/bench/starlette"));
        assert!(uvicorn.contains("--host 127.0.0.1 --port 8082"));
        assert!(!uvicorn.contains("--workers"));
        let redis = redis_args(6390, Path::new("/w/r")).join(" ");
        assert!(redis.contains("--port 6390 --bind 127.0.0.1"));
        assert!(redis.contains("--dir /w/r"));
    }

    #[test]
    fn names_targets() {
        assert_eq!(Target::PulseRedis.to_string(), "pulse-redis");
        assert_eq!(
            serde_json::to_string(&Target::PulseRedis).unwrap(),
            "\"pulse-redis\""
        );
        let tools = Tools {
            repo: "/nonexistent".into(),
            server: "/nonexistent/server".into(),
            loadgen: "/nonexistent/loadgen".into(),
            bench: "/nonexistent/bench".into(),
            venv: "/nonexistent/venv".into(),
            nginx: "/nonexistent/nginx".into(),
            nchan_module: "/nonexistent/nchan.so".into(),
            redis: "/nonexistent/redis".into(),
            node: "/nonexistent/node".into(),
            chromium: "/nonexistent/chromium".into(),
            site_root: "/nonexistent/site".into(),
            work: "/nonexistent/work".into(),
        };
        let missing = tools.missing_for(Target::PulseRedis).unwrap();
        assert!(missing.contains("server") && missing.contains("redis-server"));
    }
}
