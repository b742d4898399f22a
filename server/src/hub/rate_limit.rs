//! How fast one client may post from the topic pages' composer: `governor`'s keyed
//! limiter (GCRA, the token bucket's exact form) per client address, with the number of
//! addresses it remembers bounded.

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use governor::{
    clock::{Clock, DefaultClock},
    middleware::NoOpMiddleware,
    state::keyed::HashMapStateStore,
    Quota,
};

use crate::net::caps::AddressKey;

/// Addresses remembered at most. Past it, those whose allowance is whole again are
/// forgotten; when every one is still spending (10,000 addresses posting within a few
/// seconds: an attack), every post waits a second rather than the map growing.
const MAX_CLIENTS: usize = 10_000;

/// Allows each client address (an IPv6 /64 counts as one) `rate` posts a second on average,
/// `burst` at once.
pub struct RateLimiter<C: Clock = DefaultClock> {
    limiter: governor::RateLimiter<
        AddressKey,
        HashMapStateStore<AddressKey>,
        C,
        NoOpMiddleware<<C as Clock>::Instant>,
    >,
    clock: C,
}

impl RateLimiter {
    /// A limiter of `rate` per second (at most one every 1 ns… one every 1,000 years) with
    /// bursts of `burst`.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self::with_clock(rate, burst, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// The same on `clock`.
    pub fn with_clock(rate: f64, burst: u32, clock: C) -> Self {
        let seconds = (1.0 / rate).clamp(1e-9, 3e10);
        let quota = Quota::with_period(Duration::from_secs_f64(seconds))
            .expect("a period of at least a nanosecond")
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Self {
            limiter: governor::RateLimiter::hashmap_with_clock(quota, clock.clone()),
            clock,
        }
    }

    /// Takes one post for `client`; when none is left, says how long until one is.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let key = AddressKey::of(client);
        if self.limiter.len() >= MAX_CLIENTS {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            if self.limiter.len() >= MAX_CLIENTS {
                return Err(Duration::from_secs(1));
            }
        }
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Addresses remembered now.
    pub fn clients(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(2.0, 3, clock.clone());
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
        clock.advance(Duration::from_millis(500));
        assert!(limiter.check(client).is_ok());
        assert!(limiter.check(client).is_err());
    }

    #[test]
    fn an_ipv6_client_is_its_64() {
        let limiter = RateLimiter::with_clock(1.0, 1, FakeRelativeClock::default());
        assert!(limiter.check("2001:db8::1".parse().unwrap()).is_ok());
        assert!(
            limiter.check("2001:db8::2".parse().unwrap()).is_err(),
            "same /64"
        );
        assert!(limiter.check("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }

    #[test]
    fn the_addresses_it_remembers_are_bounded() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(0.001, 2, clock.clone());
        let address = |n: usize| IpAddr::from([10, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
        for n in 0..MAX_CLIENTS {
            assert!(limiter.check(address(n)).is_ok());
        }
        // Every one is still spending its allowance: posts wait, the map does not grow.
        for n in [MAX_CLIENTS, MAX_CLIENTS + 1, 0] {
            assert_eq!(limiter.check(address(n)), Err(Duration::from_secs(1)));
        }
        assert_eq!(limiter.clients(), MAX_CLIENTS);
        // Once their allowances are whole again, they are forgotten and newcomers are let in.
        clock.advance(Duration::from_secs(3_000));
        assert!(limiter.check(address(MAX_CLIENTS)).is_ok());
        assert_eq!(limiter.clients(), 1);
    }
}
