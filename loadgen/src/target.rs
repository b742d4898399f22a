//! Where requests go, and the rule that they only ever go to this machine.
//!
//! loadgen opens tens of thousands of connections and publishes at high rates; pointed at
//! another host that is an attack, not a benchmark. So every URL is parsed here and refused
//! unless its host is a loopback address (127.0.0.0/8 or `::1`) or `localhost`, which is
//! taken to mean 127.0.0.1 without asking a resolver (a resolver could answer anything).
//! Only plain `http://` is supported: the tool measures the server, not a TLS library.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;

/// The placeholder in a URL template that [`expand_topic`] replaces.
pub const TOPIC_PLACEHOLDER: &str = "{topic}";

/// Ephemeral ports one source address can use towards one destination on a default Linux
/// (`net.ipv4.ip_local_port_range` is 32768–60999); kept below that with some headroom.
pub const CONNECTIONS_PER_SOURCE_ADDR: usize = 25_000;

/// Most distinct IPv4 source addresses loadgen spreads its sockets over (127.0.0.1 …).
pub const MAX_SOURCE_ADDRS: usize = 250;

/// Why a URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not `http://`.
    #[error("{url}: only plain http:// URLs are supported")]
    Scheme {
        /// The URL as given.
        url: String,
    },
    /// `http://` followed by no host.
    #[error("{url}: the URL has no host")]
    NoHost {
        /// The URL as given.
        url: String,
    },
    /// `user@host` forms are refused: they hide where a request goes.
    #[error("{url}: user information in URLs is not supported")]
    UserInfo {
        /// The URL as given.
        url: String,
    },
    /// The port is not a number from 1 to 65535.
    #[error("{url}: bad port {port:?}")]
    Port {
        /// The URL as given.
        url: String,
        /// The port text.
        port: String,
    },
    /// The host is not loopback.
    #[error(
        "{url}: refusing host {host:?}: loadgen only sends traffic to loopback addresses \
         (127.0.0.0/8, ::1 or localhost)"
    )]
    NotLoopback {
        /// The URL as given.
        url: String,
        /// The host part.
        host: String,
    },
}

/// A parsed `http://` URL on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The URL it came from.
    pub url: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `Host` header: the authority as written in the URL.
    pub host_header: String,
    /// The request target: path and query, never empty.
    pub path_and_query: String,
}

impl Target {
    /// Parses `url`, refusing anything that is not `http://` to a loopback host.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let rest = strip_prefix_ignore_case(url, "http://").ok_or_else(|| TargetError::Scheme {
            url: url.to_owned(),
        })?;
        let rest = rest.split('#').next().unwrap_or_default();
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(TargetError::UserInfo {
                url: url.to_owned(),
            });
        }
        if authority.is_empty() {
            return Err(TargetError::NoHost {
                url: url.to_owned(),
            });
        }
        let (host, port) = split_host_port(authority);
        let port = match port {
            None | Some("") => 80,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => {
                    return Err(TargetError::Port {
                        url: url.to_owned(),
                        port: port.to_owned(),
                    })
                }
            },
        };
        let ip = loopback_ip(host).ok_or_else(|| TargetError::NotLoopback {
            url: url.to_owned(),
            host: host.to_owned(),
        })?;
        let path_and_query = if path_and_query.starts_with('?') {
            format!("/{path_and_query}")
        } else if path_and_query.is_empty() {
            "/".to_owned()
        } else {
            path_and_query.to_owned()
        };
        Ok(Self {
            url: url.to_owned(),
            addr: SocketAddr::new(ip, port),
            host_header: authority.to_owned(),
            path_and_query,
        })
    }

    /// The source addresses to spread `connections` sockets over, so that no single one
    /// runs out of ephemeral ports: 127.0.0.1, 127.0.0.2, … for IPv4 targets (all of
    /// 127.0.0.0/8 is this machine on Linux), and `::1` alone for IPv6 ones.
    ///
    /// `requested` overrides the automatic count (at least one, at most
    /// [`MAX_SOURCE_ADDRS`]); it is ignored for IPv6, which has a single loopback address.
    pub fn source_addrs(&self, connections: usize, requested: Option<usize>) -> Vec<IpAddr> {
        match self.addr {
            SocketAddr::V6(_) => vec![IpAddr::V6(Ipv6Addr::LOCALHOST)],
            SocketAddr::V4(_) => {
                let count = requested
                    .unwrap_or_else(|| connections.div_ceil(CONNECTIONS_PER_SOURCE_ADDR))
                    .clamp(1, MAX_SOURCE_ADDRS);
                (1..=count)
                    .map(|last| {
                        let last = u8::try_from(last).unwrap_or(u8::MAX);
                        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
                    })
                    .collect()
            }
        }
    }
}

