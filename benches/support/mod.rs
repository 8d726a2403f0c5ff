//! Plumbing shared by the load benchmarks, so that each bench file reads as
//! its own measurements:
//!
//! - [`server`]: the server under test as a child process on `127.0.0.1:0`,
//!   what `/proc` says about it (memory, CPU time), what it writes to
//!   stdout, and its `connected_clients` gauge;
//! - [`http_client`]: a minimal keep-alive HTTP/1.1 client;
//! - [`load`]: keep-alive load on several servers side by side, and their
//!   CPU time per request;
//! - [`websocket_clients`]: idle websocket clients held against a server;
//! - [`websocket_messages`]: what a server spends on the websocket messages
//!   it receives, in CPU and in memory;
//! - [`websocket_flood`]: what one client sending without pause costs a
//!   server's other clients;
//! - [`websocket_steady`]: what many clients sending at a steady pace cost
//!   a server;
//! - [`machine`]: the machine the figures are taken on, and this process's
//!   open-file limit;
//! - [`peers`]: the peer servers of `benches/peers/`, built and started;
//! - [`contenders`]: the servers the comparison measures, by name;
//! - [`spawn`]: starting a server process and reading its port, shared
//!   with the tests.

// Every bench compiles this module into a binary of its own and uses only
// its own subset of it, as the tests do with tests/common.
#![allow(dead_code)]

pub mod contenders;
pub mod http_client;
pub mod load;
pub mod machine;
pub mod peers;
pub mod server;
// The tests' way to start a server process, shared rather than copied.
#[path = "../../tests/common/spawn.rs"]
pub mod spawn;
pub mod websocket_clients;
pub mod websocket_flood;
pub mod websocket_messages;
pub mod websocket_steady;

use std::time::Duration;

/// How long to wait for something that should happen before calling the
/// run broken. Generous: it bounds a failure, never a measurement.
pub const PATIENCE: Duration = Duration::from_secs(120);
