//! Pulse's server: the server-rendered Leptos app, the counter stream, the Mercure hub and
//! the metrics, as a library so that tests can start the real router on an ephemeral port.
//!
//! The modules are layers, each using only those below it (`ARCHITECTURE.md` draws them):
//! [`wire`] → [`update`] → [`stream`] → [`net`] → [`broker`] → [`hub`] → [`counter`] →
//! [`site`] → [`app`], with [`metrics`] and [`telemetry`] beside them all and [`config`] (the
//! command line) on top.

pub mod app;
pub mod broker;
pub mod config;
pub mod counter;
pub mod hub;
pub mod metrics;
pub mod net;
pub mod site;
pub mod stream;
pub mod telemetry;
pub mod update;
pub mod wire;

pub use app::{app, print_token, run, AppState, StartError};
