//! Arbitrary text as a JWKS document, strict (files) and lenient (fetched) parsing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = portcullis::jwt::keys_from_jwks(&text);
    if let Ok((set, _skipped)) = portcullis::jwt::keys_from_remote_jwks(&text) {
        // A fetched key set never carries a symmetric key.
        assert!(
            set.keys.iter().all(|k| k.family != portcullis::jwt::AlgFamily::Hmac),
            "symmetric key accepted from a JWKS"
        );
    }
});
