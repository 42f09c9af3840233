//! File-system helpers shared by every stage: atomic writes, so that nothing half-written is
//! ever left where a valid output is expected.

use anyhow::{Context, Result};
use std::fs::File;
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
/// dropped unless persisted, or at once when `make` fails having created it.
pub fn temp_beside<R>(
    path: &Path,
    mut make: impl FnMut(&Path) -> std::io::Result<R>,
) -> Result<NamedTempFile<R>> {
    let dir = parent_dir(path)?;
    tempfile::Builder::new()
        .prefix(".thindist-tmp")
        .make_in(dir, |temp| {
            make(temp).inspect_err(|err| {
                // AlreadyExists: another file's name, which tempfile retries with a new one.
                if err.kind() != std::io::ErrorKind::AlreadyExists {
                    let _ = std::fs::remove_file(temp);
                }
            })
        })
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

/// The process's umask, read without changing it (umask(2) can only be read by setting it,
/// which would race with threads creating files).
pub fn umask() -> Result<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    let read = || {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let value = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(value.trim(), 8).ok()
    };
    UMASK
        .get_or_init(read)
        .context("cannot read the umask from /proc/self/status")
}

/// Whether `meta` is that of a regular file with the permissions a new file of `mode` gets
/// (`mode` less the umask).
pub fn is_file_of_mode(meta: &std::fs::Metadata, mode: u32) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    Ok(meta.is_file() && meta.mode() & 0o7777 == mode & !umask()?)
}

/// Gives `file` the modification time a write now would give it.
pub fn set_modified_now(file: &File) -> std::io::Result<()> {
    file.set_times(std::fs::FileTimes::new().set_modified(std::time::SystemTime::now()))
}

/// Gives the file at `path` a new modification time, as a rewrite with `mode` would, if it is a
/// regular file with the permissions that rewrite would give it; false (nothing changed) if it
/// is not, or cannot be touched.
pub fn touch_if_mode(path: &Path, mode: u32) -> bool {
    let touch = || -> Result<bool> {
        let file = File::open(path)?;
        if !is_file_of_mode(&file.metadata()?, mode)? {
            return Ok(false);
        }
        set_modified_now(&file)?;
        Ok(true)
    };
    touch().unwrap_or(false)
}

/// Makes `dest` a copy of `src`, replacing whatever `dest` was in one step. The copy shares
/// no inode with `src` (a reflink where the file system can make one, else bytes), so a tool
/// that later changes `dest` in place (objtool, livepatch tools) cannot change `src`.
pub fn publish(src: &Path, dest: &Path) -> Result<()> {
    publish_with_mode(src, dest, NEW_FILE_MODE)
}

/// The mode, before the umask, that a new file which is not a program gets.
pub const NEW_FILE_MODE: u32 = 0o666;

/// [`publish`], with `dest` given `mode` less the umask, as open(2) makes a new file.
pub fn publish_with_mode(src: &Path, dest: &Path, mode: u32) -> Result<()> {
    let temp = temp_beside(dest, |path| create_copy(src, path, mode))
        .with_context(|| format!("cannot copy {} to {}", src.display(), dest.display()))?;
    persist(temp, dest)
}

/// Creates `dest` (which must not exist) with `src`'s content: a reflink (`FICLONE`) where the
/// file system shares extents between files, else a copy. Either way a later change to one
/// file leaves the other as it was.
pub fn clone_or_copy(src: &Path, dest: &Path) -> std::io::Result<()> {
    create_copy(src, dest, NEW_FILE_MODE)
}

/// [`clone_or_copy`], creating `dest` with `mode` less the umask.
fn create_copy(src: &Path, dest: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let from = std::fs::File::open(src)?;
    let to = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dest)?;
    // SAFETY: both descriptors are open for as long as the call runs.
    if unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } == 0 {
        return Ok(());
    }
    std::io::copy(&mut &from, &mut &to).map(drop)
}

/// Creates `dest` (which must not exist) as a hard link to `src`, or a reflink or copy where
/// that is not possible (another file system). Only for files nobody changes in place: the
/// two names share one inode.
pub fn link_or_copy(src: &Path, dest: &Path) -> std::io::Result<()> {
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
