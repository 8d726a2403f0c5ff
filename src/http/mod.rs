//! The HTTP side of the service.
//!
//! - [`server`]: accepting and serving connections within limits, and
//!   draining them at shutdown;
//! - [`routes`]: the warp filter trees of the main and the metrics listener,
//!   their handlers, and the glue that records every request;
//! - [`health`]: `/healthz`, `/readyz`, and the drain after a stop signal.
//!
//! It uses `metrics`, `ws`, `config` and `shutdown`.

pub mod health;
pub mod routes;
pub mod server;
