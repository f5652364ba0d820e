//! The one state model (issue 32): every kind of fleet state — revocations, blocks, tenant
//! members, run-time API keys and their revocations, session last-seen — is a set of
//! [`Entry`]s keyed by a canonical identity. An entry says when it was written, whether it adds
//! or removes (a tombstone), and until when it holds. Two views (two replicas, a replica and
//! Redis, a replica and its journal) merge by one rule, [`Entry::beats`]: the later write wins;
//! at the same millisecond the protective side wins. Pure: no I/O, time passed in.

use crate::decision::parse_cidr;
use crate::state::blocks::{Block, network_text};
use crate::state::membership::Member;
use crate::state::revocation::{NEVER, Revocation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod ledger;
#[cfg(test)]
mod tests;

pub use ledger::{Ledger, ResyncPlan};

/// How far a token issuer's clock may run ahead of ours, beyond `leeway`, when working out how
/// long a `jti` revocation must hold (issue 32: revocations lapsed one leeway early).
pub const REVOCATION_SKEW_MARGIN_SECS: i64 = 60;

/// Write times at or past this are refused: Lua numbers (Redis' write script) are doubles, exact
/// only below 2^53, and a forged time that far ahead would pin its identity for ever.
pub const MAX_WRITTEN_MS: i64 = 1 << 53;

/// Entries written further ahead of this replica's clock are refused from Redis: a forged or
/// badly skewed write time would otherwise win over every honest write for that long.
pub const MAX_FUTURE_MS: i64 = 86_400_000;

/// How long an unblock's tombstone holds at least: past any block another replica may still
/// hold for that network and write back (blocks last hours in practice).
pub const UNBLOCK_TOMBSTONE_SECS: i64 = 7 * 86_400;

/// The kinds of fleet state; each has one Redis hash and one identity space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Revocation,
    Block,
    Member,
    ApiKey,
    KeyRevocation,
    Session,
}

impl Kind {
    pub const ALL: [Kind; 6] =
        [Kind::Revocation, Kind::Block, Kind::Member, Kind::ApiKey, Kind::KeyRevocation, Kind::Session];

    /// The name of its Redis hash and of its lines in a journal.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Revocation => "revocation",
            Kind::Block => "block",
            Kind::Member => "member",
            Kind::ApiKey => "apikey",
            Kind::KeyRevocation => "keyrevocation",
            Kind::Session => "session",
        }
    }

    /// Whether an add of this kind protects (denies more): at one millisecond the add then wins
    /// over a removal; for grants (members, keys) the removal wins.
    fn protective(self) -> bool {
        matches!(self, Kind::Revocation | Kind::Block | Kind::KeyRevocation)
    }
}

/// An API key as the fleet stores it: a wire format of its own, apart from the policy file's
/// entry, so renaming a policy field never breaks a fleet of mixed versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub name: String,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default)]
    pub tenants: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// What an entry is about. A removal carries the item it removes (only its identity matters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    Revocation(Revocation),
    Block(Block),
    Member(Member),
    ApiKey(KeyRecord),
    /// A revoked key digest (lowercase hex) with the name it had; an empty digest revokes by
    /// name (what releases before digests were kept recorded).
    KeyRevocation {
        name: String,
        sha256: String,
    },
    Session {
        iss: String,
        sid: String,
        /// Unix seconds.
        at: i64,
    },
}

/// The identity an entry is merged under: its kind and a canonical text (a network, not its
/// spelling; a digest, not a name).
pub type Identity = (Kind, String);

impl Item {
    pub fn kind(&self) -> Kind {
        match self {
            Item::Revocation(_) => Kind::Revocation,
            Item::Block(_) => Kind::Block,
            Item::Member(_) => Kind::Member,
            Item::ApiKey(_) => Kind::ApiKey,
            Item::KeyRevocation { .. } => Kind::KeyRevocation,
            Item::Session { .. } => Kind::Session,
        }
    }

