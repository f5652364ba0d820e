//! Listener addresses: TCP `host:port` or `unix:/path`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl ListenAddr {
    pub fn parse(s: &str, allow_unix: bool) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !allow_unix {
                return Err("a unix socket is not supported for this listener".into());
            }
            if !path.starts_with('/') {
                return Err(format!("unix socket path must be absolute, got \"{path}\""));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(Self::Tcp)
            .map_err(|_| format!("\"{s}\" is not host:port (an IP address and a port) or unix:/path"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Permissions given to the gRPC unix socket right after it is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketPerms {
    /// File mode bits (default 0o660).
    pub mode: u32,
    /// Group id to own the socket (the proxy's group), if any.
    pub group: Option<u32>,
}

impl Default for SocketPerms {
    fn default() -> Self {
        Self { mode: 0o660, group: None }
    }
}

/// Limits that keep one peer from holding the listeners' memory or connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    pub grpc_max_connections: usize,
    /// Connections one peer (an address, a unix uid) may hold, admitted or not yet.
    pub grpc_max_connections_per_peer: usize,
    /// Connections of all peers still in admission (TLS handshake, HTTP/2 preface).
    pub grpc_max_pending_connections: usize,
    /// A gRPC connection's TLS handshake and HTTP/2 preface must arrive within this.
    pub admission_timeout: Duration,
    /// Bytes of unfinished Check messages the process buffers at most, and one peer at most.
    pub max_buffered_bytes: usize,
    pub max_buffered_bytes_per_peer: usize,
    /// Open `grpc.health.v1.Health/Watch` streams one peer may hold.
    pub health_watches_per_peer: usize,
    /// Open gRPC streams (request to the end of its answer) one peer may hold, over all its
    /// connections.
    pub max_streams_per_peer: usize,
    /// Open gRPC streams of all peers together.
    pub max_streams: usize,
    pub max_concurrent_streams: u32,
    pub max_message_bytes: usize,
    /// The HTTP/2 header list of one gRPC call.
    pub max_header_list_bytes: usize,
    pub request_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// `None`: connections are never asked to go away.
    pub max_connection_age: Option<Duration>,
    pub http_header_read_timeout: Duration,
    pub http_connection_timeout: Duration,
    pub http_max_connections: usize,
    /// Health and admin connections one peer may hold (each listener).
    pub http_max_connections_per_peer: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            grpc_max_connections: 1024,
            grpc_max_connections_per_peer: 256,
            grpc_max_pending_connections: 1024,
            admission_timeout: Duration::from_secs(3),
            max_buffered_bytes: 32 << 20,
            max_buffered_bytes_per_peer: 8 << 20,
            health_watches_per_peer: 16,
            max_streams_per_peer: 512,
            max_streams: 8192,
            max_concurrent_streams: 256,
            // Envoy's own request header limit is 60 KiB by default (96 KiB max); a Check
            // carries those headers plus a little, so this leaves room and bounds the rest.
            max_message_bytes: 256 * 1024,
            max_header_list_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_connection_age: Some(Duration::from_secs(10 * 60)),
            http_header_read_timeout: Duration::from_secs(5),
            http_connection_timeout: Duration::from_secs(60),
            http_max_connections: 256,
            http_max_connections_per_peer: 8,
        }
    }
}

/// How the listeners behave, beyond their addresses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListenOptions {
    pub socket: SocketPerms,
    /// The state stream's unix socket (`listen.state_stream`).
    pub state_stream: Option<std::path::PathBuf>,
    pub reflection: bool,
    pub limits: ListenerLimits,
}

/// Who may call Check. Certificates and keys are kept as PEM (checked at validation; the
/// server builds its TLS configuration from them).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct CallerPolicy {
    /// Allowed peer networks, as written; empty: any peer.
    pub cidrs: Vec<String>,
    pub tls: Option<CallerTls>,
    /// Allowed URI SANs (exact, or a prefix ending in `*`); empty: any certified caller.
    pub spiffe_ids: Vec<String>,
}

impl std::fmt::Debug for CallerPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerPolicy")
            .field("cidrs", &self.cidrs)
            .field("tls", &self.tls.is_some())
            .field("spiffe_ids", &self.spiffe_ids)
            .finish()
    }
}

impl CallerPolicy {
    /// Whether a certificate's URI SAN is on the list.
    pub fn admits_identity(&self, uri: &str) -> bool {
        self.spiffe_ids.is_empty()
            || self.spiffe_ids.iter().any(|id| match id.strip_suffix('*') {
                Some(prefix) => uri.starts_with(prefix),
                None => uri == id,
            })
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct CallerTls {
    pub cert_pem: Vec<u8>,
    /// Never printed.
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Vec<u8>,
}
