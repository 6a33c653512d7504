//! The layout rules of docs/architecture.md, checked on the source tree: the relay and the
//! client runtimes never name each other, no two files import each other (directly or in
//! a circle), and no source file holds more than 600 lines of non-test code.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::panic, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Most lines of non-test code a file may hold (the lines before its `#[cfg(test)]`).
const MAX_NON_TEST_LINES: usize = 600;

fn source_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    out
}

/// The file's code before its test module, without `//` comments.
fn non_test_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module path of a file under src/ (`relay/circuit/send.rs` → `[relay, circuit, send]`);
/// `None` for the binary and for test-module files.
fn module_of(path: &Path) -> Option<Vec<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rel = path.strip_prefix(&src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.last().map(String::as_str) {
        Some("main") if parts.len() == 1 => return None,
        Some("tests") => return None,
        Some("mod") | Some("lib") => {
            parts.pop();
        }
        _ => {}
    }
    Some(parts)
}

#[test]
fn relay_and_client_never_name_each_other() {
    for path in source_files() {
        let Some(module) = module_of(&path) else {
            continue;
        };
        let code = non_test_code(&path);
        let forbidden = match module.first().map(String::as_str) {
            Some("relay") => "crate::client",
            Some("client") | Some("proto") => "crate::relay",
            _ => continue,
        };
        assert!(
            !code.contains(forbidden),
            "{} names {forbidden}",
            path.display()
        );
    }
}

#[test]
fn no_file_over_600_lines_of_non_test_code() {
    for path in source_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        if module_of(&path).is_none() && path.ends_with("tests.rs") {
            continue; // a test module in its own file
        }
        let lines = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .count();
        assert!(
            lines <= MAX_NON_TEST_LINES,
            "{}: {lines} lines of non-test code",
            path.display()
        );
    }
}

/// Edges a → b when file a names module b by a path (`crate::…`, `super::…`, `self::…`,
/// or `super::{b, …}`), resolved to the longest prefix that is a file. A file naming its
/// own parent module (the parent's index re-exports its children) is not an edge.
fn import_graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files: BTreeMap<Vec<String>, PathBuf> = source_files()
        .into_iter()
        .filter_map(|p| module_of(&p).map(|m| (m, p)))
        .collect();
    let resolve = |from: &[String], path: &str| -> Vec<String> {
        let mut segs = path.split("::").map(str::to_string).peekable();
        let mut base: Vec<String> = match segs.peek().map(String::as_str) {
            Some("crate") => {
                segs.next();
                Vec::new()
            }
            Some("self") => {
                segs.next();
                from.to_vec()
            }
            _ => from.to_vec(),
        };
        while segs.peek().map(String::as_str) == Some("super") {
            segs.next();
            base.pop();
        }
        base.extend(segs);
        base
    };
    let mut graph = BTreeMap::new();
    for (module, path) in &files {
        let code = non_test_code(path);
        let mut targets = BTreeSet::new();
        let mut add = |full: Vec<String>| {
            for k in (1..=full.len()).rev() {
                let candidate = &full[..k];
                if files.contains_key(candidate) {
                    let is_ancestor =
                        candidate.len() < module.len() && module.starts_with(candidate);
                    if candidate != module.as_slice() && !is_ancestor {
                        targets.insert(candidate.to_vec());
                    }
                    break;
                }
            }
        };
        // Every path that starts with crate/super/self, and the items of a `{…}` group.
        let bytes = code.as_bytes();
        let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        let mut i = 0;
        while i < bytes.len() {
            let starts = ["crate::", "super::", "self::"]
                .iter()
                .any(|p| bytes[i..].starts_with(p.as_bytes()))
                && (i == 0 || !is_ident(bytes[i - 1]));
            if !starts {
                i += 1;
                continue;
            }
            let mut j = i;
            while j < bytes.len() && is_ident(bytes[j]) {
                j += 1;
            }
            let path = code[i..j].trim_end_matches(':');
            add(resolve(module, path));
            if bytes.get(j) == Some(&b'{') {
                if let Some(end) = code[j..].find('}') {
                    for item in code[j + 1..j + end].split(',') {
                        let item = item.trim().split(' ').next().unwrap_or_default();
                        if !item.is_empty() && item != "self" {
                            add(resolve(module, &format!("{path}::{item}")));
                        }
                    }
                }
            }
            i = j.max(i + 1);
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

#[test]
fn no_import_circle_between_files() {
    let graph = import_graph();
    assert!(graph.len() > 100, "the source tree was not found");
    // A circle exists iff some file reaches itself; report the first found.
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.join("::")])];
        let mut seen = BTreeSet::new();
        while let Some((node, trail)) = stack.pop() {
            for next in &graph[&node] {
                if next == start {
                    panic!(
                        "import circle: {} -> {}",
                        trail.join(" -> "),
                        start.join("::")
                    );
                }
                if seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.join("::"));
                    stack.push((next.clone(), t));
                }
            }
        }
    }
}

/// The check can fail: a made-up pair of files naming each other is a circle.
#[test]
fn the_circle_check_sees_a_circle() {
    let graph = import_graph();
    let a = vec!["relay".to_string(), "events".to_string()];
    assert!(graph.contains_key(&a), "relay/events.rs is a file");
    let mut with_circle = graph.clone();
    let b = vec!["relay".to_string(), "shared".to_string()];
    with_circle.get_mut(&a).unwrap().insert(b.clone());
    with_circle.get_mut(&b).unwrap().insert(a.clone());
    let reaches = |g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>, from: &Vec<String>| {
        let mut stack = vec![from.clone()];
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            for m in &g[&n] {
                if m == from {
                    return true;
                }
                if seen.insert(m.clone()) {
                    stack.push(m.clone());
                }
            }
        }
        false
    };
    assert!(reaches(&with_circle, &a));
    assert!(!reaches(&graph, &a));
}
