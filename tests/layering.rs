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

/// The text as the compiler reads production code: comments removed,
/// string and character literals blanked (neither braces nor paths inside
/// them count), and items under a `#[cfg(...test...)]` attribute removed.
fn production_code(text: &str) -> String {
    remove_test_items(&strip_comments_and_literals(text))
}

fn is_ident_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

fn strip_comments_and_literals(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let blank = |out: &mut Vec<u8>, byte: u8| out.push(if byte == b'\n' { b'\n' } else { b' ' });
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        let after_ident = i > 0 && is_ident_byte(bytes[i - 1]);
        if rest.starts_with(b"//") {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            while i < bytes.len() {
                if bytes[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if bytes[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, bytes[i]);
                    i += 1;
                }
            }
        } else if !after_ident && bytes[i] == b'r' && matches!(rest.get(1), Some(b'"' | b'#')) {
            // A raw string: r"..." or r#"..."#.
            let hashes = rest[1..].iter().take_while(|&&b| b == b'#').count();
            if rest.get(1 + hashes) != Some(&b'"') {
                out.push(bytes[i]);
                i += 1;
                continue;
            }
            let mut closing = vec![b'"'];
            closing.extend(std::iter::repeat_n(b'#', hashes));
            out.extend_from_slice(b"r\"");
            i += 2 + hashes;
            while i < bytes.len() && !bytes[i..].starts_with(&closing) {
                blank(&mut out, bytes[i]);
                i += 1;
            }
            out.push(b'"');
            i += closing.len();
        } else if bytes[i] == b'"' {
            out.push(b'"');
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' {
                    blank(&mut out, bytes[i]);
                    i += 1;
                }
                if i < bytes.len() {
                    blank(&mut out, bytes[i]);
                    i += 1;
                }
            }
            out.push(b'"');
            i += 1;
        } else if bytes[i] == b'\'' && (rest.get(1) == Some(&b'\\') || rest.get(2) == Some(&b'\''))
        {
            // A character literal ('x', '\n', '\''), not a lifetime.
            out.push(b'\'');
            i += 1;
            if bytes[i] == b'\\' {
                i += 1;
            }
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                i += 1;
            }
            out.extend_from_slice(b" '");
            i += 1;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether an attribute line gates its item on `test` (`#[cfg(test)]`,
/// `#[cfg(all(test, feature = "x"))]`), not on `not(test)`.
fn is_test_attribute(line: &str) -> bool {
    let line = line.trim();
    if !line.starts_with("#[cfg(") || line.contains("not(test") {
        return false;
    }
    let bytes = line.as_bytes();
    line.match_indices("test").any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + 4).copied();
        !before.is_some_and(is_ident_byte) && !after.is_some_and(is_ident_byte)
    })
}

fn remove_test_items(code: &str) -> String {
    let mut out = String::new();
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        if !is_test_attribute(line) {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        // Skip the attributes that follow, then the item: up to its `;`, or
        // through its balanced braces.
        let mut depth = 0i32;
        let mut opened = false;
        for item_line in lines.by_ref() {
            let trimmed = item_line.trim();
            if !opened && (trimmed.is_empty() || trimmed.starts_with("#[")) {
                continue;
            }
            for byte in item_line.bytes() {
                match byte {
                    b'{' => {
                        depth += 1;
                        opened = true;
                    }
                    b'}' => depth -= 1,
                    _ => {}
                }
            }
            if (opened && depth <= 0) || (!opened && trimmed.ends_with(';')) {
                break;
            }
        }
    }
    out
}

/// One path a file names: its segments (starting with `crate`, `super`,
/// `self`, or a child module's name in a `use`), and whether it is a `pub`
/// re-export.
#[derive(Debug, Clone)]
struct NamedPath {
    segments: Vec<String>,
    reexport: bool,
    /// How many inline `mod name { .. }` blocks of its file it stands in:
    /// that many `super`s stay inside the file.
    inline_depth: usize,
}

