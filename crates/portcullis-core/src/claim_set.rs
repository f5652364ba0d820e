//! The verified claims of one token, packed for the claims cache: the kept top-level members
//! as one compact JSON text in one shared allocation (what the cache holds), parsed by the
//! request that reads them into members sorted by name, the registered and common names not
//! copied. A cached identity costs its claims' JSON bytes, not a map of `Value`s.

use super::claims::claim_at;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

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

/// Parsed members, sorted by name.
type Members = Box<[(Cow<'static, str>, Value)]>;

/// Top-level claims of a verified token, with its issuer, subject and identity header values:
/// one text, one allocation, the offsets 32-bit (a cached identity's size is issue 36's memory
/// target). The `sub` and `iss` members are not written twice: the text leaves out a `sub`
/// equal to the subject and an `iss` equal to the issuer, and reading puts them back. Cloning
/// shares the text and starts unparsed: the copy in the claims cache is never parsed, each
/// request parses its own on first read.
#[derive(Debug, Default)]
pub struct Claims {
    /// The subject, then the identity header values (one line each), then the compact JSON
    /// of the members (sorted by name; empty for no claims).
    text: Arc<str>,
    /// The verifying issuer's `iss`, shared with it (`None`: claims of no token).
    iss: Option<Arc<str>>,
    /// Where the values start (the subject's length).
    values_start: u32,
    /// Where the JSON starts.
    start: u32,
    /// Boxed: an unparsed copy (every cached one) pays a pointer, not the members' slice.
    parsed: OnceLock<Box<Members>>,
}

impl Clone for Claims {
    fn clone(&self) -> Self {
        Self {
            text: self.text.clone(),
            iss: self.iss.clone(),
            values_start: self.values_start,
            start: self.start,
            parsed: OnceLock::new(),
        }
    }
}

impl PartialEq for Claims {
    fn eq(&self, other: &Self) -> bool {
        self.members() == other.members()
    }
}

/// Reads the packed text straight into sorted members: no map is built, and a common name is
/// never copied. The `sub` and `iss` left out when packing are put back.
fn unpack(packed: &str, subject: &str, iss: Option<&str>) -> Members {
    // The text was written by `pack_json` from a valid map; it always reads back.
    let mut members = if packed.is_empty() {
        Vec::with_capacity(2)
    } else {
        serde_json::from_str::<PackedMembers>(packed).map(|m| m.0).unwrap_or_default()
    };
    // Written in name order; sorting again only if some writer ever did otherwise.
    if !members.is_sorted_by(|a, b| a.0 <= b.0) {
        members.sort_by(|a, b| a.0.cmp(&b.0));
    }
    for (name, value) in [("sub", Some(subject).filter(|s| !s.is_empty())), ("iss", iss)] {
        if let (Some(value), Err(i)) = (value, members.binary_search_by(|(n, _)| n.as_ref().cmp(name))) {
            members.insert(i, (Cow::Borrowed(name), Value::String(value.to_string())));
        }
    }
    members.into()
}

struct PackedMembers(Vec<(Cow<'static, str>, Value)>);

/// A member name, shared when it is a common one.
struct Name(Cow<'static, str>);

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl serde::de::Visitor<'_> for NameVisitor {
            type Value = Name;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a claim name")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Name, E> {
                Ok(Name(shared_name(name)))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

impl<'de> serde::Deserialize<'de> for PackedMembers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> serde::de::Visitor<'de> for MembersVisitor {
            type Value = PackedMembers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of claims")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<PackedMembers, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(12));
                while let Some((Name(name), value)) = map.next_entry::<Name, Value>()? {
                    members.push((name, value));
                }
                Ok(PackedMembers(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// Claims that cannot be packed: a text longer than 32-bit offsets reach (a token is at most a
/// request header long), or a token's without a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpackable;

impl Claims {
    /// The members of `map` for a token of `subject` from `iss`, with the identity header
    /// `values` prepared for it, packed in one text (`sub` and `iss` left out when equal).
    pub(crate) fn pack(
        iss: Option<Arc<str>>,
        subject: &str,
        values: &str,
        mut map: Map<String, Value>,
    ) -> Result<Self, Unpackable> {
        // Left out only what reading puts back: a non-empty subject, an issuer.
        if !subject.is_empty() && map.get("sub").and_then(Value::as_str) == Some(subject) {
            map.remove("sub");
        }
        if let Some(iss) = &iss
            && map.get("iss").and_then(Value::as_str) == Some(iss)
        {
            map.remove("iss");
        }
        let json = pack_json(map);
        let values_start = u32::try_from(subject.len()).map_err(|_| Unpackable)?;
        let start = u32::try_from(subject.len() + values.len()).map_err(|_| Unpackable)?;
        u32::try_from(subject.len() + values.len() + json.len()).map_err(|_| Unpackable)?;
        let mut text = String::with_capacity(subject.len() + values.len() + json.len());
        text.push_str(subject);
        text.push_str(values);
        text.push_str(&json);
        Ok(Self { text: text.into(), iss, values_start, start, parsed: OnceLock::new() })
    }

    /// The members of `value` (an object; anything else is no claims) for a token of
    /// `subject` from `iss`, no identity header values prepared. A token has a subject: an
    /// empty one (or a text past 4 GiB) is refused, never packed as claims of no one.
    pub fn for_token(iss: &str, subject: &str, value: Value) -> Result<Self, Unpackable> {
        if subject.is_empty() {
            return Err(Unpackable);
        }
        let map = match value {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        Self::pack(Some(iss.into()), subject, "", map)
    }

    /// The verifying issuer's `iss` (`None`: claims of no token).
    pub fn iss(&self) -> Option<&Arc<str>> {
        self.iss.as_ref()
    }

    /// The token's subject (empty for claims built without one).
    pub fn subject(&self) -> &str {
        self.text.get(..self.values_start as usize).unwrap_or_default()
    }

    /// The subject as a shared [`Subject`](super::types::Subject) (no copy of the text).
    pub fn shared_subject(&self) -> super::types::Subject {
        super::types::Subject::prefix_of(self.text.clone(), self.values_start as usize)
    }

    /// The identity header values' lines packed with the claims.
    pub(crate) fn value_lines(&self) -> &str {
        self.text.get(self.values_start as usize..self.start as usize).unwrap_or_default()
    }

    /// The compact JSON of the members.
    pub(crate) fn packed(&self) -> &str {
        self.text.get(self.start as usize..).unwrap_or_default()
    }

    fn members(&self) -> &[(Cow<'static, str>, Value)] {
        self.parsed.get_or_init(|| Box::new(unpack(self.packed(), self.subject(), self.iss.as_deref())))
    }

    /// The top-level claim `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let members = self.members();
        let i = members.binary_search_by(|(n, _)| n.as_ref().cmp(name)).ok()?;
        Some(&members[i].1)
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
        self.members().iter().map(|(name, value)| (name.as_ref(), value))
    }

    pub fn len(&self) -> usize {
        self.members().len()
    }

    /// Heap bytes the packed text holds (what the claims cache charges for it; a copy in the
    /// cache is never parsed).
    pub fn heap_bytes(&self) -> usize {
        self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members().is_empty()
    }
}

/// The compact JSON of `map`, members in name order (serde_json's map is ordered by name: the
/// same claims give the same text); empty for no claims.
pub(crate) fn pack_json(map: Map<String, Value>) -> String {
    if map.is_empty() {
        return String::new();
    }
    serde_json::to_string(&Value::Object(map)).unwrap_or_default()
}

fn shared_name(name: &str) -> Cow<'static, str> {
    match COMMON_NAMES.binary_search(&name) {
        Ok(i) => Cow::Borrowed(COMMON_NAMES[i]),
        Err(_) => Cow::Owned(name.to_string()),
    }
}

/// Claims of no token: no subject, no issuer, nothing left out.
impl From<Map<String, Value>> for Claims {
    fn from(map: Map<String, Value>) -> Self {
        Self::pack(None, "", "", map).unwrap_or_default()
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
