//! JOSE header rules (docs/contract.md step 8). Parameters that would let a token choose its own key or
//! change how it is processed are refused outright.

use super::alg::Alg;
use crate::decision::TokenError;
use serde_json::{Map, Value};

/// Header parameters that are never honoured; their presence refuses the token.
const FORBIDDEN: [&str; 6] = ["crit", "b64", "jku", "x5u", "jwk", "x5c"];

#[derive(Debug)]
pub struct JoseHeader {
    pub alg: Alg,
    pub kid: Option<String>,
    pub typ: Option<String>,
}

pub fn parse_header(json: &[u8]) -> Result<JoseHeader, TokenError> {
    let map: Map<String, Value> = super::json::unique_object(json)
        .ok_or(TokenError::Malformed("header is not a JSON object with unique member names"))?;
    if let Some(name) = FORBIDDEN.iter().find(|name| map.contains_key(**name)) {
        return Err(TokenError::Header(format!("header parameter \"{name}\" is not accepted")));
    }
    let alg = match map.get("alg") {
        Some(Value::String(s)) => s.parse::<Alg>().map_err(|_| TokenError::Header("unsupported alg".into()))?,
        _ => return Err(TokenError::Header("alg missing".into())),
    };
    let kid = match map.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(TokenError::Header("kid is not a string".into())),
    };
    let typ = match map.get("typ") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(TokenError::Header("typ is not a string".into())),
    };
    Ok(JoseHeader { alg, kid, typ })
}

/// Media types compare case-insensitively and may omit the `application/` prefix (RFC 7515 4.1.9).
pub fn normalize_typ(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    lower.strip_prefix("application/").map(str::to_string).unwrap_or(lower)
}
