//! The private directory of one link: summary shards, import lists, response files, extracted
//! archive members and native objects. It is readable by its owner only and removed when the
//! link ends (success, failure, panic or Ctrl-C) unless the user asked to keep it, so that a
//! build through thindist leaves no file that in-process ThinLTO would not.
//!
//! It lies in TMPDIR, named after the build directory and the output, so that every link of
//! one output uses the same one: members of regular archives are extracted there, the thin
//! link is given their paths there, and lld numbers the values of a summary shard in an order
//! that depends on those paths. Under a random name, each rebuild gave a module that imports
//! from extracted members a shard with another numbering, and a cache miss. A link holds its
//! directory with `flock`; one held by a concurrent link of the same output, or that is not a
//! private directory of this user, makes way for a random name (kept directories have random
//! names too, so that the next link does not replace them).
//!
//! Links whose jobs run remotely use a hidden directory in the build directory instead, whose
//! name depends only on the output: the input root of an action mirrors the build directory,
//! so every action of a rebuild has the same digest as before.
//!
//! The thin link's own outputs, two small files per module (summary shard and import list),
//! go in a second private directory, the index directory, on a memory file system when TMPDIR
//! is left to its default and that default is on disk: there, creating thousands of files
//! just after an earlier link deleted as many costs more than the thin link itself (ext4
//! looks past recently deleted inodes), 0.7 s against 0.15 s for the kernel's 554 modules.
//! Native objects stay in the work directory, on the cache's file system, where cache hits
//! are hard links. A TMPDIR the user set is used for both.

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
    /// Where the thin link writes its index files: `path` itself, or a directory of its own
    /// on a memory file system (absolute).
    index: PathBuf,
    /// What to remove when the link ends: the work directory (absolute), then the index
    /// directory if it has one of its own; empty once kept.
    remove: Vec<PathBuf>,
    /// The open work directory, locked for as long as this link uses it (see the module
    /// documentation); released after the directory is removed.
    _lock: Option<std::fs::File>,
}

