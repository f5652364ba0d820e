//! The route index answers exactly as the linear scan: random policies (hosts exact, wildcard
//! and none; prefixes, exact paths and regexes; methods; the opt-outs) and random requests
//! (host and path case, trailing slashes, format suffixes, methods), compared.

use super::route::{Access, HostMatch, PathMatch, Route, RouteMatch, find_route, find_route_indexed};
use super::route_index::RouteIndex;
use super::*;
use proptest::prelude::*;

const HOSTS: [&str; 4] = ["a.example.com", "b.example.com", "x.a.example.com", "example.org"];
const PATHS: [&str; 6] = ["/", "/admin", "/admin/users", "/reports", "/api/v1", "/docs"];

fn route(i: usize, host: u8, path: u8, kind: u8, method: u8, flags: u8) -> Route {
    let host = match host % 6 {
        0 | 1 => None,
        2 => Some(HostMatch::Exact(HOSTS[usize::from(path) % 4].into())),
        3 => Some(HostMatch::Exact(HOSTS[usize::from(kind) % 4].into())),
        4 => Some(HostMatch::Suffix(".example.com".into())),
        _ => Some(HostMatch::Suffix(".a.example.com".into())),
    };
    let p = PATHS[usize::from(path) % PATHS.len()].to_string();
    let path = match kind % 3 {
        0 => PathMatch::Prefix(p),
        1 => PathMatch::Exact(p),
        _ => PathMatch::Regex {
            strict: regex::Regex::new(&format!("^(?:{}(/.*)?)$", regex::escape(&p))).expect("regex"),
            lenient: regex::Regex::new(&format!("(?i)^(?:{}(/.*)?)$", regex::escape(&p))).expect("regex"),
        },
    };
    let methods = match method % 3 {
        0 => vec![],
        1 => vec!["GET".to_string()],
        _ => vec!["POST".to_string()],
    };
    Route {
        name: format!("r{i}"),
        matcher: RouteMatch {
            host,
            path,
            methods,
            case_sensitive: flags & 1 != 0,
            strict_slash: flags & 2 != 0,
            strict_suffix: flags & 4 != 0,
            headers: Vec::new(),
            query: Vec::new(),
        },
        access: Access::Public,
        rate_limit: None,
        dry_run: false,
    }
}

fn request_host(h: u8) -> String {
    let host = HOSTS[usize::from(h) % HOSTS.len()];
    match h / 4 % 3 {
        0 => host.to_string(),
        1 => host.to_ascii_uppercase(),
        _ => format!("{host}:8443"),
    }
}

fn request_path(p: u8) -> String {
    let path = PATHS[usize::from(p) % PATHS.len()];
    match p / 6 % 4 {
        0 => path.to_string(),
        1 => path.to_ascii_uppercase(),
        2 => format!("{}/", path.trim_end_matches('/')),
        _ => format!("{path}.json"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_index_answers_as_the_scan(
        specs in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()), 0..24),
        requests in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<bool>()), 1..12),
    ) {
        let routes: Vec<Route> =
            specs.iter().enumerate().map(|(i, (h, p, k, m, f))| route(i, *h, *p, *k, *m, *f)).collect();
        let index = RouteIndex::new(&routes);
        for (h, p, post) in requests {
            let host_text = request_host(h);
            let Ok(host) = parse_authority(&host_text) else { continue };
            let path = request_path(p);
            let method = if post { "POST" } else { "GET" };
            let input = CheckInput { method: method.into(), host: host_text.clone(), path: path.clone(), ..CheckInput::default() };
            let scan = find_route(&routes, &host, &path, &input).map(|r| r.map(|r| r.name.clone())).map_err(|d| d.reason);
            let indexed = find_route_indexed(&routes, Some(&index), &host, &path, &input)
                .map(|r| r.map(|r| r.name.clone()))
                .map_err(|d| d.reason);
            prop_assert_eq!(scan, indexed, "{} {}{}", method, host_text, path);
        }
    }
}

/// An index built for other routes is never used.
#[test]
fn a_stale_index_is_ignored() {
    let routes = vec![route(0, 0, 0, 0, 0, 0)];
    let index = RouteIndex::new(&[]);
    let host = parse_authority("a.example.com").expect("host");
    let input =
        CheckInput { method: "GET".into(), host: "a.example.com".into(), path: "/x".into(), ..CheckInput::default() };
    let found = find_route_indexed(&routes, Some(&index), &host, "/x", &input).ok().flatten().map(|r| r.name.as_str());
    assert_eq!(found, Some("r0"));
}
