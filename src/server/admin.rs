//! The admin API (`listen.admin`): revocations, the claims cache, blocks, memberships and API
//! keys. Every request needs the
//! admin token (constant-time compare, no loopback exemption); a refused request changes nothing.

use super::admin_api_keys as api_keys;
use super::authz::AppState;
use crate::state::blocks::Block;
use crate::state::membership::Member;
use crate::state::revocation::{NEVER, Revocation};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Longest identifier accepted in a request body.
const MAX_ID: usize = 1024;

/// The admin API reads its token and the revocation lifetimes from the snapshot in force, so
/// a reload rotates the token within one poll.
#[derive(Clone)]
pub struct AdminState {
    pub app: Arc<AppState>,
}

pub(super) fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    let mut response = (status, axum::Json(json!({ "error": message.into() }))).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A store's refusal: 400 for a malformed write, 503 when the backend could not keep it.
pub(super) fn store_problem(e: crate::state::StoreError) -> Response {
    match e {
        crate::state::StoreError::Invalid(why) => problem(StatusCode::BAD_REQUEST, why),
        unavailable => problem(StatusCode::SERVICE_UNAVAILABLE, unavailable.to_string()),
    }
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token);
    let snapshot = state.app.snapshot.load();
    match (presented, &snapshot.admin_token) {
        (Some(token), Some(admin)) if admin.matches(token) => next.run(request).await,
        _ => {
            let mut response = problem(StatusCode::UNAUTHORIZED, "a valid admin token is required");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"portcullis-admin\""));
            response
        }
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/v1/revocations", get(list_revocations).post(add_revocation))
        .route("/v1/cache", delete(clear_cache))
        .route("/v1/blocks", get(list_blocks).post(add_block).delete(remove_block))
        .route("/v1/tenants/{tenant}/members", put(put_member).delete(remove_member))
        .route("/v1/api-keys", get(api_keys::list_keys).put(api_keys::put_key))
        .route("/v1/api-keys/revocations", get(api_keys::list_revocations).post(api_keys::revoke_key))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix).ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
}

fn parse_time(field: &str, value: &str) -> Result<i64, String> {
    OffsetDateTime::parse(value, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| format!("{field}: \"{value}\" is not an RFC 3339 time"))
}

/// `null` for a revocation that never expires.
fn expiry(expires_at: i64) -> Value {
    if expires_at == NEVER { Value::Null } else { Value::String(rfc3339(expires_at)) }
}

/// A revocation as the admin API shows it: `expires_at` its explicit end (`null`: none), and
/// `holds_until` when it may be forgotten under the policy in force now (a `jti`'s: written +
/// `max_token_age` + 2 × `leeway` + the skew margin; `null`: for ever).
fn revocation_json(r: &Revocation, written: i64, lifetimes: &dyn crate::state::model::Lifetimes) -> Value {
    let explicit = (r.expires_at() != NEVER).then(|| r.expires_at());
    let horizon = match r {
        Revocation::Jti { iss, .. } => lifetimes.jti_horizon(iss).map(|h| written.saturating_add(h)),
        _ => None,
    };
    let holds_until = match (explicit, horizon) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut value = revocation_fields(r);
    value["holds_until"] = holds_until.map_or(Value::Null, |t| Value::String(rfc3339(t)));
    value
}

fn revocation_fields(r: &Revocation) -> Value {
    match r {
        Revocation::Jti { iss, jti, expires_at } => json!({"jti": jti, "iss": iss, "expires_at": expiry(*expires_at)}),
        Revocation::Subject { iss, sub, before, expires_at } => {
            json!({"sub": sub, "iss": iss, "before": rfc3339(*before), "expires_at": expiry(*expires_at)})
        }
        Revocation::Session { iss, sid, expires_at } => {
            json!({"sid": sid, "iss": iss, "expires_at": expiry(*expires_at)})
        }
        Revocation::Tenant { tenant, before, expires_at } => {
            json!({"tenant": tenant, "before": rfc3339(*before), "expires_at": expiry(*expires_at)})
        }
    }
}

/// A `jti` written as a JSON string or number (tokens carry either).
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(serde::de::Error::custom("jti must be a string or a number")),
    }
}

