//! The publisher: stamped updates at a steady rate through one of the supported publish
//! APIs, with the time each publish request took.
//!
//! Updates are scheduled at fixed times (`n / rate` from the start) and sent over a small
//! pool of keep-alive connections, several at once, because some servers answer a publish
//! only after fanning it out and one connection would then cap the rate. When every
//! connection is busy the schedule slips; that is counted (`backlogged`) and the achieved
//! rate reported, rather than hidden. Each update's sequence number and send time are taken
//! together under the coordinator's single thread, just before its request is written, so
//! the log in [`crate::timeline`] stays ordered.

use std::{cell::RefCell, collections::BTreeMap, io, rc::Rc, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::{io::AsyncWriteExt, net::TcpStream, sync::Semaphore, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    http1::{self, HttpError},
    payload::{self, Stamp},
    protocol::count_failure,
    stats::{Latency, StatsError},
    target::Target,
    timeline::Timeline,
};

/// Which publish request to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// Mercure hub: form-encoded `topic`, `data`, `id`, with a publisher JWT.
    Mercure,
    /// nginx nchan: the payload as the POST body.
    Nchan,
    /// sse-starlette app: the payload as a JSON POST body.
    Starlette,
    /// No publishing (the endpoint emits events by itself).
    None,
}

/// What to publish, where, how fast.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    /// The request shape.
    pub api: Api,
    /// The publish URL (topic already filled in).
    pub target: Target,
    /// The topic (for Mercure's `topic` field).
    pub topic: String,
    /// Updates per second.
    pub rate: f64,
    /// Payload size in bytes.
    pub payload_size: usize,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Longest wait for a publish response.
    pub timeout: Duration,
    /// Extra request headers (e.g. `Authorization`).
    pub headers: Vec<(String, String)>,
    /// Prefix of Mercure update ids, unique per run.
    pub id_prefix: String,
}

/// Everything the publisher did; the coordinator reads it as it goes.
#[derive(Debug)]
pub struct PublishLog {
    /// Send times and failures.
    pub timeline: Timeline,
    /// The next sequence number not yet passed to the workers.
    pub forwarded_until: u64,
    /// Failed sequence numbers not yet passed to the workers.
    pub failed_unforwarded: Vec<u64>,
    /// Publish requests answered with 2xx.
    pub ok: u64,
    /// Publish requests that failed (non-2xx, error, timeout), including failed connects.
    pub failed: u64,
    /// Why, with counts.
    pub failures: BTreeMap<String, u64>,
    /// Times the schedule had to wait for a free connection.
    pub backlogged: u64,
    /// Time from writing a request to the end of its response, successful ones only.
    pub latency: Latency,
    /// When the first update was sent.
    pub first_sent: Option<Instant>,
    /// When the last update was sent.
    pub last_sent: Option<Instant>,
}

impl PublishLog {
    /// An empty log.
    pub fn new() -> Result<Self, StatsError> {
        Ok(Self {
            timeline: Timeline::new(),
            forwarded_until: crate::timeline::FIRST_SEQ,
            failed_unforwarded: Vec::new(),
            ok: 0,
            failed: 0,
            failures: BTreeMap::new(),
            backlogged: 0,
            latency: Latency::new()?,
            first_sent: None,
            last_sent: None,
        })
    }

    /// Seconds of publishing: from the first send to the last, plus one interval (`1 /
    /// rate`) for the last update's own slot, so that `n` updates sent on schedule span
    /// `n / rate` (a single one `1 / rate`). The wait for requests still unanswered after
    /// the last send is not publishing and is left out: counting it made a server that
    /// answers slowly look like one the publisher could not keep up with. 0 when nothing
    /// was sent; without a usable rate, just first to last.
    pub fn window_s(&self, rate: f64) -> f64 {
        let (Some(first), Some(last)) = (self.first_sent, self.last_sent) else {
            return 0.0;
        };
        let slot = if rate.is_finite() && rate > 0.0 {
            1.0 / rate
        } else {
            0.0
        };
        last.saturating_duration_since(first).as_secs_f64() + slot
    }

    /// Updates sent per second of [`PublishLog::window_s`]; 0 when that is 0.
    pub fn achieved_rate(&self, rate: f64) -> f64 {
        let window = self.window_s(rate);
        if window > 0.0 {
            self.timeline.len() as f64 / window
        } else {
            0.0
        }
    }

    /// Send times and failures not yet passed on: `(first seq, send times, failed seqs)`.
    pub fn take_unforwarded(&mut self) -> (u64, Vec<u64>, Vec<u64>) {
        let first = self.forwarded_until;
        let sent = self.timeline.sent_from(first).to_vec();
        self.forwarded_until += sent.len() as u64;
        (first, sent, std::mem::take(&mut self.failed_unforwarded))
    }

    fn fail(&mut self, seq: Option<u64>, reason: &str) {
        self.failed += 1;
        count_failure(&mut self.failures, reason);
        if let Some(seq) = seq {
            self.timeline.mark_failed(seq);
            self.failed_unforwarded.push(seq);
        }
    }
}

