//! Caps on what clients hold, in all and from one client address: connections, and event
//! streams (which HTTP/2 multiplexes, up to 128 on one connection).
//!
//! Every accepted connection (and every event stream) takes a [`Permit`] before anything
//! else happens to it, and gives it back when it ends. Past the total, the process would
//! run out of file descriptors or memory (and then fail to open anything at all: a static
//! file, a Redis connection); past the per-address cap, one client would crowd out everyone
//! else. A connection that gets no permit is answered at once and closed (see
//! [`Refusal::response`]); a stream that gets none is answered `503` or `429`.
//!
//! Addresses are grouped the way networks hand them out: an IPv4 address is one client, an
//! IPv6 client usually holds a whole /64, so its /64 counts as one address (an IPv4-mapped
//! IPv6 address counts as its IPv4 address).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use parking_lot::Mutex;

/// File descriptors kept free under the process's limit for everything that is not a client
/// connection: the listener, Redis, static files, logs.
pub const FD_RESERVE: u64 = 64;

/// A cap in all and per client address, and the counts it is checked against.
#[derive(Debug)]
pub struct Caps {
    max_total: usize,
    /// `0`: no cap per address.
    max_per_address: usize,
    open: AtomicUsize,
    per_address: Mutex<HashMap<AddressKey, usize>>,
}

/// One client address as the per-address cap counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4([u8; 4]),
    /// The first 64 bits.
    V6(u64),
}

impl AddressKey {
    /// The key of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => Self::V6(prefix_64(v6)),
            },
        }
    }
}

fn prefix_64(ip: Ipv6Addr) -> u64 {
    (u128::from(ip) >> 64) as u64
}

/// Why a connection (or a stream) was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds as many connections as it may.
    Full,
    /// This client address holds as many as one address may.
    AddressFull,
}

impl Refusal {
    /// The answer written (without waiting) to a refused plain-HTTP connection before it is
    /// closed: a complete HTTP/1.1 response that tells the client to come back later.
    pub fn response(self) -> &'static [u8] {
        match self {
            Self::Full => b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 44\r\nconnection: close\r\n\r\nthe server holds all the connections it may\n",
            Self::AddressFull => b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 46\r\nconnection: close\r\n\r\nthis address holds all the connections it may\n",
        }
    }

    /// The status an event stream that gets no place is answered with.
    pub fn status(self) -> axum::http::StatusCode {
        match self {
            Self::Full => axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Self::AddressFull => axum::http::StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// What the log says.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Full => "the server holds all the connections it may",
            Self::AddressFull => "one address holds all the connections it may",
        }
    }
}

impl axum::response::IntoResponse for Refusal {
    /// The answer to an event stream that gets no place: `503` or `429`, to retry later.
    fn into_response(self) -> axum::response::Response {
        let reason = match self {
            Self::Full => "the server holds all the event streams it may\n",
            Self::AddressFull => "this address holds all the event streams it may\n",
        };
        (
            self.status(),
            [(axum::http::header::RETRY_AFTER, "10")],
            reason,
        )
            .into_response()
    }
}

/// A place under `streams` for an event stream on a connection of `version` from `ip`:
/// HTTP/2 multiplexes streams, so each takes one; an HTTP/1.1 stream is its connection, which
/// already holds a place under the connection caps (`None`: nothing more to take).
pub fn admit_stream(
    streams: &Arc<Caps>,
    version: axum::http::Version,
    ip: IpAddr,
) -> Result<Option<Permit>, Refusal> {
    if version < axum::http::Version::HTTP_2 {
        return Ok(None);
    }
    streams.admit(ip).map(Some)
}

/// The client address of a request, as both of the server's paths record it; the
/// unspecified address when there is none (a request made in a test without a socket).
pub fn client_ip(connected: Option<&axum::extract::ConnectInfo<std::net::SocketAddr>>) -> IpAddr {
    connected.map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |info| {
        info.0.ip()
    })
}

