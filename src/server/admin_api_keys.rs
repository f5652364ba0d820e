//! Admin API for API keys: list, add at run time (digest only), revoke by name.

use super::admin::{AdminState, problem, store_problem};
use crate::config::schema::RawApiKeyEntry;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

/// Names of every key this replica knows: (name, from the key file).
fn known_names(state: &AdminState) -> Option<Vec<(String, bool)>> {
    let mut names: Vec<(String, bool)> = known_keys(state)?.into_iter().map(|(n, f, _)| (n, f)).collect();
    names.dedup();
    Some(names)
}

/// Every key this replica knows: (name, from the key file, digest).
fn known_keys(state: &AdminState) -> Option<Vec<(String, bool, crate::decision::KeyDigest)>> {
    let snapshot = state.app.snapshot.load();
    let policy = snapshot.policy.api_keys.as_ref()?;
    let mut keys: Vec<_> = policy.file_keys.iter().map(|(d, k)| (k.name.clone(), true, *d)).collect();
    for name in state.app.api_keys.names() {
        keys.extend(state.app.api_keys.digests_named(&name).into_iter().map(|d| (name.clone(), false, d)));
    }
    keys.sort();
    keys.dedup();
    Some(keys)
}

fn not_configured() -> Response {
    problem(StatusCode::BAD_REQUEST, "credentials.api_keys is not configured")
}

pub async fn list_keys(State(state): State<AdminState>) -> Response {
    let Some(keys) = known_keys(&state) else { return not_configured() };
    // Revoked by digest: a revoked key put back under a new name is listed revoked there.
    let mut items: Vec<(String, bool, bool)> = Vec::new();
    for (name, file, digest) in keys {
        let revoked = state.app.api_keys.digest_revoked(&digest);
        match items.iter_mut().find(|(n, f, _)| *n == name && *f == file) {
            Some(item) => item.2 &= revoked,
            None => items.push((name, file, revoked)),
        }
    }
    let items: Vec<_> = items
        .into_iter()
        .map(|(name, file, revoked)| {
            json!({"name": name, "source": if file { "file" } else { "runtime" }, "revoked": revoked})
        })
        .collect();
    (StatusCode::OK, axum::Json(json!({ "keys": items }))).into_response()
}

pub async fn put_key(State(state): State<AdminState>, body: Bytes) -> Response {
    let Some(names) = known_names(&state) else { return not_configured() };
    let entry: RawApiKeyEntry = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}")),
    };
    if let Err(problems) = crate::state::apikeys::key_from_entry(&entry) {
        let text: Vec<String> = problems.into_iter().map(|(field, why)| format!("{field}: {why}")).collect();
        return problem(StatusCode::BAD_REQUEST, text.join("; "));
    }
    if names.iter().any(|(name, file)| *file && *name == entry.name) {
        return problem(StatusCode::CONFLICT, format!("\"{}\" is a key of the key file", entry.name));
    }
    let name = entry.name.clone();
    match state.app.api_keys.put(entry).await {
        Ok(()) => {
            tracing::info!(target: "portcullis::admin", api_key = %name, "API key added");
            (StatusCode::CREATED, axum::Json(json!({"name": name}))).into_response()
        }
        Err(e) => store_problem(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    name: String,
}

pub async fn revoke_key(State(state): State<AdminState>, body: Bytes) -> Response {
    let Some(names) = known_names(&state) else { return not_configured() };
    let parsed: RevokeBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}")),
    };
    // An unknown name is most likely a typo; answering 201 would hide that nothing was revoked.
    if !names.iter().any(|(name, _)| *name == parsed.name) {
        return problem(StatusCode::NOT_FOUND, format!("no API key named \"{}\"", parsed.name));
    }
    // The keys' digests, so the revocation holds whatever name the key is put back under.
    let snapshot = state.app.snapshot.load();
    let mut digests: Vec<crate::decision::KeyDigest> = snapshot
        .policy
        .api_keys
        .iter()
        .flat_map(|p| &p.file_keys)
        .filter(|(_, key)| key.name == parsed.name)
        .map(|(digest, _)| *digest)
        .collect();
    digests.extend(state.app.api_keys.digests_named(&parsed.name));
    match state.app.api_keys.revoke(&parsed.name, digests).await {
        Ok(()) => {
            tracing::info!(target: "portcullis::admin", api_key = %parsed.name, "API key revoked");
            (StatusCode::CREATED, axum::Json(json!({"name": parsed.name}))).into_response()
        }
        Err(e) => store_problem(e),
    }
}

pub async fn list_revocations(State(state): State<AdminState>) -> Response {
    (StatusCode::OK, axum::Json(json!({ "revocations": state.app.api_keys.revoked_names() }))).into_response()
}
