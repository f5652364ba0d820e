//! Sender-constrained tokens as tables: every binding case, the URI a proof must name, and the
//! `DPoP` authorization scheme.

use super::binding::{
    Constraint, Proof, ProofError, SenderConstraint, check_binding, dpop_header, normalize_htu, request_htu,
};
use super::credential::{Credential, CredentialPolicy, extract_credential};
use super::*;
use serde_json::{Value, json};

fn token(cnf: Option<Value>) -> VerifiedToken {
    let mut claims = json!({"iss": "https://issuer.test/", "sub": "u"});
    if let Some(cnf) = cnf {
        claims["cnf"] = cnf;
    }
    VerifiedToken {
        issuer: IssuerId(0),
        exp: i64::MAX,
        nbf: None.into(),
        iat: None.into(),
        key_generation: 0,
        values_for: None,
        claims: Claims::for_token("https://issuer.test/", "u", claims).expect("claims"),
    }
}

/// (case, token, DPoP scheme, proof, certificate, constraint, the deny wanted)
type Case<'a> = (
    &'a str,
    &'a VerifiedToken,
    bool,
    Option<&'a Result<Proof, ProofError>>,
    Option<&'a str>,
    SenderConstraint,
    Option<DenyReason>,
);

fn proof(jkt: &str) -> Proof {
    Proof { jkt: jkt.into(), jti: "j".into(), iat: 0 }
}

#[test]
fn binding_table() {
    let unbound = token(None);
    let key_bound = token(Some(json!({"jkt": "K"})));
    let cert_bound = token(Some(json!({"x5t#S256": "C"})));
    let both = token(Some(json!({"jkt": "K", "x5t#S256": "C"})));
    let forged = token(Some(json!({"jkt": 7})));
    let by_jwk = token(Some(json!({"jwk": {"kty": "EC"}})));
    let by_kid = token(Some(json!({"kid": "k1"})));
    let by_sha1 = token(Some(json!({"x5t": "abc"})));
    let not_object = token(Some(json!("K")));
    let any = SenderConstraint::default();
    let dpop_required = SenderConstraint { dpop: Constraint::Required, ..any };
    let mtls_required = SenderConstraint { mtls: Constraint::Required, ..any };
    let ok_k = Ok(proof("K"));
    let ok_other = Ok(proof("other"));
    let bad = Err(ProofError::Invalid("bad proof signature".into()));
    let nonce = Err(ProofError::NonceRequired("n0nce".into()));
    let down = Err(ProofError::Unavailable("redis".into()));
    use DenyReason::*;
    // (case, token, DPoP scheme, proof, certificate, constraint, want)
    let cases: Vec<Case> = vec![
        ("unbound bearer", &unbound, false, None, None, any, None),
        ("key-bound as bearer (RFC 9449 §7.2)", &key_bound, false, None, None, any, Some(TokenBindingMismatch)),
        ("key-bound with its proof", &key_bound, true, Some(&ok_k), None, any, None),
        ("proof by another key", &key_bound, true, Some(&ok_other), None, any, Some(TokenBindingMismatch)),
        ("DPoP scheme without a proof", &key_bound, true, None, None, any, Some(DpopProofInvalid)),
        ("an invalid proof", &key_bound, true, Some(&bad), None, any, Some(DpopProofInvalid)),
        ("a proof without the nonce", &key_bound, true, Some(&nonce), None, any, Some(DpopNonceRequired)),
        ("replay check unavailable", &key_bound, true, Some(&down), None, any, Some(StateStale)),
        ("DPoP scheme for an unbound token", &unbound, true, Some(&ok_k), None, any, Some(TokenBindingMismatch)),
        ("cert-bound without a certificate", &cert_bound, false, None, None, any, Some(TokenBindingMismatch)),
        ("cert-bound from another certificate", &cert_bound, false, None, Some("D"), any, Some(TokenBindingMismatch)),
        ("cert-bound from its certificate", &cert_bound, false, None, Some("C"), any, None),
        ("both bindings proven", &both, true, Some(&ok_k), Some("C"), any, None),
        ("both, certificate missing", &both, true, Some(&ok_k), None, any, Some(TokenBindingMismatch)),
        ("DPoP required, unbound bearer", &unbound, false, None, None, dpop_required, Some(TokenBindingMismatch)),
        ("DPoP required, bound and proven", &key_bound, true, Some(&ok_k), None, dpop_required, None),
        (
            "mTLS required, a key-bound token",
            &key_bound,
            true,
            Some(&ok_k),
            Some("C"),
            mtls_required,
            Some(TokenBindingMismatch),
        ),
        ("mTLS required, cert-bound", &cert_bound, false, None, Some("C"), mtls_required, None),
        ("cnf.jkt that is no string", &forged, false, None, None, any, Some(TokenInvalid)),
        ("bound by cnf.jwk (unprovable), as bearer", &by_jwk, false, None, None, any, Some(TokenBindingMismatch)),
        ("bound by cnf.kid, as bearer", &by_kid, false, None, None, any, Some(TokenBindingMismatch)),
        ("bound by SHA-1 x5t, as bearer", &by_sha1, false, None, None, any, Some(TokenBindingMismatch)),
        ("cnf that is no object", &not_object, false, None, None, any, Some(TokenBindingMismatch)),
    ];
    for (case, token, scheme, proof, cert, constraint, want) in cases {
        let got = check_binding(token, scheme, proof, cert, constraint).err();
        assert_eq!(got.as_ref().map(|d| d.reason), want, "{case}: {got:?}");
    }
    let deny = check_binding(&key_bound, true, Some(&nonce), None, any).expect_err("nonce");
    assert_eq!(deny.headers, vec![("dpop-nonce", "n0nce".to_string())]);
    assert_eq!(DenyReason::DpopNonceRequired.challenge(), Challenge::Dpop("use_dpop_nonce"));
    assert_eq!(DenyReason::DpopProofInvalid.http_status(), 401);
}

