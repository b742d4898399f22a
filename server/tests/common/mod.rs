//! Starts the real server router on an ephemeral loopback port for integration tests.

#![allow(dead_code)] // Each test binary uses a different part of this module.

pub mod mercure;

use std::{future::Future, net::SocketAddr, time::Duration};

use clap::Parser;
use server::{config::Config, net::serve::serve, AppState};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// Which of the server's two ways of serving an event stream a test server uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServePath {
    /// Plain HTTP/1.1 requests with `Accept: text/event-stream` (what browsers send) go
    /// through the server's own fast path: the server's default.
    Fast,
    /// Everything goes through hyper (`--sse-fast-path false`).
    Hyper,
}

tokio::task_local! {
    /// The path the servers a test starts use (see [`on_both_paths`]); the fast path when
    /// unset.
    pub static SERVE_PATH: ServePath;
}

/// The path the current test's servers use.
pub fn serve_path() -> ServePath {
    SERVE_PATH.try_with(|path| *path).unwrap_or(ServePath::Fast)
}

/// Defines each test twice, in a module named after it: `fast_path` runs it against a
/// server that serves event streams the way browsers get them (the fast path), `hyper`
/// against one that serves everything through hyper.
#[macro_export]
macro_rules! on_both_paths {
    ($( #[$test:meta] async fn $name:ident() $body:block )*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run() $body

            #[$test]
            async fn fast_path() {
                common::SERVE_PATH.scope(common::ServePath::Fast, run()).await
            }

            #[$test]
            async fn hyper() {
                common::SERVE_PATH.scope(common::ServePath::Hyper, run()).await
            }
        }
    )*};
}

/// A running server; it shuts down when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    pub token: CancellationToken,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Starts a server with the given extra flags (on top of an ephemeral port), serving
    /// event streams on the test's path ([`serve_path`]).
    pub async fn start(flags: &[&str]) -> Self {
        let mut args = vec!["server", "--addr", "127.0.0.1:0"];
        if serve_path() == ServePath::Hyper {
            args.extend_from_slice(&["--sse-fast-path", "false"]);
        }
        args.extend_from_slice(flags);
        let config = Config::try_parse_from(args).expect("test flags are valid");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let addr = listener.local_addr().expect("local address");
        let token = CancellationToken::new();
        let state = AppState::new(&config, token.clone()).expect("valid hub settings");
        let options = config.serve_options().expect("test TLS files load");
        let task = tokio::spawn(serve(
            listener,
            server::app(state.clone()),
            token.clone(),
            options,
        ));
        Self {
            addr,
            state,
            token,
            task: Some(task),
        }
    }

    /// An absolute URL on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and waits until it has returned.
    pub async fn stop(mut self) -> Duration {
        let started = std::time::Instant::now();
        self.token.cancel();
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server ends cleanly");
        }
        started.elapsed()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Polls `check` every 10 ms until it holds or `limit` has passed; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Opens a raw HTTP/1.1 connection and sends `GET path` with `extra` header lines
/// (each ending in `\r\n`).
pub async fn raw_get(addr: SocketAddr, path: &str, extra: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    stream
}

/// A connection to `addr` from the loopback address `source` (127.0.0.0/8 holds many, so
/// that one test can play several clients).
pub async fn connect_from(source: [u8; 4], addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind a loopback source address");
    socket.connect(addr).await.expect("connect")
}

/// Reads from `stream` until `needle` has been seen (or the connection ends, or `limit`
/// passes); returns everything read.
pub async fn read_until(
    stream: &mut tokio::net::TcpStream,
    needle: &[u8],
    limit: Duration,
) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + limit;
    while !contains(&seen, needle) {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
        }
    }
    seen
}

/// Reads from `stream` until the peer closes it (or `limit` passes); returns what was read
/// and whether the connection was closed.
pub async fn read_to_close(stream: &mut tokio::net::TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (seen, true),
            Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
            Err(_) => return (seen, false),
        }
    }
}

/// Whether `haystack` holds `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A real `redis-server` on a free loopback port, with its data in a temporary folder and
/// every write synced to disk (`appendfsync always`), which the tests kill and restart.
pub struct RedisProcess {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<tokio::process::Child>,
}

impl RedisProcess {
    /// Starts a fresh Redis.
    pub async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        redis.spawn().await;
        redis
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server process again (on the same port and data).
    pub async fn spawn(&mut self) {
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                self.dir.path().to_str().expect("utf-8 path"),
                "--protected-mode",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (scripts/setup.sh --test installs it)");
        self.child = Some(child);
        let port = self.port;
        assert!(
            eventually(
                Duration::from_secs(10),
                || async move { redis_ping(port).await }
            )
            .await,
            "redis-server did not start"
        );
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

async fn redis_ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut reply)).await,
        Ok(Ok(_))
    ) && &reply == b"+PONG\r\n"
}
