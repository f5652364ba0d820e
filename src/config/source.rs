//! Reading one policy file: YAML to a tree, every structural problem (unknown key, wrong type,
//! missing field) found at once, then the typed tree; and where each path sits in the file.
//!
//! serde stops at its first error, so the tree is read as JSON values, deserialized, and each
//! offending node is recorded and cut away until what remains deserializes. Later (semantic)
//! problems are reported against the cut tree; [`Source::locate`] maps their paths back.

use super::{ConfigError, Location, Problem};
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser};
use std::collections::HashMap;
use std::sync::Arc;

/// One segment of a path like `routes[2].match.path_regex`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn parse_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            segs.push(Seg::Key(key.to_string()));
        }
        while let Some((index, after)) = rest.split_once(']') {
            match index.parse() {
                Ok(i) => segs.push(Seg::Index(i)),
                Err(_) => segs.push(Seg::Key(index.to_string())),
            }
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    segs
}

fn render_path(segs: &[Seg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A file read: its name as given, where each path sits, and what was cut from it.
#[derive(Debug, Default)]
pub struct Source {
    pub name: Arc<str>,
    /// Path → (line, column), both from 1: a mapping entry's key, a sequence item's start.
    positions: HashMap<String, (usize, usize)>,
    /// Sequence items cut as unreadable, in order: (the sequence's path, the item's index then).
    cut: Vec<(Vec<Seg>, usize)>,
    /// Each scalar value as written, by path (YAML reads `1.10` as a number and `yes` as true;
    /// a field that wants text gets these characters, not the number's or boolean's).
    scalars: HashMap<String, String>,
}

impl Source {
    /// `path` in the cut tree → the same path in the file as written.
    pub fn original_path(&self, path: &str) -> String {
        let mut segs = parse_path(path);
        for (seq, index) in self.cut.iter().rev() {
            if segs.len() > seq.len()
                && segs[..seq.len()] == seq[..]
                && let Seg::Index(i) = &mut segs[seq.len()]
                && *i >= *index
            {
                *i += 1;
            }
        }
        render_path(&segs)
    }

    /// Where a path as written sits (or its nearest ancestor in the file).
    pub fn locate(&self, original: &str) -> Location {
        let mut segs = parse_path(original);
        let (line, column) = loop {
            if let Some(at) = self.positions.get(&render_path(&segs)) {
                break *at;
            }
            if segs.pop().is_none() {
                break (0, 0);
            }
        };
        Location { file: self.name.clone(), line, column }
    }
}

/// Where every mapping key and sequence item starts, and each scalar value as written, by path.
fn positions(text: &str) -> (HashMap<String, (usize, usize)>, HashMap<String, String>) {
    enum Frame {
        Map { path: Vec<Seg>, key: Option<String> },
        Seq { path: Vec<Seg>, next: usize },
    }
    let mut out = HashMap::new();
    let mut scalars = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else { break };
        let at = (span.start.line(), span.start.col() + 1);
        let starts_node =
            matches!(event, Event::Scalar(..) | Event::SequenceStart(..) | Event::MappingStart(..) | Event::Alias(_));
        if !starts_node {
            if matches!(event, Event::SequenceEnd | Event::MappingEnd) {
                stack.pop();
            }
            continue;
        }
        // A scalar where a mapping expects its key is the key.
        if let Some(Frame::Map { path, key }) = stack.last_mut()
            && key.is_none()
        {
            let name = match &event {
                Event::Scalar(value, ..) => value.to_string(),
                _ => "?".to_string(),
            };
            let mut child = path.clone();
            child.push(Seg::Key(name.clone()));
            out.entry(render_path(&child)).or_insert(at);
            *key = Some(name);
            if matches!(event, Event::Scalar(..) | Event::Alias(_)) {
                continue;
            }
        }
        let path = match stack.last_mut() {
            None => Vec::new(),
            Some(Frame::Map { path, key }) => {
                let mut child = path.clone();
                child.push(Seg::Key(key.take().unwrap_or_default()));
                child
            }
            Some(Frame::Seq { path, next }) => {
                let mut child = path.clone();
                child.push(Seg::Index(*next));
                *next += 1;
                out.entry(render_path(&child)).or_insert(at);
                child
            }
        };
        match event {
            Event::SequenceStart(..) => stack.push(Frame::Seq { path, next: 0 }),
            Event::MappingStart(..) => stack.push(Frame::Map { path, key: None }),
            Event::Scalar(value, ..) => {
                scalars.insert(render_path(&path), value.to_string());
            }
            _ => {}
        }
    }
    (out, scalars)
}

/// serde's unknown-field message → "unknown key" with a suggestion.
fn describe(message: &str) -> String {
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    match quoted.split_first() {
        Some((unknown, expected)) if message.starts_with("unknown field") => {
            match super::suggest::closest(unknown, expected.iter().copied()) {
                Some(best) => format!("unknown key \"{unknown}\": did you mean \"{best}\"?"),
                None if expected.is_empty() => format!("unknown key \"{unknown}\": no keys are allowed here"),
                None => format!("unknown key \"{unknown}\" (expected one of: {})", expected.join(", ")),
            }
        }
        _ => message.to_string(),
    }
}

/// The node at `segs`, if any.
fn node_mut<'v>(value: &'v mut Value, segs: &[Seg]) -> Option<&'v mut Value> {
    segs.iter().try_fold(value, |node, seg| match (seg, node) {
        (Seg::Key(k), Value::Object(map)) => map.get_mut(k),
        (Seg::Index(i), Value::Array(items)) => items.get_mut(*i),
        _ => None,
    })
}

