//! The attacks, each against a server of its own: what it holds, what a healthy client sees.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::{io::AsyncReadExt, io::AsyncWriteExt, sync::Mutex, task::JoinSet};

use crate::{
    client::{self, connect_from, DataLines, Publisher},
    pulse::Pulse,
    Cli,
};

/// Runs the scenarios `cli` asks for, printing each one's figures.
pub async fn run(cli: &Cli) -> Result<(), String> {
    let wants = |name: &str| cli.only.is_empty() || cli.only.iter().any(|only| only == name);
    for only in &cli.only {
        if !["patterns", "slow-readers", "connections"].contains(&only.as_str()) {
            return Err(format!(
                "unknown scenario {only:?} (use patterns, slow-readers or connections)"
            ));
        }
    }
    println!("# Hostile clients against {}", cli.server.display());
    if wants("patterns") {
        patterns(cli).await?;
    }
    if wants("slow-readers") {
        slow_readers(cli).await?;
    }
    if wants("connections") {
        connections(cli).await?;
    }
    Ok(())
}

/// Delivery latency of a healthy subscriber, in microseconds, while `recording`.
struct Latency {
    histogram: Mutex<Histogram<u64>>,
    lost: AtomicU64,
}

impl Latency {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            histogram: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")),
            lost: AtomicU64::new(0),
        })
    }

    async fn take(&self) -> (f64, f64, f64, u64) {
        let mut histogram = self.histogram.lock().await;
        let ms = |us: u64| us as f64 / 1000.0;
        let figures = (
            ms(histogram.value_at_quantile(0.5)),
            ms(histogram.value_at_quantile(0.99)),
            ms(histogram.max()),
            histogram.len(),
        );
        histogram.reset();
        figures
    }
}

