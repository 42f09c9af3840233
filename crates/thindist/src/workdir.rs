//! The private directory of one link: summary shards, import lists, response files, extracted
//! archive members and native objects. It is created in TMPDIR, readable by its owner only, and
//! removed when the link ends (success, failure, panic or Ctrl-C) unless the user asked to keep
//! it, so that a build through thindist leaves no file that in-process ThinLTO would not.

use crate::exec::interrupts;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

pub struct WorkDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl WorkDir {
    /// A new private directory in TMPDIR; `keep` leaves it in place when the link ends (lld's
    /// `--save-temps`, thindist's `--keep-work`).
    pub fn create(keep: bool) -> Result<WorkDir> {
        let dir = tempfile::Builder::new()
            .prefix("thindist-")
            .tempdir()
            .with_context(|| {
                format!(
                    "cannot create a work directory in {}",
                    std::env::temp_dir().display()
                )
            })?;
        let path = dir.path().to_path_buf();
        if keep {
            let _ = dir.keep();
            eprintln!(
                "thindist: keeping this link's work files in {}",
                path.display()
            );
            return Ok(WorkDir { dir: None, path });
        }
        // An interrupt exits without running destructors: the handler removes it instead.
        interrupts().add_temp(&path);
        Ok(WorkDir {
            dir: Some(dir),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.dir.take().is_some() {
            interrupts().remove_temp(&self.path);
        }
    }
}
