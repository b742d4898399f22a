//! The server under attack: a release Pulse started on a free loopback port, read through
//! `/proc`, and stopped by its PID.

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    process::Stdio,
    time::Duration,
};

use loadgen::procstat;
use tokio::process::{Child, Command};

/// The publisher key the scenarios' servers verify (and mint tokens with).
pub const PUBLISHER_KEY: &str = "attack-publisher-key-of-at-least-32-bytes";

/// A running server.
pub struct Pulse {
    child: Child,
    pub addr: SocketAddr,
    pid: u32,
}

impl Pulse {
    /// Starts `binary` with `flags` (on top of a free port and the publisher key) and waits
    /// until it accepts connections.
    pub async fn start(binary: &Path, flags: &[&str]) -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|error| format!("no free port: {error}"))?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(binary)
            .arg("--addr")
            .arg(addr.to_string())
            .args(["--publisher-jwt-key", PUBLISHER_KEY, "--log", "warn"])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
        let pid = child.id().ok_or("the server exited at once")?;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(Self { child, addr, pid });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err("the server did not start within 5 s".into())
    }

    /// Resident memory now, in MiB.
    pub fn rss_mib(&self) -> f64 {
        procstat::sample(self.pid).map_or(0.0, |sample| sample.rss_kb as f64 / 1024.0)
    }

    /// CPU time used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        procstat::sample(self.pid).map_or(0.0, |sample| sample.cpu_secs())
    }

    /// A publisher token for this server, minted by the binary itself.
    pub async fn publisher_token(&self, binary: &Path) -> Result<String, String> {
        let output = Command::new(binary)
            .arg("--addr")
            .arg(self.addr.to_string())
            .args([
                "--publisher-jwt-key",
                PUBLISHER_KEY,
                "token",
                "--publish",
                "*",
            ])
            .output()
            .await
            .map_err(|error| format!("cannot mint a token: {error}"))?;
        let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if token.is_empty() {
            return Err(format!(
                "the server minted no token: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(token)
    }

    /// Stops the server (SIGKILL, by its PID) and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
