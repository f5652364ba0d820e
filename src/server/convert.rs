//! The one place protocol types meet the core: `CheckRequest` → [`CheckInput`], and
//! [`Decision`] → `CheckResponse` (the single decision → response mapping).

use super::proto::envoy::config::core::v3::{HeaderValue, HeaderValueOption, address, header_value_option};
use super::proto::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response,
};
use super::proto::envoy::r#type::v3::HttpStatus;
use super::proto::google::rpc::Status;
use crate::decision::{Answer, CheckInput, Decision, ResponsePolicy, answer};
use prost_types::{Struct, Value, value::Kind};
use std::collections::BTreeMap;

/// gRPC codes used in `CheckResponse.status` (the RPC itself always succeeds).
const GRPC_OK: i32 = 0;
const GRPC_PERMISSION_DENIED: i32 = 7;
const GRPC_UNAUTHENTICATED: i32 = 16;

/// Envoy sends header names in lowercase already; lowercasing in place reuses the string.
fn lowercase(mut name: String) -> String {
    name.make_ascii_lowercase();
    name
}

pub fn check_input(request: CheckRequest) -> CheckInput {
    let attributes = request.attributes.unwrap_or_default();
    let http = attributes.request.and_then(|r| r.http).unwrap_or_default();
    let source = attributes.source.unwrap_or_default();
    let peer_ip = source.address.and_then(|a| a.address).and_then(|a| match a {
        address::Address::SocketAddress(s) => s.address.parse().ok(),
        address::Address::Pipe(_) => None,
    });
    // With `encode_raw_headers` Envoy fills header_map (duplicates kept apart, bytes in
    // raw_value); otherwise the legacy map with duplicates comma-joined.
    let headers: Vec<(String, String)> = match http.header_map {
        Some(map) if !map.headers.is_empty() => map
            .headers
            .into_iter()
            .map(|h| {
                let value = if h.raw_value.is_empty() {
                    h.value
                } else {
                    String::from_utf8(h.raw_value)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
                };
                (lowercase(h.key), value)
            })
            .collect(),
        _ => http.headers.into_iter().map(|(k, v)| (lowercase(k), v)).collect(),
    };
    // `x-request-id` is what Envoy's access log and the upstream see, so audit lines join
    // with them; Envoy's numeric stream id only when there is none.
    let request_id = headers.iter().find(|(k, _)| k == "x-request-id").map(|(_, v)| v.clone()).unwrap_or(http.id);
    CheckInput {
        method: http.method,
        host: http.host,
        path: http.path,
        headers,
        peer_ip,
        peer_principal: source.principal,
        context_extensions: attributes.context_extensions.into_iter().collect(),
        request_id,
        scheme: http.scheme,
        peer_certificate: certificate_thumbprint(&source.certificate),
    }
}

/// The namespace Envoy's `jwt_authn` filter writes its verified payloads under.
pub const JWT_AUTHN_NAMESPACE: &str = "envoy.filters.http.jwt_authn";

/// What Envoy's `jwt_authn` verified and ext_authz forwarded (`metadata_context_namespaces`):
/// each document (payloads and headers) by its metadata key, as JSON. Empty without it.
pub fn jwt_authn_payloads(request: &CheckRequest) -> Vec<(String, serde_json::Map<String, serde_json::Value>)> {
    let Some(fields) = request
        .attributes
        .as_ref()
        .and_then(|a| a.metadata_context.as_ref())
        .and_then(|m| m.filter_metadata.get(JWT_AUTHN_NAMESPACE))
        .map(|s| &s.fields)
    else {
        return Vec::new();
    };
    fields
        .iter()
        .filter_map(|(key, value)| match &value.kind {
            Some(Kind::StructValue(document)) => Some((key.clone(), struct_to_json(document)?)),
            _ => None,
        })
        .collect()
}

/// A `Struct` as JSON; `None` when it holds a number JSON cannot (NaN, infinity): such a
/// document attests nothing.
fn struct_to_json(s: &Struct) -> Option<serde_json::Map<String, serde_json::Value>> {
    s.fields.iter().map(|(k, v)| Some((k.clone(), value_to_json(v)?))).collect()
}

fn value_to_json(v: &Value) -> Option<serde_json::Value> {
    Some(match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)?.into(),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_to_json(s)?),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect::<Option<_>>()?)
        }
    })
}

