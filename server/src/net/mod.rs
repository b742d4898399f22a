//! The network: accepting connections under their caps ([`caps`]), the deadline for the
//! first request ([`head_guard`]), the event-stream fast path ([`fast_path`]), hyper and TLS
//! ([`serve`], [`tls`]), the guard every request passes ([`request_guard`]), and what every
//! event-stream handler shares ([`streams`]). Below the features; knows stream delivery and
//! the wire.

pub mod caps;
pub mod fast_path;
pub mod head_guard;
pub mod request_guard;
pub mod serve;
pub mod streams;
pub mod tls;
