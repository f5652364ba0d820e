//! Team fragments (`include:`): files that each own some hosts and hold the routes for them,
//! merged with the main file into one tree before validation.
//!
//! Order of the merged route table: the main file's host-less `deny: true` routes (platform-wide
//! guards no team can route around), then every fragment's routes (file name order; their hosts
//! are disjoint, so their order between files cannot matter), then the rest of the main file.

use super::Problem;
use super::schema::{RawConfig, RawFragment, RawRoute};
use super::source::{self, Source};
use super::validate::hosts::host_pattern;
use std::path::{Path, PathBuf};

/// Where each merged route came from, so a problem is reported in its own file.
#[derive(Default)]
pub struct Merged {
    /// The fragments read, in order; `origins` index them from 1 (0 is the main file).
    pub fragments: Vec<Source>,
    /// Per merged route: (file, the route's index in that file).
    pub origins: Vec<(usize, usize)>,
    /// Problems already placed in their files.
    pub problems: Vec<Problem>,
    /// Fragment files and the patterns (watched for new files) for hot reload, fingerprinted
    /// by what was read.
    pub watched: super::sources::Fingerprints,
    pub warnings: Vec<String>,
    /// Each fragment read, as `name NUL text NUL` (the policy hash covers them).
    pub texts: Vec<u8>,
}

/// Hosts are compared as route matching compares them: lowercase, no trailing dot (an invalid
/// pattern is reported where it is validated, and compared as written meanwhile).
fn normalize_host(host: &str) -> String {
    host_pattern(host).unwrap_or_else(|_| host.to_string())
}

/// Whether host pattern `a` matches every host `b` does (`*.x.com` covers `a.x.com` and
/// `*.a.x.com`), as [`crate::decision::HostMatch`] matches.
fn covers(a: &str, b: &str) -> bool {
    a == b
        || a.strip_prefix('*')
            .is_some_and(|suffix| suffix.starts_with('.') && b.len() > suffix.len() && b.ends_with(suffix))
}

/// Whether two host patterns can match one request's host.
fn overlap(a: &str, b: &str) -> bool {
    covers(a, b) || covers(b, a)
}

/// `host "h" is already owned by` / `host "h" overlaps "o", owned by`.
fn claimed(host: &str, owned: &str) -> String {
    if host == owned {
        format!("host \"{host}\" is already owned by")
    } else {
        format!("host \"{host}\" overlaps \"{owned}\", owned by")
    }
}

fn placed(source: &Source, path: &str, message: impl std::fmt::Display) -> Problem {
    Problem { at: Some(source.locate(path)), path: path.to_string(), message: message.to_string() }
}

