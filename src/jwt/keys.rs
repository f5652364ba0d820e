//! Verification keys from static sources: JWKS documents, PEM public keys and HMAC secrets.

use super::alg::{Alg, AlgFamily};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde_json::Value;

/// Smallest RSA modulus accepted.
pub const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("JWKS is not valid JSON with a \"keys\" array")]
    NotJwks,
    #[error("JWKS key {index}: {why}")]
    BadJwk { index: usize, why: String },
    #[error("PEM: {0}")]
    BadPem(String),
    #[error("HMAC secret: {0}")]
    BadSecret(String),
}

/// One verification key and what it may verify.
#[derive(Clone)]
pub struct VerifyKey {
    pub kid: Option<String>,
    /// The JWK's `alg`, when it names one: the key then verifies only that algorithm.
    pub alg: Option<Alg>,
    pub family: AlgFamily,
    /// EC curve name (`P-256`, `P-384`) for EC keys.
    pub curve: Option<&'static str>,
    pub decoding: DecodingKey,
    /// Identifies the key material (public parameters, or a digest of a secret) so that two
    /// fetches of the same JWKS compare equal.
    pub material: String,
}

impl PartialEq for VerifyKey {
    fn eq(&self, other: &Self) -> bool {
        self.kid == other.kid && self.alg == other.alg && self.material == other.material
    }
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.family)
            .field("curve", &self.curve)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// Whether this key may verify a token signed with `alg`.
    pub fn fits(&self, alg: Alg) -> bool {
        self.family == alg.family()
            && self.alg.is_none_or(|a| a == alg)
            && (alg.family() != AlgFamily::Ec || self.curve == alg.ec_curve())
    }
}

/// The keys of one issuer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeySet {
    pub keys: Vec<VerifyKey>,
}

/// Most keys one token is tried against when its `kid` does not single one out: two PEM keys of
/// one family are the natural way to rotate, and each try costs one signature check.
pub const MAX_CANDIDATES: usize = 4;

impl KeySet {
    /// Keys configured without a `kid` (PEM files, HMAC secrets) that fit `alg`.
    fn unnamed(&self, alg: Alg) -> impl Iterator<Item = &VerifyKey> {
        self.keys.iter().filter(move |k| k.kid.is_none() && k.fits(alg))
    }

    /// The keys a token with `kid` and `alg` is tried against, in order: the key named `kid`,
    /// or else every key configured without a `kid` that fits (a PEM key answers for any `kid`);
    /// without a `kid`, every key that fits. At most [`MAX_CANDIDATES`].
    pub fn candidates(&self, kid: Option<&str>, alg: Alg) -> Result<Vec<&VerifyKey>, String> {
        let found: Vec<&VerifyKey> = match kid.and_then(|kid| self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)))
        {
            Some(key) if key.fits(alg) => return Ok(vec![key]),
            Some(_) => return Err(format!("key does not fit alg {alg}")),
            None if kid.is_some() => self.unnamed(alg).collect(),
            None => self.keys.iter().filter(|k| k.fits(alg)).collect(),
        };
        match found.len() {
            0 if kid.is_some() => Err("unknown kid".into()),
            0 => Err(format!("no key for alg {alg}")),
            n if n > MAX_CANDIDATES => Err(format!("{n} keys fit and the token's kid names none")),
            _ => Ok(found),
        }
    }

    /// Configured algorithms that no token could ever be verified with: no key fits them, or
    /// more unnamed keys fit than a token is tried against.
    pub fn unusable_algs(&self, algs: &[Alg]) -> Vec<String> {
        algs.iter()
            .filter_map(|alg| {
                if !self.keys.iter().any(|k| k.fits(*alg)) {
                    Some(format!("no key fits algorithm {alg}"))
                } else if self.unnamed(*alg).count() > MAX_CANDIDATES {
                    Some(format!("more than {MAX_CANDIDATES} keys without a kid fit {alg}"))
                } else {
                    None
                }
            })
            .collect()
    }
}

fn b64(value: Option<&Value>, field: &str) -> Result<Vec<u8>, String> {
    let s = value.and_then(Value::as_str).ok_or_else(|| format!("\"{field}\" missing"))?;
    URL_SAFE_NO_PAD.decode(s).map_err(|_| format!("\"{field}\" is not base64url"))
}

