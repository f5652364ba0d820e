//! Who may call Check on the TCP listener: past `listen.limits.grpc_max_connections` and from
//! peers outside `listen.callers.cidrs` connections are closed at accept; with `listen.callers.tls`, a TLS handshake that demands a certificate from the
//! caller CA, whose URI SAN must be on `spiffe_ids`. All before HTTP/2 starts, so a refused
//! caller never gets a byte decoded, an audit line written or an in-flight permit.

use super::io::OneWritePerAnswer;
use crate::config::CallerPolicy;
use crate::decision::{CidrSet, parse_cidr};
use arc_swap::ArcSwap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

pub const REFUSED_TOTAL: &str = "portcullis_grpc_callers_refused_total";

/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed accept (EMFILE and the like), so the loop does not spin a core.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The transport of an accepted gRPC connection.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted gRPC connection; it holds one of `listen.limits.grpc_max_connections` slots
/// until it closes.
pub struct GrpcConn {
    io: Io,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for GrpcConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
impl GrpcConn {
    /// Whether Nagle's algorithm is off on the underlying socket.
    pub fn nodelay(&self) -> io::Result<bool> {
        match &self.io {
            Io::Plain(s) => s.nodelay(),
            Io::Tls(s) => s.get_ref().0.nodelay(),
        }
    }
}

impl Connected for GrpcConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match &self.io {
            Io::Plain(s) => s.connect_info(),
            Io::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

/// What the gate admits; swapped whole when a reload changes `listen.callers` (a rotated
/// certificate, a new CA, a changed list) without dropping the connections already admitted.
struct Admission {
    cidrs: Option<CidrSet>,
    tls: Option<TlsAcceptor>,
    policy: CallerPolicy,
}

impl Admission {
    fn new(policy: &CallerPolicy) -> Result<Self, String> {
        let cidrs = if policy.cidrs.is_empty() {
            None
        } else {
            let mut set = CidrSet::default();
            for cidr in &policy.cidrs {
                set.insert(parse_cidr(cidr)?);
            }
            Some(set)
        };
        let tls = match &policy.tls {
            Some(tls) => Some(TlsAcceptor::from(Arc::new(crate::tls::server_config(tls)?))),
            None => None,
        };
        Ok(Self { cidrs, tls, policy: policy.clone() })
    }
}

/// The accept loop of the TCP gRPC listener: a connection cap, then `listen.callers`.
pub struct CallerGate {
    admission: ArcSwap<Admission>,
    slots: Arc<Semaphore>,
}

impl CallerGate {
    pub fn new(policy: &CallerPolicy, max_connections: usize) -> Result<Self, String> {
        Ok(Self {
            admission: ArcSwap::from_pointee(Admission::new(policy)?),
            slots: Arc::new(Semaphore::new(max_connections)),
        })
    }

    /// Applies a reloaded `listen.callers` to connections accepted from now on.
    pub fn update(&self, policy: &CallerPolicy) -> Result<(), String> {
        if self.admission.load().policy != *policy {
            self.admission.store(Arc::new(Admission::new(policy)?));
            tracing::info!(callers = ?policy, "listen.callers reloaded");
        }
        Ok(())
    }

    /// Accepts on `listener` until the returned stream is dropped, yielding only admitted
    /// connections. Handshakes run in their own tasks, so a slow caller holds up nobody.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> impl tokio_stream::Stream<Item = io::Result<OneWritePerAnswer<GrpcConn>>> {
        let (admitted, incoming) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "gRPC accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                if admitted.is_closed() {
                    return;
                }
                let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                    refused("connections", &peer.to_string(), "listen.limits.grpc_max_connections reached");
                    continue;
                };
                let admission = self.admission.load_full();
                if admission.cidrs.as_ref().is_some_and(|set| !set.contains(peer.ip())) {
                    refused("cidr", &peer.to_string(), "");
                    continue;
                }
                // Without Nagle's algorithm a write that follows an unacknowledged one waits for
                // the peer's delayed ACK (40 ms on Linux).
                let _ = stream.set_nodelay(true);
                let Some(acceptor) = admission.tls.clone() else {
                    let conn = GrpcConn { io: Io::Plain(stream), _slot: slot };
                    if admitted.send(Ok(OneWritePerAnswer(conn))).await.is_err() {
                        return;
                    }
                    continue;
                };
                let admitted = admitted.clone();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => return refused("tls", &peer.to_string(), &e.to_string()),
                        Err(_) => return refused("tls", &peer.to_string(), "handshake timed out"),
                    };
                    let sans = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .map(|cert| crate::tls::uri_sans(cert))
                        .unwrap_or_default();
                    // A SPIFFE certificate carries exactly one URI SAN: with several, which
                    // one is "the" identity is ambiguous, so none is.
                    let identity = match sans.as_slice() {
                        [one] => Some(one.as_str()),
                        _ => None,
                    };
                    let listed = admission.policy.spiffe_ids.is_empty()
                        || identity.is_some_and(|id| admission.policy.admits_identity(id));
                    if !listed {
                        return refused("identity", &peer.to_string(), &sans.join(","));
                    }
                    let conn = GrpcConn { io: Io::Tls(Box::new(tls)), _slot: slot };
                    let _ = admitted.send(Ok(OneWritePerAnswer(conn))).await;
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(incoming)
    }
}

fn refused(why: &'static str, peer: &str, detail: &str) {
    metrics::counter!(REFUSED_TOTAL, "why" => why).increment(1);
    tracing::warn!(why, peer, detail, "gRPC caller refused");
}
