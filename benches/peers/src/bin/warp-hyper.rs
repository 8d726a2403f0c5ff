//! A bare warp 0.4 route, `GET /some` saying `hello!`, served the way the
//! service serves its routes: each connection by hyper's HTTP/1.1 alone,
//! with the filter turned into a hyper service. Against the `hyper` floor it
//! shows what warp's filters cost; against the service, what the service's
//! metrics and limits cost on top.

use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use warp::Filter;
use warp::reply::Reply;

#[tokio::main]
async fn main() {
    // A `Response` rather than the `&str` itself, as the service's routes
    // extract: hyper needs a service whose reply type names no lifetime.
    let some = warp::path!("some")
        .and(warp::get())
        .map(|| "hello!".into_response());
    let service = TowerToHyperService::new(warp::service(some));
    let listener = TcpListener::from_std(peers::bind()).expect("listener for tokio");
    peers::serve_http1(listener, service).await;
}