fn rsa_bits(modulus: &[u8]) -> usize {
    let trimmed: &[u8] = match modulus.iter().position(|b| *b != 0) {
        Some(i) => &modulus[i..],
        None => &[],
    };
    match trimmed.first() {
        Some(first) => (trimmed.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
        None => 0,
    }
}

fn jwk_to_key(jwk: &Value) -> Result<Option<VerifyKey>, String> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if let Some(usage) = field("use")
        && usage != "sig"
    {
        return Ok(None); // encryption keys share JWKS documents with signing keys
    }
    let alg = match field("alg") {
        Some(name) => Some(name.parse::<Alg>().map_err(|_| format!("unsupported alg \"{name}\""))?),
        None => None,
    };
    let kid = field("kid").map(str::to_string);
    let material = ["kty", "crv", "n", "e", "x", "y"]
        .iter()
        .map(|name| field(name).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("|");
    let (family, curve, decoding) = match field("kty") {
        Some("RSA") => {
            let n = b64(jwk.get("n"), "n")?;
            let e = b64(jwk.get("e"), "e")?;
            let bits = rsa_bits(&n);
            if bits < MIN_RSA_BITS {
                return Err(format!("RSA key has {bits} bits; at least {MIN_RSA_BITS} required"));
            }
            (AlgFamily::Rsa, None, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        Some("EC") => {
            let (curve, len) = match field("crv") {
                Some("P-256") => ("P-256", 32),
                Some("P-384") => ("P-384", 48),
                other => return Err(format!("unsupported EC curve {other:?}")),
            };
            let x = b64(jwk.get("x"), "x")?;
            let y = b64(jwk.get("y"), "y")?;
            if x.len() != len || y.len() != len {
                return Err(format!("EC coordinates do not fit {curve}"));
            }
            let key = DecodingKey::from_ec_components(field("x").unwrap_or_default(), field("y").unwrap_or_default())
                .map_err(|e| e.to_string())?;
            (AlgFamily::Ec, Some(curve), key)
        }
        Some("OKP") => {
            if field("crv") != Some("Ed25519") {
                return Err("only Ed25519 OKP keys are supported".into());
            }
            if b64(jwk.get("x"), "x")?.len() != 32 {
                return Err("Ed25519 key is not 32 bytes".into());
            }
            let key = DecodingKey::from_ed_components(field("x").unwrap_or_default()).map_err(|e| e.to_string())?;
            (AlgFamily::Ed, None, key)
        }
        Some("oct") => {
            return Err("symmetric (kty \"oct\") keys are never accepted from a JWKS".into());
        }
        other => return Err(format!("unsupported kty {other:?}")),
    };
    if let Some(alg) = alg
        && (alg.family() != family || (family == AlgFamily::Ec && alg.ec_curve() != curve))
    {
        return Err(format!("alg {alg} does not fit the key type"));
    }
    Ok(Some(VerifyKey { kid, alg, family, curve, decoding, material }))
}

/// Parses a JWKS document. Every key must be usable: a bad key is an error, not a silent skip.
pub fn keys_from_jwks(json: &str) -> Result<KeySet, KeyError> {
    let doc: Value = serde_json::from_str(json).map_err(|_| KeyError::NotJwks)?;
    let items = doc.get("keys").and_then(Value::as_array).ok_or(KeyError::NotJwks)?;
    let mut keys = Vec::new();
    for (index, jwk) in items.iter().enumerate() {
        if let Some(key) = jwk_to_key(jwk).map_err(|why| KeyError::BadJwk { index, why })? {
            keys.push(key);
        }
    }
    Ok(KeySet { keys })
}

// DER encodings of the SubjectPublicKeyInfo algorithm identifiers we accept.
const OID_RSA: &[u8] = &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Parses one PEM public key (`-----BEGIN PUBLIC KEY-----`); `kid` names it for selection.
pub fn keys_from_pem(pem_text: &str, kid: Option<String>) -> Result<VerifyKey, KeyError> {
    let block = pem::parse(pem_text).map_err(|e| KeyError::BadPem(e.to_string()))?;
    if block.tag() != "PUBLIC KEY" {
        return Err(KeyError::BadPem(format!("expected a PUBLIC KEY block, found {}", block.tag())));
    }
    let der = block.contents();
    // The algorithm identifier sits at the start of the SPKI; search only its first bytes.
    let head = &der[..der.len().min(32)];
    let bad = |e: jsonwebtoken::errors::Error| KeyError::BadPem(e.to_string());
    let pem_bytes = pem_text.as_bytes();
    let (family, curve, decoding) = if contains(head, OID_RSA) {
        let bits = aws_lc_rs::rsa::PublicEncryptingKey::from_der(der)
            .map_err(|e| KeyError::BadPem(format!("RSA key rejected ({e}); at least {MIN_RSA_BITS} bits required")))?
            .key_size_bits();
        if bits < MIN_RSA_BITS {
            return Err(KeyError::BadPem(format!("RSA key has {bits} bits; at least {MIN_RSA_BITS} required")));
        }
        (AlgFamily::Rsa, None, DecodingKey::from_rsa_pem(pem_bytes).map_err(bad)?)
    } else if contains(head, OID_EC) {
        let curve = if contains(head, OID_P256) {
            "P-256"
        } else if contains(head, OID_P384) {
            "P-384"
        } else {
            return Err(KeyError::BadPem("unsupported EC curve".into()));
        };
        (AlgFamily::Ec, Some(curve), DecodingKey::from_ec_pem(pem_bytes).map_err(bad)?)
    } else if contains(head, OID_ED25519) {
        (AlgFamily::Ed, None, DecodingKey::from_ed_pem(pem_bytes).map_err(bad)?)
    } else {
        return Err(KeyError::BadPem("unsupported public key type".into()));
    };
    let material = hex::encode(der);
    Ok(VerifyKey { kid, alg: None, family, curve, decoding, material })
}

/// An HMAC key from a secret file's bytes (one trailing newline is ignored).
pub fn keys_from_hmac_secret(secret: &[u8], algorithms: &[Alg]) -> Result<KeySet, KeyError> {
    let secret = secret.strip_suffix(b"\n").unwrap_or(secret);
    let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
    let needed = algorithms.iter().map(|a| a.hmac_min_secret()).max().unwrap_or(32);
    if secret.len() < needed {
        return Err(KeyError::BadSecret(format!("{} bytes; at least {needed} required", secret.len())));
    }
    let key = VerifyKey {
        kid: None,
        alg: None,
        family: AlgFamily::Hmac,
        curve: None,
        decoding: DecodingKey::from_secret(secret),
        material: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(secret)),
    };
    Ok(KeySet { keys: vec![key] })
}

/// Most keys accepted from one remote JWKS.
pub const MAX_REMOTE_KEYS: usize = 100;

/// Parses a JWKS fetched from an identity provider. A symmetric key or more than
/// [`MAX_REMOTE_KEYS`] keys refuse the whole document; other unusable keys (unsupported curves,
/// weak RSA) are skipped and reported, since IdPs publish keys for other consumers too.
pub fn keys_from_remote_jwks(json: &str) -> Result<(KeySet, Vec<String>), KeyError> {
    let doc: Value = serde_json::from_str(json).map_err(|_| KeyError::NotJwks)?;
    let items = doc.get("keys").and_then(Value::as_array).ok_or(KeyError::NotJwks)?;
    if items.len() > MAX_REMOTE_KEYS {
        return Err(KeyError::BadJwk { index: MAX_REMOTE_KEYS, why: format!("more than {MAX_REMOTE_KEYS} keys") });
    }
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (index, jwk) in items.iter().enumerate() {
        if jwk.get("kty").and_then(Value::as_str) == Some("oct") {
            return Err(KeyError::BadJwk {
                index,
                why: "symmetric (kty \"oct\") keys are never accepted from a JWKS".into(),
            });
        }
        match jwk_to_key(jwk) {
            Ok(Some(key)) => keys.push(key),
            Ok(None) => {}
            Err(why) => skipped.push(format!("key {index}: {why}")),
        }
    }
    Ok((KeySet { keys }, skipped))
}
