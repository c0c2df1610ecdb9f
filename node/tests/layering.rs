//! The crate's two halves, checked against its sources: no daemon module uses the CLI
//! tools (`src/tools`), and the tools' modules form no import cycle. Tools name one
//! another by full path (`crate::tools::name`), one path per `use`, so that this
//! check can read them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use petgraph::algo::tarjan_scc;
use petgraph::graphmap::DiGraphMap;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every Rust file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|entry| entry.unwrap().into_path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .collect()
}

/// A file's code: `//` comments removed (docs name modules without using them).
fn code(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The tools' top-level module a file of `src/tools` belongs to.
fn tool_of(path: &Path) -> String {
    let relative = path.strip_prefix(src().join("tools")).unwrap();
    let first = relative.components().next().unwrap();
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

#[test]
fn no_daemon_module_uses_the_tools() {
    let files = rust_files(&src());
    let tools = src().join("tools");
    let offenders: Vec<_> = files
        .iter()
        .filter(|f| !f.starts_with(&tools) && !f.ends_with("main.rs") && !f.ends_with("lib.rs"))
        .filter(|f| {
            let code = code(f);
            code.contains("crate::tools") || code.contains("chorus_node::tools")
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "daemon modules using the tools: {offenders:?}"
    );
}

#[test]
fn the_tools_modules_form_no_cycle() {
    let files = rust_files(&src().join("tools"));
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = tool_of(file);
        let code = code(file);
        assert!(
            !code.contains("crate::tools::{"),
            "{}: one path per use, so the layering can be read",
            file.display()
        );
        let uses = graph.entry(from.clone()).or_default();
        for (at, _) in code.match_indices("crate::tools::") {
            let name: String = code[at + "crate::tools::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name != from {
                uses.insert(name);
            }
        }
    }
    assert!(graph.len() >= 7, "the tools' modules were found: {graph:?}");
    // A strongly connected component of more than one module is an import cycle.
    let mut uses = DiGraphMap::<&str, ()>::new();
    for (from, to) in &graph {
        uses.add_node(from);
        for name in to.iter().filter(|name| graph.contains_key(*name)) {
            uses.add_edge(from, name, ());
        }
    }
    let cycles: Vec<Vec<&str>> = tarjan_scc(&uses)
        .into_iter()
        .filter(|component| component.len() > 1)
        .collect();
    assert!(
        cycles.is_empty(),
        "import cycles among the tools: {cycles:?}"
    );
}
