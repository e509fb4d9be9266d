//! Reading and writing cgroupfs interface files, with errors that name the file.

use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};

use super::CgroupError;

/// Writes `value` to an existing interface file in a single write(2), which is what
/// cgroupfs expects. The file is never created: a missing file means a missing
/// controller or feature, and callers tell that apart through `ErrorKind::NotFound`.
pub(crate) fn write(dir: &Path, file: &str, value: impl ToString) -> Result<(), CgroupError> {
    let path = dir.join(file);
    let value = value.to_string();
    tracing::trace!(path = %path.display(), %value, "cgroup write");
    OpenOptions::new()
        .write(true)
        // O_TRUNC is a no-op on cgroupfs (runc passes it too) and keeps plain test files exact.
        .truncate(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|source| CgroupError::Write {
            path,
            value,
            source,
        })
}

/// Like [`write`], but a missing file is not an error: `Ok(false)` tells the caller.
pub(crate) fn write_if_exists(
    dir: &Path,
    file: &str,
    value: impl ToString,
) -> Result<bool, CgroupError> {
    match write(dir, file, value) {
        Ok(()) => Ok(true),
        Err(CgroupError::Write { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

pub(crate) fn read(dir: &Path, file: &str) -> Result<String, CgroupError> {
    let path = dir.join(file);
    fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })
}

/// Reads a file that may legitimately be absent (an optional kernel feature).
pub(crate) fn read_optional(dir: &Path, file: &str) -> Result<Option<String>, CgroupError> {
    let path = dir.join(file);
    match fs::read_to_string(&path) {
        Ok(content) => Ok(Some(content)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read { path, source }),
    }
}

pub(crate) fn parse_error(dir: &Path, file: &str, content: &str) -> CgroupError {
    CgroupError::Parse {
        path: dir.join(file),
        content: content.trim().to_string(),
    }
}

/// Reads a file holding a single number.
pub(crate) fn read_u64(dir: &Path, file: &str) -> Result<u64, CgroupError> {
    let content = read(dir, file)?;
    content
        .trim()
        .parse()
        .map_err(|_| parse_error(dir, file, &content))
}

/// Reads a v2 style limit: a number, or "max" for no limit.
pub(crate) fn read_limit(dir: &Path, file: &str) -> Result<Option<u64>, CgroupError> {
    let content = read(dir, file)?;
    match content.trim() {
        "max" => Ok(None),
        n => n
            .parse()
            .map(Some)
            .map_err(|_| parse_error(dir, file, &content)),
    }
}

/// Looks `key` up in a flat keyed file such as memory.stat or cpu.stat ("key value" lines).
pub(crate) fn keyed_value(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// The directory `dir` and all its descendant directories (sub-cgroups), parents first.
/// A missing `dir` yields an empty list.
pub(crate) fn cgroup_tree(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = match fs::read_dir(&current) {
            Ok(entries) => entries,
            // Gone in the meantime (or never there): nothing below it either.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(CgroupError::Read {
                    path: current,
                    source,
                })
            }
        };
        for entry in entries {
            let entry = entry.map_err(|source| CgroupError::Read {
                path: current.clone(),
                source,
            })?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            }
        }
        found.push(current);
    }
    Ok(found)
}

/// The pids listed in cgroup.procs of `dir` and of every sub-cgroup below it.
pub(crate) fn procs_in_tree(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let mut pids = Vec::new();
    for cgroup in cgroup_tree(dir)? {
        let Some(content) = read_optional(&cgroup, "cgroup.procs")? else {
            continue;
        };
        for line in content.lines().filter(|l| !l.trim().is_empty()) {
            let pid = line
                .trim()
                .parse()
                .map_err(|_| parse_error(&cgroup, "cgroup.procs", line))?;
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Removes `dir` and its sub-cgroups, deepest first. cgroupfs directories are removed
/// with rmdir(2) even though they contain interface files. A missing `dir` is fine.
pub(crate) fn remove_tree(dir: &Path) -> io::Result<()> {
    let tree = match cgroup_tree(dir) {
        Ok(tree) => tree,
        Err(CgroupError::Read { source, .. }) => return Err(source),
        Err(e) => return Err(io::Error::other(e.to_string())),
    };
    // Parents come before children in `tree`, so reversed it is children first.
    for cgroup in tree.iter().rev() {
        match fs::remove_dir(cgroup) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `root/a`, `root/a/b`, ... for a relative cgroup path "a/b/...".
pub(crate) fn levels(root: &Path, relative: &Path) -> Vec<PathBuf> {
    let mut current = root.to_path_buf();
    relative
        .components()
        .map(|component| {
            current.push(component);
            current.clone()
        })
        .collect()
}

/// Creates one level of a cgroup if it is not there yet.
pub(crate) fn create_dir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::CreateDir {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_value_finds_exact_keys() {
        let stat = "cache 10\ntotal_cache 20\nrss 30\n";
        assert_eq!(keyed_value(stat, "cache"), Some(10));
        assert_eq!(keyed_value(stat, "total_cache"), Some(20));
        assert_eq!(keyed_value(stat, "swap"), None);
    }

    #[test]
    fn levels_lists_every_ancestor() {
        let got = levels(Path::new("/r"), Path::new("a/b/c"));
        let want: Vec<PathBuf> = ["/r/a", "/r/a/b", "/r/a/b/c"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn tree_helpers_on_plain_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("top");
        fs::create_dir_all(top.join("a/b")).unwrap();
        fs::create_dir_all(top.join("c")).unwrap();
        fs::write(top.join("cgroup.procs"), "1\n2\n").unwrap();
        fs::write(top.join("a/b/cgroup.procs"), "3\n").unwrap();
        let mut pids = procs_in_tree(&top).unwrap();
        pids.sort();
        assert_eq!(pids, vec![1, 2, 3]);
        assert_eq!(cgroup_tree(&top).unwrap().len(), 4);
        assert!(procs_in_tree(&tmp.path().join("missing"))
            .unwrap()
            .is_empty());
    }
}
