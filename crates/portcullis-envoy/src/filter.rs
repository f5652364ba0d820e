//! One request through the module: read what Envoy has (headers, connection attributes) into the
//! core's `CheckInput` exactly as the ext_authz adapter does, decide, and apply the answer.

use crate::engine::Engine;
use portcullis_core::{Answer, CheckInput};
use std::sync::Arc;

/// Which header map (abi.h `envoy_dynamic_module_type_http_header_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum HeaderKind {
    Request = 0,
    Response = 2,
}

/// Connection attributes read (abi.h `envoy_dynamic_module_type_attribute_id`).
pub mod attribute {
    pub const CONNECTION_SUBJECT_PEER_CERTIFICATE: i32 = 33;
    pub const CONNECTION_DNS_SAN_PEER_CERTIFICATE: i32 = 35;
    pub const CONNECTION_URI_SAN_PEER_CERTIFICATE: i32 = 37;
    pub const CONNECTION_SHA256_PEER_CERTIFICATE_DIGEST: i32 = 38;
}

/// What the filter needs of Envoy's stream (abi.rs implements it over the callbacks; tests
/// with a fake).
pub trait StreamView {
    fn headers(&self, kind: HeaderKind) -> Vec<(String, String)>;
    /// The downstream connection's own peer address, as Envoy spells it (`ip:port`).
    fn direct_remote_address(&self) -> Option<String>;
    fn attribute(&self, id: i32) -> Option<String>;
    fn set_header(&self, kind: HeaderKind, name: &str, value: Option<&str>) -> bool;
    fn send_response(&self, status: u16, headers: &[(String, String)], body: &str, details: &str);
    fn set_metadata(&self, namespace: &str, key: &str, value: &str);
}

/// The metadata namespace decisions are published under (as the ext_authz filter's
/// `envoy.filters.http.ext_authz` namespace carries them on that path).
pub const METADATA_NAMESPACE: &str = "portcullis";

pub const INTERNAL_ERROR_BODY: &str = r#"{"error":"unavailable","reason":"internal_error","request_id":null}"#;

/// A reply for what must never happen (a panic in the module): refused, never forwarded.
pub fn internal_error_headers() -> Vec<(String, String)> {
    vec![("cache-control".into(), "no-store".into()), ("content-type".into(), "application/json".into())]
}

/// One stream's filter.
pub struct Filter {
    engine: Arc<Engine>,
    /// For the client on an allow (the policy's security headers), added to the response.
    response_headers: Vec<(String, String)>,
}

impl Filter {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine, response_headers: Vec::new() }
    }

    /// Decides the request; `true`: forward it (headers changed as the decision says), `false`:
    /// answered here.
    pub fn on_request_headers(&mut self, stream: &dyn StreamView) -> bool {
        let input = check_input(stream);
        let (answer, metadata) = self.engine.check(&input);
        // A removal is a callback into Envoy: only for headers the request has (its header
        // map is the one just read; nothing runs between).
        let present = |name: &String| input.headers.iter().any(|(k, _)| k == name);
        for (key, value) in &metadata {
            stream.set_metadata(METADATA_NAMESPACE, key, value);
        }
        match answer {
            Answer::Allow { set_headers, remove_headers, response_headers } => {
                // Removals first: a header the policy both strips and sets (identity headers a
                // client sent) ends with Portcullis' value only. A change Envoy refuses stops
                // the request: the upstream never sees a header Portcullis meant to remove.
                let removed = remove_headers
                    .iter()
                    .filter(|name| present(name))
                    .all(|name| stream.set_header(HeaderKind::Request, name, None));
                let set = removed
                    && set_headers
                        .iter()
                        .all(|(name, value)| stream.set_header(HeaderKind::Request, name, Some(value)));
                if !set {
                    stream.send_response(
                        503,
                        &internal_error_headers(),
                        INTERNAL_ERROR_BODY,
                        "portcullis_header_refused",
                    );
                    return false;
                }
                self.response_headers = response_headers;
                true
            }
            Answer::Deny { status, reason, headers, body, .. } => {
                stream.send_response(status, &headers, &body, &format!("portcullis_{reason}"));
                false
            }
        }
    }

    pub fn on_response_headers(&mut self, stream: &dyn StreamView) {
        for (name, value) in std::mem::take(&mut self.response_headers) {
            stream.set_header(HeaderKind::Response, &name, Some(&value));
        }
    }
}

/// The core's input from Envoy's view of the request, spelled as `server::convert::check_input`
/// reads a `CheckRequest` built from the same stream: pseudo-headers give method, authority,
/// path and scheme and stay in the header list; names are lowercase; `x-request-id` names the
/// request; the peer is the connection's own address; its principal is the
/// certificate's URI SAN, else DNS SAN, else subject.
pub fn check_input(stream: &dyn StreamView) -> CheckInput {
    let headers: Vec<(String, String)> =
        stream.headers(HeaderKind::Request).into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    let pseudo = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    // The connection's peer, as ext_authz sends it: never the address Envoy may have taken from
    // x-forwarded-for (the core reads that header itself, trusting only `ip.trusted_cidrs`).
    let peer_ip = stream.direct_remote_address().and_then(|a| parse_peer(&a));
    let peer_principal = [
        attribute::CONNECTION_URI_SAN_PEER_CERTIFICATE,
        attribute::CONNECTION_DNS_SAN_PEER_CERTIFICATE,
        attribute::CONNECTION_SUBJECT_PEER_CERTIFICATE,
    ]
    .into_iter()
    .filter_map(|id| stream.attribute(id))
    .find(|v| !v.is_empty())
    .unwrap_or_default();
    let peer_certificate =
        stream.attribute(attribute::CONNECTION_SHA256_PEER_CERTIFICATE_DIGEST).and_then(|hex| thumbprint(&hex));
    CheckInput {
        method: pseudo(":method"),
        host: pseudo(":authority"),
        path: pseudo(":path"),
        scheme: pseudo(":scheme"),
        request_id: pseudo("x-request-id"),
        headers,
        peer_ip,
        peer_principal,
        context_extensions: Default::default(),
        peer_certificate,
    }
}

/// `ip:port`, `[v6]:port` or a bare address.
fn parse_peer(text: &str) -> Option<std::net::IpAddr> {
    text.parse::<std::net::SocketAddr>().map(|s| s.ip()).ok().or_else(|| text.parse().ok())
}

/// `x5t#S256` from Envoy's hex SHA-256 of the peer certificate's DER.
fn thumbprint(hex: &str) -> Option<String> {
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()?;
    (bytes.len() == 32).then(|| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &bytes))
}
