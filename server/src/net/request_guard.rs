//! The first look at every request, before any route: what no handler should ever see.
//!
//! - Methods other than `GET`, `HEAD`, `POST` and `OPTIONS` (`CONNECT`, `TRACE`, `PUT`, any
//!   made-up token) get `405 Method Not Allowed` with an `Allow` header.
//! - A request target that is not a path (`OPTIONS *` apart, which gets `204` with `Allow`)
//!   gets `400 Bad Request`.
//! - An HTTP/1.1 request needs exactly one `Host` header (RFC 9112, section 3.2), and every
//!   `Host` must be a valid authority: a host and an optional port, nothing else, so that the
//!   value is safe wherever the server repeats it (tokens' audiences, `WWW-Authenticate`).
//!
//! Both of the server's paths (hyper and the event-stream fast path) run every request
//! through the same router, so both give the same answer to the same head.

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use axum::{
    body::Body,
    http::{header, HeaderValue, Method, Request, Response, StatusCode, Version},
    response::IntoResponse,
};
use futures_util::future::{ready, Either, Ready};

/// The methods the server answers.
const ALLOWED: &str = "GET, HEAD, POST, OPTIONS";

/// The layer that puts [`RequestGuard`] in front of a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestGuardLayer;

impl<S> tower::Layer<S> for RequestGuardLayer {
    type Service = RequestGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestGuard { inner }
    }
}

/// Answers requests no route should see; passes the others on.
#[derive(Clone, Debug)]
pub struct RequestGuard<S> {
    inner: S,
}

impl<S> tower::Service<Request<Body>> for RequestGuard<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response<Body>, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match check(&request) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(refusal) => Either::Left(ready(Ok(refusal.into_response()))),
        }
    }
}

/// Why a request was answered here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `405`: a method the server does not answer.
    Method,
    /// `204`: `OPTIONS *`, the server's options.
    ServerOptions,
    /// `400`: the request target is not a path.
    Target,
    /// `400`: no `Host`, several, or one that is not a host and port.
    Host,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> axum::response::Response {
        let allow = [(header::ALLOW, HeaderValue::from_static(ALLOWED))];
        match self {
            Self::Method => (
                StatusCode::METHOD_NOT_ALLOWED,
                allow,
                "this method is not allowed here\n",
            )
                .into_response(),
            Self::ServerOptions => (StatusCode::NO_CONTENT, allow).into_response(),
            Self::Target => (
                StatusCode::BAD_REQUEST,
                "the request target must be a path\n",
            )
                .into_response(),
            Self::Host => (
                StatusCode::BAD_REQUEST,
                "the request needs exactly one valid Host header\n",
            )
                .into_response(),
        }
    }
}

/// Whether `request` may reach the routes.
pub fn check<B>(request: &Request<B>) -> Result<(), Refusal> {
    let method = request.method();
    if !matches!(
        *method,
        Method::GET | Method::HEAD | Method::POST | Method::OPTIONS
    ) {
        return Err(Refusal::Method);
    }
    let path = request.uri().path();
    if !path.starts_with('/') {
        if *method == Method::OPTIONS && path == "*" {
            return Err(Refusal::ServerOptions);
        }
        return Err(Refusal::Target);
    }
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() || first.is_some_and(|host| !is_host(host.as_bytes())) {
        return Err(Refusal::Host);
    }
    if first.is_none() && request.version() == Version::HTTP_11 {
        return Err(Refusal::Host);
    }
    Ok(())
}

/// Whether `value` is `host[:port]`: a registered name or IPv4 address (letters, digits,
/// `-`, `.`, `_`, `~`) or a bracketed IPv6 address, then an optional port of digits.
pub fn is_host(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        Some(b'[') => match value.iter().position(|&b| b == b']') {
            Some(end) => {
                let inside = &value[1..end];
                let valid = !inside.is_empty()
                    && inside
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
                if !valid {
                    return false;
                }
                (&value[..=end], &value[end + 1..])
            }
            None => return false,
        },
        _ => match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &value[value.len()..]),
        },
    };
    let host_ok = host.first() == Some(&b'[')
        || (!host.is_empty()
            && host
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')));
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    host_ok && port_ok && value.len() <= 255
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, target: &str, hosts: &[&str], version: Version) -> Request<()> {
        let mut builder = Request::builder()
            .method(method)
            .uri(target)
            .version(version);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).expect("a request")
    }

    fn verdict(method: &str, target: &str, hosts: &[&str]) -> Result<(), Refusal> {
        check(&request(method, target, hosts, Version::HTTP_11))
    }

    #[test]
    fn only_the_methods_the_server_answers_pass() {
        for method in ["GET", "HEAD", "POST", "OPTIONS"] {
            assert_eq!(verdict(method, "/", &["example.com"]), Ok(()), "{method}");
        }
        for method in ["CONNECT", "TRACE", "PUT", "DELETE", "PATCH", "BREW"] {
            assert_eq!(
                verdict(method, "/", &["example.com"]),
                Err(Refusal::Method),
                "{method}"
            );
        }
        assert_eq!(
            verdict("CONNECT", "127.0.0.1:3000", &["127.0.0.1:3000"]),
            Err(Refusal::Method)
        );
    }

    #[test]
    fn targets_must_be_paths() {
        assert_eq!(
            verdict("OPTIONS", "*", &["example.com"]),
            Err(Refusal::ServerOptions)
        );
        assert_eq!(
            verdict("GET", "http://example.com/topics", &["example.com"]),
            Ok(()),
            "the absolute form names a path"
        );
        assert_eq!(
            verdict("GET", "example.com:80", &["example.com"]),
            Err(Refusal::Target)
        );
    }

    #[test]
    fn http_1_1_needs_exactly_one_valid_host() {
        assert_eq!(verdict("GET", "/", &[]), Err(Refusal::Host));
        assert_eq!(verdict("GET", "/", &["a", "b"]), Err(Refusal::Host));
        assert_eq!(verdict("GET", "/", &["a", "a"]), Err(Refusal::Host));
        assert_eq!(
            verdict("GET", "/", &["a\",error=\"x"]),
            Err(Refusal::Host),
            "a quote would break out of a quoted string"
        );
        for bad in [
            "",
            "a b",
            "a:b",
            "a:123456",
            "[::1",
            "[zz]",
            "user@host",
            "a/b",
        ] {
            assert_eq!(verdict("GET", "/", &[bad]), Err(Refusal::Host), "{bad:?}");
        }
        for good in [
            "example.com",
            "example.com:8080",
            "127.0.0.1:3000",
            "[::1]:3000",
            "[2001:db8::1]",
            "localhost",
        ] {
            assert_eq!(verdict("GET", "/", &[good]), Ok(()), "{good}");
        }
        // HTTP/2 carries the authority in the request target instead; HTTP/1.0 may omit it.
        assert_eq!(
            check(&request(
                "GET",
                "https://example.com/",
                &[],
                Version::HTTP_2
            )),
            Ok(())
        );
        assert_eq!(check(&request("GET", "/", &[], Version::HTTP_10)), Ok(()));
    }
}