/// A healthy subscriber on `topic` and a publisher sending it `rate` updates a second
/// stamped with their time; latencies go to the returned recorder until `stop`.
async fn healthy_traffic(
    server: &Pulse,
    token: &str,
    topic: &str,
    rate: u64,
    stop: Arc<AtomicBool>,
) -> Result<(Arc<Latency>, JoinSet<()>), String> {
    let latency = Latency::new();
    let mut tasks = JoinSet::new();
    let mut stream = connect_from([127, 0, 0, 1], server.addr, None)
        .await
        .map_err(|error| format!("cannot connect: {error}"))?;
    client::subscribe(&mut stream, &format!("match={}", client::encode(topic)))
        .await
        .map_err(|error| format!("cannot subscribe: {error}"))?;
    let mut lines = DataLines::new(stream);
    let recorder = Arc::clone(&latency);
    tasks.spawn(async move {
        while let Some(data) = lines.next().await {
            if let Ok(sent) = data.parse::<u64>() {
                let waited = client::now_us().saturating_sub(sent).max(1);
                let _ = recorder.histogram.lock().await.record(waited);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut publisher = Publisher::connect(server.addr, token)
        .await
        .map_err(|error| format!("cannot connect the publisher: {error}"))?;
    let topic = topic.to_owned();
    let lost = Arc::clone(&latency);
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            match publisher
                .publish(&topic, &client::now_us().to_string())
                .await
            {
                Ok(200) => {}
                _ => {
                    lost.lost.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    Ok((latency, tasks))
}

/// Peak resident memory of `server` while `work` runs, sampled every 250 ms.
async fn peak_rss_during<F: std::future::Future>(server: &Pulse, work: F) -> (F::Output, f64) {
    let mut peak = server.rss_mib();
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            output = &mut work => return (output, peak.max(server.rss_mib())),
            _ = tick.tick() => peak = peak.max(server.rss_mib()),
        }
    }
}

/// 40 anonymous subscriptions, each of 100 URL patterns no other names (a 6 KB query),
/// each reconnecting with new patterns every 2 s (so that subscription events and compiling
/// never stop), while a healthy subscriber gets 50 updates a second.
async fn patterns(cli: &Cli) -> Result<(), String> {
    println!("\n## URL patterns: 40 subscriptions × 100 distinct patterns, reconnecting every 2 s");
    let server = Pulse::start(&cli.server, &[]).await?;
    let token = server.publisher_token(&cli.server).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let (latency, mut healthy) =
        healthy_traffic(&server, &token, "/healthy", 50, Arc::clone(&stop)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    latency.take().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let baseline_rss = server.rss_mib();
    let (p50, p99, max, count) = latency.take().await;
    println!("- before: RSS {baseline_rss:.1} MiB; healthy delivery p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms ({count} updates)");

    let statuses: Arc<Mutex<std::collections::BTreeMap<u16, u64>>> = Arc::default();
    let cpu_before = server.cpu_seconds();
    let started = Instant::now();
    let attack_for = Duration::from_secs(cli.seconds);
    let mut attackers = JoinSet::new();
    for attacker in 0..40u8 {
        let addr = server.addr;
        let statuses = Arc::clone(&statuses);
        attackers.spawn(async move {
            let mut round = 0u32;
            while started.elapsed() < attack_for {
                round += 1;
                let query: Vec<String> = (0..100)
                    .map(|n| {
                        format!(
                            "match_urlpattern={}",
                            client::encode(&format!(
                                "https://example.com/a{attacker}/r{round}/{n}/:id"
                            ))
                        )
                    })
                    .collect();
                let Ok(mut stream) = connect_from([127, 0, 10, attacker + 1], addr, None).await
                else {
                    continue;
                };
                let status = match client::subscribe(&mut stream, &query.join("&")).await {
                    Ok(()) => client::status(&mut stream).await.unwrap_or(0),
                    Err(_) => 0,
                };
                *statuses.lock().await.entry(status).or_default() += 1;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }
    let ((), peak) = peak_rss_during(&server, async {
        while attackers.join_next().await.is_some() {}
    })
    .await;
    let cpu = (server.cpu_seconds() - cpu_before) / started.elapsed().as_secs_f64();
    let (p50, p99, max, count) = latency.take().await;
    let end_rss = server.rss_mib();
    stop.store(true, Ordering::Relaxed);
    healthy.abort_all();
    server.stop().await;
    let statuses = statuses.lock().await;
    println!(
        "- during {} s: subscriptions answered {:?}; server CPU {:.0}% of a core",
        cli.seconds,
        *statuses,
        cpu * 100.0
    );
    println!(
        "- RSS peak {peak:.1} MiB (+{:.1} MiB; target: under +50 MB), {end_rss:.1} MiB at the end",
        peak - baseline_rss
    );
    println!(
        "- healthy delivery p50 {p50:.2} ms, p99 {p99:.2} ms (target: under 100 ms), max {max:.2} ms ({count} updates, {} publishes refused or failed)",
        latency.lost.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Four waves of ten subscribers that never read (4 KiB receive buffers), five seconds
/// apart, while 60 KiB updates flow at 100 a second (6 MB/s: the history of 1,000 turns
/// over every 10 s), after the history was filled with them; the stall timeout is the
/// default's (30 s).
async fn slow_readers(cli: &Cli) -> Result<(), String> {
    println!("\n## Slow readers: 4 waves of 10 that never read, 60 KiB updates at 100/s");
    let server = Pulse::start(&cli.server, &[]).await?;
    let token = server.publisher_token(&cli.server).await?;
    let addr = server.addr;
    let mut publisher = Publisher::connect(addr, &token)
        .await
        .map_err(|error| format!("cannot connect the publisher: {error}"))?;
    let padding = "x".repeat(60 * 1024);
    let mut refused = 0;
    for _ in 0..1000 {
        if publisher.publish("/big", &padding).await.ok() != Some(200) {
            refused += 1;
        }
    }
    if refused > 0 {
        return Err(format!("{refused} of 1,000 updates were refused"));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let full = server.rss_mib();
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = Arc::clone(&stop);
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while !publishing.load(Ordering::Relaxed) {
            tick.tick().await;
            let _ = publisher.publish("/big", &padding).await;
        }
    });
    // What the flow alone costs (the allocator's share of updates in flight), for 10 s.
    let ((), baseline) =
        peak_rss_during(&server, tokio::time::sleep(Duration::from_secs(10))).await;
    println!(
        "- with a full history of 60 KiB updates: RSS {full:.1} MiB; with the flow, peak {baseline:.1} MiB"
    );
    let mut waves = Vec::new();
    let ((), peak) = peak_rss_during(&server, async {
        for wave in 0..4u8 {
            for reader in 0..10u8 {
                if let Ok(mut stream) =
                    connect_from([127, 0, 11 + wave, reader + 1], addr, Some(4096)).await
                {
                    if client::subscribe(&mut stream, "match=%2Fbig").await.is_ok() {
                        waves.push(stream);
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
    })
    .await;
    let end = server.rss_mib();
    stop.store(true, Ordering::Relaxed);
    tasks.abort_all();
    // Which of them the server cut off: their connections were reset or closed (what the
    // kernel still holds for one is read for at most a second).
    let mut cut = 0;
    for stream in &mut waves {
        let mut buf = vec![0u8; 1 << 20];
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        let gone = loop {
            match tokio::time::timeout_at(until, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(_)) => {}
                Err(_) => break false,
            }
        };
        cut += usize::from(gone);
    }
    server.stop().await;
    println!(
        "- with the slow readers: RSS peak {peak:.1} MiB, {end:.1} MiB at the end: {:+.1} MiB over the flow alone",
        peak - baseline
    );
    println!(
        "- slow readers cut off by the server: {cut} of {}",
        waves.len()
    );
    Ok(())
}

/// Thousands of connections that send one byte (`P`, which could start an HTTP/2 preface)
/// and nothing more, from 30 addresses and from one, while a client asks for `/metrics`.
async fn connections(cli: &Cli) -> Result<(), String> {
    println!("\n## Connections: 3,000 that send `P` from 30 addresses, 1,500 from one");
    let server = Pulse::start(&cli.server, &["--header-timeout", "3s"]).await?;
    let addr = server.addr;
    let started = Instant::now();
    let mut idle = Vec::new();
    let mut refused_at_once = 0;
    for n in 0..4500u32 {
        let source = if n < 3000 {
            [127, 0, 20, (n % 30) as u8 + 1]
        } else {
            [127, 0, 21, 1]
        };
        let Ok(mut stream) = connect_from(source, addr, None).await else {
            continue;
        };
        let _ = stream.write_all(b"P").await;
        idle.push(stream);
    }
    let opened = started.elapsed();
    // A legitimate client meanwhile: how long its requests take, and what they get.
    let mut legit = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    for _ in 0..10 {
        let asked = Instant::now();
        if let Ok(mut stream) = connect_from([127, 0, 22, 1], addr, None).await {
            let _ = stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await;
            let status = client::status(&mut stream).await.unwrap_or(0);
            *statuses.entry(status).or_default() += 1;
            let _ = legit.record(asked.elapsed().as_micros().max(1) as u64);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // When each idle connection was closed by the server.
    let mut closed_by = Histogram::<u64>::new_with_bounds(1, 600_000, 3).expect("bounds");
    let mut still_open = 0;
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for stream in &mut idle {
        let answer = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await;
        match answer {
            Ok(Ok(read)) if read > 0 && buf.starts_with(b"HTTP/1.1 429") => refused_at_once += 1,
            Ok(_) => {}
            Err(_) => {
                still_open += 1;
                continue;
            }
        }
        let _ = closed_by.record(started.elapsed().as_millis().max(1) as u64);
    }
    drop(idle);
    server.stop().await;
    println!(
        "- {} connections opened in {:.1} s; {refused_at_once} refused at once (429: one address's cap, 1,000), {still_open} still open 10 s after the last opened",
        4500,
        opened.as_secs_f64()
    );
    if !closed_by.is_empty() {
        println!(
            "- the others closed by {:.1} s after the first opened (header timeout 3 s, counted from each connection)",
            closed_by.max() as f64 / 1000.0
        );
    }
    println!(
        "- a client meanwhile: answered {statuses:?}, in p50 {:.1} ms, max {:.1} ms",
        legit.value_at_quantile(0.5) as f64 / 1000.0,
        legit.max() as f64 / 1000.0
    );
    Ok(())
}
