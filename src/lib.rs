//! A warp web service instrumented with Prometheus, after the tutorial
//! "Using Prometheus metrics in a Rust web service" (docs/tutorial.md maps
//! its steps to this code).
//!
//! - [`metrics`]: the instrumentation to copy into a service of your own
//!   (docs/reuse.md): the registry, the tutorial's metrics, request,
//!   runtime and process metrics, and the `/metrics` handler;
//! - [`app`]: the composition point: binds, starts the tasks, serves,
//!   shuts down;
//! - [`http`]: the HTTP server with its limits, the routes, health checks;
//! - [`ws`]: websocket clients on `/ws/<id>`;
//! - [`collector`]: the tutorial's simulated `data_collector`;
//! - [`config`]: every setting, parsed and validated once;
//! - [`telemetry`]: log lines, never blocking a worker thread;
//! - [`shutdown`]: the stop signals and how tasks learn of them;
//! - [`memory`]: returning freed memory to the system.
//!
//! Dependencies run one way: `main` → `app` → the rest; `http` → `ws`;
//! both → `metrics`, `config`, `shutdown`; `ws` → `memory` → `shutdown`;
//! `collector` → `metrics`, `shutdown`; `telemetry` → `config`. `metrics`,
//! `config` and `shutdown` import nothing of this crate.
//!
//! Errors: a bad setting is a `clap::Error` from parsing
//! [`config::Config`], whose first line names it; whatever else stops the
//! service is an [`app::Error`] for `main` to print.
//! Handlers never panic on bad input.

pub mod app;
pub mod collector;
pub mod config;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod ws;