impl WorkDir {
    /// The work directory of the link run in `cwd` whose output is `output` (as written): in
    /// TMPDIR, or with `in_build_dir` a hidden one in `cwd`. `keep` leaves it in place when
    /// the link ends (lld's `--save-temps`, thindist's `--keep-work`).
    pub fn create(keep: bool, cwd: &Path, output: &str, in_build_dir: bool) -> Result<WorkDir> {
        let mut lock = None;
        let (path, abs) = match in_build_dir {
            false => {
                let tmp = std::env::temp_dir();
                let held = match keep {
                    true => None,
                    false => held_dir_in(&tmp, &cwd.join(output)),
                };
                let path = match held {
                    Some((path, file)) => {
                        lock = Some(file);
                        path
                    }
                    None => private_dir_in(&tmp)?,
                };
                (path.clone(), path)
            }
            true => {
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
        // An interrupt exits without running destructors: the handler removes it instead.
        interrupts().add_temp(&abs);
        let mut remove = vec![abs.clone()];
        let memory_root = (!in_build_dir).then(memory_root).flatten();
        let index = match memory_root.map(|root| private_dir_in(&root)) {
            Some(Ok(index)) => {
                interrupts().add_temp(&index);
                remove.push(index.clone());
                index
            }
            // A memory file system that refuses a directory: the work directory will do.
            Some(Err(_)) | None => path.clone(),
        };
        let mut work = WorkDir {
            path,
            index,
            remove,
            _lock: lock,
        };
        if keep {
            work.keep();
        }
        Ok(work)
    }

    /// Leaves the directories in place when the link ends, and says where they are.
    fn keep(&mut self) {
        for dir in std::mem::take(&mut self.remove) {
            interrupts().remove_temp(&dir);
            eprintln!(
                "thindist: keeping this link's work files in {}",
                dir.display()
            );
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the thin link writes its summary shards, import lists and module list.
    pub fn index(&self) -> &Path {
        &self.index
    }

    /// Empties the index directory now, if it has one of its own and the link does not keep
    /// it: once every back end has run nothing reads it, and removing its two files a module
    /// while the final link runs spares the link's end that work.
    pub fn remove_own_index_files(&self) {
        if !self.remove.is_empty() {
            self.empty_own_index();
        }
    }

    /// Removes `files` (relative to the build directory `cwd`, or absolute) that lie in this
    /// work directory, and the directories below it they leave empty, unless the link keeps
    /// it: done beside other work, it spares the removal of the whole directory at the link's
    /// end most of its entries.
    pub fn remove_files<'a>(&self, cwd: &Path, files: impl IntoIterator<Item = &'a PathBuf>) {
        let Some(dir) = self.remove.first() else {
            return;
        };
        let dir = crate::fsutil::normalize(dir);
        let mut parents = std::collections::BTreeSet::new();
        for file in files {
            let file = crate::fsutil::normalize(&cwd.join(file));
            if file.starts_with(&dir) && std::fs::remove_file(&file).is_ok() {
                parents.extend(
                    file.ancestors()
                        .skip(1)
                        .take_while(|p| *p != dir)
                        .map(Path::to_path_buf),
                );
            }
        }
        // Deepest first (a path sorts before those below it); one still holding files stays.
        for parent in parents.iter().rev() {
            let _ = std::fs::remove_dir(parent);
        }
    }

    /// Empties the index directory if it has one of its own (on a memory file system), and
    /// returns it: a thin link that found no room there runs again in the work directory.
    /// The directory itself stays until the link ends, so that its name stays this link's.
    pub fn empty_own_index(&self) -> Option<&Path> {
        if self.index == self.path {
            return None;
        }
        for entry in std::fs::read_dir(&self.index).ok()?.flatten() {
            let path = entry.path();
            let _ = match entry.file_type().is_ok_and(|t| t.is_dir()) {
                true => std::fs::remove_dir_all(&path),
                false => std::fs::remove_file(&path),
            };
        }
        Some(&self.index)
    }
}

/// `PARENT/thindist-link-<digest of output>`, created and locked for this link, or `None` when
/// another link holds it or it is not this user's private directory. A directory that nobody
/// holds is what a killed link left: it is removed and made again.
fn held_dir_in(parent: &Path, output: &Path) -> Option<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let digest = crate::cache::key::sha256_hex(output.as_os_str().as_encoded_bytes());
    let path = parent.join(format!("{TMP_PREFIX}link-{}", &digest[..16]));
    let lock = |path: &Path| {
        let dir = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(path)
            .ok()?;
        // SAFETY: flock on a descriptor this function owns.
        let locked = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&dir),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        // The directory may have been removed and made again by another link between the
        // open and the lock: only a lock on the one now at `path` holds it.
        let at_path = std::fs::symlink_metadata(path).ok()?;
        let locked_dir = dir.metadata().ok()?;
        let same = (at_path.dev(), at_path.ino()) == (locked_dir.dev(), locked_dir.ino());
        (locked == 0 && same).then_some(dir)
    };
    for _ in 0..2 {
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Some((path.clone(), lock(&path)?)),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                let meta = std::fs::symlink_metadata(&path).ok()?;
                // SAFETY: geteuid has no preconditions.
                let ours = meta.is_dir() && meta.uid() == unsafe { libc::geteuid() };
                if !ours || meta.mode() & 0o077 != 0 {
                    return None;
                }
                let leftover = lock(&path)?;
                std::fs::remove_dir_all(&path).ok()?;
                drop(leftover);
            }
            Err(_) => return None,
        }
    }
    None
}

/// A new directory with a random name in `parent`, readable by its owner only.
fn private_dir_in(parent: &Path) -> Result<PathBuf> {
    let dir = thindist_reapi::private_tempdir_in(parent, TMP_PREFIX)
        .with_context(|| format!("cannot create a work directory in {}", parent.display()))?;
    Ok(dir.keep())
}

/// How much room a memory file system needs to take a link's index directory: the kernel's 554
/// modules take 4.5 MiB there (two files of one or two pages each), a large C++ program's tens
/// of thousands of modules with larger shards can take hundreds. A thin link that runs out of
/// room all the same is run again with its index in the work directory (see `Link`).
const MEMORY_FS_MIN_FREE: u64 = 256 << 20;

