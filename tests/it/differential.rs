//! The request grammar's proof (issue 31): a differential fuzzer. Requests are generated from an
//! edge alphabet — path bytes and escapes, Unicode forms, dots, slashes and format suffixes,
//! method spellings, header names (dots, underscores, duplicates), query keys (brackets, NUL,
//! case, PHP mangling) and separators, hosts — and each goes through the shipped Envoy config to
//! every real upstream. Whenever a handler runs, the oracle (`support/upstreams.rs`) checks the
//! request as that framework understood it against Portcullis: a handler that ran for a request
//! Portcullis denies for that handler, or under another handler's route, or that saw another
//! identity, fails the test. Failing requests are printed in the `trick(…)` form: keep each
//! as a table case in `tests/it/upstreams.rs`.
//!
//! CI runs a bounded run with a fixed seed (`PORTCULLIS_DIFFERENTIAL_REQUESTS`, default 250
//! requests × 9 upstreams); `scripts/differential.sh N SEED` runs longer ones (BENCHMARKS.md).

use crate::support::now;
use crate::support::upstreams::{Fleet, Trick, tokens};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// Route shapes of the upstream apps and the policy (tests/upstreams/README.md).
const BASES: &[&str] = &[
    "/admin",
    "/admin/users",
    "/admin/critical/rotate-keys",
    "/tenants/acme/docs",
    "/tenants/globex/admin/users",
    "/items",
    "/reports",
    "/me",
    "/public/x",
    "/orders/1/refund",
    "/orders/7",
    "/elsewhere",
    "/",
];

/// What can be done to one segment's spelling.
const SEGMENT_EDITS: &[&str] = &[
    "upper",
    "title",
    "suffix",
    "slash",
    "dot",
    "semicolon",
    "escape",
    "unicode",
    "digit",
    "double",
    "dotdot",
    "space",
];

const SUFFIXES: &[&str] = &[".json", ".JSON", ".x-y", ".verylongext", ".", ".json/", ".a.b", "%2Ejson", ".tar.gz"];

/// Escaped sequences that some reader takes for something else.
const UNICODE: &[&str] = &[
    "%EF%BC%91", // fullwidth 1
    "%D9%A1",    // Arabic-Indic 1
    "%E0%A5%A7", // Devanagari 1
    "%E2%84%AA", // Kelvin sign (lowercases to k)
    "%C5%BF",    // long s (uppercases to S)
    "%C4%B1",    // dotless i (uppercases to I)
    "%EF%BC%8F", // fullwidth solidus
    "%EF%AC%81", // fi ligature
    "%C3%A9",    // é (no ASCII reading: a control)
    "%E6%97%A5", // 日 (no ASCII reading: a control)
    "%61",       // an escaped unreserved letter
    "%2F",       // an escaped slash
    "%2e%2e",    // escaped dot-dot
    "%3B",       // escaped semicolon
    "%00",       // NUL
    "%25",       // escaped percent
];

const QUERY_KEYS: &[&str] = &[
    "debug",
    "DEBUG",
    "[debug]",
    "%5Bdebug%5D",
    "]]debug",
    "[[debug]]",
    "debug[]",
    "debug[x]",
    "debug%00x",
    "de.bug",
    "+debug",
    "%64ebug",
    "_method",
    "_method%00",
    "%5Fmethod",
    ".method",
    "_METHOD",
    "_method[]",
    "page",
    "ids[]",
    "x[debug]",
    "debugger",
];

const QUERY_VALUES: &[&str] = &["1", "DELETE", "", "a%00b", "x;debug=1"];

/// (Not `x-vhost`: that is the harness's own channel from nginx and HAProxy to the oracle.)
const HEADER_NAMES: &[&str] = &[
    "x-trace",
    "accept",
    "x-request-start",
    "x-debug",
    "x.debug",
    "x_debug",
    "x-user-id",
    "x.user.id",
    "x_user_id",
    "x-tenant-id",
    "x.tenant.id",
    "x-http-method-override",
    "x.http.method.override",
    "x-forwarded-host",
    "x.forwarded.host",
    "x-trace",
];

const HEADER_VALUES: &[&str] = &["1", "admin", "DELETE", "admin.example.com", "globex", "acme"];

const HOSTS: &[&str] = &[
    "api.example.com",
    "api.example.com",
    "api.example.com",
    "admin.example.com",
    "ADMIN.example.com",
    "admin.example.com.",
    "acme.tenants.example.com",
    "globex.tenants.example.com",
    "api.example.com:80",
];

const METHODS: &[&str] =
    &["GET", "GET", "GET", "GET", "GET", "GET", "POST", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "delete"];

fn edit_segment(rng: &mut StdRng, segment: &str) -> String {
    match *SEGMENT_EDITS.choose(rng).unwrap_or(&"upper") {
        "upper" => segment.to_ascii_uppercase(),
        "title" => {
            let mut chars = segment.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        }
        "suffix" => format!("{segment}{}", SUFFIXES.choose(rng).unwrap_or(&".json")),
        "slash" => format!("{segment}/"),
        "dot" => format!("{segment}."),
        "semicolon" => format!("{segment};x"),
        "escape" if !segment.is_empty() => {
            let at = rng.random_range(0..segment.len());
            format!("{}%{:02X}{}", &segment[..at], segment.as_bytes()[at], &segment[at + 1..])
        }
        "unicode" if !segment.is_empty() => {
            let at = rng.random_range(0..=segment.len());
            format!("{}{}{}", &segment[..at], UNICODE.choose(rng).unwrap_or(&"%C3%A9"), &segment[at..])
        }
        "digit" => segment.replace('1', UNICODE[rng.random_range(0..3)]),
        "double" => format!("/{segment}"),
        "dotdot" => format!("public/../{segment}"),
        "space" => format!("{segment}%20"),
        _ => segment.to_string(),
    }
}

