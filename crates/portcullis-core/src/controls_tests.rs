//! Table-driven tests of the issue-9 controls on their own: API keys, step-up, CSRF, session
//! idle timeout and peer principals.

use super::api_key::{ApiKeyCheck, ApiKeyPolicy, KeyDigest, authenticate, digest};
use super::csrf::{CsrfPolicy, DoubleSubmit, check_csrf};
use super::requirements::{StepUp, check_source_principal, check_step_up};
use super::session::{SessionCheck, SessionPolicy, check_session};
use super::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

const NOW: i64 = 1_790_000_000;

fn token(claims: Value) -> VerifiedToken {
    let subject = claims["sub"].as_str().unwrap_or("u").to_string();
    VerifiedToken {
        issuer: IssuerId(0),
        exp: claims["exp"].as_i64().unwrap_or(NOW + 600),
        nbf: None.into(),
        iat: claims["iat"].as_i64().into(),
        key_generation: 0,
        values_for: None,
        claims: Claims::for_token("https://issuer.test/", &subject, claims).expect("claims"),
    }
}

struct Keys {
    runtime: HashMap<KeyDigest, Arc<ApiKey>>,
    revoked: Vec<&'static str>,
}

impl ApiKeyCheck for Keys {
    fn find(&self, digest: &KeyDigest) -> Option<Arc<ApiKey>> {
        self.runtime.get(digest).cloned()
    }

    fn revoked(&self, _digest: &KeyDigest, name: &str) -> bool {
        self.revoked.contains(&name)
    }
}

fn api_key(name: &str, expires: Option<i64>) -> Arc<ApiKey> {
    Arc::new(ApiKey {
        name: name.into(),
        subject: format!("svc-{name}"),
        tenants: vec!["acme".into()],
        scopes: vec!["read".into(), "write".into()],
        roles: vec![],
        expires,
    })
}

