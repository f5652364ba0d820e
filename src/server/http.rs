//! The health and admin HTTP/1 listeners, each with a connection cap and a per-peer share of
//! it, a bounded request head, a header-read timeout and a lifetime per connection, so a peer
//! that sends half a request cannot hold memory or a connection slot for long, nor take the
//! slots the kubelet's probes need (axum's own `serve` sets none of these).

use super::budget::{PeerKey, PeerSlots};
use crate::config::ListenerLimits;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections refused because a listener, or the peer's share of it, was at its cap.
pub const REFUSED_CONNECTIONS_TOTAL: &str = "portcullis_http_connections_refused_total";

/// The read buffer of a health or admin connection (hyper's minimum is 8 KiB): a request head
/// larger than this is refused, so 256 connections hold at most 4 MiB of unfinished headers.
const HTTP_MAX_BUF: usize = 16 * 1024;

/// Serves `router` on `listener` until `shutdown` completes, then waits at most the
/// connection timeout for open connections.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ListenerLimits,
    name: &'static str,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.http_max_connections));
    let graceful = GracefulShutdown::new();
    let refused = metrics::counter!(REFUSED_CONNECTIONS_TOTAL, "listener" => name, "why" => "connections");
    let refused_peer = metrics::counter!(REFUSED_CONNECTIONS_TOTAL, "listener" => name, "why" => "peer");
    let peers = PeerSlots::new(limits.http_max_connections_per_peer);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                // A failed accept (out of descriptors, a reset) ends one connection, not the listener.
                Err(e) => {
                    tracing::debug!(listener = name, error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // The peer's share first, so one peer never takes the slots the probes need.
        let Some(peer_slot) = peers.try_take(PeerKey::ip(peer.ip())) else {
            refused_peer.increment(1);
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.increment(1);
            continue;
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.http_header_read_timeout)
            // A request head (and anything buffered with it) of at most this many bytes.
            .max_buf_size(HTTP_MAX_BUF);
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let conn = graceful.watch(conn);
        let lifetime = limits.http_connection_timeout;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(lifetime, conn).await;
            drop((slot, peer_slot));
        });
    }
    let _ = tokio::time::timeout(limits.http_connection_timeout, graceful.shutdown()).await;
    Ok(())
}
