//! The thin link: archives with bitcode turned into member lists, the real linker run with
//! `--thinlto-index-only`, and what it wrote read back (the module list, shards, import lists).

use crate::cmdline;
use crate::fsutil::{normalize, relative_below};
use crate::inputs::{self, FileKind, MemberLocation};
use crate::linkargs::{Input, Item, LinkArgs};
use crate::workdir::WorkDir;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// How one input of the original link takes part in the distributed link.
#[derive(Clone, Debug)]
pub enum Prepared {
    /// Passed to both links as written: native objects, shared libraries, scripts, archives
    /// without bitcode.
    Unchanged,
    /// A bitcode object, named `module` in the thin link.
    Bitcode { module: PathBuf },
    /// An archive holding bitcode, replaced by its members (as files) in archive order.
    Archive { members: Vec<PreparedMember> },
}

#[derive(Clone, Debug)]
pub struct PreparedMember {
    pub path: PathBuf,
    pub bitcode: bool,
    /// `ARCHIVE(MEMBER)` for a member extracted into the work directory.
    pub label: Option<String>,
}

/// The original link with each input's part in the distributed link.
pub struct PreparedLink {
    pub args: LinkArgs,
    /// One entry per item of `args`; `None` for items that are not inputs.
    pub prepared: Vec<Option<Prepared>>,
    /// The link's private work directory (absolute): extracted archive members, native
    /// objects and command files.
    pub work_dir: PathBuf,
}

impl PreparedLink {
    /// Whether every bitcode input is an object the clang driver compiled into TMPDIR for this
    /// link (the link of `clang -flto=thin a.c -o prog`).
    pub fn bitcode_is_all_temporary(&self) -> bool {
        self.prepared.iter().flatten().all(|p| match p {
            Prepared::Bitcode { module } => crate::workdir::is_driver_temporary(module),
            Prepared::Archive { members } => !members.iter().any(|m| m.bitcode),
            Prepared::Unchanged => true,
        })
    }

    /// Every bitcode module, in link order, with its `ARCHIVE(MEMBER)` label if it is a member
    /// extracted into the work directory.
    pub fn bitcode_modules(&self) -> Vec<(PathBuf, Option<String>)> {
        let mut modules = Vec::new();
        for prepared in self.prepared.iter().flatten() {
            match prepared {
                Prepared::Bitcode { module } => modules.push((module.clone(), None)),
                Prepared::Archive { members } => modules.extend(
                    members
                        .iter()
                        .filter(|m| m.bitcode)
                        .map(|m| (m.path.clone(), m.label.clone())),
                ),
                Prepared::Unchanged => {}
            }
        }
        modules
    }

    pub fn has_bitcode(&self) -> bool {
        self.prepared.iter().flatten().any(|p| match p {
            Prepared::Bitcode { .. } => true,
            Prepared::Archive { members } => members.iter().any(|m| m.bitcode),
            Prepared::Unchanged => false,
        })
    }
}

/// The module path to give the linker: relative to the build directory where the file lies
/// below it (so that shards, which record module paths, do not depend on where the tree is),
/// else absolute (a `..` would let the shard path escape the work directory).
fn module_path(path: &Path, cwd: &Path) -> PathBuf {
    let rel = normalize(&relative_below(&normalize(&cwd.join(path)), cwd));
    if rel.is_absolute() || rel.starts_with("..") {
        normalize(&cwd.join(path))
    } else {
        rel
    }
}

/// Classifies every input; extracts the bitcode-holding members of regular archives into
/// `WORK/archives/` (thin archive members are used in place).
pub fn prepare(args: LinkArgs, cwd: &Path, work: &WorkDir) -> Result<PreparedLink> {
    let work_dir = work.path();
    let mut prepared = Vec::with_capacity(args.items.len());
    for (index, item) in args.items.iter().enumerate() {
        let Item::Input(input) = item else {
            prepared.push(None);
            continue;
        };
        let extract_dir = work_dir.join("archives").join(index.to_string());
        prepared.push(Some(prepare_input(input, cwd, &extract_dir)?));
    }
    Ok(PreparedLink {
        args,
        prepared,
        work_dir: work_dir.to_path_buf(),
    })
}

