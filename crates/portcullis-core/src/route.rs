//! Route matching (docs/contract.md step 4).

use super::input::CheckInput;
use super::reason::{Deny, DenyReason};
use super::request_match::{ValueMatcher, header_matches, query_matches};
use super::requirements::Requirements;
use super::semantics::Authority;
use super::types::RateTier;
use regex::Regex;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com`: any host with this suffix and at least one more label.
    Suffix(String),
}

impl HostMatch {
    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => h == host,
            Self::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    /// Matches the prefix itself and anything below it at a segment boundary.
    Prefix(String),
    Exact(String),
    /// Anchored: the whole path must match. `lenient` is the same pattern, case-insensitive.
    Regex {
        strict: Regex,
        lenient: Regex,
    },
}

/// How a path is compared with a route: as spelled, or as the most forgiving upstream reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Byte for byte (Flask, Go, Jetty by default; Spring 6).
    Exact,
    /// ASCII case folded (Express, ASP.NET), one trailing slash ignored (Express, Spring 5) and
    /// a format suffix ignored, after one trailing slash (Rails' `(.:format)`, Spring's suffix
    /// pattern match).
    Lenient { fold_case: bool, ignore_slash: bool, ignore_suffix: bool },
}

/// `path` without a format suffix, as Rails reads it (one trailing slash dropped, then a
/// `[^/.?]+` extension of the last segment: `/admin.json/`, `/admin.x-y` → `/admin`) and as
/// Spring's suffix pattern match does (from the segment's first dot: `/admin.a.b` → `/admin`).
pub(crate) fn format_readings(path: &str) -> [Option<&str>; 2] {
    let path = without_slash(path);
    let Some(start) = path.rfind('/').map(|i| i + 1) else { return [None, None] };
    let segment = &path[start..];
    let cut = |dot: Option<usize>| dot.filter(|d| *d > 0 && d + 1 < segment.len()).map(|d| &path[..start + d]);
    let (last, first) = (segment.rfind('.'), segment.find('.'));
    [cut(last), cut(first.filter(|f| Some(*f) != last))]
}

fn eq(a: &str, b: &str, fold_case: bool) -> bool {
    if fold_case { a.eq_ignore_ascii_case(b) } else { a == b }
}

/// `path` without one trailing slash (the root stays `/`).
fn without_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(rest) if !rest.is_empty() => rest,
        _ => path,
    }
}

fn prefix_matches(prefix: &str, path: &str, fold_case: bool) -> bool {
    if prefix == "/" || eq(prefix, path, fold_case) {
        return true;
    }
    if path.len() < prefix.len() || !path.is_char_boundary(prefix.len()) {
        return false;
    }
    let (head, rest) = path.split_at(prefix.len());
    eq(head, prefix, fold_case) && (prefix.ends_with('/') || rest.starts_with('/'))
}

impl PathMatch {
    fn matches(&self, path: &str, reading: Reading) -> bool {
        match reading {
            Reading::Exact => match self {
                Self::Prefix(p) => prefix_matches(p, path, false),
                Self::Exact(p) => p == path,
                Self::Regex { strict, .. } => strict.is_match(path),
            },
            Reading::Lenient { fold_case, ignore_slash, ignore_suffix } => {
                self.matches_leniently(path, fold_case, ignore_slash)
                    || (ignore_suffix
                        && format_readings(path)
                            .iter()
                            .flatten()
                            .any(|p| self.matches_leniently(p, fold_case, ignore_slash)))
            }
        }
    }

    fn matches_leniently(&self, path: &str, fold_case: bool, ignore_slash: bool) -> bool {
        match self {
            Self::Prefix(p) => {
                prefix_matches(p, path, fold_case)
                    || (ignore_slash && prefix_matches(without_slash(p), path, fold_case))
            }
            Self::Exact(p) => {
                eq(p, path, fold_case) || (ignore_slash && eq(without_slash(p), without_slash(path), fold_case))
            }
            Self::Regex { strict, lenient } => {
                let re = if fold_case { lenient } else { strict };
                re.is_match(path)
                    || (ignore_slash
                        && (re.is_match(without_slash(path))
                            || (!path.ends_with('/') && re.is_match(&format!("{path}/")))))
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    /// Uppercase methods; empty means any. `GET` also matches `HEAD` (every framework runs the
    /// GET handler for HEAD).
    pub methods: Vec<String>,
    /// `match.case_sensitive: true`: the upstream routes case-sensitively, so no case folding.
    pub case_sensitive: bool,
    /// `match.strict_slash: true`: `/me` and `/me/` are different routes upstream.
    pub strict_slash: bool,
    /// `match.strict_suffix: true`: `/reports.json` is not `/reports` upstream.
    pub strict_suffix: bool,
    /// `match.headers`: every one must hold (names lowercase).
    pub headers: Vec<ValueMatcher>,
    /// `match.query`: every one must hold.
    pub query: Vec<ValueMatcher>,
}

impl RouteMatch {
    /// Host, path and method, then the header and query matchers (which may find the request
    /// ambiguous: see [`super::request_match`]).
    fn matches(&self, req: &Request, reading: Reading) -> Result<bool, Deny> {
        if !self.matches_target(req.host, req.path, &req.input.method, reading) {
            return Ok(false);
        }
        for m in &self.headers {
            if !header_matches(req.input.header_values(&m.name), m)? {
                return Ok(false);
            }
        }
        for m in &self.query {
            if !query_matches(&req.input.path, m)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn matches_target(&self, host: &Authority, path: &str, method: &str, reading: Reading) -> bool {
        let (reading, host) = match reading {
            Reading::Lenient { .. } => (
                Reading::Lenient {
                    fold_case: !self.case_sensitive,
                    ignore_slash: !self.strict_slash,
                    ignore_suffix: !self.strict_suffix,
                },
                &*host.folded,
            ),
            Reading::Exact => (Reading::Exact, host.name),
        };
        self.host.as_ref().is_none_or(|h| h.matches(host))
            && self.path.matches(path, reading)
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method || (m == "GET" && method == "HEAD")))
    }
}

#[derive(Debug, Clone)]
pub enum Access {
    /// No credential needed; any credential sent is ignored and identity headers are stripped.
    Public,
    /// A credential is verified if present; without one the request passes anonymously.
    Optional(Requirements),
    /// A valid credential meeting the requirements is needed.
    Required(Requirements),
    /// `deny: true`: refused 403 `route_denied` with the stated reason.
    Deny(String),
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Stable name for audit and metrics: the configured `name` or `routes[i]`.
    pub name: String,
    pub matcher: RouteMatch,
    pub access: Access,
    /// The rate-limit tier this route counts against.
    pub rate_limit: Option<RateTier>,
    /// `mode: dry_run`: a deny is recorded, and the request allowed without identity.
    pub dry_run: bool,
}

/// What route matching reads of a request.
struct Request<'a> {
    host: &'a Authority<'a>,
    /// Validated, without the query.
    path: &'a str,
    input: &'a CheckInput,
}

/// The first route for a request, host already normalized (see
/// [`super::semantics::parse_authority`]); `Ok(None)` is the default deny.
///
/// A request is judged by one route only if its exact spelling and its most lenient reading
/// (case folded, one trailing slash ignored) select the same route: otherwise an upstream that
/// folds case or slashes runs one handler while a byte-exact upstream runs another, and either
/// could be the weaker. `/ADMIN/users` against `/admin` + a catch-all, or `/DOCS/x` against a
/// public `/docs` + a protected catch-all, are refused 400 `path_invalid`.
pub fn find_route<'a>(
    routes: &'a [Route],
    host: &Authority,
    path: &str,
    input: &CheckInput,
) -> Result<Option<&'a Route>, Deny> {
    first_match(routes.iter(), host, path, input)
}

/// [`find_route`] over the routes `index` says the host can select (every route whose host
/// matches under either reading, in policy order): the same answer for far fewer routes. An
/// index built for other routes is not used.
pub fn find_route_indexed<'a>(
    routes: &'a [Route],
    index: Option<&super::route_index::RouteIndex>,
    host: &Authority,
    path: &str,
    input: &CheckInput,
) -> Result<Option<&'a Route>, Deny> {
    let Some(index) = index.filter(|i| i.covers(routes)) else { return find_route(routes, host, path, input) };
    let mut candidates = Vec::new();
    index.candidates(host.name, &host.folded, &mut candidates);
    first_match(candidates.iter().filter_map(|i| routes.get(*i as usize)), host, path, input)
}

/// The one rule over `routes` in order: the first exact match, unless a route before it
/// matches the lenient reading.
fn first_match<'a>(
    routes: impl Iterator<Item = &'a Route> + Clone,
    host: &Authority,
    path: &str,
    input: &CheckInput,
) -> Result<Option<&'a Route>, Deny> {
    let req = Request { host, path, input };
    let mut exact = None;
    for (i, route) in routes.clone().enumerate() {
        if route.matcher.matches(&req, Reading::Exact)? {
            exact = Some((i, route));
            break;
        }
    }
    // Every route's lenient reading matches whatever its exact reading matches, so only the
    // routes before the exact match (all of them, without one) can disagree.
    let before = exact.map_or(usize::MAX, |(i, _)| i);
    let lenient = Reading::Lenient { fold_case: true, ignore_slash: true, ignore_suffix: true };
    for route in routes.take(before) {
        if route.matcher.matches(&req, lenient)? {
            return Err(Deny::new(
                DenyReason::PathInvalid,
                "the path's or host's case, a trailing slash or a format suffix selects another route than the exact spelling",
            ));
        }
    }
    Ok(exact.map(|(_, route)| route))
}