#[test]
fn the_uri_a_proof_names() {
    let cases = [
        ("https://API.example.com:443/a/b?x=1#f", Some("https://api.example.com/a/b")),
        ("HTTP://api.example.com:80/a", Some("http://api.example.com/a")),
        ("https://api.example.com:8443/a", Some("https://api.example.com:8443/a")),
        ("https://api.example.com", Some("https://api.example.com/")),
        ("ftp://api.example.com/a", None),
        ("https://user@api.example.com/a", None),
        ("/a/b", None),
    ];
    for (uri, want) in cases {
        assert_eq!(normalize_htu(uri).as_deref(), want, "{uri}");
    }
    let input = |scheme: &str, headers: Vec<(&str, &str)>| CheckInput {
        method: "GET".into(),
        host: "API.example.com".into(),
        path: "/orders/7?expand=1".into(),
        scheme: scheme.into(),
        headers: headers.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    let https = input("http", vec![("x-forwarded-proto", "https")]);
    assert_eq!(request_htu(&https, true, &[]).ok().as_deref(), Some("https://api.example.com/orders/7"));
    let served = ["api.example.com".to_string()];
    assert!(request_htu(&https, true, &served).is_ok());
    let elsewhere = CheckInput { host: "other.example:443".into(), ..https.clone() };
    assert_eq!(
        request_htu(&elsewhere, true, &served).err().map(|d| d.reason),
        Some(DenyReason::DpopProofInvalid),
        "a proof made for another server"
    );
    assert_eq!(
        request_htu(&https, false, &[]).ok().as_deref(),
        Some("http://api.example.com/orders/7"),
        "x-forwarded-proto only from a trusted proxy"
    );
    let two = input("http", vec![("x-forwarded-proto", "https"), ("x-forwarded-proto", "http")]);
    assert!(request_htu(&two, true, &[]).is_err());
    let twice = input("https", vec![("dpop", "a.b.c"), ("dpop", "d.e.f")]);
    assert_eq!(dpop_header(&twice).err().map(|d| d.reason), Some(DenyReason::DpopProofInvalid));
}

#[test]
fn the_dpop_scheme_is_a_credential_where_dpop_is_spoken() {
    let input = |auth: &str| CheckInput {
        headers: vec![("authorization".to_string(), auth.to_string())],
        ..Default::default()
    };
    let on = CredentialPolicy { bearer: true, dpop: true, ..Default::default() };
    let off = CredentialPolicy { bearer: true, ..Default::default() };
    let dpop = input("DPoP eyJ.a.b");
    assert_eq!(extract_credential(&dpop, &on).ok().flatten(), Some(Credential::Dpop("eyJ.a.b")));
    assert_eq!(extract_credential(&dpop, &off).ok().flatten(), None, "not a credential where DPoP is off");
    assert!(extract_credential(&input("DPoPx eyJ.a.b"), &on).is_err(), "a malformed scheme");
    assert_eq!(extract_credential(&input("Bearer eyJ.a.b"), &on).ok().flatten(), Some(Credential::Bearer("eyJ.a.b")));
}
