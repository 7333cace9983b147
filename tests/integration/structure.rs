//! The import rule: no module of keygate imports one that imports it back, neither file by file
//! nor between top-level modules — except `body` and `proxy` (`proxy::pool`), a real type
//! recursion (a response body is an upstream body that returns its connection to the pool).
//!
//! The graph is read from the source: every `crate::a::b` and `super::b` path outside comments
//! and `#[cfg(test)]` modules, resolved to the file that defines the module. Edges between a
//! module and its own submodules (a parent re-exporting a child's types, a child using its
//! parent's) do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`policy::quota`, `` for lib.rs) → file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let name = rel.to_string_lossy().replace('/', "::");
            let name = match name.as_str() {
                "lib" | "main" => String::new(),
                _ => name,
            };
            if name == "tests" || name.ends_with("::tests") || name.contains("::tests::") {
                continue;
            }
            if name.starts_with("bin::") {
                continue;
            }
            found.insert(name, path);
        }
    }
    found
}

/// The source without comments and without its `#[cfg(test)] mod tests` part.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths after each `prefix` (`crate::`, `super::`): `a::b::C` → `["a", "b"]` (lowercase
/// segments only: modules, not types).
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut segments = Vec::new();
        let mut tail = rest;
        loop {
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let segment = &tail[..end];
            if segment.is_empty() || !segment.starts_with(|c: char| c.is_ascii_lowercase()) {
                break;
            }
            segments.push(segment.to_owned());
            match tail[end..].strip_prefix("::") {
                Some(next) => tail = next,
                None => break,
            }
        }
        if !segments.is_empty() {
            paths.push(segments);
        }
    }
    paths
}

/// The longest module that `segments` names.
fn resolve(modules: &BTreeMap<String, PathBuf>, segments: &[String]) -> Option<String> {
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|m| modules.contains_key(m))
}

fn related(a: &str, b: &str) -> bool {
    a.is_empty()
        || b.is_empty()
        || a.starts_with(&format!("{b}::"))
        || b.starts_with(&format!("{a}::"))
}

/// File-level edges, each module's own submodules and parents left out.
fn file_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(src);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, path) in &modules {
        let code = code(&std::fs::read_to_string(path).unwrap());
        let parent: Vec<String> = name
            .split("::")
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .split_last()
            .map(|(_, p)| p.to_vec())
            .unwrap_or_default();
        let mut targets = BTreeSet::new();
        for segments in paths_after(&code, "crate::") {
            targets.extend(resolve(&modules, &segments));
        }
        for segments in paths_after(&code, "super::") {
            let full: Vec<String> = parent.iter().cloned().chain(segments).collect();
            targets.extend(resolve(&modules, &full));
        }
        let edges = graph.entry(name.clone()).or_default();
        for target in targets {
            if &target != name && !related(name, &target) {
                edges.insert(target);
            }
        }
    }
    graph
}

/// The strongly connected components with more than one member (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.insert(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

fn top_level(graph: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<String, BTreeSet<String>> {
    let top = |m: &str| m.split("::").next().unwrap_or("").to_owned();
    let mut result: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, tos) in graph {
        let edges = result.entry(top(from)).or_default();
        for to in tos {
            if top(from) != top(to) && !top(from).is_empty() && !top(to).is_empty() {
                edges.insert(top(to));
            }
        }
    }
    result
}

fn allowed(component: &BTreeSet<String>, pair: [&str; 2]) -> bool {
    component.len() == 2 && pair.iter().all(|m| component.contains(*m))
}

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_file_imports_one_that_imports_it_back() {
    let graph = file_graph(&src());
    assert!(graph.len() > 50, "read only {} modules", graph.len());
    let found: Vec<_> = cycles(&graph)
        .into_iter()
        .filter(|c| !allowed(c, ["body", "proxy::pool"]))
        .collect();
    assert!(found.is_empty(), "import cycles between files: {found:#?}");
}

#[test]
fn no_top_level_module_imports_one_that_imports_it_back() {
    let graph = top_level(&file_graph(&src()));
    let found: Vec<_> = cycles(&graph)
        .into_iter()
        .filter(|c| !allowed(c, ["body", "proxy"]))
        .collect();
    assert!(
        found.is_empty(),
        "import cycles between modules: {found:#?}"
    );
}

#[test]
fn the_checker_finds_a_cycle_and_ignores_comments_and_tests() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n");
    write("a.rs", "use crate::b::Thing;\n// crate::c::Other\n");
    write("b.rs", "use crate::a::Other;\n");
    write(
        "c.rs",
        "pub fn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::a::X;\n}\n",
    );
    let graph = file_graph(dir.path());
    assert_eq!(graph["a"], BTreeSet::from(["b".to_owned()]));
    assert!(graph["c"].is_empty(), "{graph:?}");
    assert_eq!(
        cycles(&graph),
        vec![BTreeSet::from(["a".to_owned(), "b".to_owned()])]
    );
}
