//! The servers the comparison measures: each one's name in the tables and
//! how it starts, the service with its settings or a peer of
//! `benches/peers/` by its binary's name.

use std::process::Command;

use super::peers;
use super::server::Server;

/// One server in the comparison: its name in the tables, and how it starts.
pub struct Contender {
    pub name: &'static str,
    start: Start,
}

enum Start {
    /// The service, with these settings besides `COLLECT_INTERVAL_MS=0`:
    /// the peers have no simulated collector, and its series would make
    /// the scrapes unequal.
    Service(&'static [(&'static str, &'static str)]),
    /// The binary of that name in `benches/peers/`.
    Peer(&'static str),
}

impl Contender {
    /// Starts it with its stdout on `/dev/null`.
    pub fn start(&self) -> Result<Server, String> {
        Server::start(self.command())
    }

    /// Whether it is the service rather than a peer.
    pub fn is_service(&self) -> bool {
        matches!(self.start, Start::Service(_))
    }

    /// The command that starts it, to which a caller may add settings (a
    /// peer ignores the service's).
    pub fn command(&self) -> Command {
        match self.start {
            Start::Service(settings) => {
                let mut command = Server::service_command(&[("COLLECT_INTERVAL_MS", "0")]);
                command.envs(settings.iter().copied());
                command
            }
            Start::Peer(binary) => peers::command(binary),
        }
    }
}

pub const fn service(
    name: &'static str,
    settings: &'static [(&'static str, &'static str)],
) -> Contender {
    Contender {
        name,
        start: Start::Service(settings),
    }
}

pub const fn peer(name: &'static str, binary: &'static str) -> Contender {
    Contender {
        name,
        start: Start::Peer(binary),
    }
}
