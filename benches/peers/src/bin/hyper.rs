//! The floor: a bare hyper 1 HTTP/1.1 server, one task per connection, that
//! answers `GET /some` with `hello!` and anything else with 404. No
//! framework, no metrics: what serving HTTP/1.1 costs on its own.

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    let listener = TcpListener::from_std(peers::bind()).expect("listener for tokio");
    peers::serve_http1(listener, service_fn(some)).await;
}

async fn some(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = if request.method() == Method::GET && request.uri().path() == "/some" {
        Response::new(Full::new(Bytes::from_static(b"hello!")))
    } else {
        let mut not_found = Response::new(Full::default());
        *not_found.status_mut() = StatusCode::NOT_FOUND;
        not_found
    };
    Ok(response)
}
