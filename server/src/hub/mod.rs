//! The Mercure hub at `/.well-known/mercure`: subscribing, publishing, authorization,
//! history, active subscriptions.
//!
//! [`service::HubService`] ties the parts together for the HTTP endpoints in [`http`]: the
//! hub's core ([`core`]: history, registry, fan-out), the broker that stores and carries
//! updates ([`crate::broker`]), and the token settings ([`auth`]). Below them: topic
//! selectors ([`selector`]), reading requests ([`request`], [`text`]), subscription events
//! ([`subscriptions`]).

pub mod auth;
pub mod core;
pub mod http;
pub mod names;
pub mod rate_limit;
pub mod request;
pub mod selector;
pub mod service;
pub mod subscriptions;
pub mod text;
