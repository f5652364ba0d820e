//! Config parsing and validation: every problem reported, each with its path.

use super::*;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn problems(yaml: &str) -> Vec<String> {
    match parse_and_validate(yaml, &fixtures()) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid(p)) => p.lines(),
        Err(other) => vec![format!("<{other}>")],
    }
}

const BASE: &str = r#"
issuers:
  - issuer: https://issuer.test/
    audiences: [api]
    algorithms: [RS256]
    jwks: { file: keys/jwks.json }
routes:
  - { match: { path_prefix: / }, require: { scopes: [read] } }
"#;

#[test]
fn fixture_policy_is_valid() {
    let settings = load_file(&fixtures().join("policy.yaml")).expect("valid");
    assert_eq!(settings.snapshot.verifier.issuers.len(), 3);
    assert_eq!(settings.max_inflight_checks, 64);
    assert!(problems(BASE).is_empty(), "{:?}", problems(BASE));
}

#[test]
fn design_example_is_valid_apart_from_its_files() {
    let text = std::fs::read_to_string(fixtures().join("design-example.yaml")).expect("example");
    let found = problems(&text);
    assert!(!found.iter().any(|p| p.starts_with('<')), "schema must accept the DESIGN example: {found:?}");
    // Every section is built: the only problems are the /etc/portcullis files this machine lacks
    // and (a deliberate deviation, issue 32) its memory backend that would forget admin writes.
    let expected = |p: &String| p.contains("cannot read /etc/portcullis/") || p.contains("state: the memory backend");
    assert!(!found.is_empty() && found.iter().all(expected), "{found:?}");
}

#[test]
fn three_mistakes_are_all_reported_with_paths() {
    let yaml = std::fs::read_to_string(fixtures().join("three-mistakes.yaml")).expect("fixture");
    let found = problems(&yaml);
    let want = [
        r#"issuers[0].algorithms[1]: unknown algorithm "RS999""#,
        "issuers[0].leeway: must be at most 5m",
        "routes[0].match.path_regex: invalid regex",
    ];
    for w in want {
        assert!(found.iter().any(|p| p.contains(w)), "missing {w:?} in {found:?}");
    }
    assert_eq!(found.len(), 3, "{found:?}");
}

#[test]
fn validation_table() {
    let cases: &[(&str, &str, &str)] = &[
        ("alg none", "algorithms: [RS256]", "algorithms: [none]"),
        ("mixed hmac", "algorithms: [RS256]", "algorithms: [RS256, HS256]"),
        ("no audience", "audiences: [api]", "audiences: []"),
        ("dev issuer", "issuer: https://issuer.test/", "issuer: urn:portcullis:dev"),
        ("small rsa", "keys/jwks.json", "keys/jwks-rsa1024.json"),
        ("missing file", "keys/jwks.json", "keys/nope.json"),
        ("bad listen", "issuers:", "listen: { grpc: \"localhost\" }\nissuers:"),
        ("unix health", "issuers:", "listen: { health: \"unix:/tmp/x\" }\nissuers:"),
        ("jwks url", "jwks: { file: keys/jwks.json }", "jwks: { url: http://idp.example.com/jwks }"),
        ("prefix", "path_prefix: /", "path_prefix: api"),
        ("two path kinds", "path_prefix: /", "path_prefix: /, path_exact: /x"),
        ("public with require", "require: { scopes: [read] }", "public: true, require: { scopes: [read] }"),
        ("tenant requirement", "scopes: [read]", "tenant: true"),
        ("bad duration", "algorithms: [RS256]", "algorithms: [RS256]\n    leeway: soon"),
        ("version", "issuers:", "version: 2\nissuers:"),
        ("sub-second cache ttl", "issuers:", "cache: { ttl: 1500ms }\nissuers:"),
        ("no cache entries", "issuers:", "cache: { max_entries: 0 }\nissuers:"),
    ];
    for (name, from, to) in cases {
        let yaml = BASE.replacen(from, to, 1);
        assert_ne!(yaml, BASE, "{name}: replacement did not apply");
        assert!(!problems(&yaml).is_empty(), "{name}: accepted");
    }
}