/// Sends updates until `stop`, then waits for the requests in flight.
pub struct Publisher {
    plan: PublishPlan,
    log: Rc<RefCell<PublishLog>>,
    idle: RefCell<Vec<TcpStream>>,
}

impl Publisher {
    /// A publisher writing to `log`.
    pub fn new(plan: PublishPlan, log: Rc<RefCell<PublishLog>>) -> Self {
        Self {
            plan,
            log,
            idle: RefCell::new(Vec::new()),
        }
    }

    /// Publishes on schedule until `stop` is cancelled; must run inside a `LocalSet`.
    pub async fn run(self: Rc<Self>, stop: CancellationToken) {
        let concurrency = self.plan.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let start = Instant::now();
        let rate = self.plan.rate.max(1e-6);
        let mut scheduled: u64 = 0;
        // Update n is due n / rate after the start.
        while let Some(due) = Duration::try_from_secs_f64(scheduled as f64 / rate)
            .ok()
            .and_then(|offset| start.checked_add(offset))
        {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(due) => {}
            }
            let permit = match Arc::clone(&slots).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    self.log.borrow_mut().backlogged += 1;
                    tokio::select! {
                        biased;
                        () = stop.cancelled() => break,
                        permit = Arc::clone(&slots).acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => break,
                        },
                    }
                }
            };
            let publisher = Rc::clone(&self);
            tokio::task::spawn_local(async move {
                publisher.publish_one().await;
                drop(permit);
            });
            scheduled += 1;
        }
        // Let the requests in flight finish (each is bounded by the timeout).
        let _ = tokio::time::timeout(
            self.plan.timeout + Duration::from_secs(1),
            slots.acquire_many(u32::try_from(concurrency).unwrap_or(u32::MAX)),
        )
        .await;
    }

    /// Sends one update.
    async fn publish_one(&self) {
        let pooled = self.idle.borrow_mut().pop();
        let (mut stream, mut reused) = match pooled {
            Some(stream) => (stream, true),
            None => match self.connect().await {
                Ok(stream) => (stream, false),
                Err(reason) => {
                    self.log.borrow_mut().fail(None, &reason);
                    return;
                }
            },
        };

        let (seq, sent_ns) = {
            let mut log = self.log.borrow_mut();
            let seq = log.timeline.push(payload::unix_nanos());
            let now = Instant::now();
            log.first_sent.get_or_insert(now);
            log.last_sent = Some(now);
            (seq, log.timeline.sent_at(seq).unwrap_or_default())
        };
        let request = self.request(Stamp { seq, sent_ns });
        let mut buf = Vec::with_capacity(1024);
        let started = Instant::now();
        let result = loop {
            let attempt = tokio::time::timeout(self.plan.timeout, async {
                stream.write_all(&request).await?;
                http1::read_response(&mut stream, &mut buf).await
            })
            .await;
            match attempt {
                // A kept-alive connection the server has closed in the meantime: the
                // request never reached it, so send it once more on a fresh one.
                Ok(Err(HttpError::Eof | HttpError::Io(_))) if reused => {
                    reused = false;
                    match self.connect().await {
                        Ok(fresh) => stream = fresh,
                        Err(reason) => break Err(reason),
                    }
                }
                Ok(Ok(response)) => break Ok(response),
                Ok(Err(error)) => break Err(error_reason(&error)),
                Err(_) => break Err("timeout".to_owned()),
            }
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut log = self.log.borrow_mut();
        match result {
            Ok(response) if (200..300).contains(&response.status) => {
                log.ok += 1;
                log.latency.record(micros);
                if response.reusable {
                    self.idle.borrow_mut().push(stream);
                }
            }
            Ok(response) => {
                log.fail(Some(seq), &format!("http {}", response.status));
                if response.reusable {
                    self.idle.borrow_mut().push(stream);
                }
            }
            Err(reason) => log.fail(Some(seq), &reason),
        }
    }

    async fn connect(&self) -> Result<TcpStream, String> {
        match tokio::time::timeout(self.plan.timeout, TcpStream::connect(self.plan.target.addr))
            .await
        {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(error)) => Err(format!("connect: {}", io_kind(&error))),
            Err(_) => Err("connect: timeout".to_owned()),
        }
    }

    /// The whole request for one update.
    fn request(&self, stamp: Stamp) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.plan.payload_size + 64);
        payload::encode(stamp, self.plan.payload_size, &mut body);
        let headers = self
            .plan
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()));
        let mut out = Vec::with_capacity(body.len() * 2 + 256);
        match self.plan.api {
            Api::Mercure => {
                let data = String::from_utf8_lossy(&body);
                let id = format!("{}{}", self.plan.id_prefix, stamp.seq);
                let form = form_urlencoded::Serializer::new(String::new())
                    .append_pair("topic", &self.plan.topic)
                    .append_pair("data", &data)
                    .append_pair("id", &id)
                    .finish();
                http1::write_post(
                    &mut out,
                    &self.plan.target,
                    headers,
                    "application/x-www-form-urlencoded",
                    form.as_bytes(),
                );
            }
            Api::Nchan | Api::Starlette | Api::None => {
                http1::write_post(
                    &mut out,
                    &self.plan.target,
                    headers,
                    "application/json",
                    &body,
                );
            }
        }
        out
    }
}

