//! `routes`: matchers and requirements.

use super::*;

/// Whether route `earlier` matches every request `later` does (so `later` is never reached).
/// Only the clear cases: prefixes and exact paths, no regex, no header or query matcher.
fn covers(earlier: &RouteMatch, later: &RouteMatch) -> bool {
    // A header or query matcher selects some requests only: the routes after it are reached.
    if !earlier.headers.is_empty() || !earlier.query.is_empty() {
        return false;
    }
    let host = match (&earlier.host, &later.host) {
        (None, _) => true,
        (Some(a), Some(b)) => a == b,
        (Some(_), None) => false,
    };
    let methods = earlier.methods.is_empty()
        || (!later.methods.is_empty() && later.methods.iter().all(|m| earlier.methods.contains(m)));
    let under = |prefix: &str, path: &str| {
        prefix == "/"
            || path == prefix
            || path.strip_prefix(prefix.trim_end_matches('/')).is_some_and(|rest| rest.starts_with('/'))
    };
    let path = match (&earlier.path, &later.path) {
        (PathMatch::Prefix(a), PathMatch::Prefix(b) | PathMatch::Exact(b)) => under(a, b),
        (PathMatch::Exact(a), PathMatch::Exact(b)) => a == b,
        _ => false,
    };
    host && methods && path
}

impl Validator {
    /// A route no request can reach (an earlier route matches all it would): valid, but
    /// certainly not what was meant.
    /// Only a host-less route or one naming the same host can cover a route (`covers`), so
    /// each route is compared with those earlier routes alone: a 100-team policy's 5,000 host
    /// routes are checked in linear time, not 12 million pairs.
    pub(super) fn shadowed_routes(&mut self, routes: &[Route]) {
        let mut hostless: Vec<usize> = Vec::new();
        let mut by_host: HashMap<&HostMatch, Vec<usize>> = HashMap::new();
        for (j, later) in routes.iter().enumerate() {
            let same_host = later.matcher.host.as_ref().and_then(|h| by_host.get(h)).map_or(&[][..], Vec::as_slice);
            let first =
                hostless.iter().chain(same_host).copied().filter(|&i| covers(&routes[i].matcher, &later.matcher)).min();
            if let Some(earlier) = first.map(|i| &routes[i]) {
                self.warnings.push(format!(
                    "routes[{j}]: \"{}\" is never reached: the earlier route \"{}\" matches every request it would (order routes from the most specific)",
                    later.name, earlier.name
                ));
            }
            match &later.matcher.host {
                None => hostless.push(j),
                Some(host) => by_host.entry(host).or_default().push(j),
            }
        }
    }

    /// `enforce` or `dry_run` → whether it is a dry run.
    pub(super) fn mode(&mut self, path: &str, mode: &str) -> bool {
        match mode {
            "enforce" => false,
            "dry_run" => true,
            other => {
                self.problems.add(path, format!("\"{other}\" is not enforce or dry_run"));
                false
            }
        }
    }

