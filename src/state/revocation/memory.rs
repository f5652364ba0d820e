//! The in-memory revocation store, indexed for O(1) checks on the hot path.

use super::Revocation;
use crate::decision::{RevocationCheck, TokenIds, UnixTime, VerifiedToken};
use std::collections::HashMap;
use std::sync::RwLock;

/// Entries keyed by issuer, then by an id within it: looked up with borrowed strings, so a
/// check allocates nothing.
struct ByIssuer<V>(HashMap<String, HashMap<String, V>>);

impl<V> Default for ByIssuer<V> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<V: Copy> ByIssuer<V> {
    fn get(&self, iss: &str, id: &str) -> Option<&V> {
        self.0.get(iss)?.get(id)
    }

    /// Inserts `value`, or merges it into the entry already there.
    fn upsert(&mut self, iss: String, id: String, value: V, merge: impl FnOnce(V, V) -> V) {
        let entry = self.0.entry(iss).or_default().entry(id).or_insert(value);
        *entry = merge(*entry, value);
    }

    fn iter(&self) -> impl Iterator<Item = (&String, &String, &V)> {
        self.0.iter().flat_map(|(iss, ids)| ids.iter().map(move |(id, v)| (iss, id, v)))
    }
}

#[derive(Default)]
struct Index {
    jti: ByIssuer<i64>,
    /// (iss, sub) → (before, expires_at); a later revocation with a later `before` wins.
    subject: ByIssuer<(i64, i64)>,
    session: ByIssuer<i64>,
    /// tenant → (before, expires_at).
    tenant: HashMap<String, (i64, i64)>,
}

#[derive(Default)]
pub struct MemoryRevocations {
    index: RwLock<Index>,
}

impl std::fmt::Debug for MemoryRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRevocations").finish_non_exhaustive()
    }
}

impl MemoryRevocations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a revocation to local state.
    pub fn apply(&self, revocation: Revocation) {
        if let Ok(mut index) = self.index.write() {
            index.insert(revocation);
        }
    }
}

impl Index {
    fn insert(&mut self, revocation: Revocation) {
        let index = self;
        match revocation {
            Revocation::Jti { iss, jti, expires_at } => index.jti.upsert(iss, jti, expires_at, i64::max),
            Revocation::Subject { iss, sub, before, expires_at } => {
                index.subject.upsert(iss, sub, (before, expires_at), |a, b| (a.0.max(b.0), a.1.max(b.1)));
            }
            Revocation::Session { iss, sid, expires_at } => {
                index.session.upsert(iss, sid, expires_at, i64::max);
            }
            Revocation::Tenant { tenant, before, expires_at } => {
                let e = index.tenant.entry(tenant).or_insert((before, expires_at));
                *e = (e.0.max(before), e.1.max(expires_at));
            }
        }
    }
}

impl RevocationCheck for MemoryRevocations {
    fn revoked(&self, token: &VerifiedToken, ids: &TokenIds, now: UnixTime) -> Option<&'static str> {
        // A poisoned lock means a writer panicked mid-update: refuse rather than guess.
        let Ok(index) = self.index.read() else { return Some("revocation state unavailable") };
        let iss = token.iss();
        let live = |expires_at: &i64| *expires_at > now.0;
        if let Some(jti) = ids.jti.as_deref()
            && index.jti.get(iss, jti).is_some_and(live)
        {
            return Some("jti revoked");
        }
        if let Some((before, expires_at)) = index.subject.get(iss, token.subject())
            && live(expires_at)
            && token.iat.get().is_none_or(|iat| iat <= *before)
        {
            return Some("subject revoked");
        }
        if let Some(sid) = ids.sid.as_deref()
            && index.session.get(iss, sid).is_some_and(live)
        {
            return Some("session revoked");
        }
        None
    }

    fn tenant_revoked(&self, tenant: &str, token: &VerifiedToken, now: UnixTime) -> bool {
        let Ok(index) = self.index.read() else { return true };
        index
            .tenant
            .get(tenant)
            .is_some_and(|(before, expires_at)| *expires_at > now.0 && token.iat.get().is_none_or(|iat| iat <= *before))
    }
}

impl MemoryRevocations {
    /// Every live revocation (by its explicit expiry).
    pub fn list(&self, now: UnixTime) -> Vec<Revocation> {
        let Ok(index) = self.index.read() else { return Vec::new() };
        let mut out = Vec::new();
        for (iss, jti, expires_at) in index.jti.iter() {
            out.push(Revocation::Jti { iss: iss.clone(), jti: jti.clone(), expires_at: *expires_at });
        }
        for (iss, sub, (before, expires_at)) in index.subject.iter() {
            out.push(Revocation::Subject {
                iss: iss.clone(),
                sub: sub.clone(),
                before: *before,
                expires_at: *expires_at,
            });
        }
        for (iss, sid, expires_at) in index.session.iter() {
            out.push(Revocation::Session { iss: iss.clone(), sid: sid.clone(), expires_at: *expires_at });
        }
        for (tenant, (before, expires_at)) in &index.tenant {
            out.push(Revocation::Tenant { tenant: tenant.clone(), before: *before, expires_at: *expires_at });
        }
        out.retain(|r| r.expires_at() > now.0);
        out.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        out
    }

    /// Replaces the whole index at once (after a purge removed entries from the ledger).
    pub fn replace_all(&self, revocations: impl Iterator<Item = Revocation>) {
        let mut fresh = Index::default();
        for r in revocations {
            fresh.insert(r);
        }
        if let Ok(mut index) = self.index.write() {
            *index = fresh;
        }
    }
}
