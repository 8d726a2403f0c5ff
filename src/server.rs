//! The HTTP server: accepting connections and serving each one with hyper's
//! HTTP/1.1 and the warp routes, within limits that a hostile client cannot
//! stretch, and draining them at shutdown.
//!
//! `warp::serve` sets no such limits: it accepts any number of connections,
//! lets each one's read buffer grow to about 400 KiB, and gives hyper no
//! timer, so a request head has no deadline and a client that connects and
//! sends nothing holds its socket forever. Driving hyper directly takes
//! little more code than configuring warp would, and makes the limits
//! visible.
//!
//! The deadline is coarse on purpose: a connection on which nothing has
//! moved towards the client for the idle timeout is closed, checked once per
//! period, so after one to two periods. Moving means hyper writing to the
//! socket or, on Linux, the client acknowledging bytes that the kernel had
//! buffered: a large `/metrics` body can sit whole in the kernel's send
//! buffer (it grows to 4 MiB) while a slow reader drains it, and such a
//! reader stays connected as long as its body keeps moving. Every route
//! answers at once, so a request that has arrived is being answered. What
//! the client sends does not count: a request head trickling in a byte at a
//! time would otherwise never end. So this covers a client that sends
//! nothing, one that sends a request head a byte at a time, one that has
//! stopped reading, and one that has simply gone quiet. hyper's own
//! `header_read_timeout` is exact, but it creates, registers and drops a
//! timer for every request, which cost about 7 % of a request's CPU here.

use std::convert::Infallible;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use warp::Filter;
use warp::hyper::server::conn::http1;
use warp::reply::Response;

use crate::config::HttpSettings;
use crate::shutdown::Shutdown;

/// How long to wait before accepting again after `accept` fails, typically
/// because the process is out of file descriptors: retrying at once would
/// spin on the same error.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// The largest request head a client may send, and so the most a
/// connection's read buffer holds: a larger head is answered with 431.
/// hyper's default ceiling, about 400 KiB per connection, let 1,024 slow
/// request heads pin about 0.4 GiB. 16 KiB is Node.js's default limit, room
/// for any browser's request to this service; hyper's minimum is 8 KiB.
const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// The connections being served, so shutdown can wait for them or cut them off.
pub struct Connections(JoinSet<()>);

impl Connections {
    /// Completes when every connection has finished.
    pub async fn drained(&mut self) {
        while self.0.join_next().await.is_some() {}
    }

    /// Drops every connection still open.
    pub fn abort(&mut self) {
        self.0.abort_all();
    }
}

/// Accepts connections on `listener` and serves them with `routes`, within
/// the limits of `settings`, until `stopping` says to stop. Returns the
/// connections still being served; each has been told to finish its current
/// request and close.
///
/// At the limit, new connections wait in the kernel's listen queue until a
/// slot frees. A connection that becomes a websocket leaves its slot: the
/// session is counted against the websocket limit instead.
pub async fn accept<F>(
    listener: TcpListener,
    routes: F,
    settings: HttpSettings,
    mut stopping: Shutdown,
) -> Connections
where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut connections = JoinSet::new();
    // Every `select!` here and below is `biased` towards the shutdown
    // notice: once it has come, no new connection or request may win a race
    // against it.
    loop {
        let slot = tokio::select! {
            biased;
            () = stopping.recv() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            biased;
            () = stopping.recv() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // The client gave up before we took its connection: nothing
                // is wrong on this side.
                Err(err) if is_connection_error(&err) => continue,
                Err(err) => {
                    tracing::error!(error = %err, "cannot accept a connection");
                    tokio::select! {
                        biased;
                        () = stopping.recv() => break,
                        () = tokio::time::sleep(ACCEPT_RETRY_DELAY) => continue,
                    }
                }
            },
        };
        // Reap finished connections so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        connections.spawn(serve_connection(
            stream,
            routes.clone(),
            settings.idle_timeout,
            slot,
            stopping.clone(),
        ));
    }
    Connections(connections)
}

/// A connection's socket that notes when hyper has written to it, for the
/// idle check. Only that connection's task touches the flag, so setting it
/// costs a plain store.
struct Watched {
    stream: TcpStream,
    wrote: Arc<AtomicBool>,
}

