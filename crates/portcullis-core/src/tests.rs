//! Table-driven tests of the pure core, each step on its own. The token corpus and the
//! auto-block rule through the real verifier are in the server crate (`src/core_tests.rs`).

use super::headers::header_plan;
use super::tenant::membership;
use super::*;
use serde_json::json;
use std::sync::Arc;

const NOW: i64 = 1_790_000_000;

fn input(method: &str, path: &str, headers: &[(String, String)]) -> CheckInput {
    CheckInput {
        method: method.into(),
        host: "api.example.com".into(),
        path: path.into(),
        headers: headers.to_vec(),
        ..Default::default()
    }
}

#[test]
fn path_validation_table() {
    let cases: &[(&str, Result<&str, ()>)] = &[
        ("/a/b", Ok("/a/b")),
        ("/a/b?x=../..", Ok("/a/b")),
        ("/a/b#frag", Ok("/a/b")),
        ("/", Ok("/")),
        ("/a%20b", Ok("/a%20b")),
        ("/a/../b", Err(())),
        ("/a/./b", Err(())),
        ("/..", Err(())),
        ("//a", Err(())),
        ("/a//b", Err(())),
        ("/a/%2e%2e/b", Err(())),
        ("/a/%2E/b", Err(())),
        ("/a%2fb", Err(())),
        ("/a%5Cb", Err(())),
        ("/a\\b", Err(())),
        ("/a%00b", Err(())),
        ("/a\0b", Err(())),
        ("/caf\u{e9}", Err(())),
        ("/%61dmin", Err(())),
        ("/a%2", Err(())),
        ("/a%zz", Err(())),
        ("a/b", Err(())),
        ("", Err(())),
        ("/admin;x/users", Err(())),
        ("/admin/critical;x/rotate-keys", Err(())),
        ("/public/..;/admin", Err(())),
        ("/public/.;/admin", Err(())),
        ("/admin%3Bx/users", Err(())),
        ("/admin%3bx", Err(())),
        ("/a b", Err(())),
        ("/a\tb", Err(())),
        ("/a?x=1;y=2", Ok("/a")),
        ("/v1/items:purge", Ok("/v1/items:purge")),
        ("/v1/items%3Apurge", Err(())),
        ("/users/%40me", Err(())),
        ("/a%21b", Err(())),
        ("/a%2Bb", Err(())),
        ("/%2561dmin", Err(())),
        ("/a%25", Err(())),
        ("/a%5Bb%5D", Ok("/a%5Bb%5D")),
        ("/caf%C3%A9", Ok("/caf%C3%A9")),
        ("/a[b]", Err(())),
        ("/a{b}", Err(())),
        ("/a|b", Err(())),
        ("/a\"b", Err(())),
        ("/admin./x", Err(())),
        ("/admin.", Err(())),
        ("/admin%20/x", Err(())),
        ("/admin%20", Err(())),
        ("/file.txt", Ok("/file.txt")),
        ("/v1.2/x", Ok("/v1.2/x")),
        ("/.well-known/x", Ok("/.well-known/x")),
        // Encoded characters with an ASCII reading (grammar): Unicode digits, NFKC, case maps.
        ("/orders/%EF%BC%91/refund", Err(())),
        ("/orders/%D9%A1/refund", Err(())),
        ("/orders/%E0%A5%A7/refund", Err(())),
        ("/%EF%AC%81le", Err(())),
        ("/a%EF%BC%8Fb", Err(())),
        ("/%E2%84%AAey", Err(())),
        ("/%C5%BFecret", Err(())),
        ("/adm%C4%B1n", Err(())),
        ("/%E2%85%A8", Err(())),
        ("/%C2%BD", Err(())),
        ("/%E6%97%A5%E6%9C%AC", Ok("/%E6%97%A5%E6%9C%AC")),
        ("/%D0%BF%D1%80%D0%B8%D0%B2%D0%B5%D1%82", Ok("/%D0%BF%D1%80%D0%B8%D0%B2%D0%B5%D1%82")),
        ("/%FF", Ok("/%FF")),
        ("/x%+1", Err(())),
        ("/x%-1", Err(())),
    ];
    for (path, want) in cases {
        assert_eq!(validate_path(path).map_err(|_| ()), *want, "path {path:?}");
    }
}

fn route(name: &str, path: PathMatch, methods: &[&str], host: Option<HostMatch>) -> Route {
    Route {
        name: name.into(),
        matcher: RouteMatch {
            host,
            path,
            methods: methods.iter().map(|m| m.to_string()).collect(),
            case_sensitive: false,
            strict_slash: false,
            strict_suffix: false,
            headers: Vec::new(),
            query: Vec::new(),
        },
        access: Access::Public,
        rate_limit: None,
        dry_run: false,
    }
}

fn regex_path(re: &str) -> PathMatch {
    PathMatch::Regex {
        strict: regex::Regex::new(&format!("^(?:{re})$")).expect("regex"),
        lenient: regex::Regex::new(&format!("(?i)^(?:{re})$")).expect("regex"),
    }
}

/// `Ok(Some(name))`, `Ok(None)` (no route) or `Err(())` (refused: the exact and lenient
/// readings select different routes).
fn routed<'a>(routes: &'a [Route], host: &str, path: &str, method: &str) -> Result<Option<&'a str>, DenyReason> {
    let parsed = parse_authority(host).map_err(|d| d.reason)?;
    let input = CheckInput { method: method.into(), host: host.into(), path: path.into(), ..CheckInput::default() };
    find_route(routes, &parsed, path, &input).map(|r| r.map(|r| r.name.as_str())).map_err(|d| d.reason)
}

