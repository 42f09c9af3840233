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

/// Writes `bytes` to a temporary file beside `path`, then renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let tmp = temp_sibling(path);
    let result = std::fs::write(&tmp, bytes)
        .with_context(|| format!("cannot write {}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
        });
    if result.is_err() {
        // A full disk or a vanished directory must not leave the temporary behind.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Makes `dest` name the same file as `src` (a hard link, or a copy across file systems),
/// replacing whatever `dest` was in one step.
pub fn publish(src: &Path, dest: &Path) -> Result<()> {
    let tmp = temp_sibling(dest);
    let linked = std::fs::hard_link(src, &tmp).or_else(|_| std::fs::copy(src, &tmp).map(|_| ()));
    let result = linked
        .with_context(|| format!("cannot copy {} to {}", src.display(), tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, dest)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), dest.display()))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
/// compare equal.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() || out.as_os_str().is_empty() && !path.is_absolute() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}
