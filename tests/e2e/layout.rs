//! The shape of the source tree that docs/ARCHITECTURE.md describes: no
//! import circle between the top-level modules of a host crate, and no file
//! in `host/` over 800 lines unless its first lines say why.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The names that `prefix` (`crate::` or the `super::` chain that reaches
/// the crate root from a file) is followed by, including `prefix{a, b::c}`.
fn names_after(text: &str, prefix: &str, out: &mut BTreeSet<String>) {
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        // `super::` inside `super::super::` is not the crate root.
        let before = &rest[..at];
        rest = &rest[at + prefix.len()..];
        if before.ends_with("super::")
            || before.ends_with(|c: char| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                out.insert(ident(part));
            }
        } else {
            out.insert(ident(rest));
        }
    }
}

/// Top-level module → the top-level modules it imports, for one crate's `src`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let top = |file: &Path| -> Option<String> {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel.components().next()?.as_os_str().to_str()?;
        let name = first.strip_suffix(".rs").unwrap_or(first);
        (name != "lib" && name != "main").then(|| name.to_owned())
    };
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top(f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = top(file) else { continue };
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests may reach anywhere.
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let rel = file.strip_prefix(src).unwrap();
        let mut depth = rel.components().count() - 1;
        if rel.file_name().is_some_and(|n| n == "mod.rs") {
            depth -= 1;
        }
        let mut names = BTreeSet::new();
        names_after(text, "crate::", &mut names);
        names_after(text, &"super::".repeat(depth + 1), &mut names);
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(
            names
                .into_iter()
                .filter(|n| *n != module && modules.contains(n)),
        );
    }
    graph
}

/// A circle through `start`, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    walk(graph, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_import_circle_between_top_level_modules() {
    for krate in ["host/src", "host/runtime/src", "host/sim/src"] {
        let graph = module_graph(&repo().join(krate));
        assert!(
            graph.len() > 5,
            "{krate}: the module graph was not read: {graph:?}"
        );
        for module in graph.keys() {
            if let Some(path) = circle(&graph, module) {
                panic!("{krate}: import circle {} -> {module}", path.join(" -> "));
            }
        }
    }
}

#[test]
fn the_checker_sees_a_circle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir(src.join("b")).unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::Thing;\n").unwrap();
    std::fs::write(src.join("b/mod.rs"), "mod inner;\n").unwrap();
    std::fs::write(src.join("b/inner.rs"), "use super::super::{c, x};\n").unwrap();
    std::fs::write(src.join("c.rs"), "pub fn f() { crate::a::g() }\n").unwrap();
    let graph = module_graph(src);
    assert_eq!(
        circle(&graph, "a"),
        Some(vec!["a".to_owned(), "b".to_owned(), "c".to_owned()])
    );
}

#[test]
fn no_file_in_host_is_over_800_lines_without_a_reason() {
    let mut files = Vec::new();
    rust_files(&repo().join("host"), &mut files);
    let files: Vec<_> = files
        .into_iter()
        .filter(|f| !f.components().any(|c| c.as_os_str() == "target"))
        .collect();
    assert!(files.len() > 50);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines = text.lines().count();
        if lines <= MAX_LINES {
            continue;
        }
        let head: String = text.lines().take(20).collect::<Vec<_>>().join("\n");
        assert!(
            head.contains("over 800 lines"),
            "{} has {lines} lines: split it, or say at its top why it is over 800 lines",
            file.display()
        );
    }
}
