//! Tests of the server wiring that need no running server.

use tokio_stream::StreamExt;

#[tokio::test]
async fn grpc_connections_are_accepted_with_nodelay_and_one_write_per_answer() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut incoming = super::grpc_incoming(listener);
    let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let accepted = incoming.next().await.expect("a connection").expect("accepted");
    assert!(accepted.0.nodelay().expect("nodelay readable"), "Nagle would delay the last frame of each answer");
    // h2 chains payloads over 256 bytes on vectored sockets and then writes the trailers apart.
    assert!(!tokio::io::AsyncWrite::is_write_vectored(&accepted), "answers must leave in one write");
}
