//! actix-web 4 with actix-web-prom 0.10, set up as its README sets it up:
//! `PrometheusMetricsBuilder` with `/metrics` as its endpoint, wrapped
//! around the app, and the tutorial's counter and gauge registered into the
//! middleware's registry and handed to the handlers as app data.
//! Websockets use actix-ws, actix's websockets without actors, with
//! continuation frames put together into whole messages and the message
//! and frame limits of every peer.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use actix_web_prom::PrometheusMetricsBuilder;
use actix_ws::AggregatedMessage;
use peers::MAX_MESSAGE_BYTES;
use prometheus::{IntCounter, IntGauge};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let prometheus = PrometheusMetricsBuilder::new("api")
        .endpoint("/metrics")
        .build()
        .expect("build the Prometheus middleware");
    let incoming_requests =
        IntCounter::new("incoming_requests", "Incoming Requests").expect("counter");
    let connected_clients = IntGauge::new("connected_clients", "Connected Clients").expect("gauge");
    for metric in [
        Box::new(incoming_requests.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(connected_clients.clone()),
    ] {
        prometheus.registry.register(metric).expect("register");
    }

    HttpServer::new(move || {
        App::new()
            .wrap(prometheus.clone())
            .app_data(web::Data::new(incoming_requests.clone()))
            .app_data(web::Data::new(connected_clients.clone()))
            .route("/some", web::get().to(some))
            .route("/ws/{id}", web::get().to(websocket))
    })
    .listen(peers::bind())?
    .run()
    .await
}

async fn some(incoming_requests: web::Data<IntCounter>) -> &'static str {
    incoming_requests.inc();
    "hello!"
}

async fn websocket(
    request: HttpRequest,
    body: web::Payload,
    id: web::Path<String>,
    connected_clients: web::Data<IntGauge>,
) -> actix_web::Result<HttpResponse> {
    let (response, mut session, messages) = actix_ws::handle(&request, body)?;
    let mut messages = messages
        .max_frame_size(MAX_MESSAGE_BYTES)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE_BYTES);
    let id = id.into_inner();
    let connected_clients = connected_clients.get_ref().clone();
    actix_web::rt::spawn(async move {
        connected_clients.inc();
        // Pings are answered here: actix-ws leaves that to the handler.
        while let Some(Ok(message)) = messages.recv().await {
            let answered = match message {
                AggregatedMessage::Text(text) => {
                    println!("text message received id={id} bytes={}", text.len());
                    Ok(())
                }
                AggregatedMessage::Binary(bytes) => {
                    println!("binary message received id={id} bytes={}", bytes.len());
                    Ok(())
                }
                AggregatedMessage::Ping(bytes) => session.pong(&bytes).await,
                AggregatedMessage::Close(_) => break,
                AggregatedMessage::Pong(_) => Ok(()),
            };
            if answered.is_err() {
                break;
            }
        }
        let _ = session.close(None).await;
        connected_clients.dec();
    });
    Ok(response)
}
