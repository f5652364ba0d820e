//! Dynamic tenant membership (admin `PUT/DELETE /v1/tenants/{tenant}/members`): a local table
//! read on every request, written through a [`MemberStore`] (memory, or Redis for the fleet).

use crate::decision::MembershipCheck;
use crate::state::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::RwLock;

/// One membership: (tenant, iss, sub) with tenant roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub tenant: String,
    pub iss: String,
    pub sub: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[async_trait::async_trait]
pub trait MemberStore: MembershipCheck + Send + Sync {
    /// Adds or replaces a membership; returns once it is durable for this backend.
    async fn put(&self, member: Member) -> Result<(), StoreError>;
    /// Removes a membership; effective on the next request once it returns.
    async fn remove(&self, tenant: &str, iss: &str, sub: &str) -> Result<(), StoreError>;
}

type Key = (String, String, String);

/// The local membership table.
#[derive(Debug, Default)]
pub struct MemoryMembers {
    table: RwLock<HashMap<Key, Vec<String>>>,
}

impl MemoryMembers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn apply_put(&self, member: Member) {
        if let Ok(mut t) = self.table.write() {
            t.insert((member.tenant, member.iss, member.sub), member.roles);
        }
    }

    pub fn apply_remove(&self, tenant: &str, iss: &str, sub: &str) {
        if let Ok(mut t) = self.table.write() {
            t.remove(&(tenant.to_string(), iss.to_string(), sub.to_string()));
        }
    }
}

impl MembershipCheck for MemoryMembers {
    fn member_roles(&self, tenant: &str, iss: &str, sub: &str) -> Option<Vec<String>> {
        // A poisoned lock means a writer panicked: nobody is a member rather than everybody.
        let t = self.table.read().ok()?;
        t.get(&(tenant.to_string(), iss.to_string(), sub.to_string())).cloned()
    }
}