    pub(super) fn routes(
        &mut self,
        raw: &[RawRoute],
        issuers: &[&str],
        tiers: &HashMap<String, RateTier>,
        dry_run_default: bool,
    ) -> Vec<Route> {
        if raw.is_empty() {
            self.problems.add("routes", "at least one route is required (unmatched requests are denied)");
        }
        let mut routes = Vec::new();
        let mut names: std::collections::HashSet<String> = std::collections::HashSet::new();
        for (i, route) in raw.iter().enumerate() {
            let p = format!("routes[{i}]");
            let name = route.name.clone().unwrap_or_else(|| p.clone());
            let Some(m) = &route.matcher else {
                self.problems.add(format!("{p}.match"), "required");
                continue;
            };
            let matcher = self.route_match(&p, m);
            // A route without rate_limit counts against the tier named `default`, if any.
            let rate_limit = match route.rate_limit.as_deref() {
                Some(name) => tiers.get(name).cloned().or_else(|| {
                    self.problems.add(format!("{p}.rate_limit"), format!("no tier \"{name}\" in rate_limits.tiers"));
                    None
                }),
                None => tiers.get("default").cloned(),
            };
            if route.public && (route.optional || route.require.is_some()) {
                self.problems.add(&p, "a public route takes neither optional nor require");
            }
            if route.deny && (route.public || route.optional || route.require.is_some()) {
                self.problems.add(format!("{p}.deny"), "a deny route takes neither public, optional nor require");
            }
            if !route.deny && route.reason.is_some() {
                self.problems.add(format!("{p}.reason"), "only a deny: true route states a reason");
            }
            let selects_by_request = matcher.as_ref().is_some_and(|m| !m.headers.is_empty() || !m.query.is_empty());
            if selects_by_request && (route.public || route.optional) {
                self.warnings.push(format!(
                    "{p}: \"{name}\" is public or optional and selected by headers or query parameters the client chooses: any client can match it (use such matchers for stricter rules and deny routes)"
                ));
            }
            let requirements = route
                .require
                .as_ref()
                .map(|r| self.requirements(&format!("{p}.require"), r, issuers))
                .unwrap_or_default();
            let access = if route.deny {
                let reason = route.reason.clone().unwrap_or_else(|| format!("denied by route {name}"));
                if reason.is_empty() || reason.len() > 200 || !reason.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
                {
                    self.problems.add(format!("{p}.reason"), "1 to 200 visible ASCII characters");
                }
                Access::Deny(reason)
            } else if route.public {
                Access::Public
            } else if route.optional {
                Access::Optional(requirements)
            } else {
                Access::Required(requirements)
            };
            let dry_run = match route.mode.as_deref() {
                None => dry_run_default,
                Some(mode) => self.mode(&format!("{p}.mode"), mode),
            };
            if names.contains(&name) {
                self.problems.add(
                    format!("{p}.name"),
                    format!(
                        "\"{name}\" names an earlier route too: audits, metrics and tests tell routes apart by name"
                    ),
                );
            }
            names.insert(name.clone());
            if let Some(matcher) = matcher {
                routes.push(Route { name, matcher, access, rate_limit, dry_run });
            }
        }
        routes
    }

