//! File-system helpers shared by every stage: atomic writes, so that nothing half-written is
//! ever left where a valid output is expected.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use tempfile::NamedTempFile;

/// The directory a new file at `path` goes in (created if missing): a temporary file there
/// is renamed onto `path` in one step.
fn parent_dir(path: &Path) -> Result<&Path> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    Ok(dir)
}

/// A temporary file beside `path` made by `make` (given its name), which is removed when
/// dropped unless persisted.
fn temp_beside<R>(
    path: &Path,
    make: impl FnMut(&Path) -> std::io::Result<R>,
) -> Result<NamedTempFile<R>> {
    let dir = parent_dir(path)?;
    tempfile::Builder::new()
        .prefix(".thindist-tmp")
        .make_in(dir, make)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))
}

/// Renames `temp` onto `dest`; on failure the temporary file is removed.
pub fn persist<R>(temp: NamedTempFile<R>, dest: &Path) -> Result<()> {
    temp.persist(dest).map(drop).map_err(|e| {
        anyhow::Error::new(e.error).context(format!("cannot rename onto {}", dest.display()))
    })
}

/// A new empty temporary file in `dir`, with the mode `std::fs::write` would give it (0666
/// less the umask), not tempfile's private 0600: it becomes an output like any other.
pub fn new_temp_in(dir: &Path) -> Result<NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(".thindist-tmp")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temp = new_temp_in(parent_dir(path)?)?;
    temp.write_all(bytes)
        .with_context(|| format!("cannot write {}", temp.path().display()))?;
    persist(temp, path)
}

/// Makes `dest` name the same file as `src` (a hard link, or a copy across file systems),
/// replacing whatever `dest` was in one step.
pub fn publish(src: &Path, dest: &Path) -> Result<()> {
    let temp = temp_beside(dest, |path| match std::fs::hard_link(src, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        Err(_) => std::fs::copy(src, path).map(drop),
    })
    .with_context(|| format!("cannot copy {} to {}", src.display(), dest.display()))?;
    persist(temp, dest)
}

/// `path` relative to `base` when it lies below it (no `..`), else unchanged.
pub fn relative_below(path: &Path, base: &Path) -> PathBuf {
    if path.is_absolute() {
        if let Ok(rel) = path.strip_prefix(base) {
            if !rel.as_os_str().is_empty() {
                return rel.to_path_buf();
            }
        }
    }
    path.to_path_buf()
}

/// Lexically normalizes a path (`./a/./b/../c` -> `a/c`) so that paths written differently
/// compare equal. A `..` cancels the name before it; leading `..` of a relative path stay, and
/// `/..` is `/`.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                Some(Component::ParentDir | Component::CurDir) | None => out.push(".."),
            },
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_cancels_names_not_leading_parents() {
        for (input, want) in [
            ("a/../b", "b"),
            ("./a/./b/../c", "a/c"),
            ("../a/../../b", "../../b"),
            ("a/b/../../..", ".."),
            ("/a/../../b", "/b"),
            ("/..", "/"),
            ("a/..", ""),
        ] {
            assert_eq!(normalize(Path::new(input)), PathBuf::from(want), "{input}");
        }
    }

    #[test]
    fn failed_writes_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails after the temporary file exists.
        let dest = dir.path().join("d");
        std::fs::create_dir_all(dest.join("x")).unwrap();
        assert!(write_atomic(&dest, b"data").is_err());
        assert!(publish(&dir.path().join("d/x"), &dest).is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("d")]);
    }
}
