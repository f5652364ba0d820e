//! Sender-constrained tokens (docs/contract.md step 8b): a token whose `cnf` names a key
//! (`jkt`, RFC 9449 DPoP) or a client certificate (`x5t#S256`, RFC 8705) is accepted only
//! from the sender that proves it; a policy can require either. The proof's signature and
//! claims are checked at the edge ([`ProofVerifier`]), the binding here.

use super::input::CheckInput;
use super::reason::{Deny, DenyReason};
use super::types::{UnixTime, VerifiedToken};
use serde_json::Value;

/// How much of one binding a policy asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Constraint {
    /// A token bound this way must be proven; an unbound token passes.
    #[default]
    Allowed,
    /// Only tokens bound this way, proven, pass.
    Required,
}

/// `sender_constraint: { dpop, mtls }` of an issuer or a route (the stricter of both holds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderConstraint {
    pub dpop: Constraint,
    pub mtls: Constraint,
}

impl SenderConstraint {
    pub fn stricter(self, other: SenderConstraint) -> SenderConstraint {
        let max = |a: Constraint, b: Constraint| if a == Constraint::Required { a } else { b };
        SenderConstraint { dpop: max(self.dpop, other.dpop), mtls: max(self.mtls, other.mtls) }
    }
}

/// A DPoP proof the edge verified: signature by the key in its header, `typ`, `alg`, `htm`,
/// `htu`, `iat`, `ath`, nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 SHA-256 thumbprint of the proof's key (base64url).
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofError {
    /// RFC 9449 `invalid_dpop_proof`, with why (never the proof).
    Invalid(String),
    /// The proof carries no (or a stale) server nonce: `use_dpop_nonce`, with the nonce to use.
    NonceRequired(String),
    /// The replay check could not be made (its shared store is down): refused, retry later.
    Unavailable(String),
}

/// What the edge learned of the request's `DPoP` header: `None` when it sent none.
pub type ProofOutcome = Option<Result<Proof, ProofError>>;

/// What a proof is checked against.
#[derive(Debug, Clone, Copy)]
pub struct ProofRequest<'a> {
    pub method: &'a str,
    /// The request's URI as the upstream sees it, without query ([`request_htu`]).
    pub htu: &'a str,
    /// The access token (`ath` is its SHA-256).
    pub token: &'a str,
}

/// Verifies a DPoP proof (signature, header and claims; not replay, which needs shared state).
pub trait ProofVerifier {
    fn verify_proof(&self, proof: &str, request: &ProofRequest, now: UnixTime) -> Result<Proof, ProofError>;
}

/// No DPoP configured: every proof is refused.
pub struct NoProofs;

impl ProofVerifier for NoProofs {
    fn verify_proof(&self, _proof: &str, _request: &ProofRequest, _now: UnixTime) -> Result<Proof, ProofError> {
        Err(ProofError::Invalid("DPoP is not configured".into()))
    }
}

/// The one `DPoP` header value, if any; more than one (or a comma-joined pair) is refused.
pub fn dpop_header(input: &CheckInput) -> Result<Option<&str>, Deny> {
    let mut values = input.header_values("dpop");
    let first = values.next();
    if values.next().is_some() || first.is_some_and(|v| v.contains(',')) {
        return Err(invalid_proof("more than one DPoP header"));
    }
    Ok(first.map(str::trim))
}

fn invalid_proof(why: impl Into<String>) -> Deny {
    Deny::new(DenyReason::DpopProofInvalid, why)
}

fn default_port(scheme: &str) -> &'static str {
    if scheme == "https" { "443" } else { "80" }
}

/// `scheme://authority/path` normalized for comparison: scheme and host lowercased, the
/// scheme's default port dropped, query and fragment cut (RFC 9449 §4.3).
pub fn normalize_htu(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let mut authority = authority.to_ascii_lowercase();
    let suffix = format!(":{}", default_port(&scheme));
    if authority.ends_with(&suffix) && !authority.ends_with(']') {
        authority.truncate(authority.len() - suffix.len());
    }
    Some(format!("{scheme}://{authority}{path}"))
}

/// The request's URI as the upstream sees it: Envoy's scheme (`x-forwarded-proto` only from a
/// trusted proxy), the authority as sent, the path without query. With `authorities`, the
/// authority must be one of them: a proof made for another server, replayed here with that
/// server's `Host`, names an authority this deployment does not serve.
pub fn request_htu(input: &CheckInput, peer_trusted: bool, authorities: &[String]) -> Result<String, Deny> {
    let mut forwarded = input.header_values("x-forwarded-proto");
    let scheme = match (peer_trusted, forwarded.next(), forwarded.next()) {
        (true, Some(proto), None) if !proto.contains(',') => proto.trim().to_ascii_lowercase(),
        (true, Some(_), _) => return Err(Deny::new(DenyReason::InvalidRequest, "more than one x-forwarded-proto")),
        _ => input.scheme.to_ascii_lowercase(),
    };
    let scheme = if scheme.is_empty() { "http".to_string() } else { scheme };
    let path = input.path.split('?').next().unwrap_or_default();
    let htu = normalize_htu(&format!("{scheme}://{}{path}", input.host))
        .ok_or_else(|| Deny::new(DenyReason::InvalidRequest, "the request's URI has no DPoP reading"))?;
    if !authorities.is_empty() {
        let authority = htu.split_once("://").and_then(|(_, rest)| rest.split('/').next()).unwrap_or_default();
        if !authorities.iter().any(|a| *a == bare_authority(authority)) {
            return Err(invalid_proof("the request's authority is not one DPoP is served for here"));
        }
    }
    Ok(htu)
}