#[test]
fn route_matching_table() {
    let routes = vec![
        route("health", PathMatch::Prefix("/healthz".into()), &[], None),
        route("login", PathMatch::Exact("/login".into()), &["POST"], None),
        route("reports", PathMatch::Exact("/reports".into()), &["GET"], None),
        route("regex", regex_path("/v[0-9]+/items"), &[], None),
        route("host", PathMatch::Prefix("/".into()), &[], Some(HostMatch::Exact("admin.example.com".into()))),
        route("wild", PathMatch::Prefix("/w".into()), &[], Some(HostMatch::Suffix(".example.org".into()))),
    ];
    let invalid = Err(DenyReason::PathInvalid);
    type Case<'a> = (&'a str, &'a str, &'a str, Result<Option<&'a str>, DenyReason>);
    let cases: &[Case] = &[
        ("x", "/healthz", "GET", Ok(Some("health"))),
        ("x", "/healthz/live", "GET", Ok(Some("health"))),
        ("x", "/healthz/", "GET", Ok(Some("health"))),
        ("x", "/healthzX", "GET", Ok(None)),
        ("x", "/login", "POST", Ok(Some("login"))),
        ("x", "/login", "GET", Ok(None)),
        ("x", "/login/x", "POST", Ok(None)),
        ("x", "/reports", "HEAD", Ok(Some("reports"))),
        ("x", "/reports", "DELETE", Ok(None)),
        ("x", "/v1/items", "GET", Ok(Some("regex"))),
        ("x", "/v1/items/2", "GET", Ok(None)),
        ("x", "/xv1/items", "GET", Ok(None)),
        ("admin.example.com:8443", "/anything", "GET", Ok(Some("host"))),
        // Go's ServeMux matches host patterns byte for byte, DNS and nginx case-insensitively.
        ("Admin.Example.COM:8443", "/anything", "GET", invalid),
        ("API.example.net", "/healthz", "GET", Ok(Some("health"))),
        ("admin.example.com.", "/anything", "GET", Ok(Some("host"))),
        ("admin.example.com.evil", "/anything", "GET", Ok(None)),
        ("a.example.org", "/w", "GET", Ok(Some("wild"))),
        ("a.example.org.", "/w", "GET", Ok(Some("wild"))),
        ("example.org", "/w", "GET", Ok(None)),
        // Case and trailing-slash variants are judged only if every reading agrees.
        ("x", "/HEALTHZ", "GET", invalid),
        ("x", "/Healthz/live", "GET", invalid),
        ("x", "/healthz/LIVE", "GET", Ok(Some("health"))),
        ("x", "/LOGIN", "POST", invalid),
        ("x", "/login/", "POST", invalid),
        ("x", "/V1/items", "GET", invalid),
        ("x", "/v1/items/", "GET", invalid),
        ("x", "/W", "GET", Ok(None)),
        // Rails routes `/reports.json` to `reports` (`(.:format)`), Spring 5 `/login.do` to `/login`.
        ("x", "/login.json", "POST", invalid),
        ("x", "/healthz.json", "GET", invalid),
        ("x", "/healthz/live.json", "GET", Ok(Some("health"))),
        ("x", "/v1/items.xml", "GET", invalid),
        ("x", "/notes.txt", "GET", Ok(None)),
        ("a.example.org", "/W", "GET", invalid),
        ("admin.example.com", "/HEALTHZ", "GET", invalid),
    ];
    for (host, path, method, want) in cases {
        assert_eq!(routed(&routes, host, path, method), *want, "{method} {host}{path}");
    }
}

#[test]
fn case_and_slash_opt_outs_and_catch_alls() {
    let mut admin = route("admin", PathMatch::Prefix("/admin".into()), &[], None);
    let mut me = route("me", PathMatch::Exact("/me".into()), &[], None);
    let catch_all = route("all", PathMatch::Prefix("/".into()), &[], None);
    let delete = route("delete", PathMatch::Prefix("/items".into()), &["DELETE"], None);
    let items = route("items", PathMatch::Prefix("/items".into()), &[], None);
    let slashed = route("slashed", PathMatch::Prefix("/docs/".into()), &[], None);
    let routes = [admin.clone(), me.clone(), delete, items, slashed, catch_all.clone()];
    let invalid = Err(DenyReason::PathInvalid);
    type Case<'a> = (&'a str, &'a str, Result<Option<&'a str>, DenyReason>);
    let cases: &[Case] = &[
        ("/admin/users", "GET", Ok(Some("admin"))),
        ("/ADMIN/users", "GET", invalid),
        ("/Admin", "GET", invalid),
        ("/me", "GET", Ok(Some("me"))),
        ("/me/", "GET", invalid),
        ("/ME", "GET", invalid),
        ("/items", "DELETE", Ok(Some("delete"))),
        ("/items", "GET", Ok(Some("items"))),
        ("/docs/x", "GET", Ok(Some("slashed"))),
        ("/docs", "GET", invalid),
        ("/elsewhere", "GET", Ok(Some("all"))),
        ("/me.json", "GET", invalid),
        ("/admin.json", "GET", invalid),
        ("/docs.v2", "GET", invalid),
        ("/elsewhere.json", "GET", Ok(Some("all"))),
        // Rails: one trailing slash dropped, then any `[^/.?]+` extension is the format.
        ("/admin.json/", "GET", invalid),
        ("/admin.x-y", "GET", invalid),
        ("/admin.verylongext", "GET", invalid),
        ("/admin.x~y!z", "GET", invalid),
        ("/ADMIN.JSON/", "GET", invalid),
        ("/me.json/", "GET", invalid),
        ("/admin.", "GET", Ok(Some("all"))),
        ("/.admin", "GET", Ok(Some("all"))),
        // Spring's suffix pattern match runs `/admin.a.b` on `/admin` (from the first dot).
        ("/admin.tar.gz", "GET", invalid),
        ("/admin.a.b", "GET", invalid),
    ];
    for (path, method, want) in cases {
        assert_eq!(routed(&routes, "x", path, method), *want, "{method} {path}");
    }
    // Opted out: the upstream routes case and slashes exactly, so the variants are other paths.
    admin.matcher.case_sensitive = true;
    me.matcher.strict_slash = true;
    let routes = [admin, me, catch_all];
    assert_eq!(routed(&routes, "x", "/ADMIN/users", "GET"), Ok(Some("all")));
    assert_eq!(routed(&routes, "x", "/me/", "GET"), Ok(Some("all")));
    assert_eq!(routed(&routes, "x", "/ME", "GET"), invalid, "strict_slash still folds case");
    let mut reports = route("reports", PathMatch::Exact("/reports".into()), &[], None);
    let all = route("all", PathMatch::Prefix("/".into()), &[], None);
    assert_eq!(routed(&[reports.clone(), all.clone()], "x", "/reports.json", "GET"), invalid);
    reports.matcher.strict_suffix = true;
    assert_eq!(routed(&[reports, all], "x", "/reports.json", "GET"), Ok(Some("all")), "strict_suffix opts out");
}