/// The loopback address `host` names, or `None` if it names anything else.
///
/// Accepts `localhost` (and `localhost.`), dotted IPv4 in 127.0.0.0/8, `[::1]` and
/// IPv4-mapped loopback; refuses every other name without resolving it.
pub fn loopback_ip(host: &str) -> Option<IpAddr> {
    let lower = host.to_ascii_lowercase();
    if lower == "localhost" || lower == "localhost." {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let bare = lower
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'));
    let ip: IpAddr = match bare {
        Some(v6) => IpAddr::V6(v6.parse().ok()?),
        None => IpAddr::V4(lower.parse().ok()?),
    };
    is_loopback(ip).then_some(ip)
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Replaces every `{topic}` in `template` with `topic`, percent-encoded so that it is safe
/// in a path or a query.
pub fn expand_topic(template: &str, topic: &str) -> String {
    template.replace(TOPIC_PLACEHOLDER, &percent_encode(topic))
}

/// Percent-encodes every byte except RFC 3986's unreserved characters.
pub fn percent_encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for &byte in text.as_bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    out
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Splits `host:port`, `[v6]:port`, `host` or `[v6]`.
fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        match authority.find(']') {
            Some(close) => {
                let (host, rest) = authority.split_at(close + 1);
                (host, rest.strip_prefix(':'))
            }
            None => (authority, None),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_forms() {
        let cases = [
            ("http://127.0.0.1:3000/stream", "127.0.0.1:3000", "/stream"),
            ("http://127.1.2.3/", "127.1.2.3:80", "/"),
            (
                "http://localhost:8081/sub?id=a",
                "127.0.0.1:8081",
                "/sub?id=a",
            ),
            ("HTTP://LOCALHOST", "127.0.0.1:80", "/"),
            ("http://[::1]:8082/subscribe", "[::1]:8082", "/subscribe"),
            ("http://[::ffff:127.0.0.1]:9/", "[::ffff:127.0.0.1]:9", "/"),
            (
                "http://127.0.0.1:3000?match=x#frag",
                "127.0.0.1:3000",
                "/?match=x",
            ),
        ];
        for (url, addr, path) in cases {
            let target = Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(target.addr.to_string(), addr, "{url}");
            assert_eq!(target.path_and_query, path, "{url}");
        }
    }

    #[test]
    fn host_header_keeps_the_authority_as_written() {
        let target = Target::parse("http://localhost:3000/x").unwrap();
        assert_eq!(target.host_header, "localhost:3000");
    }

    #[test]
    fn refuses_everything_that_is_not_loopback() {
        let refused = [
            "http://10.0.0.1/",
            "http://192.168.1.1:3000/",
            "http://172.16.0.1/",
            "http://8.8.8.8/",
            "http://0.0.0.0:3000/",
            "http://[::]:3000/",
            "http://[2001:db8::1]/",
            "http://example.com/",
            "http://localhost.example.com/",
            "http://127.0.0.1.nip.io/",
            "http://0x7f.0.0.1/",
            "http://2130706433/",
            "http://[::ffff:10.0.0.1]/",
        ];
        for url in refused {
            let error = Target::parse(url).unwrap_err();
            assert!(
                matches!(error, TargetError::NotLoopback { .. }),
                "{url}: {error}"
            );
            assert!(error.to_string().contains("loopback"), "{url}");
        }
    }

    #[test]
    fn refuses_other_schemes_userinfo_and_bad_ports() {
        assert!(matches!(
            Target::parse("https://127.0.0.1/"),
            Err(TargetError::Scheme { .. })
        ));
        assert!(matches!(
            Target::parse("127.0.0.1:3000/"),
            Err(TargetError::Scheme { .. })
        ));
        assert!(matches!(
            Target::parse("http://evil.com@127.0.0.1/"),
            Err(TargetError::UserInfo { .. })
        ));
        assert!(matches!(
            Target::parse("http://127.0.0.1:0/"),
            Err(TargetError::Port { .. })
        ));
        assert!(matches!(
            Target::parse("http://127.0.0.1:99999/"),
            Err(TargetError::Port { .. })
        ));
        assert!(matches!(
            Target::parse("http:///x"),
            Err(TargetError::NoHost { .. })
        ));
    }

    #[test]
    fn spreads_sources_over_loopback_addresses() {
        let v4 = Target::parse("http://127.0.0.1:1/").unwrap();
        assert_eq!(v4.source_addrs(10, None).len(), 1);
        let many = v4.source_addrs(60_000, None);
        assert_eq!(many.len(), 3);
        assert_eq!(many[2], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(v4.source_addrs(10, Some(4)).len(), 4);
        assert_eq!(v4.source_addrs(10, Some(10_000)).len(), MAX_SOURCE_ADDRS);
        let v6 = Target::parse("http://[::1]:1/").unwrap();
        assert_eq!(v6.source_addrs(60_000, Some(5)).len(), 1);
    }

    #[test]
    fn expands_topics_percent_encoded() {
        assert_eq!(
            expand_topic("http://127.0.0.1/sub?id={topic}", "a b/c&d"),
            "http://127.0.0.1/sub?id=a%20b%2Fc%26d"
        );
        assert_eq!(
            expand_topic("http://h/.well-known/mercure?match={topic}", "https://x/y"),
            "http://h/.well-known/mercure?match=https%3A%2F%2Fx%2Fy"
        );
        assert_eq!(expand_topic("http://h/stream", "t"), "http://h/stream");
    }
}