#[test]
fn unknown_fields_and_bad_yaml_are_refused() {
    let unknown = format!("{BASE}\nsurprise: 1\n");
    assert!(problems(&unknown).iter().any(|p| p.contains("surprise: unknown key \"surprise\"")));
    let nested = BASE.replace("audiences: [api]", "audiences: [api]\n    audience: api");
    let found = problems(&nested);
    assert!(
        found.iter().any(|p| p.contains("issuers[0].audience: unknown key \"audience\": did you mean \"audiences\"?")),
        "{found:#?}"
    );
    match parse_and_validate_named("issuers: [", &fixtures(), "team.yaml") {
        Err(ConfigError::Parse(e)) => assert!(e.starts_with("team.yaml:1:10: invalid YAML: "), "{e}"),
        other => panic!("{other:?}"),
    }
}

/// The policy of issue 24: an unknown key, a bad algorithm and a bad duration, all reported at
/// once with their lines; a misspelt key and algorithm get a suggestion.
#[test]
fn three_mistakes_are_reported_together_with_their_lines() {
    let text = "issuers:\n  - issuer: https://issuer.test/\n    audiences: [api]\n    algoritms: [RS256]\n    algorithms: [rs256]\n    leeway: five minutes\n    jwks: { file: keys/jwks.json }\nroutes:\n  - { match: { path_prefix: / }, require: { scopes: [read] } }\n";
    let found = match parse_and_validate_named(text, &fixtures(), "team.yaml") {
        Err(ConfigError::Invalid(p)) => p.lines(),
        other => panic!("{other:?}"),
    };
    let want = [
        "team.yaml:4:5: issuers[0].algoritms: unknown key \"algoritms\": did you mean \"algorithms\"?",
        "team.yaml:5:18: issuers[0].algorithms[0]: unknown algorithm \"rs256\": did you mean \"RS256\"? (supported: ",
        "team.yaml:6:5: issuers[0].leeway: \"five minutes\" is not a duration",
    ];
    for w in want {
        assert!(found.iter().any(|p| p.starts_with(w)), "missing {w:?} in {found:#?}");
    }
    assert_eq!(found.len(), 3, "{found:#?}");
}

#[test]
fn hmac_and_pem_sources() {
    let hmac = BASE
        .replace("algorithms: [RS256]", "algorithms: [HS256]")
        .replace("jwks: { file: keys/jwks.json }", "hmac_secret_file: keys/hmac.secret");
    assert!(problems(&hmac).is_empty(), "{:?}", problems(&hmac));
    let hmac_from_pem = BASE
        .replace("algorithms: [RS256]", "algorithms: [HS256]")
        .replace("jwks: { file: keys/jwks.json }", "pem_files: [keys/rsa.pub.pem]");
    assert!(!problems(&hmac_from_pem).is_empty());
    let short = BASE
        .replace("algorithms: [RS256]", "algorithms: [HS384]")
        .replace("jwks: { file: keys/jwks.json }", "hmac_secret_file: keys/hmac.secret");
    assert!(problems(&short).iter().any(|p| p.contains("at least 48")), "{:?}", problems(&short));
    let pem = BASE.replace("jwks: { file: keys/jwks.json }", "pem_files: [keys/rsa.pub.pem]");
    assert!(problems(&pem).is_empty(), "{:?}", problems(&pem));
    let small_pem = BASE.replace("jwks: { file: keys/jwks.json }", "pem_files: [keys/rsa-1024.pub.pem]");
    assert!(problems(&small_pem).iter().any(|p| p.contains("2048")), "{:?}", problems(&small_pem));
    let private = BASE.replace("jwks: { file: keys/jwks.json }", "pem_files: [keys/rsa.pem]");
    assert!(!problems(&private).is_empty(), "a private key file must be refused");
}

