//! API keys at the edge: file entries → [`ApiKey`]s, keys added and names revoked at run time
//! (admin API, Redis), and minting new keys for `portcullis api-key new`.

use crate::config::schema::RawApiKeyEntry;
use crate::decision::{ApiKey, ApiKeyCheck, KeyDigest};
use crate::state::StoreError;
use crate::state::model::KeyRecord;
use base64::Engine;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Random bytes in a new key (256 bits; the format asks for at least 128).
const KEY_BYTES: usize = 32;

/// A name is what audit lines, metrics and revocations show: keep it plain.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Checks one entry and converts it; every problem is returned, each with its field.
pub fn key_from_entry(entry: &RawApiKeyEntry) -> Result<(KeyDigest, ApiKey), Vec<(&'static str, String)>> {
    let mut problems = Vec::new();
    if !valid_name(&entry.name) {
        problems.push(("name", "1-64 characters of A-Z a-z 0-9 - _ .".to_string()));
    }
    let digest = match hex::decode(&entry.sha256) {
        Ok(bytes) if entry.sha256.bytes().all(|b| !b.is_ascii_uppercase()) => <KeyDigest>::try_from(bytes).ok(),
        _ => None,
    };
    if digest.is_none() {
        problems.push(("sha256", "must be 64 lowercase hex digits (the SHA-256 of the key)".to_string()));
    }
    let expires = entry.expires.as_deref().and_then(|text| {
        match time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
            Ok(t) => Some(t.unix_timestamp()),
            Err(_) => {
                problems.push(("expires", format!("\"{text}\" is not an RFC 3339 time")));
                None
            }
        }
    });
    let subject = entry.subject.clone().unwrap_or_else(|| entry.name.clone());
    if subject.is_empty() {
        problems.push(("subject", "must not be empty".to_string()));
    }
    if entry.tenants.iter().chain(&entry.scopes).chain(&entry.roles).any(|s| s.is_empty() || s.contains(' ')) {
        problems.push(("tenants", "tenants, scopes and roles must be non-empty words".to_string()));
    }
    match digest {
        Some(digest) if problems.is_empty() => Ok((
            digest,
            ApiKey {
                name: entry.name.clone(),
                subject,
                tenants: entry.tenants.clone(),
                scopes: entry.scopes.clone(),
                roles: entry.roles.clone(),
                expires,
            },
        )),
        _ => Err(problems),
    }
}

