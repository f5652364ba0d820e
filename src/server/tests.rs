//! Tests of the server wiring that need no running server.

use tokio_stream::StreamExt;

#[tokio::test]
async fn grpc_connections_are_accepted_with_nodelay_and_one_write_per_answer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let limits = crate::config::ListenerLimits { grpc_max_connections: 2, ..Default::default() };
    let clock = std::sync::Arc::new(crate::clock::SystemClock);
    let gate = super::callers::CallerGate::new(&crate::config::CallerPolicy::default(), &limits, clock).expect("gate");
    let mut incoming = std::sync::Arc::new(gate).incoming(listener);
    let connect = || async {
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut client, super::budget::PREFACE).await.expect("preface");
        client
    };
    let _client = connect().await;
    let accepted = incoming.next().await.expect("a connection").expect("accepted");
    assert!(accepted.0.nodelay().expect("nodelay readable"), "Nagle would delay the last frame of each answer");
    // h2 chains payloads over 256 bytes on vectored sockets and then writes the trailers apart.
    assert!(!tokio::io::AsyncWrite::is_write_vectored(&accepted), "answers must leave in one write");
    // The cap: a second connection is admitted, a third is closed at accept until one goes.
    let _second = connect().await;
    let second = incoming.next().await.expect("a connection").expect("accepted");
    let mut third = connect().await;
    let mut buf = [0u8; 1];
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut third, &mut buf))
            .await
            .expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "a connection past the cap must be closed: {read:?}");
    drop((accepted, second));
}
