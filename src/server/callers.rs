//! Who may call Check: a peer past its share of connections (`grpc_max_connections_per_peer`,
//! TCP and unix) and peers outside `listen.callers.cidrs` are closed at accept; with
//! `listen.callers.tls`, a TLS handshake that demands a certificate from the caller CA, whose URI
//! SAN must be on `spiffe_ids`; then the HTTP/2 preface, all within `admission_timeout`, and only
//! then one of `grpc_max_connections` global slots (so silent connections never hold one). All
//! before HTTP/2 starts, so a refused caller never gets a byte decoded, an audit line written or
//! an in-flight permit.

use super::budget::{PeerKey, PeerSlot, PeerSlots, Prefaced, RefusalLog, read_preface};
use super::io::OneWritePerAnswer;
use crate::clock::Clock;
use crate::config::{CallerPolicy, ListenerLimits};
use crate::decision::{CidrSet, parse_cidr};
use arc_swap::ArcSwap;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

pub const REFUSED_TOTAL: &str = "portcullis_grpc_callers_refused_total";

/// How often one peer's refusals of one kind are logged (each line carries their count).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Pause after a failed accept (EMFILE and the like), so the loop does not spin a core.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The transport of an accepted TCP gRPC connection.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connected for Io {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Io::Plain(s) => s.connect_info(),
            Io::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

/// An admitted gRPC connection (TCP or unix): it holds its peer's slot and one of
/// `listen.limits.grpc_max_connections` global slots until it closes.
pub struct GrpcConn<S> {
    io: Prefaced<S>,
    _slot: OwnedSemaphorePermit,
    _peer: PeerSlot,
}

impl<S: AsyncRead + Unpin> AsyncRead for GrpcConn<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GrpcConn<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
impl GrpcConn<Io> {
    /// Whether Nagle's algorithm is off on the underlying socket.
    pub fn nodelay(&self) -> io::Result<bool> {
        match &self.io.inner {
            Io::Plain(s) => s.nodelay(),
            Io::Tls(s) => s.get_ref().0.nodelay(),
        }
    }
}