/// Where a regular archive's member is extracted: named by its position in the archive, which
/// is its identity (an archive may hold several members of one name), with its own name kept
/// for the linker's messages.
fn member_file(extract_dir: &Path, position: usize, name: &str) -> PathBuf {
    let base = Path::new(name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "member.o".to_string());
    extract_dir.join(format!("{position}-{base}"))
}

fn prepare_input(input: &Input, cwd: &Path, extract_dir: &Path) -> Result<Prepared> {
    let path = cwd.join(&input.path);
    Ok(match inputs::kind_of_file(&path) {
        FileKind::Bitcode => Prepared::Bitcode {
            module: module_path(&input.path, cwd),
        },
        FileKind::Archive | FileKind::ThinArchive => {
            let members = inputs::archive_members(&path)?;
            if !inputs::archive_has_bitcode(&members) {
                return Ok(Prepared::Unchanged);
            }
            let mut out = Vec::with_capacity(members.len());
            for (position, member) in members.into_iter().enumerate() {
                let (member_path, label) = match member.location {
                    MemberLocation::File(p) => (module_path(&p, cwd), None),
                    MemberLocation::Range { offset, size } => {
                        let dest = member_file(extract_dir, position, &member.name);
                        inputs::extract_member(&path, offset, size, &dest)?;
                        let label = format!("{}({})", input.path.display(), member.name);
                        (dest, Some(label))
                    }
                };
                out.push(PreparedMember {
                    path: member_path,
                    bitcode: member.kind == FileKind::Bitcode,
                    label,
                });
            }
            Prepared::Archive { members: out }
        }
        FileKind::Elf | FileKind::Other => Prepared::Unchanged,
    })
}

/// Writes archive members the way the original link would read the archive: listed directly
/// under `--whole-archive` or inside a `--start-lib` list already, else as a lazy list.
fn push_members(out: &mut Vec<String>, input: &Input, members: impl Iterator<Item = PathBuf>) {
    let lazy = !input.whole_archive && !input.lazy;
    if lazy {
        out.push("--start-lib".into());
    }
    out.extend(members.map(|p| p.to_string_lossy().into_owned()));
    if lazy {
        out.push("--end-lib".into());
    }
}

pub fn shard_path(index_dir: &Path, module: &Path) -> PathBuf {
    work_path(index_dir, module, ".thinlto.bc")
}

pub fn imports_path(index_dir: &Path, module: &Path) -> PathBuf {
    work_path(index_dir, module, ".imports")
}

/// Where the back end of `module` writes its native object in the work directory: beside it
/// for a member extracted there, else in the work directory's `natives` directory under a name
/// made of the module's whole path ([`native_file_name`]). Not at the module's path under the
/// work directory: each of its directories had to be made when the link's first native
/// arrived there and removed at its end, for the kernel 64 directories, whose `mkdir` and
/// `rmdir` on ext4 cost about 60 us each on the path from the thin link to the final link and
/// after it.
pub fn native_path(work_dir: &Path, module: &Path) -> PathBuf {
    if module.starts_with(work_dir) {
        return PathBuf::from(format!("{}.native.o", module.display()));
    }
    work_dir.join("natives").join(native_file_name(module))
}

/// The longest file name Linux file systems take (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// One file name for the native object of `module`, different for every module path: its path
/// with `%` written `%25` and `/` written `%2F`, then `.native.o`. A name longer than a file
/// system takes keeps its end, from a character's first byte, after `%%` and a digest of the
/// whole path (`%%` is in no escaped name).
pub fn native_file_name(module: &Path) -> std::ffi::OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let path = module.as_os_str().as_bytes();
    let mut name = Vec::with_capacity(path.len() + 16);
    for &byte in path {
        match byte {
            b'%' => name.extend_from_slice(b"%25"),
            b'/' => name.extend_from_slice(b"%2F"),
            _ => name.push(byte),
        }
    }
    name.extend_from_slice(b".native.o");
    if name.len() > NAME_MAX {
        let digest = crate::cache::key::sha256_hex(path);
        let mut short = format!("%%{}-", &digest[..16]).into_bytes();
        let mut end = name.len() - (NAME_MAX - short.len());
        // Not inside a UTF-8 character: the name must stay text where the path was.
        while name.get(end).is_some_and(|byte| byte & 0xC0 == 0x80) {
            end += 1;
        }
        short.extend_from_slice(&name[end..]);
        name = short;
    }
    std::ffi::OsString::from_vec(name)
}

