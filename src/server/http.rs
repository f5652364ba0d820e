//! The health and admin HTTP/1 listeners, each with a connection cap, a header-read timeout and
//! a lifetime per connection, so a peer that sends half a request cannot hold memory or a
//! connection slot for long (axum's own `serve` sets neither).

use crate::config::ListenerLimits;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections refused because a listener was at its cap.
pub const REFUSED_CONNECTIONS_TOTAL: &str = "portcullis_http_connections_refused_total";

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
    let refused = metrics::counter!(REFUSED_CONNECTIONS_TOTAL, "listener" => name);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.increment(1);
            drop(stream);
            continue;
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(limits.http_header_read_timeout);
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let conn = graceful.watch(conn);
        let lifetime = limits.http_connection_timeout;
        tokio::spawn(async move {
            let _ = tokio::time::timeout(lifetime, conn).await;
            drop(slot);
        });
    }
    let _ = tokio::time::timeout(limits.http_connection_timeout, graceful.shutdown()).await;
    Ok(())
}