    pub(super) fn route_match(&mut self, p: &str, m: &RawMatch) -> Option<RouteMatch> {
        let kinds = [m.path_prefix.is_some(), m.path_exact.is_some(), m.path_regex.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            self.problems.add(format!("{p}.match"), "exactly one of path_prefix, path_exact or path_regex is required");
            return None;
        }
        for (field, value) in [("path_prefix", &m.path_prefix), ("path_exact", &m.path_exact)] {
            if let Some(value) = value
                && value.starts_with('/')
                && crate::decision::validate_path(value) != Ok(value.as_str())
            {
                self.problems.add(format!("{p}.match.{field}"), "a path that every request would be refused for");
            }
        }
        let path = if let Some(prefix) = &m.path_prefix {
            if !prefix.starts_with('/') {
                self.problems.add(format!("{p}.match.path_prefix"), "must start with '/'");
            }
            PathMatch::Prefix(prefix.clone())
        } else if let Some(exact) = &m.path_exact {
            if !exact.starts_with('/') {
                self.problems.add(format!("{p}.match.path_exact"), "must start with '/'");
            }
            PathMatch::Exact(exact.clone())
        } else {
            let re = m.path_regex.as_deref().unwrap_or_default();
            let strict = self.anchored_regex(&format!("{p}.match.path_regex"), re, "")?;
            let lenient = self.anchored_regex(&format!("{p}.match.path_regex"), re, "(?i)")?;
            PathMatch::Regex { strict, lenient }
        };
        let headers = self.value_matchers(&format!("{p}.match.headers"), &m.headers, true);
        let query = self.value_matchers(&format!("{p}.match.query"), &m.query, false);
        // Hosts are compared as parse_authority leaves them: lowercase, no trailing dot.
        let host = m.host.as_ref().and_then(|h| match super::hosts::host_pattern(h) {
            Ok(h) => Some(match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_string()),
                None => HostMatch::Exact(h),
            }),
            Err(why) => {
                self.problems.add(format!("{p}.match.host"), why);
                None
            }
        });
        let mut methods = Vec::new();
        for (j, method) in m.methods.iter().enumerate() {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                self.problems.add(format!("{p}.match.methods[{j}]"), format!("\"{method}\" is not an HTTP method"));
            }
            methods.push(method.to_ascii_uppercase());
        }
        Some(RouteMatch {
            host,
            path,
            methods,
            case_sensitive: m.case_sensitive.unwrap_or(false),
            strict_slash: m.strict_slash.unwrap_or(false),
            strict_suffix: m.strict_suffix.unwrap_or(false),
            headers,
            query,
        })
    }

    /// `^(?:re)$` with `flags`; an error shows the pattern as written, not the wrapped one.
    pub(super) fn anchored_regex(&mut self, path: &str, re: &str, flags: &str) -> Option<regex::Regex> {
        if let Err(e) = regex::Regex::new(re) {
            self.problems.add(path, format!("invalid regex {re:?}: {}", regex_error(&e)));
            return None;
        }
        match regex::Regex::new(&format!("{flags}^(?:{re})$")) {
            Ok(re) => Some(re),
            Err(e) => {
                self.problems.add(path, format!("invalid regex {re:?}: {}", regex_error(&e)));
                None
            }
        }
    }

    fn value_matchers(&mut self, p: &str, raw: &BTreeMap<String, RawValueTest>, header: bool) -> Vec<ValueMatcher> {
        let mut out = Vec::new();
        for (name, t) in raw {
            let path = format!("{p}.{name}");
            if header && (!is_header_name(name) || name.starts_with(':')) {
                self.problems.add(&path, "a lowercase header name (no pseudo-headers)");
            }
            // Every framework reads such a name as written (brackets are arrays to qs, Rack and
            // PHP; PHP reads `.` and space as `_`), so the grammar's readings cover it.
            if !header
                && (name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
            {
                self.problems.add(&path, "a query parameter name of letters, digits, '_' and '-'");
            }
            if header && ["host", "authorization", "cookie"].contains(&name.as_str()) {
                self.problems.add(&path, "match the host with match.host; credentials are not route matchers");
            }
            let tests = [t.present == Some(true), t.equals.is_some(), t.regex.is_some()];
            if tests.iter().filter(|t| **t).count() != 1 || t.present == Some(false) {
                self.problems.add(&path, "exactly one of present: true, equals or regex is required");
                continue;
            }
            let test = if let Some(want) = &t.equals {
                ValueTest::Equals(want.clone())
            } else if let Some(re) = &t.regex {
                match self.anchored_regex(&format!("{path}.regex"), re, "") {
                    Some(re) => ValueTest::Regex(re),
                    None => continue,
                }
            } else {
                ValueTest::Present
            };
            out.push(ValueMatcher { name: name.clone(), test });
        }
        out
    }

    pub(super) fn requirements(&mut self, p: &str, r: &RawRequire, issuers: &[&str]) -> Requirements {
        let step_up = r.step_up.as_ref().map(|s| {
            let max_auth_age = s.max_auth_age.as_deref().map(|age| {
                self.duration(&format!("{p}.step_up.max_auth_age"), Some(age), Duration::ZERO).as_secs() as i64
            });
            if s.acr.is_empty() && s.amr.is_empty() && max_auth_age.is_none() {
                self.problems.add(format!("{p}.step_up"), "name acr, amr or max_auth_age");
            }
            if s.acr
                .iter()
                .chain(&s.amr)
                .any(|v| v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'))
            {
                self.problems.add(format!("{p}.step_up"), "acr and amr values must be visible ASCII without quotes");
            }
            StepUp { acr: s.acr.clone(), amr: s.amr.clone(), max_auth_age }
        });
        let source_principals = r.source_principals.clone().unwrap_or_default();
        for (j, principal) in source_principals.iter().enumerate() {
            let wildcard_inside = principal.trim_end_matches('*').contains('*');
            if !principal.starts_with("spiffe://") || wildcard_inside {
                self.problems.add(
                    format!("{p}.source_principals[{j}]"),
                    "a SPIFFE id like spiffe://cluster.local/ns/app/sa/web (a trailing * matches a prefix)",
                );
            }
        }
        for (j, iss) in r.issuers.iter().enumerate() {
            if !issuers.contains(&iss.as_str()) {
                self.problems.add(format!("{p}.issuers[{j}]"), format!("\"{iss}\" is not a configured issuer"));
            }
        }
        let mut claims = Vec::new();
        for (j, c) in r.claims.iter().enumerate() {
            let cp = format!("{p}.claims[{j}]");
            if !c.path.starts_with('/') {
                self.problems.add(format!("{cp}.path"), "must be a JSON Pointer starting with '/'");
            }
            let tests: Vec<ClaimTest> = [
                c.equals.clone().map(ClaimTest::Equals),
                c.one_of.clone().map(ClaimTest::OneOf),
                c.contains.clone().map(ClaimTest::Contains),
                c.present.filter(|p| *p).map(|_| ClaimTest::Present),
            ]
            .into_iter()
            .flatten()
            .collect();
            match <[ClaimTest; 1]>::try_from(tests) {
                Ok([test]) => claims.push(ClaimMatcher { pointer: c.path.clone(), test }),
                Err(_) => {
                    self.problems.add(&cp, "exactly one of equals, one_of, contains or present: true is required")
                }
            }
        }
        let any_of = r
            .any_of
            .iter()
            .enumerate()
            .map(|(j, a)| self.alternative(&format!("{p}.any_of[{j}]"), a, issuers))
            .collect();
        let not = r.not.as_ref().map(|n| Box::new(self.alternative(&format!("{p}.not"), n, issuers)));
        Requirements {
            any_of,
            not,
            issuers: r.issuers.clone(),
            audiences: r.audiences.clone(),
            scopes: r.scopes.clone(),
            roles: r.roles.clone(),
            claims,
            tenant: r.tenant.unwrap_or(false) || r.tenant_roles.as_ref().is_some_and(|t| !t.is_empty()),
            tenant_roles: r.tenant_roles.clone().unwrap_or_default(),
            step_up,
            source_principals,
            sender_constraint: self.sender_constraint(p, r.sender_constraint.as_ref()),
        }
    }
}

/// The regex crate's message without its echo of the (wrapped) pattern.
fn regex_error(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find(|l| l.starts_with("error:"))
            .unwrap_or(text)
            .trim_start_matches("error: ")
            .to_string(),
        other => other.to_string(),
    }
}

impl Validator {
    /// One alternative of `require.any_of` or `require.not`: token requirements only (tenant,
    /// step-up and peer principals have their own answers and stay outside), and not empty.
    fn alternative(&mut self, p: &str, r: &RawRequire, issuers: &[&str]) -> Requirements {
        if r.tenant.is_some()
            || r.tenant_roles.is_some()
            || r.step_up.is_some()
            || r.source_principals.is_some()
            || r.sender_constraint.is_some()
        {
            self.problems.add(p, "only scopes, roles, claims, issuers, audiences, any_of and not may appear here");
        }
        let empty = r.scopes.is_empty()
            && r.roles.is_empty()
            && r.claims.is_empty()
            && r.issuers.is_empty()
            && r.audiences.is_empty()
            && r.any_of.is_empty()
            && r.not.is_none();
        if empty {
            self.problems.add(p, "empty: it would hold for every token");
        }
        self.requirements(p, r, issuers)
    }
}