/// The bindings Portcullis can prove; a `cnf` naming any other (RFC 7800 `jwk`, `kid`, `jku`,
/// SHA-1 `x5t`) is a binding it cannot check, and such a token is refused rather than taken
/// as unbound.
const PROVABLE: [&str; 2] = ["jkt", "x5t#S256"];

/// An authority as `dpop.authorities` holds it: lowercase, without a default port (`:443`,
/// `:80`): the one spelling both the policy and the request are compared in.
pub fn bare_authority(authority: &str) -> String {
    let lower = authority.to_ascii_lowercase();
    match lower.strip_suffix(":443").or_else(|| lower.strip_suffix(":80")) {
        Some(bare) if !bare.ends_with(']') || bare.starts_with('[') => bare.to_string(),
        _ => lower,
    }
}

fn cnf<'a>(token: &'a VerifiedToken, member: &str) -> Option<&'a Value> {
    token.claims.get("cnf")?.get(member)
}

/// The key thumbprint a token is bound to (`cnf.jkt`), for the edge's replay bookkeeping.
pub fn bound_key(token: &VerifiedToken) -> Option<&str> {
    cnf(token, "jkt").and_then(Value::as_str)
}

/// Contract step 9b: the token's binding proven, and the policy's constraint met.
/// `dpop_scheme`: the token came as `Authorization: DPoP`. `certificate`: the base64url
/// SHA-256 of the client certificate Envoy forwarded.
pub fn check_binding(
    token: &VerifiedToken,
    dpop_scheme: bool,
    proof: Option<&Result<Proof, ProofError>>,
    certificate: Option<&str>,
    constraint: SenderConstraint,
) -> Result<(), Deny> {
    match token.claims.get("cnf") {
        None => {}
        Some(Value::Object(members)) if members.keys().all(|k| PROVABLE.contains(&k.as_str())) => {}
        Some(_) => return Err(mismatch("the token is bound in a way Portcullis cannot prove (cnf)")),
    }
    let bound_key = cnf(token, "jkt");
    let bound_cert = cnf(token, "x5t#S256");
    if bound_key.is_some_and(|k| !k.is_string()) || bound_cert.is_some_and(|c| !c.is_string()) {
        return Err(Deny::bad_credential(DenyReason::TokenInvalid, "cnf member is not a string"));
    }
    let (bound_key, bound_cert) = (bound_key.and_then(Value::as_str), bound_cert.and_then(Value::as_str));
    match (dpop_scheme, bound_key) {
        (true, _) => {
            let proof = match proof {
                None => return Err(invalid_proof("DPoP scheme without a DPoP proof")),
                Some(Err(ProofError::Invalid(why))) => return Err(invalid_proof(why.clone())),
                Some(Err(ProofError::NonceRequired(nonce))) => {
                    let mut deny = Deny::new(DenyReason::DpopNonceRequired, "the proof lacks the current nonce");
                    deny.headers.push(("dpop-nonce", nonce.clone()));
                    return Err(deny);
                }
                Some(Err(ProofError::Unavailable(why))) => {
                    return Err(Deny::new(DenyReason::StateStale, format!("DPoP replay check: {why}")));
                }
                Some(Ok(proof)) => proof,
            };
            match bound_key {
                Some(jkt) if jkt == proof.jkt => {}
                Some(_) => return Err(mismatch("the DPoP proof is signed by another key than the token names")),
                None => return Err(mismatch("a DPoP proof for a token bound to no key")),
            }
        }
        // RFC 9449 §7.2: a DPoP-bound token presented as a bearer token is refused.
        (false, Some(_)) => return Err(mismatch("a DPoP-bound token presented without its proof")),
        (false, None) => {}
    }
    if let Some(x5t) = bound_cert {
        match certificate {
            Some(presented) if presented == x5t => {}
            Some(_) => return Err(mismatch("the client certificate is not the one the token is bound to")),
            None => return Err(mismatch("a certificate-bound token without a client certificate")),
        }
    }
    if constraint.dpop == Constraint::Required && bound_key.is_none() {
        return Err(mismatch("a DPoP-bound token is required"));
    }
    if constraint.mtls == Constraint::Required && bound_cert.is_none() {
        return Err(mismatch("a certificate-bound token is required"));
    }
    Ok(())
}

fn mismatch(why: &str) -> Deny {
    Deny::new(DenyReason::TokenBindingMismatch, why)
}
