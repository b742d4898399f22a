//! A token bucket per client, for the pages' composer.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use parking_lot::Mutex;
use tokio::time::Instant;

/// Buckets kept before idle ones are forgotten.
const MAX_CLIENTS: usize = 10_000;

/// Allows each client `rate` actions a second on average, `burst` at once.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A limiter of `rate` per second with bursts of `burst`.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `client`; when none is left, says how long until one is.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, bucket| refill(*bucket, now, rate, burst).tokens < burst);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        *bucket = refill(*bucket, now, self.rate, self.burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

fn refill(bucket: Bucket, now: Instant, rate: f64, burst: f64) -> Bucket {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    Bucket {
        tokens: (bucket.tokens + elapsed * rate).min(burst),
        at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_a_burst_then_the_rate() {
        let limiter = RateLimiter::new(2.0, 3);
        let client: IpAddr = [127, 0, 0, 1].into();
        let other: IpAddr = [127, 0, 0, 2].into();
        for _ in 0..3 {
            assert!(limiter.check(client).is_ok());
        }
        let wait = limiter.check(client).expect_err("burst spent");
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(limiter.check(other).is_ok(), "clients are limited apart");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limiter.check(client).is_ok());
        assert!(limiter.check(client).is_err());
    }
}
