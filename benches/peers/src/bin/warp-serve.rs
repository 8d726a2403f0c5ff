//! The same bare warp 0.4 route served by `warp::serve`, as warp's own
//! examples serve it: hyper-util's server, which reads the first bytes of
//! each connection to tell HTTP/1.1 from HTTP/2 and wraps the connection to
//! do so. Compared with `warp-hyper`, it shows what that costs.

use tokio::net::TcpListener;
use warp::Filter;

#[tokio::main]
async fn main() {
    let some = warp::path!("some").and(warp::get()).map(|| "hello!");
    let listener = TcpListener::from_std(peers::bind()).expect("listener for tokio");
    warp::serve(some).incoming(listener).run().await;
}