    pub fn identity(&self) -> Identity {
        let text = match self {
            Item::Revocation(Revocation::Jti { iss, jti, .. }) => format!("jti\0{iss}\0{jti}"),
            Item::Revocation(Revocation::Subject { iss, sub, before, .. }) => format!("sub\0{iss}\0{sub}\0{before}"),
            Item::Revocation(Revocation::Session { iss, sid, .. }) => format!("sid\0{iss}\0{sid}"),
            Item::Revocation(Revocation::Tenant { tenant, before, .. }) => format!("tenant\0{tenant}\0{before}"),
            // Constructors canonicalize; a text that is no network keeps its text (never applied).
            Item::Block(b) => canonical_network(&b.cidr).unwrap_or_else(|| b.cidr.clone()),
            Item::Member(m) => format!("{}\0{}\0{}", m.tenant, m.iss, m.sub),
            Item::ApiKey(k) => k.sha256.to_ascii_lowercase(),
            Item::KeyRevocation { name, sha256 } if sha256.is_empty() => format!("name\0{name}"),
            Item::KeyRevocation { sha256, .. } => sha256.to_ascii_lowercase(),
            Item::Session { iss, sid, .. } => format!("{iss}\0{sid}"),
        };
        (self.kind(), text)
    }
}

/// The one spelling of a network (`10.9.9.9/32`, `::ffff:10.9.9.9` and `::ffff:a09:909` are
/// all `10.9.9.9`); `None` when the text is no network.
pub fn canonical_network(text: &str) -> Option<String> {
    parse_cidr(text).ok().map(network_text)
}

/// The part of an entry that is stored as JSON (the write time travels in front of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    /// Unix seconds after which the entry no longer holds and may be forgotten; `None`: until
    /// overwritten (a `jti` revocation's lifetime is also bounded by the policy in force, see
    /// [`Lifetimes`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    /// A tombstone: the identity was removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    /// A `jti` revocation's horizon under the policy in force when it was written (Unix
    /// seconds): it holds at least that long, whatever a later policy says, so lowering
    /// `max_token_age` and raising it again never lets a revoked token back in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<i64>,
    pub item: Item,
}

/// One write of one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When it was written (Unix milliseconds): the newest write of an identity wins.
    pub written_ms: i64,
    pub body: Body,
}

/// How long revocations hold under the policy in force now, read when they are purged.
pub trait Lifetimes {
    /// Seconds after a `jti` revocation naming `iss` during which a token it covers could still
    /// be accepted (`max_token_age` + twice `leeway` + the skew margin); `None`: unbounded.
    fn jti_horizon(&self, iss: &str) -> Option<i64>;
}

/// No bound: nothing is purged by policy (tests, and the moments before a policy is known).
pub struct Unbounded;

impl Lifetimes for Unbounded {
    fn jti_horizon(&self, _iss: &str) -> Option<i64> {
        None
    }
}

impl Entry {
    pub fn new(written_ms: i64, item: Item, until: Option<i64>) -> Self {
        Self { written_ms, body: Body { until, removed: false, floor: None, item } }
    }

    pub fn tombstone(written_ms: i64, item: Item, until: Option<i64>) -> Self {
        Self { written_ms, body: Body { until, removed: true, floor: None, item } }
    }

    /// A revocation, holding until its explicit `expires_at`; a `jti`'s also as [`Lifetimes`]
    /// say, and at least its horizon under `lifetimes` (the policy in force now).
    pub fn revocation(written_ms: i64, revocation: Revocation, lifetimes: &dyn Lifetimes) -> Self {
        let until = (revocation.expires_at() != NEVER).then(|| revocation.expires_at());
        let floor = match &revocation {
            Revocation::Jti { iss, .. } => lifetimes.jti_horizon(iss).map(|h| (written_ms / 1000).saturating_add(h)),
            _ => None,
        };
        let mut entry = Self::new(written_ms, Item::Revocation(revocation), until);
        entry.body.floor = floor;
        entry
    }

    /// A block of `cidr` in its canonical spelling, or why the text is no network.
    pub fn block(written_ms: i64, cidr: &str, expires_at: i64) -> Result<Self, String> {
        let net = parse_cidr(cidr)?;
        Ok(Self::new(written_ms, Item::Block(Block { cidr: network_text(net), expires_at }), Some(expires_at)))
    }

