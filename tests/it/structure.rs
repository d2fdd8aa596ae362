//! The shape the code keeps: every source file opens with what it owns, no file holds more
//! than 400 lines of code (its unit tests aside), no two top-level modules import each other
//! (directly or round a loop), and the event socket library and the domain import nothing
//! from the rest of the crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The file's code without its `#[cfg(test)] mod tests` and without comments.
fn code(text: &str) -> String {
    let body = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
    body.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level module a file belongs to (`src/esl/client.rs` -> `esl`).
fn top(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// `crate::<name>` paths named in `code`.
fn crate_imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

fn loops(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        out: &mut Vec<Vec<String>>,
    ) {
        let here = path.last().unwrap().clone();
        for next in graph.get(&here).into_iter().flatten() {
            if next == start {
                out.push(path.clone());
            } else if !path.contains(next) {
                path.push(next.clone());
                walk(graph, start, path, out);
                path.pop();
            }
        }
    }
    let mut out = Vec::new();
    for start in graph.keys() {
        walk(graph, start, &mut vec![start.clone()], &mut out);
    }
    out
}

#[test]
fn modules_stay_small_documented_and_free_of_import_loops() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 40, "{}", files.len());
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let shown = file.strip_prefix(&src).unwrap().display().to_string();
        if !text.starts_with("//!") {
            problems.push(format!(
                "{shown} does not open with a //! line saying what it owns"
            ));
        }
        let lines = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap()
            .lines()
            .count();
        if lines > 400 {
            problems.push(format!("{shown}: {lines} lines of code (at most 400)"));
        }
        let module = top(&src, file);
        if matches!(module.as_str(), "main" | "lib") {
            continue;
        }
        let imports = crate_imports(&code(&text));
        if matches!(module.as_str(), "esl" | "domain") {
            for other in imports.iter().filter(|m| **m != module) {
                problems.push(format!(
                    "{shown} imports crate::{other}: {module} stands alone"
                ));
            }
        }
        graph
            .entry(module.clone())
            .or_default()
            .extend(imports.into_iter().filter(|m| *m != module));
    }
    for l in loops(&graph) {
        problems.push(format!("import loop: {} -> {}", l.join(" -> "), l[0]));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_loop_is_found_and_imports_are_read() {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert!(loops(&g).is_empty());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        loops(&g).len(),
        3,
        "one loop, seen from each of its modules"
    );
    let imports = crate_imports(&code(
        "//! x\nuse crate::storage::Storage;\n// crate::admin in a comment\nlet x = crate::click2call::f();",
    ));
    assert_eq!(
        imports.into_iter().collect::<Vec<_>>(),
        ["click2call", "storage"]
    );
}
