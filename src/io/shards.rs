//! Turns a path, a directory or a glob into a sorted list of shards.

use std::path::{Component, Path, PathBuf};

use super::batch::Shard;
use crate::error::{GristError, Result};

/// Lists the files `pattern` names, sorted, each with its name relative to the pattern's fixed
/// prefix. A directory lists every file below it whose name ends with one of `extensions`.
pub fn list(pattern: &str, extensions: &[&str]) -> Result<Vec<Shard>> {
    let path = Path::new(pattern);
    let mut shards = if has_glob_chars(pattern) {
        let base = fixed_prefix(path);
        let paths = glob::glob(pattern)
            .map_err(|e| GristError::Usage(format!("bad glob `{pattern}`: {e}")))?;
        let mut shards = Vec::new();
        for entry in paths {
            let p = entry.map_err(|e| GristError::io(e.path().to_path_buf(), e.into()))?;
            if p.is_file() {
                shards.push(shard(&base, p));
            }
        }
        shards
    } else if path.is_dir() {
        let mut files = Vec::new();
        walk(path, &mut files, &mut std::collections::HashSet::new())?;
        files
            .into_iter()
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                !name.starts_with('.') && extensions.iter().any(|ext| name.ends_with(ext))
            })
            .map(|p| shard(path, p))
            .collect()
    } else if path.is_file() {
        let base = path.parent().unwrap_or(Path::new(""));
        vec![shard(base, path.to_path_buf())]
    } else {
        Vec::new()
    };
    shards.sort_by(|a, b| a.path.cmp(&b.path));
    shards.dedup();
    Ok(shards)
}

/// Whether a file at `candidate` (which need not exist yet) would be one of the shards
/// `pattern` lists with [`list`]: so a writer's output can be checked against a reader's input
/// before anything is written.
pub fn would_list(pattern: &str, extensions: &[&str], candidate: &Path) -> bool {
    let candidate = absolute(candidate);
    let name = candidate.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if has_glob_chars(pattern) {
        let abs = absolute(Path::new(pattern));
        let Ok(glob) = glob::Pattern::new(&abs.to_string_lossy()) else {
            return false;
        };
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        return glob.matches_path_with(&candidate, options);
    }
    let path = absolute(Path::new(pattern));
    if path.is_dir() {
        candidate.starts_with(&path)
            && !name.starts_with('.')
            && extensions.iter().any(|ext| name.ends_with(ext))
    } else {
        candidate == path
    }
}

/// `path` from the root, with `.` and `..` resolved lexically.
pub fn absolute(path: &Path) -> PathBuf {
    let joined = match path.is_absolute() {
        true => path.to_path_buf(),
        false => std::env::current_dir().unwrap_or_default().join(path),
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn shard(base: &Path, path: PathBuf) -> Shard {
    let name = path
        .strip_prefix(base)
        .unwrap_or(&path)
        .to_string_lossy()
        .into_owned();
    Shard { path, name }
}

/// Every file below `dir`. Symbolic links to directories are followed, each directory once:
/// a link back up the tree (`a -> .`) would otherwise branch without end.
fn walk(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    seen: &mut std::collections::HashSet<PathBuf>,
) -> Result<()> {
    let real = std::fs::canonicalize(dir).map_err(|e| GristError::io(dir, e))?;
    if !seen.insert(real) {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| GristError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| GristError::io(dir, e))?;
        let p = entry.path();
        if p.is_dir() {
            walk(&p, out, seen)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

pub fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The leading components of a glob that contain no glob characters.
fn fixed_prefix(pattern: &Path) -> PathBuf {
    let mut base = PathBuf::new();
    for c in pattern.components() {
        if let Component::Normal(s) = c
            && has_glob_chars(&s.to_string_lossy())
        {
            break;
        }
        base.push(c);
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_dir_and_file_listing() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.jsonl", "a.jsonl", "sub/c.jsonl", "x.txt"] {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "{}").unwrap();
        }
        let pattern = format!("{}/*.jsonl", dir.path().display());
        let names: Vec<_> = list(&pattern, &[])
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["a.jsonl", "b.jsonl"]);
        let names: Vec<_> = list(dir.path().to_str().unwrap(), &[".jsonl"])
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["a.jsonl", "b.jsonl", "sub/c.jsonl"]);
        let one = list(dir.path().join("x.txt").to_str().unwrap(), &[]).unwrap();
        assert_eq!(one[0].name, "x.txt");
        assert!(list("/nonexistent/*.x", &[]).unwrap().is_empty());
    }

    #[test]
    fn a_directory_linking_to_itself_is_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jsonl"), "{}").unwrap();
        std::os::unix::fs::symlink(".", dir.path().join("loop")).unwrap();
        std::os::unix::fs::symlink(".", dir.path().join("again")).unwrap();
        let names: Vec<_> = list(dir.path().to_str().unwrap(), &[".jsonl"])
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["a.jsonl"]);
    }

    #[test]
    fn would_list_matches_globs_directories_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let glob = format!("{}/*.jsonl", d.display());
        assert!(would_list(&glob, &[], &d.join("input-00000.jsonl")));
        assert!(!would_list(&glob, &[], &d.join("out/input-00000.jsonl")));
        assert!(!would_list(&glob, &[], &d.join("input-00000.parquet")));
        let deep = format!("{}/**/*.jsonl", d.display());
        assert!(would_list(&deep, &[], &d.join("out/x/input-00000.jsonl")));
        let as_dir = d.to_str().unwrap();
        assert!(would_list(
            as_dir,
            &[".jsonl"],
            &d.join("out/input-00000.jsonl")
        ));
        assert!(!would_list(
            as_dir,
            &[".jsonl"],
            &d.join("out/input-00000.parquet")
        ));
        assert!(!would_list(
            as_dir,
            &[".jsonl"],
            &d.parent().unwrap().join("x.jsonl")
        ));
        let with_dots = format!("{}/./out/../*.jsonl", d.display());
        assert!(would_list(&with_dots, &[], &d.join("a.jsonl")));
    }
}