    /// An unblock: a tombstone that holds at least [`UNBLOCK_TOMBSTONE_SECS`] and as long as
    /// `held_until` (the block this replica knows of).
    pub fn unblock(written_ms: i64, cidr: &str, held_until: Option<i64>) -> Result<Self, String> {
        let net = parse_cidr(cidr)?;
        let until = (written_ms / 1000 + UNBLOCK_TOMBSTONE_SECS).max(held_until.unwrap_or(i64::MIN));
        let item = Item::Block(Block { cidr: network_text(net), expires_at: until });
        Ok(Self::tombstone(written_ms, item, Some(until)))
    }

    pub fn kind(&self) -> Kind {
        self.body.item.kind()
    }

    pub fn identity(&self) -> Identity {
        self.body.item.identity()
    }

    pub fn is_removal(&self) -> bool {
        self.body.removed
    }

    /// At one millisecond: 1 for the protective side (a protection's add, a grant's removal).
    pub fn rank(&self) -> u8 {
        u8::from(self.kind().protective() != self.body.removed)
    }

    fn json(&self) -> String {
        // A Body of plain strings and numbers always serializes.
        serde_json::to_string(&self.body).unwrap_or_default()
    }

    fn tiebreak(json: &str) -> u64 {
        let digest = Sha256::digest(json.as_bytes());
        u64::from_be_bytes([0, 0, digest[0], digest[1], digest[2], digest[3], digest[4], digest[5]])
    }

    /// The merge order: write time, then the protective side, then a digest of the content so
    /// every view picks the same winner. Redis' write script compares exactly these three.
    pub fn order(&self) -> (i64, u8, u64) {
        (self.written_ms, self.rank(), Self::tiebreak(&self.json()))
    }

    /// The one merge rule: whether this entry replaces `other` (same identity).
    pub fn beats(&self, other: &Entry) -> bool {
        self.order() > other.order()
    }

    /// Whether it no longer holds at `now` (Unix seconds) under `lifetimes`.
    pub fn expired(&self, now: i64, lifetimes: &dyn Lifetimes) -> bool {
        if self.body.until.is_some_and(|until| until <= now) {
            return true;
        }
        match &self.body.item {
            Item::Revocation(Revocation::Jti { iss, .. }) if !self.body.removed => {
                let past_floor = self.body.floor.is_none_or(|floor| floor <= now);
                past_floor
                    && lifetimes.jti_horizon(iss).is_some_and(|h| (self.written_ms / 1000).saturating_add(h) <= now)
            }
            _ => false,
        }
    }

    /// `written:rank:tiebreak:json` — the text kept in Redis, on its streams and in journals.
    pub fn encode(&self) -> String {
        let json = self.json();
        format!("{}:{}:{:012x}:{json}", self.written_ms, self.rank(), Self::tiebreak(&json))
    }

    /// The JSON part alone (what Redis' write script stores behind the time it settles on).
    pub fn encode_body(&self) -> String {
        self.json()
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        let mut parts = text.splitn(4, ':');
        let written_ms = parts.next().and_then(|w| w.parse::<i64>().ok()).ok_or("no write time")?;
        if !(0..MAX_WRITTEN_MS).contains(&written_ms) {
            return Err(format!("write time {written_ms} out of range"));
        }
        let (_rank, _tiebreak) = (parts.next().ok_or("no rank")?, parts.next().ok_or("no tiebreak")?);
        let json = parts.next().ok_or("no body")?;
        let body: Body = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let entry = Self { written_ms, body };
        if let Item::Block(b) = &entry.body.item
            && canonical_network(&b.cidr).as_deref() != Some(b.cidr.as_str())
        {
            return Err(format!("block \"{}\" is not a canonical network", b.cidr));
        }
        let digest = match &entry.body.item {
            Item::ApiKey(k) => Some(k.sha256.as_str()),
            Item::KeyRevocation { sha256, .. } if !sha256.is_empty() => Some(sha256.as_str()),
            _ => None,
        };
        if digest.is_some_and(|d| d.len() != 64 || !d.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))) {
            return Err("a key digest is 64 lowercase hex digits".into());
        }
        Ok(entry)
    }

    /// The Redis hash field of its identity: a fixed-length digest (identities hold NULs).
    pub fn field(&self) -> String {
        field_of(&self.identity())
    }
}

pub fn field_of(identity: &Identity) -> String {
    hex::encode(Sha256::digest(identity.1.as_bytes()))
}
