//! loadgen: a load generator for Server-Sent Events servers on this machine.
//!
//! It opens many subscriptions (spread over worker processes and loopback source
//! addresses), publishes paced updates that carry a sequence number and a send time, and
//! reports what arrived: per-connection counts, missing and duplicated updates, latency
//! percentiles, the server's memory and CPU, and its own CPU next to them. `README.md`
//! beside this crate shows how to point it at each kind of server.
//!
//! The modules, from the wire up: [`target`] (URLs, loopback only), [`http1`] and
//! [`chunked`] (just enough HTTP/1.1), [`sse`] (the event-stream parser), [`payload`] (the
//! stamp), [`timeline`] and [`seqtrack`] (what each connection was owed and got),
//! [`stats`] (histograms), [`subscriber`] and [`worker`] (connections), [`fleet`] and
//! [`protocol`] (worker processes), [`publisher`] and [`jwt`] (publishing), [`procstat`]
//! (`/proc` sampling), [`run`] (the coordinator), [`report`] (results), [`config`] (flags).

pub mod chunked;
pub mod config;
pub mod fleet;
pub mod http1;
pub mod jwt;
pub mod payload;
pub mod procstat;
pub mod protocol;
pub mod publisher;
pub mod report;
pub mod run;
pub mod seqtrack;
pub mod sse;
pub mod stats;
mod subscriber;
pub mod target;
pub mod timeline;
pub mod worker;
pub mod worker_state;

pub use config::{Cli, Command, Plan, RunArgs};
pub use fleet::Launch;
pub use report::Report;
pub use run::{run, RunError};