/// The byte ranges of the inline module blocks (`mod name { .. }`) of a
/// file's code.
fn inline_modules(code: &str) -> Vec<(usize, usize)> {
    let bytes = code.as_bytes();
    let mut blocks = Vec::new();
    for (at, _) in code.match_indices("mod ") {
        if at > 0 && is_ident_byte(bytes[at - 1]) {
            continue;
        }
        let after_name = at
            + 4
            + bytes[at + 4..]
                .iter()
                .position(|&b| !(is_ident_byte(b) || b == b' '))
                .unwrap_or(0);
        if bytes.get(after_name) != Some(&b'{') {
            continue; // `mod name;`
        }
        let mut depth = 0;
        for (offset, &byte) in bytes[after_name..].iter().enumerate() {
            match byte {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        blocks.push((after_name, after_name + offset));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    blocks
}

/// Every path a file names: the leaves of its `use` trees (an alias names
/// what it aliases) and the `crate::`, `super::` and `self::` paths in its
/// code (types, calls, macros).
fn named_paths(code: &str) -> Vec<NamedPath> {
    let blocks = inline_modules(code);
    let depth_at = |position: usize| {
        blocks
            .iter()
            .filter(|(start, end)| *start < position && position < *end)
            .count()
    };
    let mut paths = Vec::new();
    let mut rest = code;
    // The code with its `use` trees blanked, offsets kept.
    let mut outside_uses = String::new();
    while let Some((at, reexport)) = find_use(rest) {
        outside_uses.push_str(&rest[..at]);
        let after = &rest[at..];
        let end = after.find(';').unwrap_or(after.len());
        let inline_depth = depth_at(code.len() - after.len());
        let tree = after[..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let mut leaves = Vec::new();
        flatten_use_tree(&tree, &mut Vec::new(), &mut leaves);
        paths.extend(leaves.into_iter().map(|segments| NamedPath {
            segments,
            reexport,
            inline_depth,
        }));
        outside_uses.extend(
            after[..end]
                .chars()
                .map(|c| if c == '\n' { c } else { ' ' }),
        );
        rest = &after[end..];
    }
    outside_uses.push_str(rest);
    let code = outside_uses.as_str();
    let bytes = code.as_bytes();
    // `crate::`, `super::`, `self::`, and `name::` (a module file's child
    // module, or anything else: `Tree::absolute` keeps only what is a path
    // into this crate).
    for (start, _) in code.match_indices("::") {
        // Only the first `::` of a path starts one.
        let head_start = bytes[..start]
            .iter()
            .rposition(|&b| !is_ident_byte(b))
            .map_or(0, |at| at + 1);
        let head = &code[head_start..start];
        let preceded_by_path = head_start >= 1 && bytes[head_start - 1] == b':';
        let lowercase_head = head.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
        if head.is_empty() || preceded_by_path || !lowercase_head {
            continue;
        }
        let end = bytes[head_start..]
            .iter()
            .position(|&b| !(is_ident_byte(b) || b == b':'))
            .map_or(bytes.len(), |len| head_start + len);
        let segments = code[head_start..end]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        paths.push(NamedPath {
            segments,
            reexport: false,
            inline_depth: depth_at(head_start),
        });
    }
    paths
}

/// Where the next `use` item's tree starts, and whether it is a `pub`
/// (re-export) one.
fn find_use(code: &str) -> Option<(usize, bool)> {
    let mut index = 0;
    while let Some(found) = code[index..].find("use ") {
        let start = index + found;
        let before = code[..start].trim_end();
        let reexport = before.ends_with("pub")
            || before.ends_with("pub(crate)")
            || before.ends_with("pub(super)");
        let at_item_start = before.is_empty()
            || reexport
            || before.ends_with(';')
            || before.ends_with('}')
            || before.ends_with('{')
            || before.ends_with(']');
        let own_word = start == 0 || !is_ident_byte(code.as_bytes()[start - 1]);
        if at_item_start && own_word {
            return Some((start + 4, reexport));
        }
        index = start + 4;
    }
    None
}

fn flatten_use_tree(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim().trim_start_matches("::");
    let segments = |text: &str| -> Vec<String> {
        text.split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    if let Some(open) = tree.find('{') {
        let depth = prefix.len();
        prefix.extend(segments(&tree[..open]));
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        for part in split_top_level(inner) {
            flatten_use_tree(part, prefix, out);
        }
        prefix.truncate(depth);
    } else {
        let name = tree.split(" as ").next().unwrap_or(tree);
        let mut path = prefix.clone();
        path.extend(segments(name));
        // `{self, ..}` names the module itself; a glob, the module.
        if path.len() > 1
            && path
                .last()
                .is_some_and(|last| last == "self" || last == "*")
        {
            path.pop();
        }
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

/// The crate's module tree: module path -> file index.
struct Tree<'a> {
    files: &'a [SourceFile],
    by_module: BTreeMap<Vec<String>, usize>,
    paths: Vec<Vec<NamedPath>>,
}

impl<'a> Tree<'a> {
    fn new(files: &'a [SourceFile]) -> Self {
        let by_module = files
            .iter()
            .enumerate()
            .map(|(index, file)| (file.module.clone(), index))
            .collect();
        let paths = files.iter().map(|file| named_paths(&file.code)).collect();
        Self {
            files,
            by_module,
            paths,
        }
    }

    fn is_module_file(&self, index: usize) -> bool {
        let path = &self.files[index].path;
        path.ends_with("mod.rs") || path.ends_with("lib.rs")
    }

    /// The file that defines what `path` (absolute, without `crate`) names:
    /// modules are descended as far as they exist; an item a module file
    /// re-exports is followed to where the re-export points.
    fn resolve(&self, path: &[String], hops: usize) -> Option<usize> {
        let mut module: Vec<String> = Vec::new();
        let mut rest = path;
        while let Some((segment, tail)) = rest.split_first() {
            let mut child = module.clone();
            child.push(segment.clone());
            if !self.by_module.contains_key(&child) {
                break;
            }
            module = child;
            rest = tail;
        }
        let file = *self.by_module.get(&module)?;
        let Some(item) = rest.first() else {
            return Some(file);
        };
        if hops < 16 {
            for named in &self.paths[file] {
                if named.reexport && named.segments.last() == Some(item) {
                    if let Some(source) = self.absolute(file, named) {
                        if source != path {
                            return self.resolve(&source, hops + 1);
                        }
                    }
                }
            }
        }
        Some(file)
    }

    /// The absolute path (without `crate`) a path named in file `index`
    /// stands for, if it is a path into this crate.
    fn absolute(&self, index: usize, named: &NamedPath) -> Option<Vec<String>> {
        let path = &named.segments[..];
        let file = &self.files[index];
        let (first, rest) = path.split_first()?;
        match first.as_str() {
            "crate" => Some(rest.to_vec()),
            "super" => {
                // `super` is the parent of this file's module, whether the
                // file is `x.rs` or `x/mod.rs`; each further `super` one up.
                // Inside an inline `mod name { .. }`, the first `super`s
                // climb out of the inline modules, staying in the file.
                let supers = path.iter().take_while(|s| *s == "super").count();
                let mut base = file.module.clone();
                for _ in 0..supers.saturating_sub(named.inline_depth) {
                    base.pop()?;
                }
                Some(
                    base.into_iter()
                        .chain(path[supers..].iter().cloned())
                        .collect(),
                )
            }
            "self" => Some(file.module.iter().chain(rest).cloned().collect()),
            // `use child::Item;` of a module file's own child module.
            name => {
                let child: Vec<String> = file
                    .module
                    .iter()
                    .cloned()
                    .chain([name.to_owned()])
                    .collect();
                (self.is_module_file(index) && self.by_module.contains_key(&child))
                    .then(|| file.module.iter().chain(path).cloned().collect())
            }
        }
    }

    /// File-to-file imports. A module file's `pub use` of its own children
    /// is structure, not an import; anything else it takes from them is.
    fn edges(&self) -> BTreeMap<usize, BTreeSet<usize>> {
        let mut edges: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        for (index, file) in self.files.iter().enumerate() {
            for named in &self.paths[index] {
                let Some(absolute) = self.absolute(index, named) else {
                    continue;
                };
                let into_own_subtree =
                    absolute.len() > file.module.len() && absolute.starts_with(&file.module);
                if named.reexport && self.is_module_file(index) && into_own_subtree {
                    continue;
                }
                if let Some(target) = self.resolve(&absolute, 0) {
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

/// Every import of a room it may not stand on.
fn violations(files: &[SourceFile]) -> Vec<String> {
    let tree = Tree::new(files);
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
    broken
}

#[test]
fn every_room_imports_only_what_it_stands_on() {
    let broken = violations(&source_files());
    assert!(
        broken.is_empty(),
        "layering rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn no_import_cycle_between_files() {
    let cycles = cycles(&source_files());
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// The files that import each other in a circle, one line per circle.
fn cycles(files: &[SourceFile]) -> Vec<String> {
    let tree = Tree::new(files);
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
    state
        .cycles
        .iter()
        .map(|cycle| {
            cycle
                .iter()
                .map(|&file| files[file].path.display().to_string())
                .collect::<Vec<_>>()
                .join(" <-> ")
        })
        .collect()
}

/// The reader sees every form of import and nothing that is not one.
#[test]
fn the_checker_reads_every_form_of_import() {
    let code = production_code(concat!(
        "use crate::context::{RequestId, TraceId as Trace};\n",
        "use super::{body::ObservedBody, outcome::{Failure, Outcome}};\n",
        "pub(crate) use self::inner::Thing;\n",
        "use crate::rate_limit as rl;\n",
        "// use crate::preset::Harden;\n",
        "/* crate::serve::serve() */\n",
        "const URL: &str = \"https://example.com/{ crate::config::X }\";\n",
        "const C: char = '{';\n",
        "fn f<'a>(x: &'a str) { crate::telemetry::escape(x, 1); super::super::input::Body::new(); }\n",
        "#[cfg(all(test, feature = \"redis\"))]\n",
        "#[allow(dead_code)]\n",
        "mod tests {\n    use crate::deadline::Budget;\n    fn g() {}\n}\n",
        "#[cfg(test)]\n",
        "use crate::observe::Observe;\n",
        "#[cfg(not(test))]\n",
        "use crate::error::Problem;\n",
    ));
    let paths: BTreeSet<(String, bool)> = named_paths(&code)
        .into_iter()
        .map(|p| (p.segments.join("::"), p.reexport))
        .collect();
    let expected: BTreeSet<(String, bool)> = [
        ("crate::context::RequestId", false),
        ("crate::context::TraceId", false),
        ("super::body::ObservedBody", false),
        ("super::outcome::Failure", false),
        ("super::outcome::Outcome", false),
        ("self::inner::Thing", true),
        ("crate::rate_limit", false),
        ("crate::telemetry::escape", false),
        ("super::super::input::Body::new", false),
        ("crate::error::Problem", false),
    ]
    .into_iter()
    .map(|(path, reexport)| (path.to_owned(), reexport))
    .collect();
    assert_eq!(paths, expected);
}

/// A fixture tree with known forbidden imports and a known circle: the
/// checker finds each, through `super` from a module file, an alias, a path
/// in code, and re-exports.
#[test]
fn the_checker_catches_known_breaks_in_a_fixture_tree() {
    let file = |module: &[&str], path: &str, code: &str| SourceFile {
        module: module.iter().map(|s| (*s).to_owned()).collect(),
        path: PathBuf::from(path),
        code: production_code(code),
    };
    let files = vec![
        file(
            &[],
            "src/lib.rs",
            "pub mod input; pub mod rate_limit; pub mod config;",
        ),
        file(
            &["input"],
            "src/input/mod.rs",
            "mod body; pub use body::Body; use super::rate_limit::Layer;",
        ),
        file(
            &["input", "body"],
            "src/input/body.rs",
            "use crate::rate_limit as rl; pub struct Body;",
        ),
        file(
            &["rate_limit"],
            "src/rate_limit/mod.rs",
            "mod layer; pub use layer::Layer;",
        ),
        file(
            &["rate_limit", "layer"],
            "src/rate_limit/layer.rs",
            "pub struct Layer; fn f() { super::super::input::Body::new(); }",
        ),
        file(
            &["config"],
            "src/config/mod.rs",
            "mod read; mod value; pub use read::Read; pub struct HardenConfig; \
             fn f() { read::from_toml(); value::cidrs::parse(); }",
        ),
        file(
            &["config", "read"],
            "src/config/read.rs",
            "use super::HardenConfig; pub struct Read;",
        ),
        // `super` inside an inline module stays in its file: no circle
        // with config/mod.rs, which imports it.
        file(
            &["config", "value"],
            "src/config/value.rs",
            "pub(crate) mod cidrs { use super::*; pub fn parse() {} }",
        ),
    ];
    let broken = violations(&files);
    let expect = [
        "src/input/mod.rs imports src/rate_limit/layer.rs",
        "src/input/body.rs imports src/rate_limit/mod.rs",
        "src/rate_limit/layer.rs imports src/input/body.rs",
    ];
    for expected in expect {
        assert!(
            broken.iter().any(|line| line.starts_with(expected)),
            "{expected} not found in {broken:#?}"
        );
    }
    assert_eq!(broken.len(), expect.len(), "{broken:#?}");
    let circles = cycles(&files);
    assert!(
        circles
            .iter()
            .any(|c| c.contains("src/config/mod.rs") && c.contains("src/config/read.rs")),
        "{circles:#?}"
    );
    assert!(
        circles.iter().all(|c| !c.contains("src/config/value.rs")),
        "{circles:#?}"
    );
    // The real tree resolves through re-exports to the defining file.
    let files = source_files();
    let tree = Tree::new(&files);
    let target = tree
        .resolve(&["context".to_owned(), "RequestId".to_owned()], 0)
        .map(|index| files[index].path.clone())
        .unwrap();
    assert!(
        target.ends_with("context/request_id.rs"),
        "{}",
        target.display()
    );
}