/// `DIR/<module><suffix>`: where `--thinlto-prefix-replace=;DIR/` makes lld write (DIR the
/// index directory).
fn work_path(work_dir: &Path, module: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!(
        "{}/{}{}",
        work_dir.display(),
        module.display(),
        suffix
    ))
}

impl PreparedLink {
    /// The thin-link command: the original link with archives replaced by member lists and the
    /// index-only options added, writing shards, import lists and its module list in
    /// `index_dir` (see [`crate::workdir`]). Long argument lists go through a response file.
    pub fn thin_link_command(&self, linker: &str, index_dir: &Path) -> Result<Vec<String>> {
        let mut args = Vec::new();
        for (item, prepared) in self.args.items.iter().zip(&self.prepared) {
            match (item, prepared) {
                (Item::Input(_), Some(Prepared::Bitcode { module })) => {
                    args.push(module.to_string_lossy().into_owned())
                }
                (Item::Input(input), Some(Prepared::Archive { members })) => {
                    push_members(&mut args, input, members.iter().map(|m| m.path.clone()))
                }
                (item, _) => args.extend(item.tokens().iter().cloned()),
            }
        }
        let list = index_dir.join("modules.list");
        args.push(format!("--thinlto-index-only={}", list.display()));
        args.push("--thinlto-emit-imports-files".into());
        args.push(format!(
            "--thinlto-prefix-replace=;{}/",
            index_dir.display()
        ));
        let rsp = self.work_dir.join("thinlink.rsp");
        cmdline::write_response_file(&rsp, &args)?;
        Ok(vec![linker.to_string(), format!("@{}", rsp.display())])
    }

    /// The modules the thin link listed in `index_dir/modules.list` (read from `cwd`), in its
    /// order.
    pub fn listed_modules(cwd: &Path, index_dir: &Path) -> Result<Vec<PathBuf>> {
        let list = cwd.join(index_dir.join("modules.list"));
        let text = std::fs::read_to_string(&list)
            .with_context(|| format!("the thin link wrote no module list {}", list.display()))?;
        let prefix = format!("{}/", index_dir.display());
        let mut modules = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let module = line.strip_prefix(&prefix).with_context(|| {
                format!("the thin link listed {line}, outside the index directory {prefix}")
            })?;
            modules.push(PathBuf::from(module));
        }
        Ok(modules)
    }

    /// The final-link arguments (without the linker): the original link with every bitcode
    /// input replaced by its native object, archive order and laziness kept, bitcode the thin
    /// link did not load left out, and LTO-only options dropped. The output is the original's.
    /// The final link also lists every file it read in the work directory (lld's
    /// `--dependency-file`), for the record of an unchanged relink, unless the link writes a
    /// dependency file of its own.
    pub fn final_link_args(&self, natives: &HashMap<PathBuf, PathBuf>) -> Vec<String> {
        let mut args: Vec<String> = self
            .final_link_dependency_file()
            .map(|file| format!("--dependency-file={}", file.display()))
            .into_iter()
            .collect();
        for (item, prepared) in self.args.items.iter().zip(&self.prepared) {
            match (item, prepared) {
                (Item::Lto(..), _) => {}
                (Item::Input(_), Some(Prepared::Bitcode { module })) => {
                    if let Some(native) = natives.get(module) {
                        args.push(native.to_string_lossy().into_owned());
                    }
                }
                (Item::Input(input), Some(Prepared::Archive { members })) => {
                    let files = members.iter().filter_map(|m| {
                        if m.bitcode {
                            natives.get(&m.path).cloned()
                        } else {
                            Some(m.path.clone())
                        }
                    });
                    push_members(&mut args, input, files);
                }
                (item, _) => args.extend(item.tokens().iter().cloned()),
            }
        }
        args
    }

    /// Where the final link lists the files it read (see [`Self::final_link_args`]), unless
    /// the link names its own dependency file.
    pub fn final_link_dependency_file(&self) -> Option<PathBuf> {
        let own = self.args.items.iter().any(|item| {
            matches!(item, Item::Opt(_, t) if t[0].trim_start_matches('-').starts_with("dependency-file"))
        });
        (!own).then(|| self.work_dir.join("finallink.d"))
    }
}

