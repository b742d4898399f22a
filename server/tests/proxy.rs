//! Two instances behind nginx (with the example config from `deploy/nginx/pulse.conf`) on
//! one Redis: a client whose instance is killed reconnects through nginx with
//! `Last-Event-ID` and misses nothing.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{eventually, free_port, mercure::*, RedisProcess};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use tokio::process::{Child, Command};

const TOPIC: &str = "/proxy";

/// A server binary on `port`, sharing `redis`, accepting tokens for `audience`.
async fn instance(port: u16, redis: &RedisProcess, audience: &str) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_server"))
        .args([
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--broker",
            &redis.url(),
            "--publisher-jwt-key",
            PUBLISHER_KEY,
            "--trusted-issuers",
            ISSUER,
            "--resource-identifier",
            audience,
            "--log",
            "warn",
        ])
        .kill_on_drop(true)
        .spawn()
        .expect("start an instance");
    assert!(
        eventually(Duration::from_secs(10), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await
    );
    child
}

/// nginx running the example config, rendered for these ports.
struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(listen: u16, tls_listen: u16, upstreams: [u16; 2]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let prefix = dir.path().to_str().expect("utf-8 path").to_owned();
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .expect("certificate");
        std::fs::write(dir.path().join("cert.pem"), certified.cert.pem()).expect("cert");
        std::fs::write(
            dir.path().join("key.pem"),
            certified.key_pair.serialize_pem(),
        )
        .expect("key");
        let template = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/nginx/pulse.conf"
        ))
        .expect("the example nginx config");
        let config = template
            .replace("${NGINX_PREFIX}", &prefix)
            .replace("${PULSE_LISTEN}", &format!("127.0.0.1:{listen}"))
            .replace("${PULSE_TLS_LISTEN}", &format!("127.0.0.1:{tls_listen}"))
            .replace(
                "${PULSE_UPSTREAM_A}",
                &format!("127.0.0.1:{}", upstreams[0]),
            )
            .replace(
                "${PULSE_UPSTREAM_B}",
                &format!("127.0.0.1:{}", upstreams[1]),
            )
            .replace("${TLS_CERT}", &format!("{prefix}/cert.pem"))
            .replace("${TLS_KEY}", &format!("{prefix}/key.pem"));
        assert!(!config.contains("${"), "a placeholder was left: {config}");
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).expect("write config");
        let child = Command::new("nginx")
            .args([
                "-p",
                &prefix,
                "-e",
                &format!("{prefix}/error.log"),
                "-c",
                path.to_str().expect("utf-8"),
                "-g",
                "daemon off;",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx is installed (scripts/setup.sh --test installs it)");
        assert!(
            eventually(Duration::from_secs(10), || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", listen))
                    .await
                    .is_ok()
            })
            .await,
            "nginx did not start: {}",
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        );
        Self { child, _dir: dir }
    }
}

impl Drop for Nginx {
    /// Stops nginx with SIGTERM, which also stops its workers (SIGKILL would orphan them).
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

async fn open_streams(port: u16) -> u64 {
    let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("pulse_streams_open{stream=\"hub\"} "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// A client that behaves like EventSource: reconnects, sending the last id it saw.
struct ResumingClient {
    received: Arc<Mutex<Vec<String>>>,
    connections: Arc<Mutex<u32>>,
    task: tokio::task::JoinHandle<()>,
}

impl ResumingClient {
    fn start(url: String) -> Self {
        let received = Arc::new(Mutex::new(Vec::<String>::new()));
        let connections = Arc::new(Mutex::new(0u32));
        let task = tokio::spawn(Self::run(
            url,
            Arc::clone(&received),
            Arc::clone(&connections),
        ));
        Self {
            received,
            connections,
            task,
        }
    }

    async fn run(url: String, received: Arc<Mutex<Vec<String>>>, connections: Arc<Mutex<u32>>) {
        let client = reqwest::Client::new();
        loop {
            let last = received.lock().expect("lock").last().cloned();
            let mut request = client.get(&url);
            if let Some(last) = last {
                request = request.header("Last-Event-ID", last);
            }
            if let Ok(response) = request.send().await {
                if response.status() == 200 {
                    *connections.lock().expect("lock") += 1;
                    let mut events = response.bytes_stream().eventsource();
                    while let Some(Ok(event)) = events.next().await {
                        if !event.id.is_empty() {
                            received.lock().expect("lock").push(event.id);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn connections(&self) -> u32 {
        *self.connections.lock().expect("lock")
    }

    fn seen(&self) -> Vec<String> {
        self.received.lock().expect("lock").clone()
    }

    /// Whether every one of `ids` arrives within 15 s.
    async fn receives(&self, ids: &[String]) -> bool {
        eventually(Duration::from_secs(15), || async {
            let seen = self.received.lock().expect("lock");
            ids.iter().all(|id| seen.contains(id))
        })
        .await
    }
}

impl Drop for ResumingClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes update `n` to the hub behind `public`; returns its id.
async fn publish_through(public: &str, token: &str, n: usize) -> String {
    let response = reqwest::Client::new()
        .post(format!("{public}/.well-known/mercure"))
        .bearer_auth(token)
        .form(&[("topic", TOPIC), ("data", &n.to_string())])
        .send()
        .await
        .expect("nginx answers");
    assert_eq!(response.status(), 200);
    response.text().await.expect("id")
}

#[tokio::test]
async fn a_client_whose_instance_dies_reconnects_through_nginx_and_misses_nothing() {
    let redis = RedisProcess::start().await;
    let (listen, tls_listen) = (free_port(), free_port());
    let public = format!("http://127.0.0.1:{listen}");
    let audience = format!("{public}/.well-known/mercure");
    let ports = [free_port(), free_port()];
    let mut instances = vec![
        instance(ports[0], &redis, &audience).await,
        instance(ports[1], &redis, &audience).await,
    ];
    let _nginx = Nginx::start(listen, tls_listen, ports).await;
    let client = ResumingClient::start(format!("{public}/.well-known/mercure?match=%2Fproxy"));
    let token = publisher_token_for(&audience);

    assert!(
        eventually(Duration::from_secs(10), || async {
            client.connections() == 1
        })
        .await
    );
    let mut acknowledged = Vec::new();
    for n in 0..10 {
        acknowledged.push(publish_through(&public, &token, n).await);
    }
    assert!(
        client.receives(&acknowledged).await,
        "the first updates did not arrive"
    );

    // Kill the instance that serves the stream, as a crash would.
    let serving = if open_streams(ports[0]).await == 1 {
        0
    } else {
        1
    };
    assert_eq!(
        open_streams(ports[serving]).await,
        1,
        "one instance serves the stream"
    );
    let mut dead = instances.remove(serving);
    dead.start_kill().expect("kill");
    let _ = dead.wait().await;

    for n in 10..20 {
        acknowledged.push(publish_through(&public, &token, n).await);
    }
    assert!(
        client.receives(&acknowledged).await,
        "updates after the crash did not arrive"
    );
    assert_eq!(
        client.seen(),
        acknowledged,
        "every update once, in order, across the reconnection"
    );
    assert!(client.connections() >= 2, "the client reconnected");
    drop(client);

    // nginx also speaks HTTP/2 to clients over TLS.
    let secure = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    let response = secure
        .get(format!("https://127.0.0.1:{tls_listen}/.well-known/mercure?match=%2Fproxy&last_event_id=earliest"))
        .send()
        .await
        .expect("TLS request");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
}
