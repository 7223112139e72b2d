//! Turns a path, a directory or a glob into a sorted list of shards.

use std::path::{Component, Path, PathBuf};

use crate::error::{GristError, Result};
use crate::stages::Shard;

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
        walk(path, &mut files)?;
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

fn shard(base: &Path, path: PathBuf) -> Shard {
    let name = path
        .strip_prefix(base)
        .unwrap_or(&path)
        .to_string_lossy()
        .into_owned();
    Shard { path, name }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| GristError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| GristError::io(dir, e))?;
        let p = entry.path();
        if p.is_dir() {
            walk(&p, out)?;
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
}
