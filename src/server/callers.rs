//! Who may call Check on the TCP listener: peers outside `listen.callers.cidrs` are closed at
//! accept; with `listen.callers.tls`, a TLS handshake that demands a certificate from the
//! caller CA, whose URI SAN must be on `spiffe_ids`. All before HTTP/2 starts, so a refused
//! caller never gets a byte decoded, an audit line written or an in-flight permit.

use super::io::OneWritePerAnswer;
use crate::config::CallerPolicy;
use crate::decision::{CidrSet, parse_cidr};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

pub const REFUSED_TOTAL: &str = "portcullis_grpc_callers_refused_total";

/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An accepted gRPC connection, plain or TLS.
pub enum GrpcConn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for GrpcConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for GrpcConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl Connected for GrpcConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Self::Plain(s) => s.connect_info(),
            Self::Tls(s) => s.get_ref().0.connect_info(),
        }
    }
}

/// The gate in front of the TCP gRPC listener.
pub struct CallerGate {
    cidrs: Option<CidrSet>,
    tls: Option<TlsAcceptor>,
    policy: CallerPolicy,
}

impl CallerGate {
    pub fn new(policy: &CallerPolicy) -> Result<Self, String> {
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
                        tracing::debug!(error = %e, "gRPC accept failed");
                        continue;
                    }
                };
                if admitted.is_closed() {
                    return;
                }
                if self.cidrs.as_ref().is_some_and(|set| !set.contains(peer.ip())) {
                    refused("cidr", &peer.to_string(), "");
                    continue;
                }
                // Without Nagle: see `grpc_incoming` in mod.rs.
                let _ = stream.set_nodelay(true);
                let Some(acceptor) = self.tls.clone() else {
                    if admitted.send(Ok(OneWritePerAnswer(GrpcConn::Plain(stream)))).await.is_err() {
                        return;
                    }
                    continue;
                };
                let (gate, admitted) = (self.clone(), admitted.clone());
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
                    let admitted_id =
                        gate.policy.spiffe_ids.is_empty() || sans.iter().any(|san| gate.policy.admits_identity(san));
                    if !admitted_id {
                        return refused("identity", &peer.to_string(), &sans.join(","));
                    }
                    let _ = admitted.send(Ok(OneWritePerAnswer(GrpcConn::Tls(Box::new(tls))))).await;
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
