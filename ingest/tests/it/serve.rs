//! `serve` on a real socket: a shutdown stops accepting at once and gives requests in flight
//! a deadline rather than waiting for them forever.

use std::time::Duration;

use jetmail_ingest::ServeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::api::setup;

#[tokio::test]
async fn shutdown_gives_requests_in_flight_a_deadline() -> anyhow::Result<()> {
    let (_nats, topo) = setup().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let config = ServeConfig {
        shutdown_timeout: Duration::from_secs(1),
        // Not about access: the stuck request must reach its handler.
        auth: jetmail_ingest::http::ApiAuth::Insecure,
        ..Default::default()
    };
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { jetmail_ingest::serve(topo, listener, &config, shutdown).await }
    });

    // A request that is answered: the server is up.
    let mut ok = tokio::net::TcpStream::connect(addr).await?;
    ok.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await?;
    let mut answer = String::new();
    ok.read_to_string(&mut answer).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A request whose body never finishes arriving stays in flight.
    let mut stuck = tokio::net::TcpStream::connect(addr).await?;
    stuck
        .write_all(
            b"POST /v1/campaigns HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"from\":",
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;

    shutdown.cancel();
    let started = std::time::Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returns once the shutdown deadline passed")?;
    res?;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "the request in flight was given its time: {took:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
    drop(stuck);
    Ok(())
}