/// One connection's (or stream's) place; dropping it frees the place.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<Caps>,
    key: Option<AddressKey>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(key) = self.key {
            let mut counts = self.limits.per_address.lock();
            if let Some(count) = counts.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&key);
                }
            }
        }
    }
}

impl Caps {
    /// At most `max_total` in all, `max_per_address` of them from one address (`0`: no cap
    /// per address).
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_address,
            open: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
        })
    }

    /// A place for `ip`, if one is free.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let taken = self.open.fetch_add(1, Ordering::AcqRel);
        if taken >= self.max_total {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Full);
        }
        // From here on, the permit gives the place back however this ends.
        let mut permit = Permit {
            limits: Arc::clone(self),
            key: None,
        };
        if self.max_per_address > 0 {
            let key = AddressKey::of(ip);
            let mut counts = self.per_address.lock();
            let count = counts.entry(key).or_insert(0);
            if *count >= self.max_per_address {
                return Err(Refusal::AddressFull);
            }
            *count += 1;
            permit.key = Some(key);
        }
        Ok(permit)
    }

    /// Places held now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The most places there are.
    pub fn max_total(&self) -> usize {
        self.max_total
    }
}

/// The process's open-file limit, after raising the soft limit to the hard one (as Go's
/// runtime and most servers do); `None` where it cannot be read.
pub fn raise_open_file_limit() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

/// The connection cap for an open-file limit of `limit`: the limit less [`FD_RESERVE`].
pub fn default_max_connections(limit: Option<u64>) -> usize {
    let limit = limit.unwrap_or(1024);
    usize::try_from(limit.saturating_sub(FD_RESERVE).max(1)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn one_address_cannot_take_every_place() {
        let limits = Caps::new(10, 3);
        let held: Vec<Permit> = (0..3)
            .map(|_| limits.admit(ip("10.0.0.1")).expect("free"))
            .collect();
        assert_eq!(
            limits.admit(ip("10.0.0.1")).err(),
            Some(Refusal::AddressFull)
        );
        let other = limits.admit(ip("10.0.0.2")).expect("another address");
        assert_eq!(limits.open(), 4);
        drop(held);
        assert_eq!(limits.open(), 1);
        assert!(limits.admit(ip("10.0.0.1")).is_ok(), "places come back");
        drop(other);
        assert!(limits.per_address.lock().len() <= 1);
    }

    #[test]
    fn the_total_holds_whatever_the_addresses() {
        let limits = Caps::new(2, 0);
        let _a = limits.admit(ip("10.0.0.1")).expect("free");
        let _b = limits.admit(ip("10.0.0.2")).expect("free");
        assert_eq!(limits.admit(ip("10.0.0.3")).err(), Some(Refusal::Full));
        assert_eq!(limits.open(), 2, "a refusal takes nothing");
        assert!(limits.per_address.lock().is_empty(), "no cap, no counts");
    }

    #[test]
    fn ipv6_clients_count_by_their_64_bit_prefix() {
        assert_eq!(
            AddressKey::of(ip("2001:db8:1:2::1")),
            AddressKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            AddressKey::of(ip("2001:db8:1:2::1")),
            AddressKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            AddressKey::of(ip("::ffff:192.0.2.7")),
            AddressKey::of(ip("192.0.2.7"))
        );
    }

    #[test]
    fn refusals_are_complete_http_responses() {
        for refusal in [Refusal::Full, Refusal::AddressFull] {
            let text = std::str::from_utf8(refusal.response()).expect("ascii");
            let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .and_then(|value| value.parse().ok())
                .expect("a length");
            assert_eq!(body.len(), length, "{head}");
        }
    }

    #[test]
    fn the_default_cap_keeps_a_reserve() {
        assert_eq!(default_max_connections(Some(20_000)), 19_936);
        assert_eq!(default_max_connections(Some(10)), 1);
    }
}