#[test]
fn unix_grpc_listener() {
    let yaml = format!("listen: {{ grpc: \"unix:/run/portcullis.sock\" }}\n{BASE}");
    let settings = parse_and_validate(&yaml, &fixtures()).expect("valid");
    assert_eq!(settings.grpc, ListenAddr::Unix("/run/portcullis.sock".into()));
}

/// `listen.state_stream`: a unix socket of its own (binding the gRPC socket's path would delete
/// that socket's file and Envoy would reach the stream).
#[test]
fn the_state_stream_is_a_unix_socket_of_its_own() {
    let listen = |stream: &str| format!("listen: {{ grpc: \"unix:/run/p.sock\", state_stream: \"{stream}\" }}\n{BASE}");
    let same = problems(&listen("unix:/run/p.sock"));
    assert!(same.iter().any(|p| p.contains("listen.state_stream") && p.contains("of its own")), "{same:?}");
    let tcp = problems(&listen("127.0.0.1:9"));
    assert!(tcp.iter().any(|p| p.contains("listen.state_stream") && p.contains("unix socket only")), "{tcp:?}");
    let settings = parse_and_validate(&listen("unix:/run/state.sock"), &fixtures()).expect("valid");
    assert_eq!(settings.listen.state_stream, Some("/run/state.sock".into()));
}

#[test]
fn control_sections_report_every_mistake_with_its_path() {
    let yaml = r#"
issuers:
  - issuer: https://issuer.test/
    audiences: [api]
    algorithms: [RS256]
    jwks: { file: keys/jwks.json }
credentials:
  cookies: [session_jwt]
  api_keys: { header: Authorization, prefix: "PK-", file: api-keys.yaml }
  csrf: { allowed_origins: ["https://app.example.com/path", "*.example.com"], double_submit: { cookie: "a b", header: X-Csrf } }
sessions: { idle_timeout: 10s, granularity: 6s, claim: sid }
routes:
  - { match: { path_prefix: /a }, require: { step_up: {} } }
  - { match: { path_prefix: /b }, require: { step_up: { max_auth_age: soon } } }
  - { match: { path_prefix: /c }, require: { source_principals: ["cluster.local/ns/x", "spiffe://a/*/b"] } }
response:
  security_headers: { x-frame-options: "", server: portcullis }
"#;
    let found = problems(yaml);
    let want = [
        "credentials.api_keys.header:",
        "credentials.api_keys.prefix:",
        "credentials.csrf.allowed_origins[0]:",
        "credentials.csrf.allowed_origins[1]:",
        "credentials.csrf.double_submit.cookie:",
        "credentials.csrf.double_submit.header:",
        "sessions.granularity:",
        "sessions.claim:",
        "routes[0].require.step_up:",
        "routes[1].require.step_up.max_auth_age:",
        "routes[2].require.source_principals[0]:",
        "routes[2].require.source_principals[1]:",
        "response.security_headers.x-frame-options:",
        "response.security_headers.server:",
    ];
    for w in want {
        assert!(found.iter().any(|p| p.contains(w)), "missing {w:?} in {found:#?}");
    }
    assert!(problems("sessions: {}\n").iter().any(|p| p.contains(": sessions.idle_timeout: required")));
}

