//! Containment of everything an action names inside its lease directory: the names in its
//! Directory tree, its symlinks, its working directory and its outputs. An action comes from
//! the network; none of its names may make the worker read, write or create anything outside
//! the lease, so each is checked before use and violations are [`InvalidAction`] errors.

use anyhow::Result;
use std::io::Read;
use std::path::{Path, PathBuf};

/// An action that names something outside its lease or otherwise breaks the API's rules: the
/// lease fails with INVALID_ARGUMENT instead of running.
#[derive(Debug)]
pub struct InvalidAction(pub String);

impl std::fmt::Display for InvalidAction {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "invalid action: {}", self.0)
    }
}

impl std::error::Error for InvalidAction {}

fn invalid(message: String) -> anyhow::Error {
    InvalidAction(message).into()
}

/// Whether `err` (or anything it was wrapped around) is an [`InvalidAction`].
pub fn is_invalid_action(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<InvalidAction>())
}

/// A file, directory or symlink name in a Directory: exactly one ordinary path component.
pub fn entry_name(name: &str) -> Result<&str> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(invalid(format!("{name:?} is not a plain file name")));
    }
    Ok(name)
}

/// A working directory or output path: relative, without `..`, as its components (`.` and
/// empty ones dropped, so "" is the input root itself). `..` is refused outright rather than
/// resolved: whether `a/..` leads back depends on `a` not being a symlink.
pub fn relative_path(path: &str) -> Result<Vec<&str>> {
    if path.starts_with('/') || path.contains('\0') {
        return Err(invalid(format!("path {path:?} is not relative")));
    }
    let components: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if components.contains(&"..") {
        return Err(invalid(format!("path {path:?} contains \"..\"")));
    }
    Ok(components)
}

/// Checks the target of a symlink that sits `depth` directories below the lease root. The
/// kernel resolves a relative target from the directory holding the link, going up through its
/// real parents, so leading `..` are safe up to `depth`. After a name, `..` would go up from
/// wherever that name leads (another symlink, maybe), so it is refused there.
pub fn symlink_target(depth: usize, target: &str) -> Result<()> {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return Err(invalid(format!(
            "symlink target {target:?} is not a relative path"
        )));
    }
    let mut ups = 0;
    let mut named = false;
    for component in target.split('/').filter(|c| !c.is_empty() && *c != ".") {
        match (component, named) {
            ("..", false) => ups += 1,
            ("..", true) => {
                return Err(invalid(format!(
                    "symlink target {target:?} has \"..\" after a name"
                )))
            }
            _ => named = true,
        }
    }
    if ups > depth {
        return Err(invalid(format!(
            "symlink target {target:?} leads out of the lease directory"
        )));
    }
    Ok(())
}