/// Reads a `.imports` file: one module path a line.
pub fn read_imports(path: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("missing import list {}", path.display()))?;
    Ok(parse_imports(&text))
}

pub fn parse_imports(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn natives_lie_flat_in_the_work_directory() {
        let work = Path::new("/tmp/thindist-x");
        assert_eq!(
            native_path(work, Path::new("kernel/fork.o")),
            PathBuf::from("/tmp/thindist-x/natives/kernel%2Ffork.o.native.o")
        );
        assert_eq!(
            native_path(work, Path::new("/src/50%/a.o")),
            PathBuf::from("/tmp/thindist-x/natives/%2Fsrc%2F50%25%2Fa.o.native.o")
        );
        // A member extracted into the work directory keeps its native beside it.
        assert_eq!(
            native_path(work, Path::new("/tmp/thindist-x/libm.a/3/x.o")),
            PathBuf::from("/tmp/thindist-x/libm.a/3/x.o.native.o")
        );
        let deep = format!("{}/tail.o", "d/".repeat(200));
        let name = native_file_name(Path::new(&deep)).into_string().unwrap();
        assert_eq!(name.len(), NAME_MAX);
        assert!(
            name.starts_with("%%") && name.ends_with("%2Ftail.o.native.o"),
            "{name}"
        );
        // Cut short between characters, never inside one.
        for filler in ["é", "€", "😀"] {
            let deep = format!("{}.o", filler.repeat(300));
            let name = native_file_name(Path::new(&deep));
            let name = name.to_str().expect("still UTF-8");
            assert!(
                name.len() <= NAME_MAX && name.ends_with(".o.native.o"),
                "{name}"
            );
        }
    }

    proptest! {
        /// Different module paths never share a native object, and each name is one file name
        /// a file system takes.
        #[test]
        fn native_file_names_are_distinct_single_names(
            a in "[a/%.é]{1,300}",
            b in "[a/%.é]{1,300}",
        ) {
            let name_a = native_file_name(Path::new(&a));
            let name_b = native_file_name(Path::new(&b));
            for name in [&name_a, &name_b] {
                let name = name.to_str().expect("text stays text");
                prop_assert!(!name.contains('/') && name.len() <= NAME_MAX);
            }
            prop_assert_eq!(a == b, name_a == name_b);
        }
    }

    #[test]
    fn module_paths_are_relative_below_cwd() {
        let cwd = Path::new("/build");
        assert_eq!(
            module_path(Path::new("./a/b.o"), cwd),
            PathBuf::from("a/b.o")
        );
        assert_eq!(
            module_path(Path::new("/build/a/b.o"), cwd),
            PathBuf::from("a/b.o")
        );
        assert_eq!(
            module_path(Path::new("../x/b.o"), cwd),
            PathBuf::from("/x/b.o")
        );
    }

    proptest! {
        #[test]
        fn imports_parse_every_nonempty_line(lines in proptest::collection::vec("[a-zA-Z0-9_./()@ -]{1,20}", 0..10)) {
            let text = lines.join("\n");
            let parsed = parse_imports(&text);
            let expected: Vec<PathBuf> = lines.iter().map(|l| l.trim_end()).filter(|l| !l.is_empty()).map(PathBuf::from).collect();
            prop_assert_eq!(parsed, expected);
        }
    }
}
