//! Many websocket clients, each sending a small text message at a steady
//! pace, as the clients of a chat or a live dashboard do: what the server
//! spends per message in CPU (all its threads, from `/proc`), and its RSS
//! at the end. Every client sends the same number of messages, so the count
//! is exact, and waits for the pong that says the server has read them.
//!
//! The clients' sends are spread evenly over the interval, each client
//! keeping its own phase, and each reads what the server sends (its pings)
//! meanwhile.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::contenders::Contender;
use super::server::Server;
use super::websocket_clients::{connect_all, wait_until_read};

/// Time for the clients' tasks to be spawned before the first send.
const LEAD: Duration = Duration::from_millis(100);

/// `clients` clients each sending a `message_bytes` text message `every`
/// so often for `duration`.
#[derive(Debug, Clone, Copy)]
pub struct SteadyPlan {
    pub clients: usize,
    pub message_bytes: usize,
    pub every: Duration,
    pub duration: Duration,
}

impl SteadyPlan {
    fn messages_each(&self) -> u32 {
        (self.duration.as_nanos() / self.every.as_nanos()) as u32
    }
}

/// Measures each of `contenders` in turn, on a fresh server each, as `plan`
/// says, and prints a table: server CPU per message, against the cheapest
/// peer, and RSS at the end.
pub async fn steady_clients(contenders: &[Contender], plan: SteadyPlan) {
    println!(
        "\n== steady clients: {} websocket clients, each sending a {} B text message every {:?} \
         for {:?} ({} messages each) ==",
        plan.clients,
        plan.message_bytes,
        plan.every,
        plan.duration,
        plan.messages_each()
    );
    let mut measured = Vec::new();
    for contender in contenders {
        let result = async {
            let server = contender.start()?;
            steady_cost(&server, plan).await
        };
        measured.push((contender, result.await));
    }
    let cheapest_peer = measured
        .iter()
        .filter(|(contender, _)| !contender.is_service())
        .filter_map(|(_, result)| result.as_ref().ok())
        .map(|cost| cost.cpu_per_message())
        .fold(f64::INFINITY, f64::min);
    println!(
        "{:>28}  {:>9}  {:>12}  {:>14}  {:>15}  {:>7}",
        "server", "messages", "sending took", "CPU µs/message", "vs cheapest peer", "RSS MiB"
    );
    for (contender, result) in &measured {
        match result {
            Ok(cost) => println!(
                "{:>28}  {:>9}  {:>10.1} s  {:>14.2}  {:>15.2}x  {:>7.1}",
                contender.name,
                cost.messages,
                cost.sending.as_secs_f64(),
                cost.cpu_per_message() * 1e6,
                cost.cpu_per_message() / cheapest_peer,
                cost.rss_kib as f64 / 1024.0
            ),
            Err(err) => println!("{:>28}  aborted: {err}", contender.name),
        }
    }
}

/// What the steady clients cost one server.
struct SteadyCost {
    messages: u64,
    /// From the first send to the last pong.
    sending: Duration,
    cpu: Duration,
    /// With every client still connected.
    rss_kib: u64,
}

impl SteadyCost {
    /// Server CPU seconds per message.
    fn cpu_per_message(&self) -> f64 {
        self.cpu.as_secs_f64() / self.messages as f64
    }
}

/// Connects `plan.clients` clients to `server`, which must be fresh, has
/// them send as `plan` says, and measures.
async fn steady_cost(server: &Server, plan: SteadyPlan) -> Result<SteadyCost, String> {
    server.wait_for_connected_clients(0).await?;
    let sockets = connect_all(server.addr, plan.clients).await?;
    server.wait_for_connected_clients(plan.clients).await?;

    let message = Message::text("m".repeat(plan.message_bytes));
    let cpu_before = server.cpu_snapshot();
    let first = Instant::now() + LEAD;
    let phase = plan.every / plan.clients as u32;
    let sending: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, socket)| {
            let start = first + phase * i as u32;
            tokio::spawn(send_steadily(socket, start, plan, message.clone()))
        })
        .collect();
    let mut held = Vec::new();
    for client in sending {
        held.push(client.await.expect("a steady client's task")?);
    }
    let cost = SteadyCost {
        messages: u64::from(plan.messages_each()) * plan.clients as u64,
        sending: first.elapsed(),
        cpu: server.cpu_since(&cpu_before),
        rss_kib: server.status_kib("VmRSS")?,
    };
    drop(held);
    Ok(cost)
}

/// Sends `message` on `socket` every `plan.every` from `start`,
/// [`SteadyPlan::messages_each`] times, reading what the server sends
/// meanwhile; then waits until the server has read them all and returns
/// the socket, still open.
async fn send_steadily(
    mut socket: WebSocketStream<TcpStream>,
    start: Instant,
    plan: SteadyPlan,
    message: Message,
) -> Result<WebSocketStream<TcpStream>, String> {
    let mut ticks = tokio::time::interval_at(start.into(), plan.every);
    let mut sent = 0;
    while sent < plan.messages_each() {
        tokio::select! {
            _ = ticks.tick() => {
                socket.send(message.clone()).await.map_err(|err| format!("send: {err}"))?;
                sent += 1;
            }
            incoming = socket.next() => match incoming {
                Some(Ok(_)) => {}
                other => return Err(format!("the server ended a client: {other:?}")),
            },
        }
    }
    wait_until_read(&mut socket).await?;
    Ok(socket)
}
