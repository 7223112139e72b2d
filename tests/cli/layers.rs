//! The layers of `src/` point one way: a module may use the ones below it, never one above
//! (README, Layout). A source scan of every `crate::<module>` a module's non-test code names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::util::repo;

/// Bottom to top. A module uses only modules before it in this list.
const LAYERS: &[&str] = &[
    "util",
    "diagnostic",
    "error",
    "text",
    "io",
    "dedup",
    "classifier",
    "tokens",
    "train",
    "synth",
    "stages",
    "engine",
    "config",
    "commands",
];

/// Files outside the layers: the crate root, the binary, test-only code.
const OUTSIDE: &[&str] = &["lib.rs", "main.rs", "train_cli.rs", "fuzz.rs"];

/// The non-test code of a file: up to its first `#[cfg(test)]` item.
fn code(text: &str) -> &str {
    match text.find("\n#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// Top-level modules `code` names as `crate::<m>`, `crate::{<m>, ...}` or `grist::<m>`.
fn used_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for prefix in ["crate::", "grist::"] {
        for (i, _) in code.match_indices(prefix) {
            let rest = &code[i + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = &group[..group.find('}').unwrap_or(group.len())];
                for part in inner.split(',') {
                    let name = ident(part.trim());
                    if !name.is_empty() {
                        out.insert(name);
                    }
                }
            } else {
                let name = ident(rest);
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_import_points_down_the_layers() {
    let src = repo().join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    // Crate-level re-exports (`GristError`, `Result`) belong to `error`.
    let module_of = |name: &str| match name {
        "GristError" | "Result" => "error".to_string(),
        other => other.to_string(),
    };
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let file_name = rel.file_name().unwrap().to_str().unwrap();
        if rel.components().count() == 1 && OUTSIDE.contains(&file_name) {
            continue;
        }
        // Whole files of tests (`mod tests;` beside the module).
        if file_name == "tests.rs" {
            continue;
        }
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        let module = first.trim_end_matches(".rs").to_string();
        assert!(
            rank(&module).is_some(),
            "src/{} belongs to module `{module}`, which is in no layer: add it to LAYERS (and the README)",
            rel.display()
        );
        let text = std::fs::read_to_string(f).unwrap();
        for used in used_modules(code(&text)) {
            let used = module_of(&used);
            if used == module || used == "self" || used == "super" {
                continue;
            }
            edges
                .entry((module.clone(), used))
                .or_default()
                .push(rel.display().to_string());
        }
    }
    let mut upward = Vec::new();
    for ((from, to), where_) in &edges {
        match (rank(from), rank(to)) {
            (Some(a), Some(b)) if b < a => {}
            (_, None) => upward.push(format!("{from} -> {to} (no such layer): {where_:?}")),
            _ => upward.push(format!("{from} -> {to} points up: {where_:?}")),
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_scan_sees_every_form_of_import() {
    let found = used_modules(
        "use crate::{io::batch::Shard, text};\nlet x = crate::engine::plan::prepare();\nuse grist::config;\n",
    );
    let want: BTreeSet<String> = ["io", "text", "engine", "config"].map(String::from).into();
    assert_eq!(found, want);
    assert_eq!(
        code("use crate::io;\n#[cfg(test)]\nmod tests { use crate::engine; }"),
        "use crate::io;"
    );
}
