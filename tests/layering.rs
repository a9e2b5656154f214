//! The crate's shape, checked: which room may import which, and no import
//! cycle between files. Reads the `use` lines (and other `crate::` paths in
//! code) of `src/`; comments and `#[cfg(test)]` modules are not production
//! imports and are skipped.
//!
//! Rooms, from the ground up (see `src/lib.rs`):
//! - base: `context` imports nothing of the crate; `error` and `telemetry`
//!   import only `context`;
//! - layers: `input`, `deadline`, `outbound`, `observe`, `rate_limit`, and
//!   any later layer folder, import only the base, never each other;
//! - on top: `serve` (base and layers), `config` (also `serve`), `preset`
//!   (everything).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const BASE: &[&str] = &["context", "error", "telemetry"];
const TOP: &[&str] = &["serve", "config", "preset"];
/// Files at the crate root that are no room.
const ROOT_FILES: &[&str] = &["lib", "macros"];

/// Whether room `room` may import room `target` (two different rooms).
fn may_import(room: &str, target: &str) -> bool {
    let base = BASE.contains(&target);
    let layer = is_layer(target);
    match room {
        "context" => false,
        "error" | "telemetry" => target == "context",
        "serve" => base || layer,
        "config" => base || layer || target == "serve",
        "preset" => true,
        _ => base, // a layer
    }
}

fn is_layer(room: &str) -> bool {
    !BASE.contains(&room) && !TOP.contains(&room) && !ROOT_FILES.contains(&room)
}

/// A source file: its module path (`["rate_limit", "store", "memory"]`) and
/// its production text.
struct SourceFile {
    module: Vec<String>,
    path: PathBuf,
    code: String,
}