/// The memory file system for index directories, if TMPDIR is left to its default, that
/// default is on disk, and the user has one with room: `$XDG_RUNTIME_DIR` (their own), else
/// `/dev/shm`.
fn memory_root() -> Option<PathBuf> {
    static ROOT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let tmp = std::env::temp_dir();
        if std::env::var_os("TMPDIR").is_some() || memory_fs_free(&tmp).is_some() {
            return None;
        }
        let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
        runtime
            .into_iter()
            .chain([PathBuf::from("/dev/shm")])
            .find(|dir| {
                dir.is_absolute()
                    && memory_fs_free(dir).is_some_and(|free| free >= MEMORY_FS_MIN_FREE)
            })
    })
    .clone()
}

/// The bytes free on `dir`'s file system if it is a memory file system (tmpfs).
fn memory_fs_free(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut fs = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `path` is a valid C string and `fs` is written by the call before it is read.
    let fs = unsafe {
        if libc::statfs(path.as_ptr(), fs.as_mut_ptr()) != 0 {
            return None;
        }
        fs.assume_init()
    };
    (fs.f_type == libc::TMPFS_MAGIC).then(|| fs.f_bavail as u64 * fs.f_bsize as u64)
}

/// Whether `path` (absolute) lies in a link's work directory, whose files are gone when the
/// link ends: not worth remembering across runs.
pub fn is_work_path(path: &Path) -> bool {
    let in_dir_of_ours = |root: &Path| {
        path.strip_prefix(root)
            .ok()
            .and_then(|rest| rest.components().next())
            .is_some_and(|first| first.as_os_str().to_string_lossy().starts_with(TMP_PREFIX))
    };
    in_dir_of_ours(&std::env::temp_dir())
        || memory_root().is_some_and(|root| in_dir_of_ours(&root))
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
        for dir in self.remove.drain(..) {
            let _ = std::fs::remove_dir_all(&dir);
            interrupts().remove_temp(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Links of one output racing for its directory, each using it as `WorkDir` does (files
    /// in it, removed before the lock is let go): no two may hold it at once.
    #[test]
    fn concurrent_links_of_one_output_never_share_its_directory() {
        let parent = tempfile::tempdir().unwrap();
        let output = Path::new("/build/prog");
        std::thread::scope(|scope| {
            for thread in 0..6 {
                let parent = parent.path();
                scope.spawn(move || {
                    for _ in 0..300 {
                        let Some((path, lock)) = held_dir_in(parent, output) else {
                            continue;
                        };
                        let mine = std::fs::File::create_new(path.join("holder"));
                        assert!(
                            mine.is_ok(),
                            "thread {thread}: {} is held twice",
                            path.display()
                        );
                        std::thread::yield_now();
                        std::fs::remove_dir_all(&path).unwrap();
                        drop(lock);
                    }
                });
            }
        });
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }

    /// Natives removed early are those in the work directory, named relative to the build
    /// directory or absolute; a file outside it (an object the link was given) stays, and a
    /// kept work directory keeps all of them.
    #[test]
    fn removing_natives_touches_only_an_unkept_work_directory() {
        let cwd = tempfile::tempdir().unwrap();
        let outside = PathBuf::from("given.o");
        std::fs::write(cwd.path().join(&outside), "x").unwrap();
        for keep in [false, true] {
            let work = WorkDir::create(keep, cwd.path(), "prog", true).unwrap();
            let relative = work.path().join("sub/dir/a.native.o");
            std::fs::create_dir_all(cwd.path().join(work.path()).join("sub/dir")).unwrap();
            let absolute = cwd.path().join(work.path()).join("sub/../b.native.o");
            std::fs::write(cwd.path().join(&relative), "a").unwrap();
            std::fs::write(cwd.path().join(work.path()).join("b.native.o"), "b").unwrap();
            work.remove_files(cwd.path(), [&relative, &absolute, &outside]);
            assert_eq!(cwd.path().join(&relative).exists(), keep);
            assert_eq!(
                cwd.path().join(work.path()).join("b.native.o").exists(),
                keep
            );
            assert!(cwd.path().join(&outside).exists());
            // The directories the natives left empty go too; the work directory stays.
            assert_eq!(cwd.path().join(work.path()).join("sub").exists(), keep);
            assert!(cwd.path().join(work.path()).exists());
            if keep {
                std::fs::remove_dir_all(cwd.path().join(work.path())).unwrap();
            }
        }
    }
}
