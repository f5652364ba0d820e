//! The route index (issue 36): which routes a request's host can select, so a policy of
//! thousands of host-scoped routes (team fragments) costs a check what its own host's routes
//! cost. Built once per snapshot; route matching then runs its one rule over the candidates, in
//! policy order, so the first-match order and the exact/lenient agreement are unchanged.

use super::route::{HostMatch, Route};
use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct RouteIndex {
    /// Routes whose host the index does not key (no host, or a pattern it cannot look up).
    any: Vec<u32>,
    /// `match.host` exact → routes.
    exact: HashMap<String, Vec<u32>>,
    /// `*.suffix` wildcards, by their suffix (`.example.com`) → routes.
    suffix: HashMap<String, Vec<u32>>,
    /// How many routes it was built from (an index of other routes is never used).
    len: usize,
}

impl RouteIndex {
    pub fn new(routes: &[Route]) -> Self {
        let mut index = Self { len: routes.len(), ..Self::default() };
        for (i, route) in routes.iter().enumerate() {
            let Ok(i) = u32::try_from(i) else {
                index.any.push(u32::MAX); // unreachable in practice: keeps the index honest
                continue;
            };
            match &route.matcher.host {
                Some(HostMatch::Exact(h)) => index.exact.entry(h.clone()).or_default().push(i),
                Some(HostMatch::Suffix(s)) if s.starts_with('.') => index.suffix.entry(s.clone()).or_default().push(i),
                _ => index.any.push(i),
            }
        }
        index
    }

    /// Whether it was built for these routes.
    pub fn covers(&self, routes: &[Route]) -> bool {
        self.len == routes.len() && !self.any.contains(&u32::MAX)
    }

    /// Every route a host can select, as sent (`name`) or folded (`folded`), ascending: a
    /// superset of the routes whose host matches under either reading.
    pub fn candidates(&self, name: &str, folded: &str, out: &mut Vec<u32>) {
        out.clear();
        out.extend_from_slice(&self.any);
        for host in [folded, name] {
            if let Some(routes) = self.exact.get(host) {
                out.extend_from_slice(routes);
            }
            if !self.suffix.is_empty() {
                for (at, _) in host.match_indices('.').filter(|(at, _)| *at > 0) {
                    if let Some(routes) = self.suffix.get(&host[at..]) {
                        out.extend_from_slice(routes);
                    }
                }
            }
            if name == folded {
                break;
            }
        }
        out.sort_unstable();
        out.dedup();
    }
}
