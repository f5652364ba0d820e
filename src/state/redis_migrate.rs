//! Once per Redis: the per-item keys of releases before the one state model become entries of
//! the kind hashes. The only keyspace `SCAN` Portcullis issues, and only while the format
//! marker is missing (the first replica of this release to reach a Redis that has none).

use super::redis_connect::Conn;
use crate::state::blocks::Block;
use crate::state::membership::Member;
use crate::state::model::{Entry, Item, KeyRecord};
use crate::state::revocation::{NEVER, Revocation};
use serde::Deserialize;

/// The marker: present once this Redis holds state in the kind hashes.
pub fn marker(prefix: &str) -> String {
    format!("{prefix}:state:format")
}

/// A per-item key's value in the old format (only the kinds kept in keys).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Old {
    Revocation(Revocation),
    MemberPut(Member),
    Block(Block),
    ApiKeyPut(KeyRecord),
    ApiKeyRevoked {
        name: String,
        #[serde(default)]
        sha256: Vec<String>,
    },
}

/// Entries for what the old keys hold. Protections (revocations, blocks, key revocations) are
/// written at `now_ms`: they hold against anything older. Grants (members, keys) and unblock
/// tombstones are written at the dawn of time (1 ms, 2 ms): they only fill gaps, so a Redis
/// restored from a snapshot taken before the upgrade never undoes a later removal. Revocations
/// lose the expiry the old release computed: a `jti` holds by the policy's horizon from now,
/// the others for ever.
fn entries(values: Vec<String>, tombstones: Vec<String>, now_ms: i64) -> Vec<Entry> {
    const GRANT_MS: i64 = 1;
    const TOMBSTONE_MS: i64 = 2;
    let mut out = Vec::new();
    for value in values {
        let Ok(old) = serde_json::from_str::<Old>(&value) else { continue };
        match old {
            Old::Revocation(r) => {
                let r = match r {
                    Revocation::Jti { iss, jti, .. } => Revocation::Jti { iss, jti, expires_at: NEVER },
                    Revocation::Subject { iss, sub, before, .. } => {
                        Revocation::Subject { iss, sub, before, expires_at: NEVER }
                    }
                    Revocation::Session { iss, sid, .. } => Revocation::Session { iss, sid, expires_at: NEVER },
                    Revocation::Tenant { tenant, before, .. } => {
                        Revocation::Tenant { tenant, before, expires_at: NEVER }
                    }
                };
                out.push(Entry::revocation(now_ms, r, &crate::state::model::Unbounded));
            }
            Old::MemberPut(m) => out.push(Entry::new(GRANT_MS, Item::Member(m), None)),
            Old::Block(b) => out.extend(Entry::block(now_ms, &b.cidr, b.expires_at).ok()),
            Old::ApiKeyPut(k) => out.push(Entry::new(GRANT_MS, Item::ApiKey(k), None)),
            // Revoked by name alone (before digests were kept): still by name.
            Old::ApiKeyRevoked { name, sha256 } if sha256.is_empty() => {
                out.push(Entry::new(now_ms, Item::KeyRevocation { name, sha256: String::new() }, None));
            }
            Old::ApiKeyRevoked { name, sha256 } => out.extend(
                sha256
                    .into_iter()
                    .map(|sha256| Entry::new(now_ms, Item::KeyRevocation { name: name.clone(), sha256 }, None)),
            ),
        }
    }
    out.extend(tombstones.iter().filter_map(|cidr| Entry::unblock(TOMBSTONE_MS, cidr, None).ok()));
    out
}

async fn scan(conn: &mut Conn, pattern: String) -> redis::RedisResult<Vec<String>> {
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) =
            redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).query_async(conn).await?;
        if !keys.is_empty() {
            let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
            out.extend(values.into_iter().flatten());
        }
        cursor = next;
        if cursor == 0 {
            return Ok(out);
        }
    }
}

/// The old keys' state as entries; `None` when the marker says this Redis was migrated.
pub async fn old_entries(conn: &mut Conn, prefix: &str, now_ms: i64) -> redis::RedisResult<Option<Vec<Entry>>> {
    let migrated: bool = redis::cmd("EXISTS").arg(marker(prefix)).query_async(conn).await?;
    if migrated {
        return Ok(None);
    }
    let mut values = Vec::new();
    for kind in ["rev", "member", "block", "apikey", "apikeyrev"] {
        values.extend(scan(conn, format!("{prefix}:{kind}:*")).await?);
    }
    let tombstones = scan(conn, format!("{prefix}:unblocked:*")).await?;
    let found = entries(values, tombstones, now_ms);
    if !found.is_empty() {
        tracing::info!(entries = found.len(), "migrating state from the per-item keys of an earlier release");
    }
    Ok(Some(found))
}

/// Marks this Redis as holding state in the kind hashes (after the migrated entries were written).
pub async fn mark(conn: &mut Conn, prefix: &str) -> redis::RedisResult<()> {
    redis::cmd("SET").arg(marker(prefix)).arg("1").query_async(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Old values of every kind become entries; an unblocked network stays unblocked; old
    /// revocations lose the expiry the old release computed.
    #[test]
    fn old_values_become_entries() {
        let values = vec![
            r#"{"type":"revocation","kind":"jti","iss":"i","jti":"j","expires_at":5}"#.to_string(),
            r#"{"type":"member_put","tenant":"t","iss":"i","sub":"s","roles":["r"]}"#.to_string(),
            r#"{"type":"block","cidr":"::ffff:10.9.9.9","expires_at":9999999999}"#.to_string(),
            format!(r#"{{"type":"api_key_revoked","name":"ci","sha256":["{}"]}}"#, "ab".repeat(32)),
            r#"{"type":"api_key_revoked","name":"legacy"}"#.to_string(),
            "not json".to_string(),
        ];
        let found = entries(values, vec!["10.9.9.9/32".into()], 1_000);
        let kinds: Vec<_> = found.iter().map(|e| (e.kind().name(), e.is_removal())).collect();
        assert_eq!(
            kinds,
            [
                ("revocation", false),
                ("member", false),
                ("block", false),
                ("keyrevocation", false),
                ("keyrevocation", false),
                ("block", true)
            ]
        );
        assert_eq!(found[4].identity().1, "name\0legacy", "a revocation by name stays one");
        // Grants and unblocks only fill gaps: any later write of this release beats them.
        let removed = Entry::tombstone(3, found[1].body.item.clone(), None);
        assert!(removed.beats(&found[1]), "a member removed after the upgrade stays removed");
        assert!(found[2].beats(&found[5]), "an old block holds against an old unblock");
        assert!(matches!(&found[0].body.item, Item::Revocation(r) if r.expires_at() == NEVER));
    }
}