#[test]
fn api_key_table() {
    let key = |c: char| format!("pk_{}", c.to_string().repeat(43));
    let policy = ApiKeyPolicy {
        header: "x-api-key".into(),
        prefix: "pk_".into(),
        file_keys: HashMap::from([
            (digest(&key('a')), api_key("file", None)),
            (digest(&key('e')), api_key("expired", Some(NOW))),
            (digest(&key('r')), api_key("revoked", None)),
        ]),
    };
    let store =
        Keys { runtime: HashMap::from([(digest(&key('d')), api_key("runtime", None))]), revoked: vec!["revoked"] };
    // (name, presented, Ok(subject) or Err(counts toward auto-block))
    let cases: Vec<(&str, String, Result<&str, bool>)> = vec![
        ("file key", key('a'), Ok("svc-file")),
        ("runtime key", key('d'), Ok("svc-runtime")),
        ("unknown", key('z'), Err(true)),
        ("expired at exactly its time", key('e'), Err(false)),
        ("revoked by name", key('r'), Err(false)),
        ("jwt", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln".into(), Err(true)),
        ("no prefix", "a".repeat(46), Err(true)),
        ("21 characters", format!("pk_{}", "a".repeat(21)), Err(true)),
        ("22 characters, unknown", format!("pk_{}", "a".repeat(22)), Err(true)),
        ("not base64url", format!("pk_{}+", "a".repeat(42)), Err(true)),
        ("prefix case", format!("PK_{}", "a".repeat(43)), Err(true)),
    ];
    for (name, presented, want) in cases {
        let got = authenticate(&policy, &store, &presented, UnixTime(NOW));
        match (got, want) {
            (Ok((token, key)), Ok(subject)) => {
                assert_eq!(token.subject(), subject, "{name}");
                assert_eq!(token.iss(), API_KEY_ISSUER, "{name}");
                assert_eq!(token.claims.get("scope"), Some(&json!("read write")), "{name}");
                assert_eq!(token.claims.get("api_key"), Some(&json!(key.name)), "{name}");
                let held =
                    token.claims.iter().any(|(n, v)| n.contains(&presented) || v.to_string().contains(&presented));
                assert!(!held, "{name}: claims hold the key");
            }
            (Err((deny, _)), Err(counts)) => {
                assert_eq!(deny.reason, DenyReason::ApiKeyInvalid, "{name}");
                assert_eq!(deny.counts_as_failure, counts, "{name}: counts toward auto-block");
                assert!(!deny.detail.contains(&presented), "{name}: detail holds the key");
            }
            (got, want) => panic!("{name}: got {:?}, want {want:?}", got.map(|(t, _)| t.subject().to_string())),
        }
    }
}

#[test]
fn step_up_table() {
    let step = |acr: &[&str], amr: &[&str], age: Option<i64>| StepUp {
        acr: acr.iter().map(|s| s.to_string()).collect(),
        amr: amr.iter().map(|s| s.to_string()).collect(),
        max_auth_age: age,
    };
    let t = |extra: Value| {
        let mut c = json!({"sub": "u", "iat": NOW - 10});
        if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        token(c)
    };
    type Case<'a> = (&'a str, StepUp, VerifiedToken, Option<&'a [&'a str]>);
    let cases: Vec<Case> = vec![
        ("amr holds mfa", step(&[], &["mfa"], None), t(json!({"amr": ["pwd", "mfa"]})), None),
        ("amr lacks mfa", step(&[], &["mfa"], None), t(json!({"amr": ["pwd"]})), Some(&[])),
        ("amr absent", step(&[], &["mfa"], None), t(json!({})), Some(&[])),
        ("amr as a string is not a list", step(&[], &["mfa"], None), t(json!({"amr": "mfa"})), None),
        ("amr needs every value", step(&[], &["mfa", "hwk"], None), t(json!({"amr": ["mfa"]})), Some(&[])),
        ("acr one of", step(&["gold", "silver"], &[], None), t(json!({"acr": "silver"})), None),
        ("acr other", step(&["gold"], &[], None), t(json!({"acr": "bronze"})), Some(&["acr_values=\"gold\""])),
        ("acr absent", step(&["gold"], &[], None), t(json!({})), Some(&["acr_values=\"gold\""])),
        ("fresh auth", step(&[], &[], Some(300)), t(json!({"auth_time": NOW - 300})), None),
        ("auth 1s too old", step(&[], &[], Some(300)), t(json!({"auth_time": NOW - 301})), Some(&["max_age=\"300\""])),
        ("auth_time absent", step(&[], &[], Some(300)), t(json!({})), Some(&["max_age=\"300\""])),
        ("auth_time in the future", step(&[], &[], Some(300)), t(json!({"auth_time": NOW + 60})), Some(&[])),
        ("auth_time as a string", step(&[], &[], Some(300)), t(json!({"auth_time": "0"})), Some(&[])),
        (
            "all three",
            step(&["gold"], &["mfa"], Some(60)),
            t(json!({"acr": "gold", "amr": ["mfa"], "auth_time": NOW - 5})),
            None,
        ),
    ];
    for (name, rule, token, want) in cases {
        match (check_step_up(&token, &rule, NOW), want) {
            (Ok(()), None) => {}
            (Err(deny), Some(params)) => {
                assert_eq!(deny.reason, DenyReason::StepUpRequired, "{name}");
                assert_eq!(deny.reason.http_status(), 401, "{name}");
                let text: Vec<String> = deny.challenge_params.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                for p in params {
                    assert!(text.contains(&p.to_string()), "{name}: {text:?} lacks {p}");
                }
            }
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn csrf_table() {
    let policy = CsrfPolicy {
        allowed_origins: vec!["https://app.example.com".into()],
        double_submit: Some(DoubleSubmit { cookie: "csrf".into(), header: "x-csrf".into() }),
    };
    let origins_only = CsrfPolicy { double_submit: None, ..policy.clone() };
    let req = |method: &str, headers: &[(&str, &str)]| CheckInput {
        method: method.into(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    let cookie = ("cookie", "session=x; csrf=abc123");
    type Case<'a> = (&'a str, CheckInput, Option<&'a CsrfPolicy>, bool);
    let cases: Vec<Case> = vec![
        ("GET is safe", req("GET", &[("origin", "https://evil.example")]), Some(&policy), true),
        ("HEAD is safe", req("HEAD", &[]), Some(&policy), true),
        ("POST allowed origin", req("POST", &[("origin", "https://app.example.com")]), Some(&policy), true),
        ("origin case-insensitive", req("PUT", &[("origin", "HTTPS://APP.example.com")]), Some(&policy), true),
        ("POST foreign origin", req("POST", &[("origin", "https://evil.example")]), Some(&policy), false),
        ("origin with other port", req("POST", &[("origin", "https://app.example.com:8443")]), Some(&policy), false),
        ("look-alike origin", req("POST", &[("origin", "https://app.example.com.evil.example")]), Some(&policy), false),
        ("referer allowed", req("PATCH", &[("referer", "https://app.example.com/a/b?c")]), Some(&policy), true),
        (
            "referer foreign",
            req("DELETE", &[("referer", "https://evil.example/app.example.com")]),
            Some(&policy),
            false,
        ),
        (
            "origin null uses referer",
            req("POST", &[("origin", "null"), ("referer", "https://app.example.com/")]),
            Some(&policy),
            true,
        ),
        ("no origin, no token", req("POST", &[cookie]), Some(&policy), false),
        ("double submit", req("POST", &[cookie, ("x-csrf", "abc123")]), Some(&policy), true),
        ("double submit mismatch", req("POST", &[cookie, ("x-csrf", "abc124")]), Some(&policy), false),
        ("double submit prefix", req("POST", &[cookie, ("x-csrf", "abc")]), Some(&policy), false),
        ("double submit, no cookie", req("POST", &[("x-csrf", "abc123")]), Some(&policy), false),
        ("double submit not configured", req("POST", &[cookie, ("x-csrf", "abc123")]), Some(&origins_only), false),
        (
            "foreign origin with token",
            req("POST", &[cookie, ("origin", "https://evil.example"), ("x-csrf", "abc123")]),
            Some(&policy),
            true,
        ),
        (
            "two origins",
            req("POST", &[("origin", "https://app.example.com"), ("origin", "https://evil.example")]),
            Some(&policy),
            false,
        ),
        (
            "joined origins",
            req("POST", &[("origin", "https://app.example.com, https://evil.example")]),
            Some(&policy),
            false,
        ),
        ("unknown method is unsafe", req("PROPFIND", &[]), Some(&policy), false),
        ("no csrf config: POST refused", req("POST", &[("origin", "https://app.example.com")]), None, false),
        ("no csrf config: GET fine", req("GET", &[]), None, true),
    ];
    for (name, input, policy, pass) in cases {
        let got = check_csrf(&input, policy);
        assert_eq!(got.is_ok(), pass, "{name}: {got:?}");
        if let Err(deny) = got {
            assert_eq!((deny.reason, deny.reason.http_status()), (DenyReason::CsrfRejected, 403), "{name}");
        }
    }
}

struct Seen(HashMap<(String, String), i64>);

impl SessionCheck for Seen {
    fn last_seen(&self, iss: &str, sid: &str) -> Option<i64> {
        self.0.get(&(iss.to_string(), sid.to_string())).copied()
    }
}

#[test]
fn session_idle_table() {
    let policy = SessionPolicy { claim: "/sid".into(), idle_timeout_secs: 600, granularity_secs: 60, required: false };
    let required = SessionPolicy { required: true, ..policy.clone() };
    let iss = "https://issuer.test/".to_string();
    let store =
        Seen(HashMap::from([((iss.clone(), "active".into()), NOW - 100), ((iss.clone(), "idle".into()), NOW - 601)]));
    let t = |sid: Option<&str>, iat: Option<i64>, auth_time: Option<i64>| {
        let mut c = json!({"sub": "u"});
        if let Some(sid) = sid {
            c["sid"] = json!(sid);
        }
        if let Some(iat) = iat {
            c["iat"] = json!(iat);
        }
        if let Some(at) = auth_time {
            c["auth_time"] = json!(at);
        }
        token(c)
    };
    // (name, policy, token, Ok(touch time) / Err)
    type Case<'a> = (&'a str, &'a SessionPolicy, VerifiedToken, Result<Option<i64>, ()>);
    let cases: Vec<Case> = vec![
        ("no sid, not required", &policy, t(None, Some(NOW - 9999), None), Ok(None)),
        ("no sid, required", &required, t(None, Some(NOW), None), Err(())),
        ("sid not a string", &policy, token(json!({"sub": "u", "sid": 7, "iat": NOW})), Err(())),
        ("seen 100s ago: touched", &policy, t(Some("active"), Some(NOW - 5000), None), Ok(Some(NOW))),
        ("seen 601s ago", &policy, t(Some("idle"), Some(NOW - 5000), None), Err(())),
        (
            "new token revives nothing: stored wins over an old iat",
            &policy,
            t(Some("idle"), Some(NOW - 700), None),
            Err(()),
        ),
        ("unseen, iat 30s ago: no write yet", &policy, t(Some("new"), Some(NOW - 30), None), Ok(None)),
        ("unseen, iat 60s ago: write", &policy, t(Some("new"), Some(NOW - 60), None), Ok(Some(NOW))),
        ("unseen, iat at the timeout", &policy, t(Some("new"), Some(NOW - 600), None), Ok(Some(NOW))),
        ("unseen, iat past the timeout", &policy, t(Some("new"), Some(NOW - 601), None), Err(())),
        ("auth_time newer than iat seeds", &policy, t(Some("new"), Some(NOW - 900), Some(NOW - 10)), Ok(None)),
        ("a newer login revives an idle sid", &policy, t(Some("idle"), Some(NOW - 5), None), Ok(None)),
        ("no iat or auth_time", &policy, t(Some("new"), None, None), Err(())),
    ];
    for (name, policy, token, want) in cases {
        let got = check_session(policy, &token, &store, UnixTime(NOW));
        match (got, want) {
            (Ok(touch), Ok(at)) => assert_eq!(touch.map(|t| t.at), at, "{name}"),
            (Err(refused), Err(())) => {
                let deny = &refused.deny;
                assert_eq!((deny.reason, deny.reason.http_status()), (DenyReason::SessionIdle, 401))
            }
            (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn source_principal_table() {
    let allowed =
        vec!["spiffe://cluster.local/ns/app/sa/web".to_string(), "spiffe://cluster.local/ns/jobs/*".to_string()];
    let cases = [
        ("exact", "spiffe://cluster.local/ns/app/sa/web", true),
        ("exact, longer", "spiffe://cluster.local/ns/app/sa/web2", false),
        ("prefix", "spiffe://cluster.local/ns/jobs/sa/cron", true),
        ("other namespace", "spiffe://cluster.local/ns/other/sa/web", false),
        ("other trust domain", "spiffe://evil.local/ns/app/sa/web", false),
        ("no mTLS", "", false),
    ];
    for (name, principal, pass) in cases {
        let got = check_source_principal(principal, &allowed);
        assert_eq!(got.is_ok(), pass, "{name}");
        if let Err(deny) = got {
            assert_eq!((deny.reason.as_str(), deny.reason.http_status()), ("peer_forbidden", 403), "{name}");
        }
    }
    assert!(check_source_principal("", &[]).is_ok(), "no list: any peer");
}

#[test]
fn override_headers_are_refused_from_anyone() {
    use super::semantics::{OVERRIDE_HEADERS, check_channels};
    let input = |name: &str| CheckInput {
        method: "GET".into(),
        path: "/".into(),
        headers: vec![(name.to_string(), "/admin".to_string())],
        ..Default::default()
    };
    for name in OVERRIDE_HEADERS {
        let got = check_channels(&input(name), true, std::iter::empty()).map_err(|d| d.reason);
        assert_eq!(got, Err(DenyReason::InvalidRequest), "{name}");
    }
    assert!(check_channels(&input("x-forwarded-for"), false, std::iter::empty()).is_ok());
    assert!(check_channels(&CheckInput::default(), false, std::iter::empty()).is_ok());
}
