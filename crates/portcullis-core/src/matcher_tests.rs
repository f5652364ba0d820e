//! Tables for route matchers on headers and the query, and `require.any_of` / `require.not`.

use super::request_match::{ValueMatcher, ValueTest};
use super::*;
use serde_json::json;

fn route(name: &str, headers: Vec<ValueMatcher>, query: Vec<ValueMatcher>) -> Route {
    Route {
        name: name.into(),
        matcher: RouteMatch {
            host: None,
            path: PathMatch::Prefix("/".into()),
            methods: Vec::new(),
            case_sensitive: false,
            strict_slash: false,
            strict_suffix: false,
            headers,
            query,
        },
        access: Access::Public,
        rate_limit: None,
        dry_run: false,
    }
}

fn m(name: &str, test: ValueTest) -> ValueMatcher {
    ValueMatcher { name: name.into(), test }
}

fn re(pattern: &str) -> ValueTest {
    ValueTest::Regex(regex::Regex::new(&format!("^(?:{pattern})$")).expect("regex"))
}

#[test]
fn header_and_query_matchers_table() {
    let routes = vec![
        route("canary", vec![m("x-env", ValueTest::Equals("canary".into()))], Vec::new()),
        route("debug", Vec::new(), vec![m("debug", ValueTest::Present)]),
        route("versioned", Vec::new(), vec![m("v", re("[0-9]+"))]),
        route("all", Vec::new(), Vec::new()),
    ];
    let h = |name: &str, value: &str| (name.to_string(), value.to_string());
    type Case<'a> = (&'a str, Vec<(String, String)>, Result<&'a str, DenyReason>);
    let cases: Vec<Case> = vec![
        ("/x", vec![], Ok("all")),
        ("/x", vec![h("x-env", "canary")], Ok("canary")),
        ("/x", vec![h("x-env", "stable")], Ok("all")),
        ("/x", vec![h("x-env", "Canary")], Ok("all")),
        // Copies that read differently: one upstream takes the first, another the last.
        ("/x", vec![h("x-env", "canary"), h("x-env", "stable")], Err(DenyReason::InvalidRequest)),
        ("/x", vec![h("x-env", "canary, stable")], Err(DenyReason::InvalidRequest)),
        ("/x", vec![h("x-env", "canary"), h("x-env", "canary")], Ok("canary")),
        ("/x?debug", vec![], Ok("debug")),
        ("/x?debug=0", vec![], Ok("debug")),
        ("/x?%64ebug=1", vec![], Ok("debug")),
        ("/x?debugger=1", vec![], Ok("all")),
        ("/x#?debug", vec![], Ok("all")),
        // `a=1;debug=1` is one pair to Werkzeug and two to a `;`-splitting parser.
        ("/x?a=1;debug=1", vec![], Err(DenyReason::InvalidRequest)),
        ("/x?v=12", vec![], Ok("versioned")),
        ("/x?v=1%32", vec![], Ok("versioned")),
        ("/x?v=12x", vec![], Ok("all")),
        ("/x?v=12&v=x", vec![], Err(DenyReason::InvalidRequest)),
        ("/x?v=12&v=3", vec![], Ok("versioned")),
        // Other spellings some framework reads as the same key: qs/Rack/PHP arrays, PHP's
        // mangling, ASP.NET's case folding.
        ("/x?debug[]=1", vec![], Err(DenyReason::InvalidRequest)),
        ("/x?debug%5B0%5D=1", vec![], Err(DenyReason::InvalidRequest)),
        ("/x?DEBUG=1", vec![], Err(DenyReason::InvalidRequest)),
        ("/x?+debug=1", vec![], Err(DenyReason::InvalidRequest)),
        ("/x?V=x", vec![], Err(DenyReason::InvalidRequest)),
        // With array syntax allowed (grammar.query_arrays), every framework reading still
        // counts: qs's leading bracket, Rack's stripped brackets, PHP's NUL cut.
        ("/x?[debug]=1", vec![], Err(DenyReason::InvalidRequest)),
        ("/x?%5Bdebug%5D=1", vec![], Err(DenyReason::InvalidRequest)),
        ("/x?]]debug=1", vec![], Err(DenyReason::InvalidRequest)),
        ("/x?[[debug]]=1", vec![], Err(DenyReason::InvalidRequest)),
        ("/x?debug%00x=1", vec![], Err(DenyReason::InvalidRequest)),
        ("/x?x[debug]=1", vec![], Ok("all")),
    ];
    for (target, headers, want) in cases {
        let input = CheckInput {
            method: "GET".into(),
            host: "a.test".into(),
            path: target.into(),
            headers: headers.clone(),
            ..CheckInput::default()
        };
        let host = parse_authority("a.test").expect("host");
        let path = validate_path(target).expect("path");
        let got =
            find_route(&routes, &host, path, &input).map(|r| r.map_or("", |r| r.name.as_str())).map_err(|d| d.reason);
        assert_eq!(got, want, "{target} {headers:?}");
    }
}