/// A fresh key: `prefix` + 43 base64url characters from the system's secure random source.
pub fn new_key(prefix: &str) -> Result<String, String> {
    let mut bytes = [0u8; KEY_BYTES];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| "no secure random source".to_string())?;
    Ok(format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// A new key and its key-file entry (a JSON object, which is also a YAML flow mapping).
pub struct MintedKey {
    pub key: String,
    pub entry: RawApiKeyEntry,
}

/// Mints a key for `template` (whose `sha256` is replaced) after checking the entry.
pub fn mint(prefix: &str, template: RawApiKeyEntry) -> Result<MintedKey, String> {
    let key = new_key(prefix)?;
    let entry = RawApiKeyEntry { sha256: hex::encode(crate::decision::api_key::digest(&key)), ..template };
    if let Err(problems) = key_from_entry(&entry) {
        let text: Vec<String> = problems.into_iter().map(|(field, why)| format!("--{field}: {why}")).collect();
        return Err(text.join("; "));
    }
    Ok(MintedKey { key, entry })
}

/// Where keys are added and revoked at run time. Reads go through [`ApiKeyCheck`].
#[async_trait::async_trait]
pub trait ApiKeyStore: ApiKeyCheck + Send + Sync {
    async fn put(&self, entry: RawApiKeyEntry) -> Result<(), StoreError>;
    /// Revokes the keys with these digests (all the keys named `name`).
    async fn revoke(&self, name: &str, digests: Vec<KeyDigest>) -> Result<(), StoreError>;
    /// Names of run-time keys (file keys live in the policy).
    fn names(&self) -> Vec<String>;
    /// Digests of the run-time keys named `name`.
    fn digests_named(&self, name: &str) -> Vec<KeyDigest>;
    fn revoked_names(&self) -> Vec<String>;
    /// Whether the key with this digest is revoked (under whatever name).
    fn digest_revoked(&self, digest: &KeyDigest) -> bool;
}

#[derive(Debug, Default)]
pub struct MemoryApiKeys {
    keys: RwLock<HashMap<KeyDigest, Arc<ApiKey>>>,
    /// Revoked digests, with the name the key had when it was revoked.
    revoked: RwLock<HashMap<KeyDigest, String>>,
    /// Names revoked before digests were kept (migrated from an earlier release).
    revoked_names_only: RwLock<std::collections::HashSet<String>>,
}

fn digest_of(hex_text: &str) -> Option<KeyDigest> {
    hex::decode(hex_text).ok()?.try_into().ok()
}

impl MemoryApiKeys {
    pub fn new() -> Self {
        Self::default()
    }

    /// Shows a key the ledger holds (a key put under a name held by another digest comes with
    /// that digest's tombstone; invalid entries were refused before they got here).
    pub fn apply_put(&self, entry: &RawApiKeyEntry) {
        let Ok((digest, key)) = key_from_entry(entry) else {
            tracing::warn!(name = %entry.name, "ignoring an invalid API key entry from the state backend");
            return;
        };
        if let Ok(mut keys) = self.keys.write() {
            keys.insert(digest, Arc::new(key));
        }
    }

    pub fn apply_remove(&self, sha256: &str) {
        if let (Some(digest), Ok(mut keys)) = (digest_of(sha256), self.keys.write()) {
            keys.remove(&digest);
        }
    }

    /// Revokes a digest; an empty one revokes `name` (a revocation recorded by name only).
    pub fn apply_revoke(&self, name: &str, sha256: &str) {
        if sha256.is_empty() {
            if let Ok(mut names) = self.revoked_names_only.write() {
                names.insert(name.to_string());
            }
        } else if let (Some(digest), Ok(mut revoked)) = (digest_of(sha256), self.revoked.write()) {
            revoked.insert(digest, name.to_string());
        }
    }

    pub fn apply_unrevoke(&self, name: &str, sha256: &str) {
        if sha256.is_empty() {
            if let Ok(mut names) = self.revoked_names_only.write() {
                names.remove(name);
            }
        } else if let (Some(digest), Ok(mut revoked)) = (digest_of(sha256), self.revoked.write()) {
            revoked.remove(&digest);
        }
    }

    /// Names of run-time keys.
    pub fn names(&self) -> Vec<String> {
        self.keys.read().map(|k| k.values().map(|k| k.name.clone()).collect()).unwrap_or_default()
    }

    /// Digests of the run-time keys named `name`.
    pub fn digests_named(&self, name: &str) -> Vec<KeyDigest> {
        self.keys
            .read()
            .map(|k| k.iter().filter(|(_, k)| k.name == name).map(|(d, _)| *d).collect())
            .unwrap_or_default()
    }

    /// The names keys had when they were revoked.
    pub fn revoked_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.revoked.read().map(|r| r.values().cloned().collect()).unwrap_or_default();
        names.extend(self.revoked_names_only.read().map(|r| r.iter().cloned().collect::<Vec<_>>()).unwrap_or_default());
        names.sort();
        names.dedup();
        names
    }

    pub fn is_revoked(&self, digest: &KeyDigest) -> bool {
        self.revoked.read().map(|r| r.contains_key(digest)).unwrap_or(true)
    }
}

impl ApiKeyCheck for MemoryApiKeys {
    fn find(&self, digest: &KeyDigest) -> Option<Arc<ApiKey>> {
        self.keys.read().ok()?.get(digest).cloned()
    }

    fn revoked(&self, digest: &KeyDigest, name: &str) -> bool {
        // A poisoned lock: treat every key as revoked rather than none.
        self.is_revoked(digest) || self.revoked_names_only.read().map(|r| r.contains(name)).unwrap_or(true)
    }
}

impl From<KeyRecord> for RawApiKeyEntry {
    fn from(r: KeyRecord) -> Self {
        Self {
            name: r.name,
            sha256: r.sha256,
            subject: r.subject,
            tenants: r.tenants,
            scopes: r.scopes,
            roles: r.roles,
            expires: r.expires,
        }
    }
}

impl From<&RawApiKeyEntry> for KeyRecord {
    fn from(e: &RawApiKeyEntry) -> Self {
        Self {
            name: e.name.clone(),
            sha256: e.sha256.clone(),
            subject: e.subject.clone(),
            tenants: e.tenants.clone(),
            scopes: e.scopes.clone(),
            roles: e.roles.clone(),
            expires: e.expires.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
