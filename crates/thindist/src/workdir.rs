//! The private directory of one link: summary shards, import lists, response files, extracted
//! archive members and native objects. It is readable by its owner only and removed when the
//! link ends (success, failure, panic or Ctrl-C) unless the user asked to keep it, so that a
//! build through thindist leaves no file that in-process ThinLTO would not.
//!
//! It lies in TMPDIR with a random name, except for links whose jobs run remotely: there the
//! input root of an action mirrors the build directory and the shards name extracted archive
//! members by the path the thin link was given, so the directory is a hidden one in the build
//! directory whose name depends only on the output, and every action of a rebuild has the same
//! digest as before.

use crate::exec::interrupts;
use anyhow::{Context, Result};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// How a work directory's name starts: in TMPDIR, and in the build directory.
const TMP_PREFIX: &str = "thindist-";
const BUILD_DIR_PREFIX: &str = ".thindist-work-";

pub struct WorkDir {
    /// As the link's commands name it: absolute in TMPDIR, relative in the build directory.
    path: PathBuf,
    /// Where it is, for removal; `None` once kept.
    remove: Option<PathBuf>,
}

impl WorkDir {
    /// A new work directory: in TMPDIR, or with `in_build_dir` (the build directory and the
    /// link's output as written) a hidden one there. `keep` leaves it in place when the link
    /// ends (lld's `--save-temps`, thindist's `--keep-work`).
    pub fn create(keep: bool, in_build_dir: Option<(&Path, &str)>) -> Result<WorkDir> {
        let (path, abs) = match in_build_dir {
            None => {
                let dir = tempfile::Builder::new()
                    .prefix(TMP_PREFIX)
                    .tempdir()
                    .with_context(|| {
                        format!(
                            "cannot create a work directory in {}",
                            std::env::temp_dir().display()
                        )
                    })?;
                let path = dir.keep();
                (path.clone(), path)
            }
            Some((cwd, output)) => {
                let digest = crate::cache::key::sha256_hex(output.as_bytes());
                let path = PathBuf::from(format!("{BUILD_DIR_PREFIX}{}", &digest[..16]));
                let abs = cwd.join(&path);
                // Left by a link that was killed: nothing in it is trusted.
                let _ = std::fs::remove_dir_all(&abs);
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&abs)
                    .with_context(|| {
                        format!("cannot create the work directory {}", abs.display())
                    })?;
                (path, abs)
            }
        };
        if keep {
            eprintln!(
                "thindist: keeping this link's work files in {}",
                abs.display()
            );
            return Ok(WorkDir { path, remove: None });
        }
        // An interrupt exits without running destructors: the handler removes it instead.
        interrupts().add_temp(&abs);
        Ok(WorkDir {
            path,
            remove: Some(abs),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether `path` (absolute) lies in a link's work directory, whose files are gone when the
/// link ends: not worth remembering across runs.
pub fn is_work_path(path: &Path) -> bool {
    let in_tmp = path
        .strip_prefix(std::env::temp_dir())
        .ok()
        .and_then(|rest| rest.components().next())
        .is_some_and(|first| first.as_os_str().to_string_lossy().starts_with(TMP_PREFIX));
    in_tmp
        || path.components().any(|c| {
            c.as_os_str()
                .to_string_lossy()
                .starts_with(BUILD_DIR_PREFIX)
        })
}

/// Whether `path` is an object the clang driver wrote straight into TMPDIR for one
/// compile-and-link command (`clang -flto=thin a.c -o prog`), gone when that command ends.
pub fn is_driver_temporary(path: &Path) -> bool {
    path.parent() == Some(std::env::temp_dir().as_path())
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(abs) = self.remove.take() {
            let _ = std::fs::remove_dir_all(&abs);
            interrupts().remove_temp(&abs);
        }
    }
}