#[test]
fn header_value_encoding_table() {
    let cases = [
        (json!("alice"), Ok("alice".to_string())),
        (json!("a b"), Ok("a%20b".to_string())),
        (json!("x\r\nInjected: 1"), Ok("x%0D%0AInjected:%201".to_string())),
        (json!("100%"), Ok("100%25".to_string())),
        (json!("caf\u{e9}"), Ok("caf%C3%A9".to_string())),
        (json!(["a", "b", 3]), Ok("a,b,3".to_string())),
        (json!(["viewer,admin"]), Ok("viewer%2Cadmin".to_string())),
        (json!(["a;b", "c d", "e\"f", "g\\h"]), Ok("a%3Bb,c%20d,e%22f,g%5Ch".to_string())),
        (json!("x,y"), Ok("x%2Cy".to_string())),
        (json!(42), Ok("42".to_string())),
        (json!(true), Ok("true".to_string())),
        (json!({"a": 1}), Err(DenyReason::ClaimMismatch)),
        (json!([["nested"]]), Err(DenyReason::ClaimMismatch)),
        (json!("y".repeat(1025)), Err(DenyReason::ClaimMismatch)),
        (json!("\u{1}".repeat(400)), Err(DenyReason::ClaimMismatch)),
    ];
    for (value, want) in cases {
        assert_eq!(encode_header_value(&value).map_err(|d| d.reason), want, "value {value}");
    }
}

fn token(exp: i64, nbf: Option<i64>, iat: Option<i64>) -> VerifiedToken {
    VerifiedToken {
        issuer: IssuerId(0),
        claims: Claims::for_token("https://issuer.test/", "s", json!({})).expect("claims"),
        exp,
        nbf: nbf.into(),
        iat: iat.into(),
        key_generation: 0,
        values_for: None,
    }
}

#[test]
fn time_checks_table() {
    let policy = TimePolicy { leeway: 30, max_token_age: Some(3600) };
    let no_age = TimePolicy { leeway: 30, max_token_age: None };
    let cases: &[(&str, VerifiedToken, TimePolicy, Option<DenyReason>)] = &[
        ("valid", token(NOW + 60, None, Some(NOW - 10)), policy, None),
        ("expired within leeway", token(NOW - 10, None, Some(NOW - 100)), policy, None),
        ("expired past leeway", token(NOW - 30, None, Some(NOW - 100)), policy, Some(DenyReason::TokenExpired)),
        ("nbf within leeway", token(NOW + 60, Some(NOW + 20), Some(NOW - 10)), policy, None),
        ("nbf in future", token(NOW + 600, Some(NOW + 31), Some(NOW - 10)), policy, Some(DenyReason::TokenInvalid)),
        ("iat in future", token(NOW + 600, None, Some(NOW + 120)), policy, Some(DenyReason::TokenInvalid)),
        ("too old", token(NOW + 600, None, Some(NOW - 3700)), policy, Some(DenyReason::TokenExpired)),
        ("max age needs iat", token(NOW + 600, None, None), policy, Some(DenyReason::TokenInvalid)),
        ("no max age, no iat", token(NOW + 600, None, None), no_age, None),
    ];
    for (name, tok, pol, want) in cases {
        assert_eq!(check_times(tok, *pol, UnixTime(NOW)).err().map(|d| d.reason), *want, "{name}");
    }
}

type CredentialCase<'a> = (&'a str, Vec<(String, String)>, Result<Option<&'a str>, DenyReason>);