async fn list_revocations(State(state): State<AdminState>) -> Response {
    let now = state.app.clock.now();
    let lifetimes = state.app.snapshot.load().revocation_lifetimes.clone();
    let items: Vec<Value> = state
        .app
        .revocations
        .listed(now)
        .iter()
        .map(|(r, written)| revocation_json(r, *written, lifetimes.as_ref()))
        .collect();
    (StatusCode::OK, axum::Json(json!({ "revocations": items }))).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationBody {
    #[serde(default, deserialize_with = "string_or_number")]
    jti: Option<String>,
    sub: Option<String>,
    sid: Option<String>,
    tenant: Option<String>,
    iss: Option<String>,
    before: Option<String>,
    expires_at: Option<String>,
}

/// The issuer a request names, or the only configured one.
fn resolve_issuer(state: &AdminState, iss: Option<&str>) -> Result<String, String> {
    let snapshot = state.app.snapshot.load();
    let issuers: Vec<&str> = snapshot.verifier.issuers.iter().map(|i| &*i.issuer).collect();
    match (iss, issuers.as_slice()) {
        (Some(iss), _) if issuers.contains(&iss) => Ok(iss.to_string()),
        (Some(iss), _) => Err(format!("iss: \"{iss}\" is not a configured issuer")),
        (None, [only]) => Ok(only.to_string()),
        (None, _) => Err("iss is required when several issuers are configured".to_string()),
    }
}

/// The revocation a request asks for, or why the request is malformed (answered 400).
fn revocation_from(state: &AdminState, body: RevocationBody) -> Result<Revocation, String> {
    let now = state.app.clock.now().0;
    let ids = [("jti", &body.jti), ("sub", &body.sub), ("sid", &body.sid), ("tenant", &body.tenant)];
    let given: Vec<(&str, &String)> = ids.iter().filter_map(|(n, v)| v.as_ref().map(|v| (*n, v))).collect();
    let [(kind, id)] = given.as_slice() else {
        return Err("exactly one of jti, sub, sid or tenant is required".to_string());
    };
    if id.is_empty() || id.len() > MAX_ID {
        return Err(format!("{kind} must be 1 to {MAX_ID} characters"));
    }
    let before_applies = matches!(*kind, "sub" | "tenant");
    if body.before.is_some() && !before_applies {
        return Err("before applies only to sub and tenant".to_string());
    }
    if *kind == "tenant" && body.iss.is_some() {
        return Err("a tenant revocation covers every issuer; iss does not apply".to_string());
    }
    let before = body.before.as_deref().map(|b| parse_time("before", b)).transpose()?.unwrap_or(now);
    let iss = if *kind == "tenant" { None } else { Some(resolve_issuer(state, body.iss.as_deref())?) };
    // Without an explicit end a revocation holds for ever, a `jti`'s until no token it covers
    // can be accepted under the policy in force when it is purged (state::model::Lifetimes).
    let expires_at = body.expires_at.as_deref().map(|e| parse_time("expires_at", e)).transpose()?.unwrap_or(NEVER);
    if expires_at <= now {
        return Err("expires_at must be in the future".to_string());
    }
    let id = id.to_string();
    let Some(iss) = iss else {
        return Ok(Revocation::Tenant { tenant: id, before, expires_at });
    };
    Ok(match *kind {
        "jti" => Revocation::Jti { iss, jti: id, expires_at },
        "sub" => Revocation::Subject { iss, sub: id, before, expires_at },
        _ => Revocation::Session { iss, sid: id, expires_at },
    })
}

async fn add_revocation(State(state): State<AdminState>, body: Bytes) -> Response {
    let parsed: RevocationBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("malformed JSON body: {e}")),
    };
    let revocation = match revocation_from(&state, parsed) {
        Ok(r) => r,
        Err(why) => return problem(StatusCode::BAD_REQUEST, why),
    };
    match state.app.revocations.add(revocation.clone()).await {
        Ok(()) => {
            tracing::info!(target: "portcullis::admin", revocation = ?revocation, "revocation added");
            let lifetimes = state.app.snapshot.load().revocation_lifetimes.clone();
            let now = state.app.clock.now().0;
            (StatusCode::CREATED, axum::Json(revocation_json(&revocation, now, lifetimes.as_ref()))).into_response()
        }
        Err(e) => store_problem(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheQuery {
    sub: Option<String>,
    iss: Option<String>,
    tenant: Option<String>,
}

async fn clear_cache(
    State(state): State<AdminState>,
    query: Result<Query<CacheQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return problem(StatusCode::BAD_REQUEST, "query: only sub, iss and tenant are accepted");
    };
    let cache = &state.app.cache;
    match (query.sub, query.iss, query.tenant) {
        (None, None, None) => {
            cache.clear();
            (StatusCode::OK, axum::Json(json!({"cleared": "all"}))).into_response()
        }
        (Some(sub), iss, None) => {
            cache.invalidate_subject(&sub, iss.as_deref());
            (StatusCode::OK, axum::Json(json!({"cleared": {"sub": sub, "iss": iss}}))).into_response()
        }
        (None, Some(_), None) => problem(StatusCode::BAD_REQUEST, "iss needs sub"),
        (None, None, Some(tenant)) => {
            // Cached claims are not keyed by tenant (membership is proven per request), so a
            // tenant clear drops everything.
            cache.clear();
            (StatusCode::OK, axum::Json(json!({"cleared": "all", "tenant": tenant}))).into_response()
        }
        (_, _, Some(_)) => problem(StatusCode::BAD_REQUEST, "tenant cannot be combined with sub or iss"),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemberBody {
    iss: Option<String>,
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
}

fn member_request(state: &AdminState, tenant: &str, body: &Bytes) -> Result<Member, String> {
    let parsed: MemberBody = serde_json::from_slice(body).map_err(|e| format!("malformed JSON body: {e}"))?;
    let snapshot = state.app.snapshot.load();
    if let Some(tenants) = &snapshot.policy.tenants
        && !tenants.id_pattern.is_match(tenant)
    {
        return Err("tenant id does not match tenants.id_pattern".to_string());
    }
    if parsed.sub.is_empty() || parsed.sub.len() > MAX_ID {
        return Err(format!("sub must be 1 to {MAX_ID} characters"));
    }
    let iss = resolve_issuer(state, parsed.iss.as_deref())?;
    Ok(Member { tenant: tenant.to_string(), iss, sub: parsed.sub, roles: parsed.roles })
}

async fn put_member(State(state): State<AdminState>, Path(tenant): Path<String>, body: Bytes) -> Response {
    let member = match member_request(&state, &tenant, &body) {
        Ok(m) => m,
        Err(why) => return problem(StatusCode::BAD_REQUEST, why),
    };
    match state.app.members.put(member.clone()).await {
        Ok(()) => {
            tracing::info!(target: "portcullis::admin", tenant = %member.tenant, sub = %member.sub, "member added");
            (StatusCode::CREATED, axum::Json(json!(member))).into_response()
        }
        Err(e) => store_problem(e),
    }
}

async fn remove_member(State(state): State<AdminState>, Path(tenant): Path<String>, body: Bytes) -> Response {
    let member = match member_request(&state, &tenant, &body) {
        Ok(m) => m,
        Err(why) => return problem(StatusCode::BAD_REQUEST, why),
    };
    match state.app.members.remove(&member.tenant, &member.iss, &member.sub).await {
        Ok(()) => {
            tracing::info!(target: "portcullis::admin", tenant = %member.tenant, sub = %member.sub, "member removed");
            (
                StatusCode::OK,
                axum::Json(json!({"removed": {"tenant": member.tenant, "iss": member.iss, "sub": member.sub}})),
            )
                .into_response()
        }
        Err(e) => store_problem(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockBody {
    cidr: String,
    /// Like `30m`; default: `ip.auto_block.block_for`, else one hour.
    ttl: Option<String>,
}

fn block_body(body: &Bytes) -> Result<BlockBody, String> {
    let mut parsed: BlockBody = serde_json::from_slice(body).map_err(|e| format!("malformed JSON body: {e}"))?;
    // Stored, listed and tombstoned by its canonical spelling: one network, one identity.
    parsed.cidr = crate::state::blocks::canonical_cidr(&parsed.cidr)?;
    Ok(parsed)
}

async fn list_blocks(State(state): State<AdminState>) -> Response {
    let now = state.app.clock.now();
    let items: Vec<Value> = state
        .app
        .blocks
        .list(now)
        .iter()
        .map(|b| json!({"cidr": b.cidr, "expires_at": rfc3339(b.expires_at)}))
        .collect();
    (StatusCode::OK, axum::Json(json!({ "blocks": items }))).into_response()
}

async fn add_block(State(state): State<AdminState>, body: Bytes) -> Response {
    let parsed = match block_body(&body) {
        Ok(b) => b,
        Err(why) => return problem(StatusCode::BAD_REQUEST, why),
    };
    let default_ttl = state.app.snapshot.load().policy.ip.auto_block.map(|a| a.block_for_secs).unwrap_or(3600);
    let ttl = match parsed.ttl.as_deref().map(humantime::parse_duration) {
        None => default_ttl,
        Some(Ok(d)) if d.as_secs() >= 1 => d.as_secs() as i64,
        Some(_) => return problem(StatusCode::BAD_REQUEST, "ttl must be a duration of at least 1s, like 30m"),
    };
    let block = Block { cidr: parsed.cidr.trim().to_string(), expires_at: state.app.clock.now().0 + ttl };
    match state.app.blocks.block(block.clone()).await {
        Ok(()) => {
            tracing::info!(target: "portcullis::admin", cidr = %block.cidr, ttl_secs = ttl, "block added");
            (StatusCode::CREATED, axum::Json(json!({"cidr": block.cidr, "expires_at": rfc3339(block.expires_at)})))
                .into_response()
        }
        Err(e) => store_problem(e),
    }
}

async fn remove_block(State(state): State<AdminState>, body: Bytes) -> Response {
    let parsed = match block_body(&body) {
        Ok(b) => b,
        Err(why) => return problem(StatusCode::BAD_REQUEST, why),
    };
    match state.app.blocks.unblock(parsed.cidr.trim()).await {
        Ok(()) => (StatusCode::OK, axum::Json(json!({"removed": parsed.cidr}))).into_response(),
        Err(e) => store_problem(e),
    }
}