/// Makes the directory `root/components...` and any missing parent, without following any
/// symlink (create_dir_all would follow one, wherever it led). Runs before the command does,
/// so nothing else is changing the lease directory meanwhile.
pub fn make_dirs(root: &Path, components: &[&str]) -> Result<PathBuf> {
    let mut dir = root.to_path_buf();
    for component in components {
        dir.push(component);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(invalid(format!(
                    "{} is a symlink; the worker does not follow symlinks in paths it is given",
                    dir.display()
                )))
            }
            Ok(_) => return Err(invalid(format!("{} is not a directory", dir.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&dir)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(dir)
}

/// Opens `root/components...` for reading without following any symlink: each component is
/// opened with O_NOFOLLOW relative to the directory opened before it, so a process the command
/// left running cannot swap a directory for a symlink between a check and the open.
fn open_no_follow(root: &Path, components: &[&str]) -> std::io::Result<std::fs::File> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut file = std::fs::File::open(root)?;
    for (i, component) in components.iter().enumerate() {
        let name = std::ffi::CString::new(*component)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let directory = if i + 1 < components.len() {
            libc::O_DIRECTORY
        } else {
            0
        };
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | directory;
        // SAFETY: `file` is an open descriptor and `name` a NUL-terminated string.
        let fd = unsafe { libc::openat(file.as_raw_fd(), name.as_ptr(), flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: openat returned a new descriptor that nothing else owns.
        file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    Ok(file)
}

/// An output file's bytes and executable bit, read without following symlinks anywhere on its
/// path: an output that is or passes through a symlink is an error, even one that points
/// inside the lease, because the command may have made it point anywhere. `Ok(None)`: no such
/// file, or a directory (output directories are not collected).
pub fn read_output(root: &Path, components: &[&str]) -> Result<Option<(Vec<u8>, bool)>> {
    use std::os::unix::fs::PermissionsExt;
    if components.is_empty() {
        return Err(invalid(
            "an output path names the working directory itself".into(),
        ));
    }
    let path = components.join("/");
    let mut file = match open_no_follow(root, components) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // ELOOP: the output is a symlink; ENOTDIR: a parent is a symlink (or a file).
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
            return Err(invalid(format!(
                "output {path} is or passes through a symlink or a file; the worker does not \
                 follow symlinks"
            )))
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot open output {path}"))),
    };
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(Some((bytes, meta.permissions().mode() & 0o111 != 0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Entry names: mostly a few plain ones, so that entries collide and link to each other.
    fn name() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "a", "b", "a", "b", "..", ".", "", "a/b"])
    }

    /// Symlink targets and queried paths: mostly `..` and those names, sometimes absolute.
    fn path() -> impl Strategy<Value = String> {
        let component = prop::sample::select(vec!["..", "..", "a", "b", ".", ""]);
        let relative = prop::collection::vec(component, 1..4).prop_map(|c| c.join("/"));
        prop_oneof![9 => relative.clone(), 1 => relative.prop_map(|p| format!("/{p}"))]
    }

    #[derive(Clone, Debug)]
    enum Entry {
        Dir(&'static str),
        Symlink(&'static str, String),
    }

    fn entry() -> impl Strategy<Value = (usize, Entry)> {
        (
            any::<usize>(),
            prop_oneof![
                name().prop_map(Entry::Dir),
                (name(), path()).prop_map(|(n, t)| Entry::Symlink(n, t)),
            ],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn entry_names_are_single_components(name in path()) {
            if entry_name(&name).is_ok() {
                let p = Path::new(&name);
                prop_assert_eq!(p.components().count(), 1);
                prop_assert!(matches!(p.components().next(), Some(std::path::Component::Normal(_))));
            }
        }

        #[test]
        fn relative_paths_stay_below_the_root(p in path()) {
            if let Ok(components) = relative_path(&p) {
                let root = Path::new("/lease");
                let joined = components.iter().fold(root.to_path_buf(), |d, c| d.join(c));
                prop_assert!(joined.starts_with(root));
                prop_assert!(components.iter().all(|c| entry_name(c).is_ok()));
            }
        }

        /// Builds random trees of directories and accepted symlinks (chains of symlinks
        /// included) in a real directory: see [`check_tree`].
        #[test]
        fn accepted_symlinks_and_paths_never_resolve_outside(
            entries in prop::collection::vec(entry(), 1..16),
            queries in prop::collection::vec(path(), 1..8),
        ) {
            check_tree(&entries, &queries)?;
        }
    }

    /// Makes `entries` below a fresh root where the checks accept them, each in the directory
    /// `pick` (modulo the directories made so far), and checks that every link and every
    /// accepted query resolves inside the root.
    fn check_tree(entries: &[(usize, Entry)], queries: &[String]) -> Result<(), TestCaseError> {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        // Something outside for escaping links to resolve to.
        std::fs::create_dir(tmp.path().join("a")).unwrap();
        let root = root.canonicalize().unwrap();
        let mut dirs = vec![(root.clone(), 0usize)];
        let mut links = Vec::new();
        for (pick, entry) in entries {
            let (dir, depth) = dirs[pick % dirs.len()].clone();
            match entry {
                Entry::Dir(name) => {
                    if entry_name(name).is_ok() && std::fs::create_dir(dir.join(name)).is_ok() {
                        dirs.push((dir.join(name), depth + 1));
                    }
                }
                Entry::Symlink(name, target) => {
                    if entry_name(name).is_ok()
                        && symlink_target(depth, target).is_ok()
                        && std::os::unix::fs::symlink(target, dir.join(name)).is_ok()
                    {
                        links.push(dir.join(name));
                    }
                }
            }
        }
        for link in &links {
            // Dangling links and loops do not resolve at all, which is fine.
            if let Ok(resolved) = link.canonicalize() {
                prop_assert!(
                    resolved.starts_with(&root),
                    "{} -> {}",
                    link.display(),
                    resolved.display()
                );
            }
        }
        for query in queries {
            let Ok(components) = relative_path(query) else {
                continue;
            };
            if let Ok(file) = open_no_follow(&root, &components) {
                use std::os::fd::AsRawFd;
                let fd = format!("/proc/self/fd/{}", file.as_raw_fd());
                let opened = std::fs::read_link(fd).unwrap();
                prop_assert!(
                    opened.starts_with(&root),
                    "{query} opened {}",
                    opened.display()
                );
            }
        }
        Ok(())
    }

    /// The chain that makes `..` after a name unsafe: in root/a, b -> .. is root, so
    /// c -> b/.. would be root's parent although it looks like root/a.
    #[test]
    fn a_symlink_chain_cannot_climb_out() {
        let entries = [
            (0, Entry::Dir("a")),
            (1, Entry::Symlink("b", "..".into())),
            (1, Entry::Symlink("c", "b/..".into())),
        ];
        check_tree(&entries, &[]).unwrap();
        assert!(symlink_target(1, "b/..").is_err());
    }

    #[test]
    fn outputs_that_are_symlinks_are_refused_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("secret"), "secret").unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), root.join("dir")).unwrap();
        for output in [&["out"][..], &["dir", "secret"]] {
            let err = read_output(&root, output).unwrap_err();
            assert!(is_invalid_action(&err), "{err:#}");
        }
        std::fs::write(root.join("real"), "ok").unwrap();
        assert_eq!(read_output(&root, &["real"]).unwrap().unwrap().0, b"ok");
        assert!(read_output(&root, &["missing", "x"]).unwrap().is_none());
    }
}