/// `x5t#S256` of the client certificate Envoy forwarded (URL-encoded PEM): the base64url
/// SHA-256 of its DER. `None` without one, or when it cannot be read (a bound token then
/// finds no certificate and is refused).
fn certificate_thumbprint(encoded: &str) -> Option<String> {
    if encoded.is_empty() {
        return None;
    }
    // Not the query decoder (`decode_component`): `+` is base64 here, never a space.
    let bytes = encoded.as_bytes();
    let mut pem_text = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                pem_text.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                pem_text.push(b);
                i += 1;
            }
        }
    }
    let parsed = pem::parse(&pem_text).ok().filter(|p| p.tag() == "CERTIFICATE")?;
    Some(crate::jwt::dpop::sha256_b64(parsed.contents()))
}

fn header(key: impl Into<String>, value: impl Into<String>) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key: key.into(), value: value.into(), raw_value: Vec::new() }),
        append_action: header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        keep_empty_value: false,
    }
}

fn string_value(s: &str) -> Value {
    Value { kind: Some(Kind::StringValue(s.to_string())) }
}

fn metadata(decision: &Decision) -> Struct {
    let fields: BTreeMap<String, Value> = crate::decision::answer::metadata(decision)
        .into_iter()
        .map(|(k, v)| (k.to_string(), string_value(v)))
        .collect();
    Struct { fields }
}

/// Maps every decision to its `CheckResponse`. Denies always carry a `denied_response` and a
/// PERMISSION_DENIED or UNAUTHENTICATED status, never another code.
pub fn check_response(decision: &Decision, request_id: &str, policy: &ResponsePolicy) -> CheckResponse {
    check_response_owned(decision.clone(), request_id, policy)
}

/// [`check_response`] taking the decision: an allow's header names and values move into the
/// answer instead of being copied (the serving path; the audit has read the decision first).
/// What is sent is the core's [`answer`]; this only spells it in ext_authz' protobuf.
pub fn check_response_owned(decision: Decision, request_id: &str, policy: &ResponsePolicy) -> CheckResponse {
    let dynamic_metadata = Some(metadata(&decision));
    match answer(decision, request_id, policy) {
        Answer::Allow { set_headers, remove_headers, response_headers } => CheckResponse {
            status: Some(Status { code: GRPC_OK, message: String::new(), details: Vec::new() }),
            http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                headers: set_headers.into_iter().map(|(k, v)| header(k, v)).collect(),
                headers_to_remove: remove_headers,
                response_headers_to_add: response_headers.into_iter().map(|(k, v)| header(k, v)).collect(),
            })),
            dynamic_metadata,
        },
        Answer::Deny { status, unauthenticated, reason, headers, body } => {
            let code = if unauthenticated { GRPC_UNAUTHENTICATED } else { GRPC_PERMISSION_DENIED };
            CheckResponse {
                status: Some(Status { code, message: reason.to_string(), details: Vec::new() }),
                http_response: Some(check_response::HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus { code: i32::from(status) }),
                    headers: headers.into_iter().map(|(k, v)| header(k, v)).collect(),
                    body,
                })),
                dynamic_metadata,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{DecisionContext, Deny, DenyReason, Outcome};

    fn names(headers: &[HeaderValueOption]) -> Vec<(String, String)> {
        headers.iter().filter_map(|h| h.header.as_ref()).map(|h| (h.key.clone(), h.value.clone())).collect()
    }

    #[test]
    fn security_headers_go_to_the_client_on_allow_and_deny() {
        let policy = ResponsePolicy {
            realm: "r".into(),
            security_headers: vec![("x-frame-options".into(), "DENY".into())],
            ..Default::default()
        };
        let want = ("x-frame-options".to_string(), "DENY".to_string());
        let allow = Decision {
            outcome: Outcome::Allow { set_headers: vec![("x-user-id".into(), "u".into())], remove_headers: vec![] },
            context: DecisionContext::default(),
        };
        match check_response(&allow, "", &policy).http_response {
            Some(check_response::HttpResponse::OkResponse(ok)) => {
                assert_eq!(names(&ok.response_headers_to_add), std::slice::from_ref(&want));
                assert!(!names(&ok.headers).contains(&want), "never on the upstream request");
            }
            other => panic!("{other:?}"),
        }
        let mut deny = Deny::new(DenyReason::StepUpRequired, "x");
        deny.challenge_params.push(("max_age", "300".into()));
        match check_response(&Decision::deny(deny, DecisionContext::default()), "", &policy).http_response {
            Some(check_response::HttpResponse::DeniedResponse(d)) => {
                let headers = names(&d.headers);
                assert!(headers.contains(&want), "{headers:?}");
                let challenge = headers.iter().find(|(k, _)| k == "www-authenticate").map(|(_, v)| v.as_str());
                assert_eq!(
                    challenge,
                    Some(r#"Bearer realm="r", error="insufficient_user_authentication", max_age="300""#)
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
