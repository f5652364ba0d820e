//! Portcullis inside Envoy: an HTTP filter dynamic module (`libportcullis_envoy.so`) deciding
//! with the same core, verifier, claims cache, state model and answer mapping as the ext_authz
//! sidecar, without the gRPC hop. README "Inside Envoy" says when to choose it.
//!
//! - `abi.rs`: the ABI (the only raw pointers), hooks under `catch_unwind`, failing closed.
//! - `settings.rs`: the filter configuration and what the module refuses to run.
//! - `engine.rs`: one configuration's decision machinery, shared by the workers.
//! - `filter.rs`: one request: Envoy's view → `CheckInput`, the answer → Envoy.
//! - `link.rs`: the sidecar's state stream merged into this Envoy's replica.
//! - `watch.rs`: hot reload of a policy file.

// Unit tests build without `abi.rs` (no Envoy to resolve its callbacks): what only the hooks
// call is unused there.
#![cfg_attr(test, allow(dead_code))]

#[cfg(not(test))]
mod abi;
mod engine;
mod filter;
mod link;
mod settings;
mod watch;

#[cfg(test)]
mod tests;

fn log_error(message: &str) {
    #[cfg(not(test))]
    abi::log(true, message);
    #[cfg(test)]
    eprintln!("{message}");
}

fn log_info(message: &str) {
    #[cfg(not(test))]
    abi::log(false, message);
    #[cfg(test)]
    eprintln!("{message}");
}