/// Reads `text` (named `name` in messages) as `T`: every structural problem is returned beside
/// the tree that remains once they are cut away. Unreadable YAML is one error with its place.
pub fn read<T: DeserializeOwned>(text: &str, name: &str) -> Result<(T, Source, Vec<Problem>), ConfigError> {
    let mut source = Source { name: Arc::from(name), ..Source::default() };
    let mut value: Value = serde_saphyr::from_str(text).map_err(|e| {
        let at = e.location().map_or_else(|| name.to_string(), |l| format!("{name}:{}:{}", l.line(), l.column()));
        let plain = e.without_snippet().to_string();
        let plain = plain.split(" at line ").next().unwrap_or(&plain);
        let plain = plain.split(", set DuplicateKeyPolicy").next().unwrap_or(plain);
        ConfigError::Parse(format!("{at}: invalid YAML: {plain}"))
    })?;
    if value.is_null() {
        value = Value::Object(Default::default());
    }
    (source.positions, source.scalars) = positions(text);
    let mut problems = Vec::new();
    // Each round cuts one node, so the loop ends; the bound only guards against a surprise.
    for _ in 0..1000 {
        let error = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(tree) => return Ok((tree, source, problems)),
            Err(error) => error,
        };
        let path: Vec<Seg> = error
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                _ => None,
            })
            .collect();
        let message = error.inner().to_string();
        // YAML reads `port: 8080` or `equals: 1` as numbers; a field wanting text takes them.
        if message.ends_with("expected a string")
            && let Some(node) = node_mut(&mut value, &path)
            && (node.is_number() || node.is_boolean())
        {
            let written = source.scalars.get(&source.original_path(&render_path(&path))).cloned();
            *node = Value::String(written.unwrap_or_else(|| node.to_string()));
            continue;
        }
        let shown = source.original_path(&render_path(&path));
        problems.push(Problem::new(&shown, describe(&message)));
        let Some((last, parent_path)) = path.split_last() else { break };
        let Some(parent) = node_mut(&mut value, parent_path) else { break };
        match (last, parent) {
            (Seg::Key(k), Value::Object(map)) => {
                map.remove(k);
            }
            (Seg::Index(i), Value::Array(items)) if *i < items.len() => {
                items.remove(*i);
                source.cut.push((parent_path.to_vec(), *i));
            }
            _ => break,
        }
    }
    Err(ConfigError::Invalid(super::Problems::located(problems, &source)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_by_path() {
        let text = "a: 1\nlist:\n  - x: 1\n    y: [2, 3]\n  - { z: 4 }\n";
        let (p, scalars) = positions(text);
        assert_eq!(scalars.get("list[0].y[1]").map(String::as_str), Some("3"));
        assert_eq!(p.get("a"), Some(&(1, 1)));
        assert_eq!(p.get("list[0]"), Some(&(3, 5)));
        assert_eq!(p.get("list[0].y"), Some(&(4, 5)));
        assert_eq!(p.get("list[0].y[1]"), Some(&(4, 12)));
        assert_eq!(p.get("list[1].z"), Some(&(5, 7)));
    }

    /// A number or boolean where text is wanted keeps its characters as written.
    #[test]
    fn scalars_keep_their_spelling_where_text_is_wanted() {
        #[derive(Debug, serde::Deserialize)]
        struct T {
            a: String,
            b: String,
            c: Vec<String>,
        }
        let (t, _, problems) = read::<T>("a: 1.10\nb: yes\nc: [0x1F, +1, on]\n", "t.yaml").expect("read");
        assert!(problems.is_empty());
        assert_eq!((t.a.as_str(), t.b.as_str()), ("1.10", "yes"));
        assert_eq!(t.c, ["0x1F", "+1", "on"]);
    }

    #[test]
    fn cut_items_shift_later_paths_back() {
        let source = Source { cut: vec![(parse_path("routes"), 1), (parse_path("routes"), 1)], ..Source::default() };
        assert_eq!(source.original_path("routes[0].match"), "routes[0].match");
        assert_eq!(source.original_path("routes[1].match"), "routes[3].match");
        assert_eq!(source.original_path("issuers[1]"), "issuers[1]");
    }
}
