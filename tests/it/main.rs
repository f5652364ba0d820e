//! The integration tests, one binary (one link instead of one per file): real servers on
//! loopback, real Envoy, Redis, identity providers, upstream frameworks and the Helm engine.
//! Shared helpers live in `tests/support/` (also compiled into the library's unit tests for the
//! token corpus).

#[path = "../support/mod.rs"]
mod support;

mod abuse;
mod attacks;
mod cli;
mod compose;
mod controls;
mod cors;
mod differential;
mod envoy;
mod fuzz_corpus;
mod grpc;
mod helm;
mod image;
mod ip_lists;
mod jwks;
mod mesh;
mod module;
mod observability;
mod redis;
mod redis_cluster;
mod revocation;
mod sender;
mod state_model;
mod upstreams;