/// Reads `raw.include`'s files and merges their routes into `raw.routes`.
pub fn merge(raw: &mut RawConfig, main: &Source, base: &Path) -> Merged {
    let mut merged = Merged { origins: (0..raw.routes.len()).map(|i| (0, i)).collect(), ..Merged::default() };
    if raw.include.is_empty() {
        return merged;
    }
    // Each file, with the include entries that name it (their host scopes).
    let mut files: Vec<(PathBuf, Vec<usize>)> = Vec::new();
    let mut scopes: Vec<Option<Vec<String>>> = Vec::new();
    for (i, entry) in raw.include.iter().enumerate() {
        let pattern = entry.files();
        scopes.push(entry.hosts().map(|hosts| {
            let mut scope = Vec::new();
            for (h, host) in hosts.iter().enumerate() {
                match host_pattern(host) {
                    Ok(host) => scope.push(host),
                    Err(why) => merged.problems.push(placed(main, &format!("include[{i}].hosts[{h}]"), why)),
                }
            }
            if hosts.is_empty() {
                merged.problems.push(placed(
                    main,
                    &format!("include[{i}].hosts"),
                    "name the hosts these files may claim",
                ));
            }
            scope
        }));
        let full = base.join(pattern);
        match glob::glob(&full.to_string_lossy()) {
            Err(e) => {
                merged.watched.push(super::sources::of_content(&full, None));
                merged.problems.push(placed(main, &format!("include[{i}]"), format!("not a file pattern: {e}")))
            }
            Ok(paths) => {
                let mut found: Vec<PathBuf> = Vec::new();
                let mut listed: Vec<PathBuf> = Vec::new();
                for entry in paths {
                    match entry {
                        Ok(path) => {
                            listed.push(path.clone());
                            if path.is_file() {
                                found.push(path);
                            }
                        }
                        Err(e) => {
                            merged.problems.push(placed(main, &format!("include[{i}]"), format!("cannot read {e}")))
                        }
                    }
                }
                merged.watched.push(super::sources::of_listing(&full, &listed));
                found.sort();
                if found.is_empty() {
                    merged.warnings.push(format!("include[{i}]: \"{pattern}\" matches no file"));
                }
                for file in found {
                    // A file several entries name is held to every one of their scopes.
                    match files.iter_mut().find(|(f, _)| *f == file) {
                        Some((_, entries)) => entries.push(i),
                        None => files.push((file, vec![i])),
                    }
                }
            }
        }
    }
    // Host pattern → the file that owns it.
    let mut owners: Vec<(String, Box<str>)> = Vec::new();
    let mut fragment_routes: Vec<(RawRoute, usize, usize)> = Vec::new();
    for (file, entries) in files {
        let name = file.display().to_string();
        let read = std::fs::read_to_string(&file);
        merged.watched.push(super::sources::of_content(&file, read.as_ref().ok().map(|t| t.as_bytes())));
        let text = match read {
            Ok(text) => text,
            Err(e) => {
                merged.problems.push(Problem {
                    at: Some(super::Location { file: name.as_str().into(), line: 0, column: 0 }),
                    path: "include".into(),
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        merged.texts.extend_from_slice(format!("{name}\0{text}\0").as_bytes());
        let (fragment, source, problems) = match source::read::<RawFragment>(&text, &name) {
            Ok(read) => read,
            Err(super::ConfigError::Invalid(p)) => {
                merged.problems.extend(p.0);
                continue;
            }
            Err(e) => {
                merged.problems.push(Problem { at: None, path: "include".into(), message: e.to_string() });
                continue;
            }
        };
        merged.problems.extend(problems.into_iter().map(|p| Problem { at: Some(source.locate(&p.path)), ..p }));
        let index = merged.fragments.len() + 1;
        if fragment.hosts.is_empty() {
            merged.problems.push(placed(&source, "hosts", "a fragment names the hosts it owns"));
        }
        let mut hosts = Vec::new();
        for (h, host) in fragment.hosts.iter().enumerate() {
            let host = match host_pattern(host) {
                Ok(host) => host,
                Err(why) => {
                    merged.problems.push(placed(&source, &format!("hosts[{h}]"), why));
                    hosts.push(host.clone());
                    continue;
                }
            };
            for &entry in &entries {
                if let Some(scope) = &scopes[entry]
                    && !scope.iter().any(|allowed| covers(allowed, &host))
                {
                    merged.problems.push(placed(
                        &source,
                        &format!("hosts[{h}]"),
                        format!(
                            "\"{host}\" is outside the hosts include[{entry}] lets these files claim ({})",
                            scope.join(", ")
                        ),
                    ));
                }
            }
            match owners.iter().find(|(owned, _)| overlap(owned, &host)) {
                Some((owned, other)) => merged.problems.push(placed(
                    &source,
                    &format!("hosts[{h}]"),
                    format!("{} {other}", claimed(&host, owned)),
                )),
                None => owners.push((host.clone(), name.clone().into())),
            }
            hosts.push(host);
        }
        for (j, mut route) in fragment.routes.into_iter().enumerate() {
            let host = route.matcher.as_ref().and_then(|m| m.host.as_deref()).map(normalize_host);
            match host {
                Some(host) if hosts.iter().any(|owned| covers(owned, &host)) => {}
                Some(host) => merged.problems.push(placed(
                    &source,
                    &format!("routes[{j}].match.host"),
                    format!("\"{host}\" is not one of this fragment's hosts ({})", hosts.join(", ")),
                )),
                None => merged.problems.push(placed(
                    &source,
                    &format!("routes[{j}].match"),
                    "a fragment's route names one of the fragment's hosts in match.host",
                )),
            }
            // Named after its file (relative to the main file's folder, without `.yaml`), so
            // audits and metrics say whose rule it was and two teams' files never share one.
            let relative = file.strip_prefix(base).unwrap_or(&file).with_extension("");
            route.name.get_or_insert_with(|| format!("{}/routes[{j}]", relative.display()));
            fragment_routes.push((route, index, j));
        }
        merged.fragments.push(source);
    }
    // The main file may not route a host a fragment owns.
    for (i, route) in raw.routes.iter().enumerate() {
        if let Some(host) = route.matcher.as_ref().and_then(|m| m.host.as_deref()).map(normalize_host)
            && let Some((owned, owner)) = owners.iter().find(|(owned, _)| overlap(owned, &host))
        {
            merged.problems.push(placed(
                main,
                &format!("routes[{i}].match.host"),
                format!("{} {owner}; route it there", claimed(&host, owned)),
            ));
        }
    }
    let main_routes = std::mem::take(&mut raw.routes);
    let mut guards = Vec::new();
    let mut rest = Vec::new();
    for (i, mut route) in main_routes.into_iter().enumerate() {
        // Named by their place in the main file, which merging changes.
        route.name.get_or_insert_with(|| format!("routes[{i}]"));
        let host_less = route.matcher.as_ref().is_none_or(|m| m.host.is_none());
        // A deny being tried (dry run) stays where it was written: moved first it would turn
        // every request it matches into an allow without identity, ahead of every other rule.
        let dry_run = route.mode.as_deref().or(raw.mode.as_deref()) == Some("dry_run");
        if route.deny && host_less && !dry_run { guards.push((route, 0, i)) } else { rest.push((route, 0, i)) }
    }
    merged.origins.clear();
    for (route, file, index) in guards.into_iter().chain(fragment_routes).chain(rest) {
        raw.routes.push(route);
        merged.origins.push((file, index));
    }
    merged
}

impl Merged {
    /// A validation problem's path in the merged tree → its file, place and own path.
    pub fn relocate(&self, main: &Source, problem: Problem) -> Problem {
        let merged_route = problem
            .path
            .strip_prefix("routes[")
            .and_then(|rest| rest.split_once(']'))
            .and_then(|(i, rest)| Some((i.parse::<usize>().ok()?, rest)));
        let (source, path) = match merged_route.and_then(|(i, rest)| Some((self.origins.get(i)?, rest))) {
            Some(((file, index), rest)) => {
                let source = if *file == 0 { main } else { &self.fragments[*file - 1] };
                (source, source.original_path(&format!("routes[{index}]{rest}")))
            }
            None => (main, main.original_path(&problem.path)),
        };
        Problem { at: Some(source.locate(&path)), path, ..problem }
    }
}

#[cfg(test)]
#[path = "include_tests.rs"]
mod tests;