/// One generated request; `bearers` are the tokens it may carry.
fn generate(rng: &mut StdRng, n: usize, bearers: &[String]) -> Trick {
    let base = BASES.choose(rng).unwrap_or(&"/");
    let mut segments: Vec<String> = base.split('/').skip(1).map(str::to_string).collect();
    // Half the requests keep their path's spelling, so that handlers run and the oracle reads
    // what they saw (the edge is in the query and headers then).
    let edits = if rng.random_bool(0.65) { 0 } else { rng.random_range(1..=2) };
    for _ in 0..edits {
        let at = rng.random_range(0..segments.len());
        segments[at] = edit_segment(rng, &segments[at]);
    }
    let mut path = format!("/{}", segments.join("/"));
    if rng.random_bool(0.6) {
        let separator = if rng.random_bool(0.8) { "&" } else { ";" };
        let pairs: Vec<String> = (0..rng.random_range(1..=3))
            .map(|_| {
                let key = if rng.random_bool(0.5) { &"page" } else { QUERY_KEYS.choose(rng).unwrap_or(&"page") };
                match rng.random_range(0..4) {
                    0 => key.to_string(),
                    _ => format!("{key}={}", QUERY_VALUES.choose(rng).unwrap_or(&"1")),
                }
            })
            .collect();
        // Now and then another '?' first (php -S and httptools skip it).
        let lead = if rng.random_bool(0.05) { "?" } else { "" };
        path = format!("{path}?{lead}{}", pairs.join(separator));
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(bearer) = bearers.choose(rng).filter(|_| rng.random_bool(0.7)) {
        headers.push(("authorization".into(), format!("Bearer {bearer}")));
    }
    for _ in 0..if rng.random_bool(0.6) { 0 } else { rng.random_range(1..=2) } {
        let name = HEADER_NAMES.choose(rng).unwrap_or(&"x-trace");
        let value = HEADER_VALUES.choose(rng).unwrap_or(&"1");
        headers.push((name.to_string(), value.to_string()));
        if rng.random_bool(0.1) {
            headers.push((name.to_string(), "0".into()));
        }
    }
    let method = METHODS.choose(rng).unwrap_or(&"GET").to_string();
    let host = if rng.random_bool(0.5) { "api.example.com" } else { HOSTS.choose(rng).unwrap_or(&"api.example.com") };
    Trick {
        name: format!("generated #{n}"),
        method,
        hosts: vec![host.to_string()],
        path,
        headers,
        http2: rng.random_bool(0.2),
    }
}

/// The request as a `trick(…)` line for `tests/it/upstreams.rs`.
fn as_case(t: &Trick) -> String {
    let headers: Vec<String> = t
        .headers
        .iter()
        .map(|(k, v)| if k == "authorization" { format!("({k:?}, <token>)") } else { format!("({k:?}, {v:?})") })
        .collect();
    format!(
        "trick({:?}, {:?}, {:?}, &[{}]).on(&{:?}){}",
        t.name,
        t.method,
        t.path,
        headers.join(", "),
        t.hosts,
        if t.http2 { ".h2()" } else { "" }
    )
}

#[test]
fn generated_requests_reach_no_handler_portcullis_would_deny() {
    let count: usize =
        std::env::var("PORTCULLIS_DIFFERENTIAL_REQUESTS").ok().and_then(|n| n.parse().ok()).unwrap_or(250);
    let seed: u64 = std::env::var("PORTCULLIS_DIFFERENTIAL_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or(31);
    let fleet = Fleet::start("differential");
    let (viewer, admin, _, forged, _, plain) = tokens(now());
    // The admin token passes most routes, so most requests reach a handler when nothing else
    // stops them.
    let bearers = [viewer, admin.clone(), admin.clone(), admin, forged, plain];
    let mut rng = StdRng::seed_from_u64(seed);
    let requests: Vec<Trick> = (0..count).map(|n| generate(&mut rng, n, &bearers)).collect();
    let (mut ran, mut sent) = (0usize, 0usize);
    let mut failing: Vec<(String, String)> = Vec::new();
    for (name, envoy) in &fleet.envoys {
        for t in &requests {
            sent += 1;
            for violation in fleet.judge(name, envoy, t, &mut ran) {
                failing.push((violation, as_case(t)));
            }
        }
    }
    eprintln!(
        "differential: seed {seed}, {count} requests × {} upstreams = {sent} sent, {ran} reached a handler, {} disagreements",
        fleet.envoys.len(),
        failing.len()
    );
    let report: Vec<String> = failing.iter().map(|(v, case)| format!("{v}\n    {case}")).collect();
    assert!(failing.is_empty(), "{} disagreements (keep each as a table case):\n{}", failing.len(), report.join("\n"));
    // The generator must reach handlers, or the run proves nothing.
    assert!(ran * 20 > sent, "only {ran} of {sent} requests reached a handler");
}
