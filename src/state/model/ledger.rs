//! A view of fleet state: the winning entry per identity, and the one resync rule between two
//! views (a replica's and Redis', a replica's and its journal's).

use super::{Entry, Identity, Lifetimes};
use std::collections::HashMap;

#[derive(Debug, Default, Clone)]
pub struct Ledger {
    entries: HashMap<Identity, Entry>,
}

/// What a resync does, worked out from both views before either changes.
#[derive(Debug, Default)]
pub struct ResyncPlan {
    /// Entries of the other view that beat (or are missing from) this one: merge them here.
    pub take: Vec<Entry>,
    /// Live entries of this view that beat (or are missing from) the other: write them back.
    pub give: Vec<Entry>,
    /// Entries of the other view that have expired: delete them there (only if unchanged).
    pub expired: Vec<Entry>,
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges `entry`: `Some(previous)` when it won (and is now held), `None` when what is held
    /// beats it (or is the same entry).
    pub fn merge(&mut self, entry: Entry) -> Option<Option<Entry>> {
        let identity = entry.identity();
        match self.entries.get(&identity) {
            Some(held) if !entry.beats(held) => None,
            _ => Some(self.entries.insert(identity, entry)),
        }
    }

    pub fn get(&self, identity: &Identity) -> Option<&Entry> {
        self.entries.get(identity)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets what no longer holds at `now`; returns what was forgotten.
    pub fn purge(&mut self, now: i64, lifetimes: &dyn Lifetimes) -> Vec<Entry> {
        let expired: Vec<Identity> =
            self.entries.iter().filter(|(_, e)| e.expired(now, lifetimes)).map(|(id, _)| id.clone()).collect();
        expired.into_iter().filter_map(|id| self.entries.remove(&id)).collect()
    }

    /// Compares this view with `other` (all of another view's entries, in any order, an
    /// identity possibly several times): the newest write per identity wins on both sides.
    pub fn plan_resync(
        &self,
        other: impl IntoIterator<Item = Entry>,
        now: i64,
        lifetimes: &dyn Lifetimes,
    ) -> ResyncPlan {
        let mut theirs = Ledger::new();
        let mut plan = ResyncPlan::default();
        for entry in other {
            if entry.expired(now, lifetimes) {
                plan.expired.push(entry);
            } else {
                theirs.merge(entry);
            }
        }
        for (identity, entry) in &theirs.entries {
            if self.entries.get(identity).is_none_or(|mine| entry.beats(mine)) {
                plan.take.push(entry.clone());
            }
        }
        for (identity, entry) in &self.entries {
            if !entry.expired(now, lifetimes) && theirs.entries.get(identity).is_none_or(|held| entry.beats(held)) {
                plan.give.push(entry.clone());
            }
        }
        plan
    }
}