impl Watched {
    /// Notes that `written` bytes went out, if any did.
    fn note(&self, written: &Poll<std::io::Result<usize>>) {
        if matches!(written, Poll::Ready(Ok(bytes)) if *bytes > 0) {
            self.wrote.store(true, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.note(&written);
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.note(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Whether an `accept` error concerns only the connection being accepted.
fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// How many bytes of the connection on `socket` the client has acknowledged,
/// from the kernel; `None` where it cannot say.
#[cfg(all(target_os = "linux", any(target_env = "gnu", target_env = "musl")))]
fn acknowledged_bytes(socket: RawFd) -> Option<u64> {
    // SAFETY: tcp_info is plain integers, for which all zeroes is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `length` bytes into `info`; an older
    // kernel writes fewer and leaves the rest zero.
    let result = unsafe {
        libc::getsockopt(
            socket,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut length,
        )
    };
    (result == 0).then_some(info.tcpi_bytes_acked)
}

/// Elsewhere the kernel is not asked, and only hyper's writes count as
/// moving.
#[cfg(not(all(target_os = "linux", any(target_env = "gnu", target_env = "musl"))))]
fn acknowledged_bytes(_socket: RawFd) -> Option<u64> {
    None
}

/// Serves one connection until the client closes it, it is upgraded to a
/// websocket, nothing moves towards the client for `idle_timeout`, or
/// shutdown lets its current request finish.
async fn serve_connection<F>(
    stream: TcpStream,
    routes: F,
    idle_timeout: Duration,
    _slot: OwnedSemaphorePermit,
    mut stopping: Shutdown,
) where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    // Valid while `connection` owns the stream, which is as long as this
    // function runs.
    let fd = stream.as_raw_fd();
    let mut acknowledged = acknowledged_bytes(fd);
    let wrote = Arc::new(AtomicBool::new(false));
    let socket = Watched {
        stream,
        wrote: Arc::clone(&wrote),
    };
    let connection = http1::Builder::new()
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .serve_connection(
            TokioIo::new(socket),
            TowerToHyperService::new(warp::service(routes)),
        )
        .with_upgrades();
    tokio::pin!(connection);

    let mut checks = tokio::time::interval_at(Instant::now() + idle_timeout, idle_timeout);
    // A stalled runtime must not fire missed checks back to back, which
    // would find nothing moved between them and close a busy connection.
    checks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The routes never fail, so an error from the connection is the client's
    // doing (a reset, a malformed request head), which hyper has already
    // answered as well as it could: nothing for the server to report.
    loop {
        tokio::select! {
            biased;
            () = stopping.recv() => {
                // Finishes the request in flight, if any, then closes.
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
                return;
            }
            _ = connection.as_mut() => return,
            _ = checks.tick() => {
                let written = wrote.swap(false, Ordering::Relaxed);
                let acknowledged_before = acknowledged;
                acknowledged = acknowledged_bytes(fd);
                if !written && acknowledged == acknowledged_before {
                    // Dropping the connection closes it, whatever it was
                    // waiting for.
                    return;
                }
            }
        }
    }
}

/// The soft limit on open files before and after [`raise_open_file_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    pub before: u64,
    pub now: u64,
}

/// Raises this process's soft limit on open files to its hard limit (capped
/// by the kernel's `fs.nr_open`), as Go programs do at start-up: every
/// connection is a descriptor, so a default soft limit of 1024 would bound
/// the service before `HTTP_MAX_CONNECTIONS` and `WS_MAX_CLIENTS` do. Child
/// processes started afterwards inherit the raised limit.
pub fn raise_open_file_limit() -> std::io::Result<OpenFileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    // An unlimited hard limit still cannot exceed the kernel's nr_open.
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(limit.rlim_max);
    let wanted = limit.rlim_max.min(ceiling);
    if before < wanted {
        limit.rlim_cur = wanted;
        // SAFETY: setrlimit only reads the struct passed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(OpenFileLimit {
        before,
        now: before.max(wanted),
    })
}
