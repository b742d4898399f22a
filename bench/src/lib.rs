//! bench: runs Pulse next to the servers people would pick instead (nginx + nchan,
//! FastAPI + sse-starlette) under the same load from `loadgen`, one scenario at a time,
//! and writes the results: a JSON document with everything, a markdown report with the
//! issue's goals evaluated against the peers measured in the same run, and SVG charts.
//!
//! The modules: [`scenarios`] (what is measured, full and quick), [`targets`] (starting
//! each server on free loopback ports), [`floor`] (the least a server can do, run as a
//! target), [`procs`] (child processes that are always stopped), [`loadgen`] (its command line and results), [`figures`] (what the report uses
//! from them), [`page`] (WASM sizes, first message in chromium), [`machine`] (the machine
//! and versions), [`results`], [`verdict`] (a goal as judged), [`goals`] (the goals as a table), [`markdown`] and [`charts`] (the outputs), and
//! [`run`] (the whole run).

pub mod charts;
pub mod figures;
pub mod floor;
pub mod goals;
pub mod loadgen;
pub mod machine;
pub mod markdown;
pub mod page;
pub mod procs;
pub mod results;
pub mod run;
pub mod scenarios;
pub mod targets;
pub mod util;
pub mod verdict;
