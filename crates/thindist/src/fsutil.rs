//! File-system helpers shared by every stage: atomic writes, so that nothing half-written is
//! ever left where a valid output is expected.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// A sibling temporary name for `path`, unique to this process and call.
pub fn temp_sibling(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".thindist-tmp{}-{}", std::process::id(), n));
    path.with_file_name(name)
}

/// A temporary file that is deleted when dropped unless [`TempFile::persist`] renamed it into
/// place, so that no error path (a full disk, a failed rename) leaves it behind.
pub struct TempFile(Option<PathBuf>);

impl TempFile {
    pub fn new(path: PathBuf) -> TempFile {
        TempFile(Some(path))
    }

    pub fn path(&self) -> &Path {
        self.0
            .as_deref()
            .expect("a TempFile is only emptied by persist")
    }

    /// Renames the file to `dest`; on failure it is deleted.
    pub fn persist(mut self, dest: &Path) -> Result<()> {
        let tmp = self
            .0
            .take()
            .expect("a TempFile is only emptied by persist");
        std::fs::rename(&tmp, dest).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow::Error::new(e).context(format!(
                "cannot rename {} to {}",
                tmp.display(),
                dest.display()
            ))
        })
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let tmp = TempFile::new(temp_sibling(path));
    std::fs::write(tmp.path(), bytes)
        .with_context(|| format!("cannot write {}", tmp.path().display()))?;
    tmp.persist(path)
}

/// Makes `dest` a copy of `src`, replacing whatever `dest` was in one step. The copy shares
/// no inode with `src` (a reflink where the file system can make one, else bytes), so a tool
/// that later changes `dest` in place (objtool, livepatch tools) cannot change `src`.
pub fn publish(src: &Path, dest: &Path) -> Result<()> {
    let tmp = TempFile::new(temp_sibling(dest));
    clone_or_copy(src, tmp.path())?;
    tmp.persist(dest)
}

/// Creates `dest` (which must not exist) with `src`'s content: a reflink (`FICLONE`) where the
/// file system shares extents between files, else a copy. Either way a later change to one
/// file leaves the other as it was.
pub fn clone_or_copy(src: &Path, dest: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let context = || format!("cannot copy {} to {}", src.display(), dest.display());
    let from = std::fs::File::open(src).with_context(context)?;
    let to = std::fs::File::options()
        .write(true)
        .create_new(true)
        .open(dest)
        .with_context(context)?;
    // SAFETY: both descriptors are open for as long as the call runs.
    if unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } == 0 {
        return Ok(());
    }
    std::io::copy(&mut &from, &mut &to).with_context(context)?;
    Ok(())
}

/// Creates `dest` (which must not exist) as a hard link to `src`, or a reflink or copy where
/// that is not possible (another file system). Only for files nobody changes in place: the
/// two names share one inode.
pub fn link_or_copy(src: &Path, dest: &Path) -> Result<()> {
    if std::fs::hard_link(src, dest).is_ok() {
        return Ok(());
    }
    clone_or_copy(src, dest)
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
