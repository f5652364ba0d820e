//! The one place protocol types meet the core: `CheckRequest` → [`CheckInput`], and
//! [`Decision`] → `CheckResponse` (the single decision → response mapping).

use super::proto::envoy::config::core::v3::{HeaderValue, HeaderValueOption, address, header_value_option};
use super::proto::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response,
};
use super::proto::envoy::r#type::v3::HttpStatus;
use super::proto::google::rpc::Status;
use crate::decision::{Challenge, CheckInput, Decision, Deny, Outcome, ResponsePolicy};
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
    let ctx = &decision.context;
    let mut fields = BTreeMap::new();
    let verdict = if matches!(decision.outcome, Outcome::Allow { .. }) { "allow" } else { "deny" };
    fields.insert("decision".to_string(), string_value(verdict));
    fields.insert("reason".to_string(), string_value(decision.reason()));
    let optional = [
        ("rule", ctx.rule.as_deref()),
        ("issuer", ctx.issuer.as_deref()),
        ("subject", ctx.subject.as_ref().map(|s| s.as_str())),
        ("tenant", ctx.tenant.as_deref()),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            fields.insert(key.to_string(), string_value(value));
        }
    }
    Struct { fields }
}

/// Request ids are echoed only when they cannot carry anything surprising.
fn safe_request_id(id: &str) -> Option<&str> {
    let ok = (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then_some(id)
}

fn error_word(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        429 => "too_many_requests",
        _ => "unavailable",
    }
}

fn challenge(deny: &Deny, realm: &str) -> Option<String> {
    match deny.reason.challenge() {
        Challenge::None => None,
        Challenge::Bare => Some(format!("Bearer realm=\"{realm}\"")),
        Challenge::Error(error) => {
            let mut value = format!("Bearer realm=\"{realm}\", error=\"{error}\"");
            for (name, param) in &deny.challenge_params {
                value.push_str(&format!(", {name}=\"{param}\""));
            }
            Some(value)
        }
        Challenge::Dpop(error) => Some(format!("DPoP realm=\"{realm}\", error=\"{error}\", algs=\"{DPOP_ALGS}\"")),
    }
}

/// The proof algorithms the `DPoP` challenge names (RFC 9449 §7.1): every one Portcullis can
/// verify; a policy's `dpop.algorithms` may accept fewer, which a proof then hears about.
const DPOP_ALGS: &str = "ES256 ES384 EdDSA PS256 PS384 PS512 RS256 RS384 RS512";

/// Maps every decision to its `CheckResponse`. Denies always carry a `denied_response` and a
/// PERMISSION_DENIED or UNAUTHENTICATED status, never another code.
pub fn check_response(decision: &Decision, request_id: &str, policy: &ResponsePolicy) -> CheckResponse {
    check_response_owned(decision.clone(), request_id, policy)
}

/// [`check_response`] taking the decision: an allow's header names and values move into the
/// answer instead of being copied (the serving path; the audit has read the decision first).
pub fn check_response_owned(decision: Decision, request_id: &str, policy: &ResponsePolicy) -> CheckResponse {
    let dynamic_metadata = Some(metadata(&decision));
    let security_headers = policy.security_headers.iter().map(|(k, v)| header(k.as_str(), v.as_str()));
    match decision.outcome {
        Outcome::Allow { set_headers, remove_headers } => CheckResponse {
            status: Some(Status { code: GRPC_OK, message: String::new(), details: Vec::new() }),
            http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                headers: set_headers.into_iter().map(|(k, v)| header(k, v)).collect(),
                headers_to_remove: remove_headers,
                response_headers_to_add: security_headers.collect(),
            })),
            dynamic_metadata,
        },
        Outcome::Deny(deny) => {
            let status = deny.reason.http_status();
            let code = if status == 401 { GRPC_UNAUTHENTICATED } else { GRPC_PERMISSION_DENIED };
            let mut headers = vec![header("cache-control", "no-store"), header("content-type", "application/json")];
            headers.extend(security_headers);
            if let Some(value) = challenge(&deny, &policy.realm) {
                headers.push(header("www-authenticate", value));
            }
            if let Some(secs) = deny.retry_after.or(deny.reason.retry_after_secs()) {
                headers.push(header("retry-after", secs.to_string()));
            }
            headers.extend(deny.headers.iter().map(|(name, value)| header(*name, value.as_str())));
            let body = serde_json::json!({
                "error": error_word(status),
                "reason": deny.reason.as_str(),
                "request_id": safe_request_id(request_id),
            });
            CheckResponse {
                status: Some(Status { code, message: deny.reason.as_str().to_string(), details: Vec::new() }),
                http_response: Some(check_response::HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus { code: i32::from(status) }),
                    headers,
                    body: body.to_string(),
                })),
                dynamic_metadata,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{DecisionContext, DenyReason};

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