#[test]
fn api_key_file_entries_are_checked() {
    let dir = std::env::temp_dir().join(format!("portcullis-keyfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("keys.yaml"),
        format!(
            "keys:\n  - {{ name: a, sha256: {d} }}\n  - {{ name: a, sha256: {d} }}\n  - {{ name: b, sha256: xyz, expires: never }}\n",
            d = "ab".repeat(32)
        ),
    )
    .expect("write");
    let yaml = BASE.replace("routes:", "credentials: { api_keys: { file: keys.yaml } }\nroutes:").replace(
        "jwks: { file: keys/jwks.json }",
        &format!("jwks: {{ file: {} }}", fixtures().join("keys/jwks.json").display()),
    );
    let found = match parse_and_validate(&yaml, &dir) {
        Err(ConfigError::Invalid(p)) => p.lines(),
        other => panic!("expected problems, got {other:?}"),
    };
    for w in ["keys[1].name: duplicate", "keys[1].sha256: the same key", "keys[2].sha256:", "keys[2].expires:"] {
        assert!(found.iter().any(|p| p.contains(w)), "missing {w:?} in {found:#?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn header_query_deny_and_boolean_requirements() {
    let good = BASE.replace(
        "routes:\n",
        r#"routes:
  - name: no-debug
    match: { path_prefix: /, query: { debug: { present: true } } }
    deny: true
    reason: debug mode is not served through the mesh
  - name: canary-admins
    match: { path_prefix: /admin, headers: { x-canary: { equals: "1" }, x-build: { regex: "[0-9]+" } } }
    require:
      any_of: [{ scopes: [admin] }, { roles: [ops], not: { claims: [{ path: /suspended, equals: true }] } }]
"#,
    );
    let settings = parse_and_validate(&good, &fixtures()).unwrap_or_else(|e| panic!("{e}"));
    let routes = &settings.snapshot.policy.routes;
    assert!(matches!(&routes[0].access, crate::decision::Access::Deny(why) if why.starts_with("debug mode")));
    assert_eq!(routes[1].matcher.headers.len(), 2);
    let crate::decision::Access::Required(req) = &routes[1].access else { panic!("required") };
    assert_eq!(req.any_of.len(), 2);
    assert!(req.any_of[1].not.is_some());
    let bad = BASE.replace(
        "routes:\n",
        r#"routes:
  - match: { path_prefix: /a, headers: { X-Env: { equals: a }, x-b: { present: true, equals: b } } }
    deny: true
    require: { scopes: [x] }
  - match: { path_prefix: /b, query: { v: { regex: "[0-9" }, "filter[status]": { equals: all }, de.bug: { present: true } } }
    reason: why
  - match: { path_regex: "/c/(" }
    require: { any_of: [{ tenant: true }], not: {} }
"#,
    );
    let found = problems(&bad);
    for want in [
        "routes[0].match.headers.X-Env: a lowercase header name",
        "routes[0].match.headers.x-b: exactly one of present: true, equals or regex",
        "routes[0].deny: a deny route takes neither",
        "routes[1].match.query.v.regex: invalid regex \"[0-9\": unclosed character class",
        "routes[1].match.query.filter.status: a query parameter name of letters, digits",
        "routes[1].match.query.de.bug: a query parameter name of letters, digits",
        "routes[1].reason: only a deny: true route",
        "routes[2].match.path_regex: invalid regex \"/c/(\": unclosed group",
        "routes[2].require.any_of[0]: only scopes, roles",
        "routes[2].require.any_of[0]: empty",
        "routes[2].require.not: empty",
    ] {
        assert!(found.iter().any(|p| p.contains(want)), "missing {want:?} in {found:#?}");
    }
}

/// Issue 32: the memory backend without a journal would forget admin-API writes, auto-blocks
/// and session times at a restart: refused unless `state.dir` or the acknowledgment is set.
#[test]
fn the_memory_backend_needs_a_journal_or_an_acknowledgment() {
    let with_blocks = format!(
        "{BASE}ip: {{ trusted_cidrs: [10.0.0.0/8], auto_block: {{ failures: 5, window: 1m, block_for: 5m }} }}\n"
    );
    let found = problems(&with_blocks);
    assert!(
        found.iter().any(|p| p.contains("state: the memory backend keeps auto-blocks in this process only")
            && p.contains("set state.dir")),
        "{found:?}"
    );
    for state in [
        "state: { backend: memory, dir: /var/lib/portcullis }",
        "state: { backend: memory, acknowledge_ephemeral_state: true }",
    ] {
        let found = problems(&format!("{with_blocks}{state}\n"));
        assert!(found.is_empty(), "{state}: {found:?}");
    }
    assert!(problems(BASE).is_empty(), "a policy that writes no run-time state needs neither");
    let both = format!("{with_blocks}state: {{ backend: memory, dir: x, acknowledge_ephemeral_state: true }}\n");
    assert!(problems(&both).iter().any(|p| p.contains("state.acknowledge_ephemeral_state: contradicts")));
    let redis = format!("{BASE}state: {{ backend: redis, url: \"redis://127.0.0.1:1\", dir: x }}\n");
    assert!(problems(&redis).iter().any(|p| p.contains("state.dir: only applies with backend: memory")));
}

/// Issue 35: issuer templates — `{tenant}` once in `issuer`, with the tenants it accepts (ids
/// that cannot change the URL); `tenants` only with a template.
#[test]
fn issuer_templates_are_checked() {
    let issuer = |head: &str| {
        format!(
            "issuers:\n  - {{ {head}, audiences: [api], algorithms: [RS256], jwks: {{ file: keys/jwks.json }} }}\nroutes:\n  - {{ match: {{ path_prefix: / }}, require: {{ scopes: [read] }} }}\n"
        )
    };
    let ok = issuer(r#"issuer: "https://login.example.com/{tenant}/v2.0", tenants: [a-1, b.2]"#);
    let settings = parse_and_validate(&ok, &fixtures()).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = settings.snapshot.verifier.issuers.iter().map(|i| i.issuer.to_string()).collect();
    assert_eq!(names, ["https://login.example.com/a-1/v2.0", "https://login.example.com/b.2/v2.0"]);
    let cases = [
        (r#"issuer: "https://login.example.com/{tenant}/v2.0""#, "issuers[0].tenants: an issuer template needs"),
        (r#"issuer: "https://login.example.com/v2.0", tenants: [a]"#, "issuers[0].tenants: only applies"),
        (r#"issuer: "https://login.example.com/{tenant}/v2.0", tenants: ["a/../b"]"#, "issuers[0].tenants[0]:"),
        (
            r#"issuer: "https://{tenant}.example.com/{tenant}", tenants: [a]"#,
            "issuers[0].issuer: an issuer template holds",
        ),
    ];
    for (head, want) in cases {
        let found = problems(&issuer(head));
        assert!(found.iter().any(|p| p.contains(want)), "{head}: {found:?}");
    }
}

/// `state.cluster`: one target only, nodes as host:port, and no braces in the prefix (they
/// would move keys between hash slots).
#[test]
fn redis_cluster_settings_are_checked() {
    let state = |s: &str| problems(&format!("{BASE}state: {{ backend: redis, {s} }}\n"));
    assert!(state(r#"cluster: { nodes: ["127.0.0.1:7000"] }"#).is_empty(), "{:?}", state("cluster: {}"));
    let both = state(r#"url: "redis://127.0.0.1:1", cluster: { nodes: ["127.0.0.1:7000"] }"#);
    assert!(both.iter().any(|p| p.contains("state.url") && p.contains("one of url, sentinel or cluster")), "{both:?}");
    let empty = state("cluster: { nodes: [] }");
    assert!(empty.iter().any(|p| p.contains("state.cluster.nodes") && p.contains("at least one")), "{empty:?}");
    let port = state(r#"cluster: { nodes: ["127.0.0.1"] }"#);
    assert!(port.iter().any(|p| p.contains("state.cluster.nodes[0]")), "{port:?}");
    let braces = state(r#"cluster: { nodes: ["127.0.0.1:7000"] }, key_prefix: "{app}""#);
    assert!(braces.iter().any(|p| p.contains("state.key_prefix") && p.contains("braces")), "{braces:?}");
}
