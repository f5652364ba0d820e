//! Portcullis: an authorization sidecar answering Envoy's ext_authz v3 `Check`.
//!
//! See ARCHITECTURE.md for the code map.

pub mod cache;
pub mod clock;
pub mod config;
/// The pure decision core (the `portcullis-core` crate).
pub use portcullis_core as decision;
pub mod dev;
pub mod jwt;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;

/// The shared token corpus (also compiled into the integration tests).
#[cfg(test)]
#[path = "../tests/support/corpus.rs"]
pub(crate) mod corpus;

#[cfg(test)]
mod core_tests;