#[test]
fn credential_extraction_table() {
    let policy = CredentialPolicy { bearer: true, cookies: vec!["sid".into()], ..Default::default() };
    let h = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    let big = "a".repeat(8 * 1024 + 1);
    let big_header = format!("Bearer {big}");
    let cases: Vec<CredentialCase> = vec![
        ("none", h(&[]), Ok(None)),
        ("bearer", h(&[("authorization", "Bearer abc.def")]), Ok(Some("abc.def"))),
        ("scheme case", h(&[("authorization", "BEARER abc")]), Ok(Some("abc"))),
        ("basic is no bearer credential", h(&[("authorization", "Basic abc")]), Ok(None)),
        ("digest", h(&[("authorization", "Digest username=x")]), Ok(None)),
        ("bare scheme", h(&[("authorization", "Basic")]), Ok(None)),
        ("basic beside a cookie", h(&[("authorization", "Basic abc"), ("cookie", "sid=tok")]), Ok(Some("tok"))),
        ("tab after bearer", h(&[("authorization", "Bearer\tabc")]), Err(DenyReason::InvalidRequest)),
        ("padded cookie name", h(&[("cookie", "sid =forged; sid=tok")]), Err(DenyReason::InvalidRequest)),
        ("padded cookie name alone", h(&[("cookie", " sid=tok")]), Ok(Some("tok"))),
        ("cookie name in another case", h(&[("cookie", "sid=tok; SID=forged")]), Err(DenyReason::InvalidRequest)),
        ("cookie hidden in a value", h(&[("cookie", "a=b sid=forged; sid=tok")]), Err(DenyReason::InvalidRequest)),
        (
            "comma-joined authorization",
            h(&[("authorization", "Basic eDp5,Bearer abc")]),
            Err(DenyReason::InvalidRequest),
        ),
        (
            "two authorization headers",
            h(&[("authorization", "Basic eDp5"), ("authorization", "Bearer abc")]),
            Err(DenyReason::InvalidRequest),
        ),
        ("Bearer:", h(&[("authorization", "Bearer:abc")]), Err(DenyReason::InvalidRequest)),
        ("Bearerabc", h(&[("authorization", "Bearerabc")]), Err(DenyReason::InvalidRequest)),
        ("JWT scheme is no credential", h(&[("authorization", "JWT abc")]), Ok(None)),
        ("no token", h(&[("authorization", "Bearer")]), Err(DenyReason::InvalidRequest)),
        ("two spaces", h(&[("authorization", "Bearer  abc")]), Err(DenyReason::InvalidRequest)),
        ("comma joined", h(&[("authorization", "Bearer a,Bearer b")]), Err(DenyReason::InvalidRequest)),
        (
            "two headers",
            h(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
            Err(DenyReason::InvalidRequest),
        ),
        ("too big", h(&[("authorization", big_header.as_str())]), Err(DenyReason::TokenInvalid)),
        ("cookie", h(&[("cookie", "a=1; sid=tok")]), Ok(Some("tok"))),
        ("empty cookie", h(&[("cookie", "sid=")]), Ok(None)),
        ("other cookie", h(&[("cookie", "sidx=tok")]), Ok(None)),
        ("two cookies", h(&[("cookie", "sid=a; sid=b")]), Err(DenyReason::InvalidRequest)),
        ("two cookie headers", h(&[("cookie", "sid=a"), ("cookie", "sid=b")]), Err(DenyReason::InvalidRequest)),
        (
            "bearer and cookie",
            h(&[("authorization", "Bearer a"), ("cookie", "sid=b")]),
            Err(DenyReason::InvalidRequest),
        ),
    ];
    for (name, headers, want) in cases {
        let input = input("GET", "/", &headers);
        let got = extract_credential(&input, &policy).map(|c| c.map(|c| c.token())).map_err(|d| d.reason);
        assert_eq!(got, want, "{name}");
    }
    // PHP reads `session.jwt`, `session jwt` and `session[jwt` as `session_jwt`.
    let php = CredentialPolicy { bearer: true, cookies: vec!["session_jwt".into()], ..Default::default() };
    for cookie in ["session.jwt=forged", "session[jwt=forged", "session jwt=forged"] {
        let input = input("GET", "/", &h(&[("cookie", cookie)]));
        let got = extract_credential(&input, &php).map(|c| c.map(|c| c.token())).map_err(|d| d.reason);
        assert_eq!(got, Err(DenyReason::InvalidRequest), "{cookie}");
    }
}

#[test]
fn requirements_table() {
    let mut tok = token(NOW + 600, None, None);
    tok.claims = Claims::for_token(
        "https://issuer.test/",
        "s",
        json!({
            "aud": ["api", "web"], "scp": ["read", "write"], "roles": "viewer editor",
            "org": {"plan": "pro", "tags": ["eu"]}, "email_verified": true,
        }),
    )
    .expect("claims");
    let req = |f: &dyn Fn(&mut Requirements)| {
        let mut r = Requirements::default();
        f(&mut r);
        r
    };
    let matcher = |pointer: &str, test: ClaimTest| ClaimMatcher { pointer: pointer.into(), test };
    let cases: Vec<(&str, Requirements, Option<DenyReason>)> = vec![
        ("nothing", Requirements::default(), None),
        ("scp array", req(&|r| r.scopes = vec!["read".into(), "write".into()]), None),
        ("missing scope", req(&|r| r.scopes = vec!["admin".into()]), Some(DenyReason::InsufficientScope)),
        ("role string", req(&|r| r.roles = vec!["editor".into()]), None),
        ("missing role", req(&|r| r.roles = vec!["admin".into()]), Some(DenyReason::RoleRequired)),
        ("audience", req(&|r| r.audiences = vec!["web".into()]), None),
        ("wrong audience", req(&|r| r.audiences = vec!["mobile".into()]), Some(DenyReason::TokenInvalid)),
        ("issuer", req(&|r| r.issuers = vec!["https://issuer.test/".into()]), None),
        ("wrong issuer", req(&|r| r.issuers = vec!["https://other.test/".into()]), Some(DenyReason::TokenInvalid)),
        ("equals", req(&|r| r.claims = vec![matcher("/org/plan", ClaimTest::Equals(json!("pro")))]), None),
        (
            "not equals",
            req(&|r| r.claims = vec![matcher("/org/plan", ClaimTest::Equals(json!("free")))]),
            Some(DenyReason::ClaimMismatch),
        ),
        ("bool", req(&|r| r.claims = vec![matcher("/email_verified", ClaimTest::Equals(json!(true)))]), None),
        (
            "string true is not true",
            req(&|r| r.claims = vec![matcher("/org/plan", ClaimTest::Equals(json!(true)))]),
            Some(DenyReason::ClaimMismatch),
        ),
        (
            "one_of",
            req(&|r| r.claims = vec![matcher("/org/plan", ClaimTest::OneOf(vec![json!("pro"), json!("ent")]))]),
            None,
        ),
        ("contains", req(&|r| r.claims = vec![matcher("/org/tags", ClaimTest::Contains(json!("eu")))]), None),
        (
            "absent",
            req(&|r| r.claims = vec![matcher("/org/missing", ClaimTest::Present)]),
            Some(DenyReason::ClaimMismatch),
        ),
    ];
    for (name, r, want) in cases {
        let got = requirements::check_requirements(&tok, &r, "/roles").err().map(|d| d.reason);
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn reason_contract() {
    let expected: &[(DenyReason, u16)] = &[
        (DenyReason::CredentialMissing, 401),
        (DenyReason::TokenInvalid, 401),
        (DenyReason::StepUpRequired, 401),
        (DenyReason::PathInvalid, 400),
        (DenyReason::TenantConflict, 400),
        (DenyReason::InsufficientScope, 403),
        (DenyReason::NoRoute, 403),
        (DenyReason::IpBlocked, 403),
        (DenyReason::RateLimited, 429),
        (DenyReason::Overloaded, 503),
        (DenyReason::StateStale, 503),
    ];
    for (reason, status) in expected {
        assert_eq!(reason.http_status(), *status, "{}", reason.as_str());
    }
    for reason in DenyReason::ALL {
        let retry = reason.retry_after_secs().is_some();
        assert_eq!(retry, matches!(reason.http_status(), 429 | 503), "{} retry-after", reason.as_str());
    }
}

fn tenant_policy() -> TenantPolicy {
    TenantPolicy {
        sources: vec![
            TenantSource::Header("x-tenant-id".into()),
            TenantSource::Path(regex::Regex::new("^/tenants/(?P<tenant>[^/]+)/").expect("re")),
            TenantSource::HostSuffix(".tenants.example.com".into()),
            TenantSource::ContextExtension("tenant".into()),
        ],
        id_pattern: regex::Regex::new("^(?:[a-z0-9][a-z0-9:_-]{0,62})$").expect("re"),
        claim: Some("/tenants".into()),
        personal: Some(PersonalTenant {
            prefix: "user:".into(),
            suffix: String::new(),
            issuer: "https://issuer.test/".into(),
        }),
        file_members: [(
            ("globex-eu".to_string(), "https://issuer.test/".to_string(), "carol".to_string()),
            vec!["admin".to_string()],
        )]
        .into_iter()
        .collect(),
    }
}

#[test]
fn tenant_resolution_table() {
    let policy = tenant_policy();
    let h = |k: &str, v: &str| (k.to_string(), v.to_string());
    type Case<'a> =
        (&'a str, &'a str, Vec<(String, String)>, Option<(&'a str, &'a str)>, Result<Option<&'a str>, DenyReason>);
    let cases: Vec<Case> = vec![
        ("none", "/api/x", vec![], None, Ok(None)),
        ("path", "/tenants/acme/x", vec![], None, Ok(Some("acme"))),
        ("header", "/api/x", vec![h("x-tenant-id", "acme")], None, Ok(Some("acme"))),
        ("header agrees with path", "/tenants/acme/x", vec![h("x-tenant-id", "acme")], None, Ok(Some("acme"))),
        (
            "header disagrees",
            "/tenants/acme/x",
            vec![h("x-tenant-id", "initech")],
            None,
            Err(DenyReason::TenantConflict),
        ),
        (
            "two headers",
            "/api/x",
            vec![h("x-tenant-id", "a"), h("x-tenant-id", "a")],
            None,
            Err(DenyReason::TenantConflict),
        ),
        ("comma joined", "/api/x", vec![h("x-tenant-id", "a,b")], None, Err(DenyReason::InvalidRequest)),
        ("upper case is not folded", "/tenants/ACME/x", vec![], None, Err(DenyReason::InvalidRequest)),
        ("percent is not decoded", "/tenants/ac%6De/x", vec![], None, Err(DenyReason::InvalidRequest)),
        ("confusable", "/tenants/\u{430}cme/x", vec![], None, Err(DenyReason::InvalidRequest)),
        ("context extension", "/api/x", vec![], Some(("tenant", "acme")), Ok(Some("acme"))),
        (
            "context extension disagrees",
            "/tenants/acme/x",
            vec![],
            Some(("tenant", "globex")),
            Err(DenyReason::TenantConflict),
        ),
        ("host label", "/x", vec![], None, Ok(None)),
        ("case-folded path names a tenant", "/TENANTS/globex/x", vec![], None, Err(DenyReason::TenantConflict)),
        (
            "no trailing slash, another reading names it",
            "/tenants/globex",
            vec![h("x-tenant-id", "acme")],
            None,
            Err(DenyReason::TenantConflict),
        ),
    ];
    for (name, path, headers, ext, want) in cases {
        let mut inp = input("GET", path, &headers);
        if let Some((k, v)) = ext {
            inp.context_extensions.insert(k.into(), v.into());
        }
        let got = resolve_tenant(&policy, &inp, &parse_authority("api.example.com").expect("host"), path);
        assert_eq!(got.as_ref().map(|t| t.as_deref()).map_err(|d| d.reason), want, "{name}");
    }
    let hosted = input("GET", "/x", &[]);
    let by_host = |raw: &str| {
        let host = parse_authority(raw).expect("host");
        resolve_tenant(&policy, &hosted, &host, "/x").map_err(|d| d.reason)
    };
    assert_eq!(by_host("acme.tenants.example.com:443"), Ok(Some("acme".to_string())));
    assert_eq!(by_host("Acme.Tenants.Example.com:443"), Err(DenyReason::TenantConflict));
    assert_eq!(by_host("globex.tenants.example.com."), Ok(Some("globex".to_string())), "trailing dot");
    assert_eq!(by_host("a.b.tenants.example.com"), Ok(None), "only a single label");
    assert_eq!(by_host("ACME.tenants.example.com"), Err(DenyReason::TenantConflict), "case decides the tenant");
    // Issue 31 review: with ids that may hold a dot, Rails reads `/tenants/acme.json` as tenant
    // `acme` with format json; the format readings must agree with the exact one.
    let mut dotted = tenant_policy();
    dotted.sources = vec![TenantSource::Path(regex::Regex::new("^/tenants/(?P<tenant>[^/]+)(?:/|$)").expect("re"))];
    dotted.id_pattern = regex::Regex::new("^(?:[a-z0-9][a-z0-9._-]{0,62})$").expect("re");
    let by_path = |path: &str| {
        resolve_tenant(&dotted, &input("GET", path, &[]), &parse_authority("api.example.com").expect("host"), path)
            .map_err(|d| d.reason)
    };
    assert_eq!(by_path("/tenants/acme.json"), Err(DenyReason::TenantConflict));
    assert_eq!(by_path("/tenants/acme/x.json"), Ok(Some("acme".to_string())), "a suffix elsewhere is no matter");
}

struct Store(Vec<(&'static str, &'static str)>);

impl MembershipCheck for Store {
    fn member_roles(&self, tenant: &str, _iss: &str, sub: &str) -> Option<Vec<String>> {
        self.0.iter().any(|(t, s)| *t == tenant && *s == sub).then(|| vec!["viewer".to_string()])
    }
}

fn claims_token(iss: &str, sub: &str, claims: serde_json::Value) -> VerifiedToken {
    VerifiedToken {
        issuer: IssuerId(0),
        claims: Claims::for_token(iss, sub, claims).expect("claims"),
        exp: NOW + 600,
        nbf: None.into(),
        iat: Some(NOW).into(),
        key_generation: 0,
        values_for: None,
    }
}

#[test]
fn membership_table() {
    let policy = tenant_policy();
    let store = Store(vec![("hooli", "dave"), ("user:alice", "bob")]);
    let iss = "https://issuer.test/";
    let list = json!({"tenants": ["acme", "globex"]});
    let map = json!({"tenants": {"acme": ["admin", "billing"], "globex": "viewer"}});
    type Case<'a> = (&'a str, VerifiedToken, &'a str, bool, Result<Vec<&'a str>, DenyReason>);
    let cases: Vec<Case> = vec![
        ("claim list", claims_token(iss, "alice", list.clone()), "acme", true, Ok(vec![])),
        (
            "claim list, other tenant",
            claims_token(iss, "alice", list.clone()),
            "initech",
            true,
            Err(DenyReason::TenantForbidden),
        ),
        ("claim map with roles", claims_token(iss, "alice", map.clone()), "acme", true, Ok(vec!["admin", "billing"])),
        (
            "claim map, a string is not a roles list",
            claims_token(iss, "alice", map.clone()),
            "globex",
            true,
            Err(DenyReason::TenantForbidden),
        ),
        ("claim map, true", claims_token(iss, "alice", json!({"tenants": {"acme": true}})), "acme", true, Ok(vec![])),
        (
            "claim map, false",
            claims_token(iss, "alice", json!({"tenants": {"acme": false}})),
            "acme",
            true,
            Err(DenyReason::TenantForbidden),
        ),
        (
            "claim map, null",
            claims_token(iss, "alice", json!({"tenants": {"acme": null}})),
            "acme",
            true,
            Err(DenyReason::TenantForbidden),
        ),
        (
            "claim map, a number",
            claims_token(iss, "alice", json!({"tenants": {"acme": 1}})),
            "acme",
            true,
            Err(DenyReason::TenantForbidden),
        ),
        (
            "untrusted issuer's claim",
            claims_token("https://pem.test/", "alice", list.clone()),
            "acme",
            false,
            Err(DenyReason::TenantForbidden),
        ),
        ("file member", claims_token(iss, "carol", json!({})), "globex-eu", true, Ok(vec!["admin"])),
        (
            "file member of another issuer",
            claims_token("https://pem.test/", "carol", json!({})),
            "globex-eu",
            true,
            Err(DenyReason::TenantForbidden),
        ),
        ("store member", claims_token(iss, "dave", json!({})), "hooli", true, Ok(vec!["viewer"])),
        ("personal tenant owner", claims_token(iss, "alice", json!({})), "user:alice", true, Ok(vec!["owner"])),
        (
            "personal tenant, store lists another",
            claims_token(iss, "bob", json!({})),
            "user:alice",
            true,
            Err(DenyReason::TenantForbidden),
        ),
        (
            "personal tenant, claim lists it",
            claims_token(iss, "bob", json!({"tenants": ["user:alice"]})),
            "user:alice",
            true,
            Err(DenyReason::TenantForbidden),
        ),
        (
            "personal tenant of another issuer's alice",
            claims_token("https://pem.test/", "alice", json!({})),
            "user:alice",
            true,
            Err(DenyReason::TenantForbidden),
        ),
    ];
    for (name, token, tenant, trusted, want) in cases {
        let got = membership(&policy, &token, tenant, trusted, &store).map_err(|d| d.reason);
        let want = want.map(|roles| roles.into_iter().map(str::to_string).collect::<Vec<_>>());
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn a_personal_tenant_with_a_suffix_belongs_to_its_subject_alone() {
    let mut policy = tenant_policy();
    policy.personal =
        Some(PersonalTenant { prefix: "u-".into(), suffix: "-home".into(), issuer: "https://issuer.test/".into() });
    let alice = claims_token("https://issuer.test/", "alice", json!({"tenants": ["u-alic-home", "u-alice-homes"]}));
    let store = Store(vec![]);
    let owns = |tenant| membership(&policy, &alice, tenant, true, &store).map_err(|d| d.reason);
    assert_eq!(owns("u-alice-home"), Ok(vec!["owner".to_string()]));
    for other in ["u-alic-home", "u-alice-home-home", "u-xalice-home"] {
        assert_eq!(owns(other), Err(DenyReason::TenantForbidden), "{other}");
    }
    // Not personal (no suffix): an ordinary tenant, proven by the claim.
    assert_eq!(owns("u-alice-homes"), Ok(vec![]));
}

fn cidrs(list: &[&str]) -> CidrSet {
    let mut set = CidrSet::default();
    for c in list {
        set.insert(parse_cidr(c).expect("cidr"));
    }
    set
}

#[test]
fn client_ip_table() {
    let trusted = cidrs(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
    let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
    // (peer, x-forwarded-for values, Some((client, trusted)) or None: refused 400)
    type Case<'a> = (&'a str, &'a [&'a str], Option<(&'a str, bool)>);
    let cases: &[Case] = &[
        ("192.0.2.1", &[], Some(("192.0.2.1", false))),
        ("192.0.2.1", &["198.51.100.7"], Some(("192.0.2.1", false))),
        ("192.0.2.1", &["garbage"], Some(("192.0.2.1", false))),
        ("10.0.0.5", &["198.51.100.7"], Some(("198.51.100.7", false))),
        ("10.0.0.5", &["203.0.113.1, 198.51.100.7, 10.1.1.1"], Some(("198.51.100.7", false))),
        ("10.0.0.5", &["203.0.113.1", "198.51.100.7"], Some(("198.51.100.7", false))),
        ("10.0.0.5", &["10.1.1.1, 10.2.2.2"], Some(("10.0.0.5", true))),
        ("10.0.0.5", &[], Some(("10.0.0.5", true))),
        ("2001:db8:ffff::1", &["2001:db8:1:2:3:4:5:6"], Some(("2001:db8:1:2:3:4:5:6", false))),
        // Hop forms: ip:port (Azure Application Gateway), [v6], [v6]:port, quoted.
        ("10.0.0.5", &["203.0.113.7:4444"], Some(("203.0.113.7", false))),
        ("10.0.0.5", &["[2001:db8::1]:443"], Some(("2001:db8::1", false))),
        ("10.0.0.5", &["[2001:db8::1]"], Some(("2001:db8::1", false))),
        ("10.0.0.5", &["\"203.0.113.7\""], Some(("203.0.113.7", false))),
        ("10.0.0.5", &["\"[2001:db8::1]:443\""], Some(("2001:db8::1", false))),
        ("10.0.0.5", &["10.1.1.1:80, 203.0.113.9:1"], Some(("203.0.113.9", false))),
        // IPv4-mapped addresses are IPv4, for trust too.
        ("::ffff:10.0.0.5", &["203.0.113.7"], Some(("203.0.113.7", false))),
        ("::ffff:192.0.2.1", &[], Some(("192.0.2.1", false))),
        ("10.0.0.5", &["::ffff:203.0.113.7"], Some(("203.0.113.7", false))),
        ("10.0.0.5", &["::ffff:10.9.9.9, ::ffff:203.0.113.7"], Some(("203.0.113.7", false))),
        ("10.0.0.5", &["[::ffff:10.9.9.9]:80"], Some(("10.0.0.5", true))),
        // Behind a trusted proxy an unparsable hop is refused, never trusted.
        ("10.0.0.5", &["198.51.100.7, garbage"], None),
        ("10.0.0.5", &["unknown"], None),
        ("10.0.0.5", &["203.0.113.7:x"], None),
        ("10.0.0.5", &["[2001:db8::1"], None),
        ("10.0.0.5", &["2001:db8::1:443x"], None),
        ("10.0.0.5", &["garbage, 198.51.100.7"], Some(("198.51.100.7", false))),
    ];
    for (peer, xff, want) in cases {
        let got = client_ip(ip(peer), xff, &trusted).ok().map(|c| (c.addr, c.trusted));
        assert_eq!(got, want.map(|(a, t)| (ip(a), t)), "peer {peer} xff {xff:?}");
    }
    assert_eq!(client_key(ip("2001:db8:1:2:3:4:5:6")), "2001:db8:1:2::/64");
    assert_eq!(client_key(ip("2001:db8:1:2:ffff::9")), "2001:db8:1:2::/64", "one /64, one key");
    assert_eq!(client_key(ip("192.0.2.1")), "192.0.2.1");
    assert_eq!(client_key(ip("::ffff:192.0.2.1")), "192.0.2.1", "a mapped client is its IPv4 address");
    assert_ne!(client_key(ip("::ffff:192.0.2.1")), client_key(ip("::ffff:192.0.2.2")));
    let deny = cidrs(&["203.0.113.0/24"]);
    assert!(deny.contains(ip("::ffff:203.0.113.7")), "a mapped address is in its IPv4 range");
}

#[test]
fn cidr_parsing_and_files() {
    for good in ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32", "::1"] {
        assert!(parse_cidr(good).is_ok(), "{good}");
    }
    for bad in ["10.0.0.1/8", "10.0.0.0/33", "banana", "", "2001:db8::/129", "::ffff:10.8.0.1/112"] {
        assert!(parse_cidr(bad).is_err(), "{bad}");
    }
    // IPv4-mapped spellings are the IPv4 networks they map (issue 32): they match the client
    // addresses, which are canonical, in every spelling.
    for (mapped, v4) in [
        ("::ffff:10.7.7.7", "10.7.7.7/32"),
        ("::ffff:10.7.7.7/128", "10.7.7.7/32"),
        ("::ffff:10.7.7.0/120", "10.7.7.0/24"),
        ("::ffff:a07:707", "10.7.7.7/32"),
        ("::ffff:10.8.0.0/112", "10.8.0.0/16"),
        ("::ffff:0:0/96", "0.0.0.0/0"),
    ] {
        assert_eq!(parse_cidr(mapped).map(|n| n.to_string()), Ok(v4.to_string()), "{mapped}");
    }
    assert_eq!(parse_cidr("::/0").map(|n| n.to_string()), Ok("::/0".to_string()), "IPv6 stays IPv6");
    let mapped = cidrs(&["::ffff:10.8.0.0/112", "::ffff:10.7.7.7"]);
    for client in ["10.8.3.4", "::ffff:10.8.3.4", "10.7.7.7", "::ffff:a07:707"] {
        assert!(mapped.contains(client.parse().expect("ip")), "{client}");
    }
    let mut set = CidrSet::default();
    set.extend_from_lines("# blocklist\n203.0.113.0/24  # a comment\n\n198.51.100.7\n").expect("file");
    assert_eq!(set.len(), 2);
    assert!(set.contains("203.0.113.200".parse().expect("ip")));
    assert!(!set.contains("203.0.114.1".parse().expect("ip")));
    let err = CidrSet::default().extend_from_lines("10.0.0.0/8\nnot-a-cidr\n").expect_err("bad line");
    assert!(err.starts_with("line 2:"), "{err}");
}

/// A token packed by the verifier for `identity`: subject, header values and claims.
fn packed_token(sub: &str, claims: serde_json::Value, identity: &Arc<[IdentityHeader]>) -> VerifiedToken {
    let serde_json::Value::Object(map) = claims else { panic!("claims are an object") };
    let iss: Arc<str> = Arc::from("https://issuer.test/");
    let (claims, values_for) = pack_token(&iss, sub, map, Some(identity)).expect("packed");
    VerifiedToken { claims, values_for, ..claims_token("https://issuer.test/", sub, json!({})) }
}

#[test]
fn claim_values_are_packed_with_the_token_and_the_tenant_is_per_request() {
    let policy = ResponsePolicy {
        identity_headers: vec![
            IdentityHeader { name: "x-user-id".into(), source: IdentitySource::Claim("/sub".into()) },
            IdentityHeader { name: "x-tenant-id".into(), source: IdentitySource::Tenant },
            IdentityHeader { name: "x-email".into(), source: IdentitySource::Claim("/email".into()) },
        ]
        .into(),
        ..Default::default()
    };
    let token = packed_token("u 1", json!({"sub": "u 1", "roles": ["a"]}), &policy.identity_headers);
    // One allocation: the subject, the encoded values, the claims' JSON (`sub` not again).
    assert_eq!(token.subject(), "u 1");
    assert_eq!(token.heap_bytes(), "u 1".len() + "u%201\n\n".len() + r#"{"roles":["a"]}"#.len());
    assert_eq!(token.claims.get("sub"), Some(&json!("u 1")), "read back");
    let values = token.identity_values(&policy).expect("values");
    assert!(matches!(values, IdentityValues::Packed { lines: "u%201\n\n", .. }), "{values:?}");
    let plan = |tenant| header_plan(&policy, Some(&values), tenant).expect("plan");
    let acme = plan(Some("acme"));
    assert_eq!(acme.set, vec![("x-user-id".into(), "u%201".into()), ("x-tenant-id".into(), "acme".into())]);
    assert_eq!(acme.remove, vec!["x-email".to_string()]);
    assert_eq!(plan(Some("globex")).set[1], ("x-tenant-id".into(), "globex".into()));
    assert_eq!(plan(None).remove, vec!["x-tenant-id".to_string(), "x-email".to_string()]);
    // A reload with an equal list (another allocation) keeps the packed values…
    let mut same = policy.clone();
    same.identity_headers = policy.identity_headers.to_vec().into();
    assert!(matches!(token.identity_values(&same), Ok(IdentityValues::Packed { .. })));
    // …another list gets its own values from the claims, not the first list's.
    let mut other = policy.clone();
    let mut swapped = policy.identity_headers.to_vec();
    swapped.swap(0, 2);
    other.identity_headers = swapped.into();
    let fresh = token.identity_values(&other).expect("values");
    assert!(matches!(fresh, IdentityValues::Fresh(_)));
    assert_eq!([fresh.get(0), fresh.get(1), fresh.get(2)], [None, None, Some("u%201")]);
    // A claim that cannot be forwarded denies on every allow, not only the first.
    let bad = packed_token("u", json!({"sub": "u", "email": {"nested": true}}), &policy.identity_headers);
    for _ in 0..2 {
        assert_eq!(bad.identity_values(&policy).map(|_| ()).map_err(|d| d.reason), Err(DenyReason::ClaimMismatch));
    }
    // A token built without packing works its values out on each allow.
    let plain = claims_token("https://issuer.test/", "u", json!({"sub": "u", "email": "a@b"}));
    let values = plain.identity_values(&policy).expect("values");
    assert_eq!([values.get(0), values.get(1), values.get(2)], [Some("u"), None, Some("a@b")]);
}

/// Issue 36: a cached token writes its subject and `iss` once. A `sub` or `iss` member equal to
/// them is left out of the packed JSON and read back; a header value equal to either is a
/// marker line; anything else (another `iss`, a value that needed encoding) is kept as it is.
#[test]
fn the_packed_token_writes_sub_and_iss_once_and_reads_them_back() {
    let policy = ResponsePolicy {
        identity_headers: vec![
            IdentityHeader { name: "x-user-id".into(), source: IdentitySource::Claim("/sub".into()) },
            IdentityHeader { name: "x-user-issuer".into(), source: IdentitySource::Claim("/iss".into()) },
            IdentityHeader { name: "x-tenant-id".into(), source: IdentitySource::Tenant },
            IdentityHeader { name: "x-name".into(), source: IdentitySource::Claim("/name".into()) },
        ]
        .into(),
        ..Default::default()
    };
    let claims = json!({"iss": "https://issuer.test/", "sub": "alice", "name": "alice", "jti": "j1"});
    let token = packed_token("alice", claims.clone(), &policy.identity_headers);
    let packed_json = r#"{"jti":"j1","name":"alice"}"#;
    assert_eq!(token.heap_bytes(), "alice".len() + "\u{1}\n\u{2}\n\n\u{1}".len() + packed_json.len());
    for (name, value) in claims.as_object().expect("object") {
        assert_eq!(token.claims.get(name), Some(value), "{name} read back");
    }
    assert_eq!(token.claims.len(), 4, "nothing added twice");
    assert_eq!(token.claims, Claims::from(claims), "the same members as unpacked claims");
    let values = token.identity_values(&policy).expect("values");
    let got: Vec<_> = (0..4).map(|i| values.get(i)).collect();
    assert_eq!(got, [Some("alice"), Some("https://issuer.test/"), None, Some("alice")]);
    // An `iss` member other than the issuer's (never verified, but packing must not lose it),
    // and a subject that needs encoding, are kept as written.
    let odd = json!({"iss": "https://other.test/", "sub": "a b"});
    let token = packed_token("a b", odd.clone(), &policy.identity_headers);
    assert_eq!(token.claims.get("iss"), Some(&json!("https://other.test/")));
    assert_eq!(token.claims.get("sub"), Some(&json!("a b")));
    let values = token.identity_values(&policy).expect("values");
    assert_eq!([values.get(0), values.get(1)], [Some("a%20b"), Some("https://other.test/")]);
    // Claims of no token gain nothing and lose nothing, an empty `sub` included.
    assert_eq!(Claims::from(json!({"x": 1})).len(), 1);
    assert_eq!(Claims::from(json!({"sub": ""})).get("sub"), Some(&json!("")));
    // A token names its issuer and subject: claims without either make none.
    assert!(Claims::for_token("https://issuer.test/", "", json!({})).is_err(), "no subject");
    let no_issuer = Claims::from(json!({"sub": "alice"}));
    assert!(VerifiedToken::new(IssuerId(0), no_issuer, None, NOW, None.into(), None.into(), 0).is_err());
    let claims = Claims::for_token("https://issuer.test/", "alice", json!({})).expect("claims");
    let token = VerifiedToken::new(IssuerId(0), claims, None, NOW, None.into(), None.into(), 0).expect("token");
    assert_eq!([token.iss(), token.subject()], ["https://issuer.test/", "alice"]);
}

#[test]
fn an_optional_time_keeps_every_value_but_its_sentinel() {
    for t in [None, Some(0), Some(-1), Some(1_700_000_000), Some(i64::MAX), Some(i64::MIN + 1)] {
        assert_eq!(OptionalTime::from(t).get(), t);
    }
    assert_eq!(OptionalTime::from(Some(i64::MIN)).get(), Some(i64::MIN + 1), "never read as absent");
    assert_eq!(std::mem::size_of::<OptionalTime>(), 8);
}

/// Issue 32: `ip.allow` holds for the resolved client, a trusted proxy that forwards no
/// client included, unless the policy exempts such proxies by name.
#[test]
fn ip_allow_holds_for_trusted_proxies_too() {
    struct Never;
    impl TokenVerifier for Never {
        fn verify(&self, _: &str) -> Result<VerifiedToken, TokenError> {
            Err(TokenError::Malformed("never"))
        }
    }
    let services = Services::stateless(&Never);
    let mut ip = IpPolicy {
        allow: cidrs(&["203.0.113.0/24"]),
        deny: cidrs(&["203.0.113.66"]),
        trusted: cidrs(&["10.0.0.0/8"]),
        ..IpPolicy::default()
    };
    let client = |addr: &str, trusted: bool| Some(ClientIp { addr: addr.parse().expect("ip"), trusted });
    let cases = [
        (client("203.0.113.7", false), false, true),
        (client("198.51.100.7", false), false, false),
        (client("203.0.113.66", false), false, false),
        // A pod in trusted_cidrs sending no x-forwarded-for is the client itself.
        (client("10.1.2.3", true), false, false),
        (client("10.1.2.3", true), true, true),
        // Exempted from allow, a trusted proxy is still never denied or blocked.
        (None, false, false),
    ];
    for (client, exempt, passes) in cases {
        ip.allow_trusted_proxies = exempt;
        let got = super::decide::ip_deny(&ip, client, &services, UnixTime(0));
        assert_eq!(got.is_none(), passes, "{client:?} exempt={exempt}: {got:?}");
    }
}
