//! The verified claims of one token, packed for the claims cache: top-level members sorted by
//! name in one shared allocation, the registered and common names not copied at all. A
//! `serde_json` map spends a B-tree node and a `String` per name on every cached identity.

use super::claims::claim_at;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;

/// Claim names kept as `&'static str` instead of a copy per token (sorted for binary search).
const COMMON_NAMES: &[&str] = &[
    "acr",
    "amr",
    "aud",
    "auth_time",
    "azp",
    "client_id",
    "email",
    "email_verified",
    "exp",
    "groups",
    "iat",
    "iss",
    "jti",
    "name",
    "nbf",
    "nonce",
    "org_id",
    "permissions",
    "preferred_username",
    "realm_access",
    "roles",
    "scope",
    "scp",
    "sid",
    "sub",
    "tenant",
    "tenant_id",
    "tenants",
    "token_use",
    "typ",
];

/// Top-level claims of a verified token; cloning shares them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims(Arc<[(Cow<'static, str>, Value)]>);

impl Claims {
    /// The top-level claim `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let i = self.0.binary_search_by(|(n, _)| n.as_ref().cmp(name)).ok()?;
        Some(&self.0[i].1)
    }

    /// The claim at a JSON Pointer (RFC 6901) whose first reference token names a top-level
    /// claim. The empty pointer (the whole claim set) is not a claim and finds nothing.
    pub fn at(&self, pointer: &str) -> Option<&Value> {
        let rest = pointer.strip_prefix('/')?;
        let (first, tail) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        let value = if first.contains('~') {
            self.get(&first.replace("~1", "/").replace("~0", "~"))?
        } else {
            self.get(first)?
        };
        if tail.is_empty() { Some(value) } else { claim_at(value, tail) }
    }

    /// Every claim, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(name, value)| (name.as_ref(), value))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Heap bytes these claims hold (approximate: what the claims cache charges for them).
    pub fn heap_bytes(&self) -> usize {
        let names: usize =
            self.0.iter().map(|(n, v)| if let Cow::Owned(n) = n { n.len() } else { 0 } + value_bytes(v)).sum();
        self.0.len() * std::mem::size_of::<(Cow<'static, str>, Value)>() + names
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Heap bytes below a JSON value.
fn value_bytes(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Array(items) => {
            items.len() * std::mem::size_of::<Value>() + items.iter().map(value_bytes).sum::<usize>()
        }
        Value::Object(map) => map.iter().map(|(k, v)| 64 + k.len() + value_bytes(v)).sum(),
        _ => 0,
    }
}

fn shared_name(name: String) -> Cow<'static, str> {
    match COMMON_NAMES.binary_search(&name.as_str()) {
        Ok(i) => Cow::Borrowed(COMMON_NAMES[i]),
        Err(_) => Cow::Owned(name),
    }
}

impl From<Map<String, Value>> for Claims {
    fn from(map: Map<String, Value>) -> Self {
        let mut members: Vec<_> = map.into_iter().map(|(name, value)| (shared_name(name), value)).collect();
        // A map's names are unique; sorting here keeps this independent of its iteration order.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        Self(members.into())
    }
}

/// An object's members; anything else is no claims at all.
impl From<Value> for Claims {
    fn from(value: Value) -> Self {
        match value {
            Value::Object(map) => map.into(),
            _ => Self::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::claims::pointer_tests::{POINTERS, document};
    use super::{COMMON_NAMES, Claims};
    use serde_json::json;

    #[test]
    fn common_names_are_sorted_for_binary_search() {
        assert!(COMMON_NAMES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn lookups_agree_with_serde_json_pointer() {
        let document = document();
        let claims = Claims::from(document.clone());
        assert_eq!(claims.len(), 9);
        for pointer in POINTERS.iter().filter(|p| !p.is_empty()) {
            assert_eq!(claims.at(pointer), document.pointer(pointer), "pointer {pointer:?}");
        }
        assert_eq!(claims.at(""), None, "the whole claim set is not a claim");
        assert_eq!(claims.get("sub"), Some(&json!("u1")));
        assert_eq!(claims.get("a/b"), Some(&json!(1)));
        assert_eq!(claims.get("nope"), None);
    }

    #[test]
    fn anything_but_an_object_is_no_claims() {
        for value in [json!(null), json!([1]), json!("x"), json!({})] {
            assert!(Claims::from(value).is_empty());
        }
    }
}
