//! The protocol-neutral view of one `Check` request.

use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone, Default)]
pub struct CheckInput {
    pub method: String,
    /// `:authority` as sent; matching lowercases it and strips a port.
    pub host: String,
    /// The request target including any query string, exactly as Envoy saw it.
    pub path: String,
    /// Header names lowercased; a header sent twice appears twice (raw header map) or once
    /// comma-joined (Envoy's legacy map), and the core treats both the same way.
    pub headers: Vec<(String, String)>,
    pub peer_ip: Option<IpAddr>,
    pub peer_principal: String,
    pub context_extensions: BTreeMap<String, String>,
    /// The request's `x-request-id` (Envoy's stream id when it has none).
    pub request_id: String,
    /// `http` or `https` as Envoy received the request (`:scheme`).
    pub scheme: String,
    /// The base64url SHA-256 of the client certificate's DER, when Envoy forwarded one
    /// (`include_peer_certificate`): what a certificate-bound token's `cnf.x5t#S256` names.
    pub peer_certificate: Option<String>,
}

impl CheckInput {
    /// Every value of header `name` (lowercase), in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + Clone + 'a {
        self.headers.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}
