//! Builds `CheckRequest`s the way Envoy does, and sums up answers: development tooling for
//! `portcullis dev`'s self-check, the tests, the benchmarks and the load generator (not part of
//! the server's request path).

use crate::server::proto::envoy::config::core::v3::{Address, HeaderMap, HeaderValue, SocketAddress, address};
use crate::server::proto::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, attribute_context, check_response,
};

/// How Envoy encodes the request headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderEncoding {
    /// The legacy map: duplicates comma-joined.
    Map,
    /// `encode_raw_headers: true`: duplicates kept apart, values in `raw_value`.
    Raw,
}

pub fn check_request(method: &str, path: &str, headers: &[(&str, &str)], encoding: HeaderEncoding) -> CheckRequest {
    let mut http = attribute_context::HttpRequest {
        id: "req-1".into(),
        method: method.into(),
        path: path.into(),
        host: "api.example.com".into(),
        scheme: "http".into(),
        protocol: "HTTP/1.1".into(),
        ..Default::default()
    };
    match encoding {
        HeaderEncoding::Map => {
            for (k, v) in headers {
                http.headers
                    .entry(k.to_ascii_lowercase())
                    .and_modify(|existing: &mut String| {
                        existing.push(',');
                        existing.push_str(v);
                    })
                    .or_insert_with(|| v.to_string());
            }
        }
        HeaderEncoding::Raw => {
            http.header_map = Some(HeaderMap {
                headers: headers
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: k.to_ascii_lowercase(),
                        value: String::new(),
                        raw_value: v.as_bytes().to_vec(),
                    })
                    .collect(),
            });
        }
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(attribute_context::Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "127.0.0.1".into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(attribute_context::Request { time: None, http: Some(http) }),
            ..Default::default()
        }),
    }
}

/// One line describing a `CheckResponse` (for `portcullis dev` and test messages).
pub fn summarize(response: &CheckResponse) -> String {
    match &response.http_response {
        Some(check_response::HttpResponse::OkResponse(ok)) => {
            let set: Vec<String> = ok
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .map(|h| format!("{}: {}", h.key, h.value))
                .collect();
            format!("allow (200), sets [{}]", set.join(", "))
        }
        Some(check_response::HttpResponse::DeniedResponse(denied)) => {
            let status = denied.status.as_ref().map(|s| s.code).unwrap_or_default();
            let reason = response.status.as_ref().map(|s| s.message.as_str()).unwrap_or_default();
            format!("deny ({status}) {reason}")
        }
        None => "no answer".into(),
    }
}
