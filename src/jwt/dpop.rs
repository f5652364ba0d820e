//! DPoP proofs (RFC 9449) at the edge: the proof's JOSE header (`typ: dpop+jwt`, an allowed
//! asymmetric `alg`, a public `jwk`), its signature by that key, and its claims (`htm`, `htu`,
//! `iat`, `jti`, `ath`, the server nonce). Replay (the `jti`) is the caller's: it needs state.

use super::json::unique_object;
use crate::config::DpopSettings;
use crate::decision::{Proof, ProofError, ProofRequest, ProofVerifier, UnixTime};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The largest proof read (a proof with an RSA 4096 key is about 1.5 KiB).
const MAX_PROOF_BYTES: usize = 8 * 1024;

/// JWK members that only a private or symmetric key has: a proof carrying one is refused.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The server nonces of one process (RFC 9449 §8): an HMAC of the time slot under the fleet's
/// secret (`dpop.nonce.secret_file`) or this process's own.
pub struct Nonces {
    own: [u8; 32],
}

impl Nonces {
    pub fn new() -> Result<Self, String> {
        let mut own = [0u8; 32];
        aws_lc_rs::rand::fill(&mut own).map_err(|_| "no secure random source".to_string())?;
        Ok(Self { own })
    }

    fn at(&self, secret: Option<&[u8]>, slot: i64) -> String {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.unwrap_or(&self.own));
        let tag = aws_lc_rs::hmac::sign(&key, &slot.to_be_bytes());
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..18])
    }

    /// The nonce to hand out now.
    pub fn current(&self, settings: &DpopSettings, now: UnixTime) -> Option<String> {
        let nonce = settings.nonce.as_ref()?;
        Some(self.at(nonce.secret.as_deref(), now.0.div_euclid(nonce.rotate_secs)))
    }

    /// The current nonce, or the previous one (a client that just fetched it).
    fn accepts(&self, settings: &DpopSettings, nonce: &str, now: UnixTime) -> bool {
        let Some(config) = settings.nonce.as_ref() else { return true };
        let slot = now.0.div_euclid(config.rotate_secs);
        [slot, slot - 1].iter().any(|s| {
            let want = self.at(config.secret.as_deref(), *s);
            bool::from(subtle::ConstantTimeEq::ct_eq(want.as_bytes(), nonce.as_bytes()))
        })
    }
}

/// Proofs held to one policy's `dpop:` settings.
pub struct DpopVerifier<'a> {
    pub settings: &'a DpopSettings,
    pub nonces: &'a Nonces,
}

fn invalid(why: &str) -> ProofError {
    ProofError::Invalid(why.to_string())
}

fn segment(text: &str) -> Result<Vec<u8>, ProofError> {
    URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid("a proof segment is not base64url"))
}

/// The base64url SHA-256 of `bytes` (`ath`, `x5t#S256`).
pub fn sha256_b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(bytes))
}

impl ProofVerifier for DpopVerifier<'_> {
    fn verify_proof(&self, proof: &str, request: &ProofRequest, now: UnixTime) -> Result<Proof, ProofError> {
        if proof.len() > MAX_PROOF_BYTES {
            return Err(invalid("proof larger than 8 KiB"));
        }
        let parts: Vec<&str> = proof.split('.').collect();
        let [header, payload, signature] = parts.as_slice() else { return Err(invalid("not a compact JWS")) };
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(invalid("not a compact JWS"));
        }
        let header = unique_object(&segment(header)?).ok_or_else(|| invalid("malformed proof header"))?;
        let claims = unique_object(&segment(payload)?).ok_or_else(|| invalid("malformed proof claims"))?;
        if !header.get("typ").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt")) {
            return Err(invalid("typ is not dpop+jwt"));
        }
        if ["crit", "jku", "x5u", "x5c"].iter().any(|m| header.contains_key(*m)) {
            return Err(invalid("the proof header names a key source or critical extensions"));
        }
        let alg_name = header.get("alg").and_then(Value::as_str).ok_or_else(|| invalid("no alg"))?;
        let alg = alg_name
            .parse::<jsonwebtoken::Algorithm>()
            .ok()
            .filter(|a| self.settings.algorithms.contains(a))
            .ok_or_else(|| invalid("alg not allowed for proofs"))?;
        let jwk_value = header.get("jwk").and_then(Value::as_object).ok_or_else(|| invalid("no public jwk"))?;
        if PRIVATE_MEMBERS.iter().any(|m| jwk_value.contains_key(*m)) {
            return Err(invalid("the jwk holds a private or symmetric key"));
        }
        if !matches!(jwk_value.get("kty").and_then(Value::as_str), Some("EC" | "OKP" | "RSA")) {
            return Err(invalid("the jwk is not an asymmetric public key"));
        }
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(Value::Object(jwk_value.clone())).map_err(|_| invalid("unreadable jwk"))?;
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|_| invalid("unusable jwk"))?;
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        jsonwebtoken::decode::<Value>(proof, &key, &validation).map_err(|_| invalid("bad proof signature"))?;
        if claims.get("htm").and_then(Value::as_str) != Some(request.method) {
            return Err(invalid("htm is not the request's method"));
        }
        let htu = claims.get("htu").and_then(Value::as_str).and_then(crate::decision::binding::normalize_htu);
        if htu.as_deref() != Some(request.htu) {
            return Err(invalid("htu is not the request's URI"));
        }
        let iat = claims.get("iat").and_then(Value::as_i64).ok_or_else(|| invalid("no iat"))?;
        if iat < now.0 - self.settings.max_age_secs || iat > now.0 + self.settings.leeway_secs {
            return Err(invalid("iat outside the accepted window"));
        }
        let jti = claims.get("jti").and_then(Value::as_str).filter(|j| (1..=256).contains(&j.len()));
        let jti = jti.ok_or_else(|| invalid("no jti (1 to 256 characters)"))?;
        if claims.get("ath").and_then(Value::as_str) != Some(sha256_b64(request.token.as_bytes()).as_str()) {
            return Err(invalid("ath is not the access token's hash"));
        }
        if let Some(nonce) = self.nonces.current(self.settings, now) {
            let sent = claims.get("nonce").and_then(Value::as_str);
            if !sent.is_some_and(|n| self.nonces.accepts(self.settings, n, now)) {
                return Err(ProofError::NonceRequired(nonce));
            }
        }
        let jkt = jwk
            .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .map_err(|_| invalid("the jwk has no thumbprint"))?;
        Ok(Proof { jkt, jti: jti.to_string(), iat })
    }
}