fn source_files() -> Vec<SourceFile> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let relative = path.strip_prefix(&src).unwrap().with_extension("");
                let mut module: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if module
                    .last()
                    .is_some_and(|last| last == "mod" || last == "lib")
                {
                    module.pop();
                }
                let text = std::fs::read_to_string(&path).unwrap();
                files.push(SourceFile {
                    module,
                    code: production_code(&text),
                    path,
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// The text without comments and without `#[cfg(test)]` items.
fn production_code(text: &str) -> String {
    let mut out = String::new();
    let mut skip_depth: Option<i32> = None;
    let mut depth = 0i32;
    let mut pending_test_attribute = false;
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let trimmed = code.trim();
        if skip_depth.is_none() && trimmed.starts_with("#[cfg(test)]") {
            pending_test_attribute = true;
            continue;
        }
        let opens = code.matches('{').count() as i32;
        let closes = code.matches('}').count() as i32;
        if pending_test_attribute && !trimmed.is_empty() {
            pending_test_attribute = false;
            if opens > closes {
                skip_depth = Some(depth);
            }
            depth += opens - closes;
            continue; // a one-line item (a `use`) is skipped whole
        }
        depth += opens - closes;
        if let Some(start) = skip_depth {
            if depth <= start {
                skip_depth = None;
            }
            continue;
        }
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Every path a file names: the leaves of its `use` trees and the `crate::`
/// paths in its code, as segments starting with `crate`, `super` or `self`.
fn named_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    let mut outside_uses = String::new();
    while let Some(at) = find_use(rest) {
        outside_uses.push_str(&rest[..at]);
        let after = &rest[at..];
        let end = after.find(';').unwrap_or(after.len());
        let tree: String = after[..end].split_whitespace().collect();
        flatten_use_tree(&tree, &mut Vec::new(), &mut paths);
        rest = &after[end..];
    }
    outside_uses.push_str(rest);
    let code = outside_uses.as_str();
    let bytes = code.as_bytes();
    let mut index = 0;
    while let Some(found) = code[index..].find("crate::") {
        let start = index + found;
        let boundary = start == 0
            || !(bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b':');
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_' || bytes[end] == b':')
        {
            end += 1;
        }
        if boundary {
            let path: Vec<String> = code[start..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            paths.push(path);
        }
        index = end.max(start + 1);
    }
    paths
}

/// The offset just after the next `use ` keyword that starts a use item.
fn find_use(code: &str) -> Option<usize> {
    let mut index = 0;
    while let Some(found) = code[index..].find("use ") {
        let start = index + found;
        let before = code[..start].trim_end();
        let at_item_start = before.is_empty()
            || before.ends_with(';')
            || before.ends_with('}')
            || before.ends_with('{')
            || before.ends_with(')')
            || before.ends_with(']')
            || before.ends_with("pub");
        if at_item_start {
            return Some(start + 4);
        }
        index = start + 4;
    }
    None
}

fn flatten_use_tree(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let depth = prefix.len();
        prefix.extend(head);
        for part in split_top_level(inner) {
            flatten_use_tree(part, prefix, out);
        }
        prefix.truncate(depth);
    } else {
        let name = tree.split(" as ").next().unwrap_or(tree);
        let mut path = prefix.clone();
        path.extend(
            name.split("::")
                .filter(|s| !s.is_empty() && *s != "self")
                .map(str::to_owned),
        );
        out.push(path);
    }
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (index, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
        .into_iter()
        .filter(|part| !part.trim().is_empty())
        .collect()
}

/// The crate's module tree: module path -> file index, and for each module
/// the names it re-exports from a child module.
struct Tree<'a> {
    files: &'a [SourceFile],
    by_module: BTreeMap<Vec<String>, usize>,
}

impl<'a> Tree<'a> {
    fn new(files: &'a [SourceFile]) -> Self {
        let by_module = files
            .iter()
            .enumerate()
            .map(|(index, file)| (file.module.clone(), index))
            .collect();
        Self { files, by_module }
    }

    /// The child module of `module` a re-export of `name` comes from.
    fn reexport_source(&self, module: &[String], name: &str) -> Option<Vec<String>> {
        let file = &self.files[*self.by_module.get(module)?];
        for path in named_paths(&file.code) {
            if path.last().map(String::as_str) == Some(name) && path.len() >= 2 {
                let child: Vec<String> = module.iter().cloned().chain([path[0].clone()]).collect();
                if self.by_module.contains_key(&child) {
                    return Some(child);
                }
            }
        }
        None
    }

    /// The file that defines what `path` (absolute, without `crate`) names.
    fn resolve(&self, path: &[String]) -> Option<usize> {
        let mut module: Vec<String> = Vec::new();
        let mut seen = 0;
        for segment in path {
            let mut child = module.clone();
            child.push(segment.clone());
            if self.by_module.contains_key(&child) {
                module = child;
                continue;
            }
            // An item of `module`, maybe re-exported from a child.
            while let Some(source) = self.reexport_source(&module, segment) {
                module = source;
                seen += 1;
                if seen > 16 {
                    break;
                }
            }
            break;
        }
        self.by_module.get(&module).copied()
    }

    /// The absolute path a file's `crate::`/`super::`/`self::` path names.
    fn absolute(&self, file: &SourceFile, path: &[String]) -> Option<Vec<String>> {
        let first = path.first()?;
        let is_mod_file = file.path.file_name().is_some_and(|name| name == "mod.rs");
        match first.as_str() {
            "crate" => Some(path[1..].to_vec()),
            "super" => {
                let mut base = file.module.clone();
                if !is_mod_file {
                    base.pop();
                }
                let mut rest = path;
                while rest.first().map(String::as_str) == Some("super") {
                    rest = &rest[1..];
                    if rest.first().map(String::as_str) == Some("super") {
                        base.pop();
                    }
                }
                Some(base.into_iter().chain(rest.iter().cloned()).collect())
            }
            "self" => Some(
                file.module
                    .iter()
                    .cloned()
                    .chain(path[1..].iter().cloned())
                    .collect(),
            ),
            // `use child::Item;` in a mod.rs (a child module of its own).
            name if is_mod_file || file.module.is_empty() => {
                let child: Vec<String> = file
                    .module
                    .iter()
                    .cloned()
                    .chain([name.to_owned()])
                    .collect();
                self.by_module.contains_key(&child).then(|| {
                    file.module
                        .iter()
                        .cloned()
                        .chain(path.iter().cloned())
                        .collect()
                })
            }
            _ => None,
        }
    }

    /// File-to-file imports. A module file's re-exports of its own children
    /// are structure, not imports.
    fn edges(&self) -> BTreeMap<usize, BTreeSet<usize>> {
        let mut edges: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        for (index, file) in self.files.iter().enumerate() {
            for path in named_paths(&file.code) {
                let Some(absolute) = self.absolute(file, &path) else {
                    continue;
                };
                let is_own_child = absolute.len() > file.module.len()
                    && absolute.starts_with(&file.module)
                    && self.by_module.contains_key(&absolute[..=file.module.len()])
                    && (file.path.ends_with("mod.rs") || file.path.ends_with("lib.rs"));
                if is_own_child {
                    continue;
                }
                if let Some(target) = self.resolve(&absolute) {
                    if target != index {
                        edges.entry(index).or_default().insert(target);
                    }
                }
            }
        }
        edges
    }
}

fn room_of(file: &SourceFile) -> &str {
    file.module.first().map_or("lib", String::as_str)
}

#[test]
fn every_room_imports_only_what_it_stands_on() {
    let files = source_files();
    let tree = Tree::new(&files);
    let mut broken = Vec::new();
    for (from, targets) in tree.edges() {
        let room = room_of(&files[from]);
        if ROOT_FILES.contains(&room) {
            continue;
        }
        for to in targets {
            let target = room_of(&files[to]);
            if target == room || ROOT_FILES.contains(&target) {
                continue;
            }
            if !may_import(room, target) {
                broken.push(format!(
                    "{} imports {} (room {room} may not import room {target})",
                    files[from].path.display(),
                    files[to].path.display()
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layering rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn no_import_cycle_between_files() {
    let files = source_files();
    let tree = Tree::new(&files);
    let edges = tree.edges();
    // Tarjan's strongly connected components.
    struct State<'e> {
        edges: &'e BTreeMap<usize, BTreeSet<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        cycles: Vec<Vec<usize>>,
    }
    fn visit(state: &mut State<'_>, node: usize) {
        state.index[node] = Some(state.next);
        state.low[node] = state.next;
        state.next += 1;
        state.stack.push(node);
        state.on_stack[node] = true;
        let targets: Vec<usize> = state
            .edges
            .get(&node)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        for target in targets {
            match state.index[target] {
                None => {
                    visit(state, target);
                    state.low[node] = state.low[node].min(state.low[target]);
                }
                Some(index) if state.on_stack[target] => {
                    state.low[node] = state.low[node].min(index);
                }
                Some(_) => {}
            }
        }
        if Some(state.low[node]) == state.index[node] {
            let mut component = Vec::new();
            while let Some(top) = state.stack.pop() {
                state.on_stack[top] = false;
                component.push(top);
                if top == node {
                    break;
                }
            }
            if component.len() > 1 {
                state.cycles.push(component);
            }
        }
    }
    let mut state = State {
        edges: &edges,
        index: vec![None; files.len()],
        low: vec![0; files.len()],
        on_stack: vec![false; files.len()],
        stack: Vec::new(),
        next: 0,
        cycles: Vec::new(),
    };
    for node in 0..files.len() {
        if state.index[node].is_none() {
            visit(&mut state, node);
        }
    }
    let cycles: Vec<String> = state
        .cycles
        .iter()
        .map(|cycle| {
            cycle
                .iter()
                .map(|&file| files[file].path.display().to_string())
                .collect::<Vec<_>>()
                .join(" <-> ")
        })
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// The checker itself sees imports: a fixture with a known cycle and a known
/// forbidden import is caught.
#[test]
fn the_checker_finds_imports_in_grouped_and_nested_use_trees() {
    let code = production_code(
        "use crate::context::{RequestId, TraceId};\n\
         use super::{body::ObservedBody, outcome::{Failure, Outcome}};\n\
         // use crate::preset::Harden;\n\
         fn f() { crate::telemetry::escape(\"x\", 1); }\n\
         #[cfg(test)]\n\
         mod tests {\n    use crate::deadline::Budget;\n}\n",
    );
    let paths: BTreeSet<String> = named_paths(&code)
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    let expected: BTreeSet<String> = [
        "crate::context::RequestId",
        "crate::context::TraceId",
        "super::body::ObservedBody",
        "super::outcome::Failure",
        "super::outcome::Outcome",
        "crate::telemetry::escape",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(paths, expected);
    // The real tree resolves through re-exports to the defining file.
    let files = source_files();
    let tree = Tree::new(&files);
    let target = tree
        .resolve(&["context".to_owned(), "RequestId".to_owned()])
        .map(|index| files[index].path.clone())
        .unwrap();
    assert!(
        target.ends_with("context/request_id.rs"),
        "{}",
        target.display()
    );
    assert!(!tree.edges().is_empty());
}
