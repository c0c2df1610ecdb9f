//! The crate's layering, checked against its sources: no import cycle among the
//! modules of `actors/src`, no actor module importing another, and the node crate
//! using only what `lib.rs` says it may.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The modules that are actors (drivers of the core); none may import another.
const ACTORS: &[&str] = &["intake", "tier_queues", "validator_pool", "store_actor"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The names that follow each `prefix` in `text` (`prefix` then an identifier), and for
/// `prefix{a, b::c}` the first segment of each item of the group.
fn names_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices(prefix) {
        let rest = &text[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        let name = ident(&group[i..]);
                        if !name.is_empty() {
                            names.insert(name);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// Text with `//` comments removed (docs name modules without importing them).
fn code_of(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// For each top-level module of `actors/src`, the other top-level modules it uses.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" {
            continue;
        }
        let used = names_after(&code_of(&file), "crate::");
        graph
            .entry(top.clone())
            .or_default()
            .extend(used.into_iter().filter(|m| *m != top));
    }
    graph
}

#[test]
fn the_modules_of_the_crate_form_no_cycle() {
    let graph = module_graph();
    assert!(graph.contains_key("core") && graph.contains_key("messages"));
    // Kahn's algorithm over "is used by": what remains is on a cycle.
    let mut remaining = graph.clone();
    loop {
        let leaves: Vec<String> = remaining
            .iter()
            .filter(|(_, uses)| uses.iter().all(|u| !remaining.contains_key(u)))
            .map(|(m, _)| m.clone())
            .collect();
        if leaves.is_empty() {
            break;
        }
        for leaf in leaves {
            remaining.remove(&leaf);
        }
    }
    assert!(
        remaining.is_empty(),
        "modules on an import cycle: {remaining:#?}"
    );
}

#[test]
fn no_actor_module_imports_another_or_what_is_above_it() {
    let graph = module_graph();
    for actor in ACTORS {
        let uses = &graph[*actor];
        for other in ACTORS.iter().chain(&["supervisor", "handle"]) {
            assert!(
                !uses.contains(*other),
                "{actor} imports {other}; actors meet only through `messages`"
            );
        }
    }
    assert!(
        !graph["core"]
            .iter()
            .any(|m| ACTORS.contains(&m.as_str()) || m == "messages"),
        "the core stays below the actors: {:?}",
        graph["core"]
    );
}

#[test]
fn the_node_uses_only_what_lib_rs_lists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let start = lib
        .find("node-may-use:")
        .expect("lib.rs lists what the node may use");
    let end = start + lib[start..].find("-->").unwrap();
    let allowed: BTreeSet<String> = lib[start + "node-may-use:".len()..end]
        .split_whitespace()
        .filter(|w| *w != "//!")
        .map(str::to_string)
        .collect();
    let mut files = Vec::new();
    rust_files(&root.join("../node/src"), &mut files);
    assert!(!files.is_empty());
    let mut used = BTreeSet::new();
    for file in files {
        used.extend(names_after(&code_of(&file), "chorus_actors::"));
    }
    let unlisted: Vec<&String> = used.difference(&allowed).collect();
    assert!(
        unlisted.is_empty(),
        "node/src uses chorus_actors paths lib.rs does not list: {unlisted:?}"
    );
    assert!(
        used.contains("NodeHandle"),
        "the scan finds the node's uses"
    );
}
