//! Key loading and verification rules beyond the shared corpus.

use crate::corpus;

use super::*;
use crate::decision::{TokenError, TokenVerifier};
use jsonwebtoken::Algorithm;
use serde_json::json;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(corpus::fixtures().join("keys").join(name)).expect("fixture")
}

fn jwk(name: &str) -> serde_json::Value {
    let set: serde_json::Value = serde_json::from_str(&fixture("jwks.json")).expect("json");
    set["keys"].as_array().expect("keys").iter().find(|k| k["kid"] == name).cloned().expect("kid")
}

#[test]
fn jwks_key_rules_table() {
    let mut rsa_enc = jwk("rsa-1");
    rsa_enc["use"] = json!("enc");
    let mut rsa_wrong_alg = jwk("rsa-1");
    rsa_wrong_alg["alg"] = json!("ES256");
    let mut ec_p384_claim = jwk("ec-1");
    ec_p384_claim["crv"] = json!("P-384");
    let mut okp_x448 = jwk("ed-1");
    okp_x448["crv"] = json!("X25519");
    let cases: Vec<(&str, serde_json::Value, Result<usize, ()>)> = vec![
        ("all three", serde_json::from_str(&fixture("jwks.json")).expect("json"), Ok(3)),
        ("enc key skipped", json!({"keys": [rsa_enc]}), Ok(0)),
        ("alg does not fit kty", json!({"keys": [rsa_wrong_alg]}), Err(())),
        ("coordinates do not fit curve", json!({"keys": [ec_p384_claim]}), Err(())),
        ("unsupported OKP curve", json!({"keys": [okp_x448]}), Err(())),
        (
            "oct never from JWKS",
            json!({"keys": [{"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}),
            Err(()),
        ),
        ("1024-bit RSA", serde_json::from_str(&fixture("jwks-rsa1024.json")).expect("json"), Err(())),
        ("not a JWKS", json!({"kty": "RSA"}), Err(())),
    ];
    for (name, doc, want) in cases {
        let got = keys_from_jwks(&doc.to_string()).map(|s| s.keys.len()).map_err(|_| ());
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn key_selection_table() {
    let set = keys_from_jwks(&fixture("jwks.json")).expect("jwks");
    let cases: &[(Option<&str>, Alg, bool)] = &[
        (Some("rsa-1"), Alg::RS256, true),
        (Some("rsa-1"), Alg::PS256, false), // the JWK says alg RS256
        (Some("rsa-1"), Alg::ES256, false),
        (Some("ec-1"), Alg::ES256, true),
        (Some("ec-1"), Alg::ES384, false),
        (Some("ed-1"), Alg::EdDSA, true),
        (Some("missing"), Alg::RS256, false),
        (None, Alg::EdDSA, true), // exactly one key fits
        (None, Alg::HS256, false),
    ];
    for (kid, alg, ok) in cases {
        assert_eq!(set.candidates(*kid, *alg).is_ok(), *ok, "kid {kid:?} alg {alg}");
    }
}

/// Two PEM keys of one family (a rotation): a token is tried against both, in order; five
/// unnamed keys of one family could never verify anything, and check-config says so.
#[test]
fn several_pem_keys_of_one_family() {
    let pem = |name: &str| keys_from_pem(&fixture(name), None).expect("pem");
    let set = KeySet { keys: vec![pem("rsa.pub.pem"), pem("rsa-other.pub.pem")] };
    assert_eq!(set.candidates(None, Alg::RS256).map(|c| c.len()), Ok(2));
    assert_eq!(set.candidates(Some("any-kid"), Alg::RS256).map(|c| c.len()), Ok(2), "PEM keys answer any kid");
    assert!(set.unusable_algs(&[Alg::RS256]).is_empty());
    assert_eq!(set.unusable_algs(&[Alg::ES256]), vec!["no key fits algorithm ES256".to_string()]);
    let five = KeySet { keys: (0..5).map(|_| pem("rsa.pub.pem")).collect() };
    assert!(five.candidates(None, Alg::RS256).is_err());
    assert_eq!(five.unusable_algs(&[Alg::RS256]).len(), 1);
}

fn verifier() -> Verifier {
    Verifier {
        issuers: vec![IssuerVerifier {
            issuer: "https://issuer.test/".into(),
            audiences: vec!["api".into()],
            algorithms: vec![Alg::RS256, Alg::ES256, Alg::EdDSA],
            keys: std::sync::Arc::new(KeyStore::fixed(keys_from_jwks(&fixture("jwks.json")).expect("jwks"))),
            required: true,
            required_claims: vec!["jti".into()],
            token_type: None,
            header_typ: vec!["at+jwt".into(), "jwt".into()],
            jwt_authn_payload: None,
            fingerprint: 0,
        }],
        kept_claims: None,
        identity_headers: None,
    }
}

#[test]
fn verification_rules_table() {
    let v = verifier();
    let base = corpus::claims(corpus::ISSUER, "alice", 1_790_000_000);
    let with = |key: &str, value: serde_json::Value| {
        let mut c = base.clone();
        c[key] = value;
        corpus::sign(Algorithm::RS256, Some("rsa-1"), &c)
    };
    let without = |key: &str| {
        let mut c = base.clone();
        c.as_object_mut().map(|m| m.remove(key));
        corpus::sign(Algorithm::RS256, Some("rsa-1"), &c)
    };
    let good = corpus::sign(Algorithm::RS256, Some("rsa-1"), &base);
    let typed = |typ: &str| corpus::with_raw_header(&json!({"alg": "RS256", "kid": "rsa-1", "typ": typ}), &base, None);
    let cases: Vec<(&str, String, bool)> = vec![
        ("valid", good.clone(), true),
        ("typ at+jwt", typed("at+jwt"), true),
        ("typ application/at+JWT", typed("application/at+JWT"), true),
        ("typ dpop+jwt", typed("dpop+jwt"), false),
        (
            "no typ while typ is required",
            corpus::with_raw_header(&json!({"alg": "RS256", "kid": "rsa-1"}), &base, None),
            false,
        ),
        ("exp as string", with("exp", json!("1790000600")), false),
        ("iat as string", with("iat", json!("1790000000")), false),
        ("aud array with api", with("aud", json!(["x", "api"])), true),
        ("aud absent", without("aud"), false),
        ("sub absent", without("sub"), false),
        ("sub not a string", with("sub", json!(42)), false),
        ("exp absent", without("exp"), false),
        ("jti required", without("jti"), false),
        ("five segments (JWE)", format!("{good}.x.y"), false),
        ("two segments", good.rsplit_once('.').map(|(a, _)| a.to_string()).unwrap_or_default(), false),
        ("padding in segment", format!("{good}="), false),
        (
            "x5c header",
            corpus::with_raw_header(&json!({"alg": "RS256", "kid": "rsa-1", "x5c": ["AA"]}), &base, None),
            false,
        ),
        (
            "jwk header",
            corpus::with_raw_header(&json!({"alg": "RS256", "kid": "rsa-1", "jwk": {"kty": "RSA"}}), &base, None),
            false,
        ),
        (
            "b64 header",
            corpus::with_raw_header(&json!({"alg": "RS256", "kid": "rsa-1", "b64": false}), &base, None),
            false,
        ),
        (
            "kid traversal",
            corpus::with_raw_header(&json!({"alg": "RS256", "kid": "../../etc/passwd"}), &base, None),
            false,
        ),
        ("kid not a string", corpus::with_raw_header(&json!({"alg": "RS256", "kid": 1}), &base, None), false),
        ("header not an object", format!("WzFd.{}", good.split('.').nth(1).unwrap_or_default()) + ".c2ln", false),
    ];
    for (name, token, ok) in cases {
        let got = v.verify(&token);
        assert_eq!(got.is_ok(), ok, "{name}: {:?}", got.err());
    }
    assert!(matches!(v.verify("garbage"), Err(TokenError::Malformed(_))));
}

/// `envoy_jwt_authn`: the signature is taken on jwt_authn's word only for an issuer that opts
/// in and only for the token's own payload; every other rule still holds.
#[test]
fn a_payload_jwt_authn_attested_stands_for_the_signature_of_that_token_only() {
    let mut v = verifier();
    // Keys that verify nothing: only the attestation can let a token through.
    v.issuers[0].keys = std::sync::Arc::new(KeyStore::fixed(keys_from_jwks(&fixture("jwks-rsa2.json")).expect("jwks")));
    let claims = corpus::claims(corpus::ISSUER, "alice", 1_790_000_000);
    let token = corpus::sign(Algorithm::RS256, Some("rsa-1"), &claims);
    let payload = |c: &serde_json::Value| c.as_object().cloned().expect("object");
    // Envoy's Struct carries numbers as doubles.
    let mut as_doubles = claims.clone();
    as_doubles["exp"] = json!(claims["exp"].as_i64().expect("exp") as f64);
    let header = |t: &str| {
        let segment = t.split('.').next().expect("header");
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, segment).expect("b64");
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).expect("header json")
    };
    let attested = vec![("jwt_payload".to_string(), payload(&as_doubles)), ("jwt_header".to_string(), header(&token))];
    assert!(v.verify_attested(&token, &attested).is_none(), "the issuer did not opt in");
    v.issuers[0].jwt_authn_payload =
        Some(crate::jwt::JwtAuthnKeys { payload: "jwt_payload".into(), header: "jwt_header".into() });
    assert!(v.verify_attested(&token, &attested).is_some_and(|r| r.is_ok()), "its own payload, attested");
    assert!(v.verify(&token).is_err(), "without the attestation the signature is checked, and fails");
    let mut other = claims.clone();
    other["sub"] = json!("mallory");
    let elsewhere = vec![("jwt_payload".to_string(), payload(&other)), ("jwt_header".to_string(), header(&token))];
    assert!(v.verify_attested(&token, &elsewhere).is_none(), "another token's payload attests nothing");
    let wrong_key = vec![("other_key".to_string(), payload(&as_doubles)), ("jwt_header".to_string(), header(&token))];
    assert!(v.verify_attested(&token, &wrong_key).is_none(), "only under the configured key");
    let mut foreign = claims.clone();
    foreign["aud"] = json!("elsewhere");
    let foreign_token = corpus::sign(Algorithm::RS256, Some("rsa-1"), &foreign);
    let foreign_attested =
        vec![("jwt_payload".to_string(), payload(&foreign)), ("jwt_header".to_string(), header(&foreign_token))];
    assert!(
        matches!(v.verify_attested(&foreign_token, &foreign_attested), Some(Err(TokenError::Claims(_)))),
        "the audience rule still holds"
    );
}

/// The review's attacks on the attestation: a verified payload under a header made up for it
/// (an `alg` or `typ` the policy refuses), and a number a double cannot tell from its neighbour.
#[test]
fn an_attestation_binds_the_header_and_exact_numbers_too() {
    let mut v = verifier();
    v.issuers[0].jwt_authn_payload =
        Some(crate::jwt::JwtAuthnKeys { payload: "jwt_payload".into(), header: "jwt_header".into() });
    let claims = corpus::claims(corpus::ISSUER, "alice", 1_790_000_000);
    let verified = corpus::sign(Algorithm::RS256, Some("rsa-1"), &claims);
    let segment = |t: &str, i: usize| {
        let part = t.split('.').nth(i).expect("segment");
        let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, part).expect("b64");
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).expect("json")
    };
    let attested =
        |t: &str| vec![("jwt_payload".to_string(), segment(t, 1)), ("jwt_header".to_string(), segment(t, 0))];
    // The verified payload (its token's header says typ JWT) under another header, junk signature.
    let forged =
        corpus::with_raw_header(&json!({"alg": "RS256", "kid": "rsa-1", "typ": "at+jwt"}), &claims, Some("AAAA"));
    assert!(v.verify_attested(&forged, &attested(&verified)).is_none(), "another header is not the verified token");
    assert!(v.verify_attested(&verified, &attested(&verified)).is_some_and(|r| r.is_ok()));
    // 2^53 + 1 and 2^53 are one double: not attested, so verified here (and refused: no key).
    let mut big = claims.clone();
    big["uid"] = json!(9_007_199_254_740_993_u64);
    let big_token = corpus::sign(Algorithm::RS256, Some("rsa-1"), &big);
    let mut neighbour = big.clone();
    neighbour["uid"] = json!(9_007_199_254_740_992_u64 as f64);
    let forwarded = vec![
        ("jwt_payload".to_string(), neighbour.as_object().cloned().expect("object")),
        ("jwt_header".to_string(), segment(&big_token, 0)),
    ];
    assert!(v.verify_attested(&big_token, &forwarded).is_none(), "an inexact number attests nothing");
}