impl<S: Connected> Connected for GrpcConn<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> S::ConnectInfo {
        self.io.inner.connect_info()
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

/// The accept loops of the gRPC listeners: a peer's share, `listen.callers`, then the
/// admission deadline (TLS handshake and HTTP/2 preface), and only then a global slot.
pub struct CallerGate {
    admission: ArcSwap<Admission>,
    slots: Arc<Semaphore>,
    /// Connections still in admission, all peers together (a peer owning many addresses
    /// cannot hold descriptors without bound).
    pending: Arc<Semaphore>,
    peers: Arc<PeerSlots>,
    deadline: Duration,
    log: RefusalLog,
}

/// Why a connection was not admitted, for the metric and the sampled log line.
type Refusal = (&'static str, String);

/// Where admitted connections go (the gRPC server's incoming stream).
type Admitted<S> = tokio::sync::mpsc::Sender<io::Result<OneWritePerAnswer<GrpcConn<S>>>>;

impl CallerGate {
    pub fn new(policy: &CallerPolicy, limits: &ListenerLimits, clock: Arc<dyn Clock>) -> Result<Self, String> {
        Ok(Self {
            admission: ArcSwap::from_pointee(Admission::new(policy)?),
            slots: Arc::new(Semaphore::new(limits.grpc_max_connections)),
            pending: Arc::new(Semaphore::new(limits.grpc_max_pending_connections)),
            peers: PeerSlots::new(limits.grpc_max_connections_per_peer),
            deadline: limits.admission_timeout,
            log: RefusalLog::new(clock, REFUSAL_LOG_INTERVAL),
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
    /// connections. Admission runs in a task per connection, so a slow caller holds up nobody.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
    ) -> impl tokio_stream::Stream<Item = io::Result<OneWritePerAnswer<GrpcConn<Io>>>> {
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
                let key = PeerKey::ip(peer.ip());
                let Some(peer_slot) = self.peer_slot(key) else { continue };
                let admission = self.admission.load_full();
                if admission.cidrs.as_ref().is_some_and(|set| !set.contains(peer.ip())) {
                    self.refused(key, ("cidr", String::new()));
                    continue;
                }
                // Without Nagle's algorithm a write that follows an unacknowledged one waits for
                // the peer's delayed ACK (40 ms on Linux).
                let _ = stream.set_nodelay(true);
                self.admit_later(key, peer_slot, &admitted, async move { admit(stream, &admission).await });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(incoming)
    }

    /// The same for the unix socket: peers are told apart by uid; no TLS or CIDRs there.
    pub fn incoming_unix(
        self: Arc<Self>,
        listener: UnixListener,
    ) -> impl tokio_stream::Stream<Item = io::Result<OneWritePerAnswer<GrpcConn<UnixStream>>>> {
        let (admitted, incoming) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "gRPC accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                if admitted.is_closed() {
                    return;
                }
                // No credentials (never on Linux): counted as one unknown peer.
                let key = PeerKey::Uid(stream.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX));
                let Some(peer_slot) = self.peer_slot(key) else { continue };
                let preface = async move { read_preface(stream).await.map_err(|e| ("preface", e.to_string())) };
                self.admit_later(key, peer_slot, &admitted, preface);
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(incoming)
    }

    /// The peer's place in its share, or `None` (refused) when it holds its share already.
    fn peer_slot(&self, key: PeerKey) -> Option<PeerSlot> {
        let slot = self.peers.try_take(key);
        if slot.is_none() {
            self.refused(key, ("peer", "listen.limits.grpc_max_connections_per_peer reached".into()));
        }
        slot
    }

    /// A place among the connections in admission, then `admit` (TLS and the HTTP/2 preface)
    /// within the deadline in a task of its own, then a global slot; the admitted connection
    /// goes to `admitted`.
    fn admit_later<S, F>(self: &Arc<Self>, key: PeerKey, peer_slot: PeerSlot, admitted: &Admitted<S>, admit: F)
    where
        S: Send + 'static,
        F: std::future::Future<Output = Result<Prefaced<S>, Refusal>> + Send + 'static,
    {
        let Ok(pending) = self.pending.clone().try_acquire_owned() else {
            return self.refused(key, ("pending", "listen.limits.grpc_max_pending_connections reached".into()));
        };
        let (gate, admitted) = (self.clone(), admitted.clone());
        tokio::spawn(async move {
            let admit = tokio::time::timeout(gate.deadline, admit).await;
            drop(pending);
            let io = match admit {
                Ok(Ok(io)) => io,
                Ok(Err(refusal)) => return gate.refused(key, refusal),
                Err(_) => return gate.refused(key, ("deadline", "no TLS handshake and HTTP/2 preface in time".into())),
            };
            if let Some(conn) = gate.slot(key, io, peer_slot) {
                let _ = admitted.send(Ok(OneWritePerAnswer(conn))).await;
            }
        });
    }

    /// A global slot for an admitted connection, or `None` (refused) when all are taken.
    fn slot<S>(&self, key: PeerKey, io: Prefaced<S>, peer: PeerSlot) -> Option<GrpcConn<S>> {
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => Some(GrpcConn { io, _slot: slot, _peer: peer }),
            Err(_) => {
                self.refused(key, ("connections", "listen.limits.grpc_max_connections reached".into()));
                None
            }
        }
    }

    /// Counted every time; logged once per peer and reason per interval, with the count.
    fn refused(&self, peer: PeerKey, (why, detail): Refusal) {
        metrics::counter!(REFUSED_TOTAL, "why" => why).increment(1);
        if let Some(refused) = self.log.sample(why, peer) {
            tracing::warn!(why, peer = %peer, detail, refused, "gRPC caller refused");
        }
    }
}

/// TLS (when configured, with its certificate and identity checks) and the HTTP/2 preface.
async fn admit(stream: TcpStream, admission: &Admission) -> Result<Prefaced<Io>, Refusal> {
    let io = match admission.tls.clone() {
        None => Io::Plain(stream),
        Some(acceptor) => {
            let tls = acceptor.accept(stream).await.map_err(|e| ("tls", e.to_string()))?;
            let sans = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|cert| crate::tls::uri_sans(cert))
                .unwrap_or_default();
            // A SPIFFE certificate carries exactly one URI SAN: with several, which one is
            // "the" identity is ambiguous, so none is.
            let identity = match sans.as_slice() {
                [one] => Some(one.as_str()),
                _ => None,
            };
            let listed = admission.policy.spiffe_ids.is_empty()
                || identity.is_some_and(|id| admission.policy.admits_identity(id));
            if !listed {
                return Err(("identity", sans.join(",")));
            }
            Io::Tls(Box::new(tls))
        }
    };
    read_preface(io).await.map_err(|e| ("preface", e.to_string()))
}
