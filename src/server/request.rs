//! Builds `CheckRequest`s the way Envoy does; used by `portcullis dev`'s self-check and tests.

use super::proto::envoy::config::core::v3::{Address, HeaderMap, HeaderValue, SocketAddress, address};
use super::proto::envoy::service::auth::v3::{AttributeContext, CheckRequest, attribute_context};

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
