//! Starts the real server router on an ephemeral loopback port for integration tests.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::{future::Future, net::SocketAddr, time::Duration};

use clap::Parser;
use server::{config::Config, serve::serve, AppState};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// A running server; it shuts down when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    pub token: CancellationToken,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Starts a server with the given extra flags (on top of an ephemeral port).
    pub async fn start(flags: &[&str]) -> Self {
        let mut args = vec!["server", "--addr", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let config = Config::try_parse_from(args).expect("test flags are valid");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let addr = listener.local_addr().expect("local address");
        let token = CancellationToken::new();
        let state = AppState::new(&config, token.clone());
        let task = tokio::spawn(serve(listener, server::app(state.clone()), token.clone()));
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