fn error_reason(error: &HttpError) -> String {
    match error {
        HttpError::Io(error) => format!("io: {}", io_kind(error)),
        other => other.to_string(),
    }
}

fn io_kind(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => format!("{:?}", nix::errno::Errno::from_raw(code)),
        None => error.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(api: Api) -> PublishPlan {
        PublishPlan {
            api,
            target: Target::parse("http://127.0.0.1:3000/.well-known/mercure").unwrap(),
            topic: "https://example.com/t/1".into(),
            rate: 1.0,
            payload_size: 80,
            concurrency: 1,
            timeout: Duration::from_secs(1),
            headers: vec![("Authorization".into(), "Bearer abc".into())],
            id_prefix: "urn:loadgen:7:".into(),
        }
    }

    fn request_text(api: Api) -> String {
        let log = Rc::new(RefCell::new(PublishLog::new().unwrap()));
        let publisher = Publisher::new(plan(api), log);
        String::from_utf8(publisher.request(Stamp {
            seq: 42,
            sent_ns: 1_000,
        }))
        .unwrap()
    }

    #[test]
    fn mercure_requests_are_forms_with_the_token() {
        let text = request_text(Api::Mercure);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /.well-known/mercure HTTP/1.1\r\n"));
        assert!(head.contains("\r\nContent-Type: application/x-www-form-urlencoded\r\n"));
        assert!(head.contains("\r\nAuthorization: Bearer abc"));
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
        let fields: BTreeMap<String, String> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(fields["topic"], "https://example.com/t/1");
        assert_eq!(fields["id"], "urn:loadgen:7:42");
        assert_eq!(fields["data"].len(), 80);
        assert_eq!(
            payload::decode(fields["data"].as_bytes()),
            Some(Stamp {
                seq: 42,
                sent_ns: 1_000
            })
        );
    }

    #[test]
    fn nchan_and_starlette_post_the_payload() {
        for api in [Api::Nchan, Api::Starlette] {
            let text = request_text(api);
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains("\r\nContent-Type: application/json\r\n"));
            assert_eq!(body.len(), 80);
            assert_eq!(
                payload::decode(body.as_bytes()).map(|stamp| stamp.seq),
                Some(42)
            );
        }
    }

    #[test]
    fn forwards_the_log_in_pieces() {
        let mut log = PublishLog::new().unwrap();
        log.timeline.push(10);
        log.timeline.push(20);
        assert_eq!(log.take_unforwarded(), (1, vec![10, 20], vec![]));
        log.timeline.push(30);
        log.fail(Some(3), "http 500");
        log.fail(None, "connect: ECONNREFUSED");
        assert_eq!(log.take_unforwarded(), (3, vec![30], vec![3]));
        assert_eq!(log.take_unforwarded(), (4, vec![], vec![]));
        assert_eq!(log.failed, 2);
        assert_eq!(log.timeline.failed_count(), 1);
    }

    /// Records a send at `at`, the way `publish_one` does.
    fn sent_at(log: &mut PublishLog, at: Instant) {
        log.timeline.push(payload::unix_nanos());
        log.first_sent.get_or_insert(at);
        log.last_sent = Some(at);
    }

    #[test]
    fn the_window_spans_the_sends_not_the_wait_for_answers() {
        // 100 updates at 10/s sent on time over 9.9 s (nchan at 10,000 subscribers); the
        // publisher then waited 1.4 s more for answers, which is not publishing time.
        let start = Instant::now();
        let mut log = PublishLog::new().unwrap();
        assert_eq!(log.window_s(10.0), 0.0);
        assert_eq!(log.achieved_rate(10.0), 0.0);
        for n in 0..100 {
            sent_at(&mut log, start + Duration::from_millis(n * 100));
        }
        assert!((log.window_s(10.0) - 10.0).abs() < 1e-9);
        assert!((log.achieved_rate(10.0) - 10.0).abs() < 1e-9);

        // One update: one slot of the schedule, so the rate asked for.
        let mut one = PublishLog::new().unwrap();
        sent_at(&mut one, start);
        assert!((one.window_s(4.0) - 0.25).abs() < 1e-9);
        assert!((one.achieved_rate(4.0) - 4.0).abs() < 1e-9);
        // No usable rate: no slot, and no rate from a zero window.
        assert_eq!(one.window_s(0.0), 0.0);
        assert_eq!(one.achieved_rate(f64::NAN), 0.0);

        // A slipped schedule shows: 10 updates over 1.9 s at 10/s is 5/s.
        let mut slow = PublishLog::new().unwrap();
        for n in 0..10 {
            sent_at(&mut slow, start + Duration::from_millis(n * 211));
        }
        assert!((slow.achieved_rate(10.0) - 10.0 / 2.0).abs() < 0.01);
    }
}
