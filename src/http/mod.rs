//! The HTTP side of the service.
//!
//! - [`server`]: accepting and serving connections within limits, and
//!   draining them at shutdown;
//! - [`routes`]: the warp filter trees of the main and the metrics listener,
//!   and their handlers;
//! - [`instrument`]: the glue that records every request in the request
//!   metrics, copied with `metrics/` into a warp service of one's own;
//! - [`health`]: `/healthz`, `/readyz`, and the drain after a stop signal.
//!
//! It uses `metrics`, `ws`, `config` and `shutdown`.

pub mod health;
pub mod instrument;
pub mod routes;
pub mod server;