fn token(claims: serde_json::Value) -> VerifiedToken {
    VerifiedToken {
        issuer: IssuerId(0),
        claims: Claims::for_token("https://issuer.test/", "u", claims).expect("claims"),
        exp: 0,
        nbf: None.into(),
        iat: None.into(),
        key_generation: 0,
        values_for: None,
    }
}

#[test]
fn any_of_and_not_table() {
    let scopes =
        |s: &[&str]| Requirements { scopes: s.iter().map(|s| s.to_string()).collect(), ..Requirements::default() };
    let roles =
        |r: &[&str]| Requirements { roles: r.iter().map(|s| s.to_string()).collect(), ..Requirements::default() };
    let suspended = Requirements {
        claims: vec![ClaimMatcher { pointer: "/suspended".into(), test: ClaimTest::Equals(json!(true)) }],
        ..Requirements::default()
    };
    let admin_or_ops = Requirements { any_of: vec![scopes(&["admin"]), roles(&["ops"])], ..Requirements::default() };
    let not_suspended = Requirements { not: Some(Box::new(suspended.clone())), ..Requirements::default() };
    let both = Requirements { scopes: vec!["read".into()], ..admin_or_ops.clone() };
    let nested = Requirements {
        any_of: vec![Requirements { not: Some(Box::new(roles(&["guest"]))), ..scopes(&["read"]) }, roles(&["ops"])],
        ..Requirements::default()
    };
    let cases: Vec<(&str, &Requirements, serde_json::Value, Option<DenyReason>)> = vec![
        ("any_of: the scope", &admin_or_ops, json!({"scope": "admin"}), None),
        ("any_of: the role", &admin_or_ops, json!({"roles": ["ops"]}), None),
        (
            "any_of: neither, the first's reason",
            &admin_or_ops,
            json!({"scope": "read"}),
            Some(DenyReason::InsufficientScope),
        ),
        ("not: absent claim", &not_suspended, json!({}), None),
        ("not: false", &not_suspended, json!({"suspended": false}), None),
        ("not: holds", &not_suspended, json!({"suspended": true}), Some(DenyReason::ClaimMismatch)),
        ("plain and any_of both", &both, json!({"scope": "read", "roles": ["ops"]}), None),
        ("plain fails first", &both, json!({"roles": ["ops"]}), Some(DenyReason::InsufficientScope)),
        ("nested: read, not guest", &nested, json!({"scope": "read"}), None),
        (
            "nested: read but guest",
            &nested,
            json!({"scope": "read", "roles": ["guest"]}),
            Some(DenyReason::ClaimMismatch),
        ),
        ("nested: ops", &nested, json!({"roles": ["guest", "ops"]}), None),
    ];
    for (name, req, claims, want) in cases {
        let got = requirements::check_requirements(&token(claims), req, "/roles").err().map(|d| d.reason);
        assert_eq!(got, want, "{name}");
    }
}
