//! DPoP cases in `portcullis test` files: a token bound to a proof key generated for the run,
//! sent as `Authorization: DPoP` with a proof minted for the case's request (each claim can be
//! made wrong to test a refusal), or presented as a bearer token.

use super::explain::{ExplainRequest, OneOrMany};
use crate::decision::UnixTime;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpopSpec {
    /// Bind the token to the run's proof key (`cnf.jkt`; default true).
    #[serde(default = "yes")]
    pub bound: bool,
    /// Send a proof (default true); `false` sends the token as `DPoP` without one.
    #[serde(default = "yes")]
    pub proof: bool,
    /// Present the token as `Bearer` (a stolen token replayed without its key).
    #[serde(default)]
    pub as_bearer: bool,
    /// The proof's `htm` (default: the request's method).
    pub htm: Option<String>,
    /// The proof's `htu` (default: `http://` + the request's host and path).
    pub htu: Option<String>,
    /// Seconds added to the proof's `iat` (default 0; `-600` makes it stale).
    #[serde(default)]
    pub iat_offset: i64,
    /// The proof's `ath` is for another token.
    #[serde(default)]
    pub wrong_ath: bool,
}

fn yes() -> bool {
    true
}

/// The run's proof key: one P-256 key, its public JWK and thumbprint.
pub struct ProofKey {
    key: jsonwebtoken::EncodingKey,
    jwk: serde_json::Value,
    pub jkt: String,
}

impl ProofKey {
    pub fn generate() -> Result<Self, String> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| format!("cannot generate a DPoP test key: {e}"))?;
        let key = jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref());
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::ES256)
            .map_err(|e| format!("DPoP test key: {e}"))?;
        let jkt =
            jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256).map_err(|e| format!("DPoP test key: {e}"))?;
        let jwk = serde_json::to_value(&jwk).map_err(|e| e.to_string())?;
        Ok(Self { key, jwk, jkt })
    }

    /// Puts `token` on `request` as the spec says, with a proof for it.
    pub fn present(
        &self,
        spec: &DpopSpec,
        token: String,
        request: &mut ExplainRequest,
        now: UnixTime,
    ) -> Result<(), String> {
        if spec.as_bearer {
            request.token = Some(token);
            return Ok(());
        }
        if spec.proof {
            let path = request.path.split('?').next().unwrap_or_default();
            let ath_of = if spec.wrong_ath { "another token" } else { token.as_str() };
            let claims = serde_json::json!({
                "htm": spec.htm.clone().unwrap_or_else(|| request.method.clone()),
                "htu": spec.htu.clone().unwrap_or_else(|| format!("http://{}{path}", request.host)),
                "iat": now.0 + spec.iat_offset,
                "jti": format!("{:x}", Sha256::digest(format!("{token}{}", now.0).as_bytes())),
                "ath": URL_SAFE_NO_PAD.encode(Sha256::digest(ath_of.as_bytes())),
            });
            let header = serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk});
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &self.key, jsonwebtoken::Algorithm::ES256)
                .map_err(|e| format!("DPoP proof: {e}"))?;
            request.headers.insert("dpop".into(), OneOrMany::One(format!("{input}.{signature}")));
        }
        request.headers.insert("authorization".into(), OneOrMany::One(format!("DPoP {token}")));
        Ok(())
    }
}
