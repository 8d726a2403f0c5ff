//! Websocket clients on `/ws/<id>` and the `connected_clients` gauge, with a
//! real websocket client over a real socket.

mod common;

use common::TestServer;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn the_gauge_counts_clients_through_clean_close_and_abrupt_drop() {
    let server = TestServer::start();

    let mut polite = server.connect_ws("polite").await;
    let rude = server.connect_ws("rude").await;
    server.wait_for_sample("connected_clients", 2.0).await;

    polite.close(None).await.expect("send close frame");
    // Drain until the server's answering close frame ends the stream.
    while let Some(Ok(_)) = polite.next().await {}
    server.wait_for_sample("connected_clients", 1.0).await;

    // SO_LINGER 0 makes dropping the socket send a TCP reset: no close frame, no FIN.
    rude.get_ref().set_zero_linger().expect("set SO_LINGER 0");
    drop(rude);
    server.wait_for_sample("connected_clients", 0.0).await;
}

#[tokio::test]
async fn messages_are_logged_with_the_client_id_escaped() {
    let server = TestServer::start();
    // A percent-encoded newline in the id must not start a forged log line.
    let mut client = server.connect_ws("evil%0Aclient%20disconnected").await;

    client
        .send(Message::text("hello server"))
        .await
        .expect("send message");
    client.close(None).await.expect("close");
    while let Some(Ok(_)) = client.next().await {}
    server.wait_for_sample("connected_clients", 0.0).await;

    let stdout = server.stdout();
    assert!(
        stdout.iter().any(|line| line.contains("hello server")
            && line.contains("\"evil%0Aclient%20disconnected\"")),
        "message logged with the quoted id: {stdout:#?}"
    );
    assert!(
        !stdout
            .iter()
            .any(|line| line.starts_with("client disconnected")),
        "the id forged no line: {stdout:#?}"
    );
}

#[tokio::test]
async fn the_client_id_never_becomes_a_label() {
    let server = TestServer::start();
    let _client = server.connect_ws("unique-client-id-4711").await;
    server.wait_for_sample("connected_clients", 1.0).await;

    let body = server.metrics().await.0;

    assert!(!body.contains("unique-client-id-4711"));
}
