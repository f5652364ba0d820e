//! The policy file as written: `listen` (addresses, the socket, callers, limits) and `limits`.

use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub grpc: Option<String>,
    pub health: Option<String>,
    pub admin: Option<String>,
    /// `unix:/path`: where Envoys running Portcullis as a dynamic module read this replica's
    /// fleet state (revocations, blocks, members, API keys) as it changes (README "Inside
    /// Envoy"). Unix sockets only, bound with `listen.socket`'s mode and group (default 0660).
    pub state_stream: Option<String>,
    /// Permissions of the gRPC unix socket (only with `grpc: unix:/path`).
    pub socket: Option<RawSocket>,
    /// gRPC server reflection; default on under `dev`, off otherwise.
    pub reflection: Option<bool>,
    /// Connection and message limits of the listeners.
    pub limits: Option<RawListenLimits>,
    /// Who may call Check (TCP gRPC only): peer CIDRs, and/or TLS with client certificates
    /// whose SPIFFE ids are listed. Anyone else is refused before a byte is decoded.
    pub callers: Option<RawCallers>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCallers {
    /// Peer addresses allowed to connect (the gateways' and proxies' pod CIDRs).
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// Serve gRPC over TLS and require a client certificate signed by `client_ca_file`.
    pub tls: Option<RawCallerTls>,
    /// Allowed caller identities: the URI SAN of the client certificate, exactly, or a prefix
    /// ending in `*` (`spiffe://cluster.local/ns/istio-system/*`). Needs `tls`.
    #[serde(default)]
    pub spiffe_ids: Vec<String>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCallerTls {
    pub cert_file: String,
    pub key_file: String,
    pub client_ca_file: String,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSocket {
    /// Octal file mode, like "0660" (the default): owner and group may connect.
    pub mode: Option<String>,
    /// The socket's group (a name or a numeric id): give it to the proxy, so a proxy running
    /// as another user can connect.
    pub group: Option<String>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawListenLimits {
    /// Admitted gRPC connections at most (TCP and unix; default 1024); more are closed.
    pub grpc_max_connections: Option<u32>,
    /// gRPC connections one peer may hold, admitted or not (an address or a unix uid; default
    /// 256).
    pub grpc_max_connections_per_peer: Option<u32>,
    /// gRPC connections of all peers still in admission: TLS handshake, HTTP/2 preface
    /// (default 1024).
    pub grpc_max_pending_connections: Option<u32>,
    /// The HTTP/2 header list of one gRPC call, like "16KiB" (the default).
    pub max_header_list_size: Option<String>,
    /// A gRPC connection's TLS handshake and HTTP/2 preface must arrive within this (default 3s).
    pub admission_timeout: Option<String>,
    /// Bytes of unfinished Check messages buffered at most, all peers together (default 32MiB)
    /// and one peer (default 8MiB); a stream past either is ended (RESOURCE_EXHAUSTED).
    pub max_buffered_bytes: Option<String>,
    pub max_buffered_bytes_per_peer: Option<String>,
    /// Open gRPC health Watch streams one peer may hold (default 16; Envoy and the kubelet use
    /// the unary Check).
    pub health_watches_per_peer: Option<u32>,
    /// Open gRPC streams one peer may hold over all its connections, from request to the end
    /// of its answer (default 512): answers stalled behind a zero flow-control window count.
    pub max_streams_per_peer: Option<u32>,
    /// Open gRPC streams of all peers together (default 8192).
    pub max_streams: Option<u32>,
    /// HTTP/2 streams per gRPC connection (default 256).
    pub max_concurrent_streams: Option<u32>,
    /// Largest Check message decoded, like "256KiB" (the default).
    pub max_message_size: Option<String>,
    /// A Check whose message has not arrived and been answered by then is ended (default 10s).
    pub request_timeout: Option<String>,
    /// HTTP/2 keepalive ping interval on gRPC connections (default 30s) and its timeout (10s).
    pub keepalive_interval: Option<String>,
    pub keepalive_timeout: Option<String>,
    /// gRPC connections are asked to go away after this long (default 10m; "0s": never), and
    /// closed `request_timeout` later whatever their streams do.
    pub max_connection_age: Option<String>,
    /// Health and admin: time to send a request's headers (default 5s).
    pub http_header_read_timeout: Option<String>,
    /// Health and admin: a connection is closed after this long, whatever it does (default 60s).
    pub http_connection_timeout: Option<String>,
    /// Health and admin: open connections at most, each (default 256).
    pub http_max_connections: Option<u32>,
    /// Health and admin: connections one peer may hold, each (default 8).
    pub http_max_connections_per_peer: Option<u32>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_inflight_checks: Option<u64>,
}
