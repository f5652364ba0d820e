//! JWT verification: key sets from static sources, the JOSE header rules and the verifier the
//! core calls through [`crate::decision::TokenVerifier`].
//!
//! Architecture Invariant: no decision here is made on an unverified claim; the unverified
//! `iss`, `kid` and `alg` only select a key.

mod alg;
pub mod dpop;
pub mod fetch;
mod header;
mod json;
mod keys;
pub mod remote;
mod store;
mod verify;

pub use alg::{Alg, AlgFamily};
pub use header::normalize_typ;
pub use keys::{
    KeyError, KeySet, VerifyKey, keys_from_hmac_secret, keys_from_jwks, keys_from_pem, keys_from_remote_jwks,
};
pub use store::KeyStore;
pub use verify::{IssuerVerifier, JwtAuthnKeys, TokenType, Verifier};

#[cfg(test)]
mod tests;
