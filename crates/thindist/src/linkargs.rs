//! Linker command lines: which tokens are inputs, which are options (and which options take a
//! value), which are LTO-only, and where the output goes.
//!
//! The parse is lossless: every token lands in exactly one [`Item`], so a command can be written
//! back out with some items replaced (archives by member lists, bitcode by native objects) and
//! the rest exactly as the user wrote it.

use crate::ltoopts::{self, LtoOpt};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// One element of a linker command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// An option with its value tokens, kept verbatim, and what it means to thindist.
    Opt(Opt, Vec<String>),
    /// An option that only matters to LTO ([`ltoopts`] says what it means): used for the thin
    /// link and the back ends, dropped from the final link of native objects.
    Lto(LtoOpt, Vec<String>),
    /// `-o FILE`.
    Output(Vec<String>, String),
    /// A file to link: an object, an archive, a shared library or a linker script.
    Input(Input),
    /// `-lNAME` (the name, and the tokens) that did not resolve to a static archive: left to
    /// the linker.
    Library(String, Vec<String>),
}

impl Item {
    /// The tokens of the item as written.
    pub fn tokens(&self) -> &[String] {
        match self {
            Item::Opt(_, t) | Item::Lto(_, t) | Item::Output(t, _) | Item::Library(_, t) => t,
            Item::Input(input) => &input.tokens,
        }
    }
}

/// What an option that is not an input, an output or an LTO option means to thindist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opt {
    /// Changes how the inputs after it are read from archives.
    Archives(ArchiveSwitch),
    /// `-L DIR`: where `-l` looks.
    LibraryPath(PathBuf),
    /// `-r`: the output is a relocatable object.
    Relocatable,
    /// `-pie`, `-shared`: the output is position independent.
    PositionIndependent,
    /// `--version`, `--help`: a link of nothing when alone.
    Query,
    /// Anything else: passed on as written.
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveSwitch {
    /// `--whole-archive` (true), `--no-whole-archive`.
    WholeArchive(bool),
    /// `--start-lib` (true), `--end-lib`.
    Lazy(bool),
    /// `-Bstatic` (true), `-Bdynamic`: whether `-l` takes shared libraries.
    StaticOnly(bool),
}

impl Opt {
    /// The meaning of the option written as `tokens` (the option, then its value if separate).
    fn of(tokens: &[String]) -> Opt {
        let t = tokens[0].as_str();
        let switch = match t.trim_start_matches('-') {
            "whole-archive" => Some(ArchiveSwitch::WholeArchive(true)),
            "no-whole-archive" => Some(ArchiveSwitch::WholeArchive(false)),
            "start-lib" => Some(ArchiveSwitch::Lazy(true)),
            "end-lib" => Some(ArchiveSwitch::Lazy(false)),
            "Bstatic" | "static" | "dn" | "non_shared" => Some(ArchiveSwitch::StaticOnly(true)),
            "Bdynamic" | "dy" | "call_shared" => Some(ArchiveSwitch::StaticOnly(false)),
            _ => None,
        };
        if let Some(switch) = switch {
            return Opt::Archives(switch);
        }
        if let Some(dir) = library_path(tokens) {
            return Opt::LibraryPath(dir);
        }
        match t {
            "-r" | "--relocatable" | "-relocatable" | "-i" => Opt::Relocatable,
            "-pie" | "--pie" | "-shared" | "--shared" | "-Bshareable" => Opt::PositionIndependent,
            "--version" | "-version" | "-v" | "-V" | "--help" | "-help" => Opt::Query,
            _ => Opt::Other,
        }
    }
}

/// The archive semantics in force at a point of the command line: the one state machine of
/// `--whole-archive`, `--start-lib` and `-Bstatic`.
#[derive(Clone, Copy, Debug, Default)]
struct ArchiveState {
    whole_archive: bool,
    lazy: bool,
    static_only: bool,
}

impl ArchiveState {
    fn apply(&mut self, opt: &Opt) {
        match opt {
            Opt::Archives(ArchiveSwitch::WholeArchive(on)) => self.whole_archive = *on,
            Opt::Archives(ArchiveSwitch::Lazy(on)) => self.lazy = *on,
            Opt::Archives(ArchiveSwitch::StaticOnly(on)) => self.static_only = *on,
            _ => {}
        }
    }

    fn input(&self, tokens: Vec<String>, path: PathBuf) -> Input {
        Input {
            tokens,
            path,
            whole_archive: self.whole_archive,
            lazy: self.lazy,
        }
    }
}

/// The file a `-lNAME` item names on the search path.
#[derive(Clone, Debug)]
pub struct LibraryFile {
    /// The item's index in [`LinkArgs::items`].
    pub index: usize,
    pub path: Option<PathBuf>,
    state: ArchiveState,
}

/// A file input and the archive semantics in force where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// The tokens as written (`x.o`, or `-l foo` for a library found on the search path).
    pub tokens: Vec<String>,
    pub path: PathBuf,
    /// Inside `--whole-archive`.
    pub whole_archive: bool,
    /// Inside `--start-lib ... --end-lib`: loaded lazily, as if an archive member.
    pub lazy: bool,
}

/// A parsed linker command line (response files already expanded).
#[derive(Clone, Debug, Default)]
pub struct LinkArgs {
    pub items: Vec<Item>,
}

/// Long options (without leading dashes) that take their value as the next token when not
/// written as `name=value`.
const SEPARATE_VALUE: &[&str] = &[
    "o",
    "output",
    "L",
    "library-path",
    "l",
    "library",
    "T",
    "script",
    "m",
    "e",
    "entry",
    "z",
    "u",
    "undefined",
    "y",
    "trace-symbol",
    "R",
    "rpath",
    "soname",
    "h",
    "init",
    "fini",
    "defsym",
    "version-script",
    "dynamic-list",
    "Map",
    "dynamic-linker",
    "plugin",
    "plugin-opt",
    "mllvm",
    "Ttext",
    "Tbss",
    "Tdata",
    "section-start",
    "F",
    "filter",
    "f",
    "auxiliary",
    "exclude-libs",
    "hash-style",
    "wrap",
    "image-base",
    "retain-symbols-file",
    "symbol-ordering-file",
    "call-graph-ordering-file",
    "just-symbols",
    "dependency-file",
    "error-limit",
    "format",
    "b",
    "O",
    "sysroot",
    "oformat",
    "remap-inputs",
    "remap-inputs-file",
    "undefined-glob",
    "export-dynamic-symbol",
    "export-dynamic-symbol-list",
    "Tsymbols",
    "package-metadata",
    "why-extract",
    "z-keyword",
    "thinlto-cache-dir",
    "thinlto-jobs",
    "lto-sample-profile",
];

/// Single-letter options that also take a joined value (`-L/usr/lib`, `-lc`, `-znow`).
const SHORT_JOINED: &[char] = &[
    'o', 'L', 'l', 'T', 'm', 'z', 'e', 'u', 'y', 'R', 'h', 'F', 'f', 'O',
];

/// Long flags that begin with a letter of [`SHORT_JOINED`] and so must not be read as `-X value`.
const FLAGS_LIKE_SHORT: &[&str] = &[
    "export-dynamic",
    "eh-frame-hdr",
    "emit-relocs",
    "enable-new-dtags",
    "end-group",
    "end-lib",
    "omagic",
    "fatal-warnings",
    "fix-cortex-a53-843419",
    "fix-cortex-a8",
    "no-undefined",
    "relocatable",
    "EL",
    "EB",
    "lto-emit-asm",
    "error-unresolved-symbols",
    "execute-only",
    "lto-debug-pass-manager",
    "unique",
    "use-android-relr-tags",
    "undefined-version",
    "fortran-common",
    "fat-lto-objects",
    "mmap-output-file",
];

fn strip_dashes(token: &str) -> Option<&str> {
    token
        .strip_prefix("--")
        .or_else(|| token.strip_prefix('-'))
        .filter(|s| !s.is_empty())
}

impl LinkArgs {
    /// Parses an lld command line (without the linker's own name).
    pub fn parse(tokens: &[String]) -> Result<LinkArgs> {
        let mut items = Vec::new();
        let mut state = ArchiveState::default();
        let mut i = 0;
        while i < tokens.len() {
            let token = &tokens[i];
            i += 1;
            let Some(body) = strip_dashes(token).filter(|_| token.starts_with('-')) else {
                items.push(Item::Input(
                    state.input(vec![token.clone()], PathBuf::from(token)),
                ));
                continue;
            };
            let double_dash = token.starts_with("--");
            let (name, joined_value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            // Decide how many tokens the option spans and what its value is.
            let was_joined = joined_value.is_some();
            let (consumed, value): (Vec<String>, Option<String>) = if let Some(v) = joined_value {
                (vec![token.clone()], Some(v))
            } else if SEPARATE_VALUE.contains(&name) {
                let Some(value) = tokens.get(i) else {
                    bail!("linker option {token} needs a value, and none follows it");
                };
                i += 1;
                (vec![token.clone(), value.clone()], Some(value.clone()))
            } else if !double_dash
                && !FLAGS_LIKE_SHORT.contains(&name)
                && name.len() > 1
                && name
                    .chars()
                    .next()
                    .is_some_and(|c| SHORT_JOINED.contains(&c))
                && !is_known_flag(name)
            {
                (vec![token.clone()], Some(name[1..].to_string()))
            } else {
                (vec![token.clone()], None)
            };
            let short = if SHORT_JOINED.iter().any(|c| name.starts_with(*c))
                && !double_dash
                && consumed.len() == 1
                && value.is_some()
                && !was_joined
            {
                // `-lfoo`, `-L/dir`: the option is the first letter.
                &name[..1]
            } else {
                name
            };
            let value = value.unwrap_or_default();
            let item = match short {
                "o" | "output" => Item::Output(consumed, value),
                "l" | "library" => Item::Library(library_name(&consumed).to_string(), consumed),
                _ => match ltoopts::classify(short, &value) {
                    Some(lto) => Item::Lto(lto, consumed),
                    None => {
                        let opt = Opt::of(&consumed);
                        state.apply(&opt);
                        Item::Opt(opt, consumed)
                    }
                },
            };
            items.push(item);
        }
        Ok(LinkArgs { items })
    }

    /// Turns `-lNAME` items that name a static archive on the search path into inputs, so that
    /// bitcode archives found through `-l` are distributed too. Others stay for the linker.
    pub fn resolve_libraries(&mut self, cwd: &Path) {
        for found in self.library_files(cwd) {
            let Some(path) = found
                .path
                .filter(|p| p.extension().is_some_and(|e| e == "a"))
            else {
                continue;
            };
            if let Item::Library(_, tokens) = &self.items[found.index] {
                self.items[found.index] = Item::Input(found.state.input(tokens.clone(), path));
            }
        }
    }

    /// Where the linker finds each `-lNAME` item that is still one (the file it would read, or
    /// none), with the archive semantics in force there.
    pub fn library_files(&self, cwd: &Path) -> Vec<LibraryFile> {
        let search_dirs: Vec<PathBuf> = self
            .items
            .iter()
            .filter_map(|item| match item {
                Item::Opt(Opt::LibraryPath(dir), _) => Some(dir.clone()),
                _ => None,
            })
            .collect();
        let mut state = ArchiveState::default();
        let mut found = Vec::new();
        for (index, item) in self.items.iter().enumerate() {
            match item {
                Item::Opt(opt, _) => state.apply(opt),
                Item::Library(name, _) => found.push(LibraryFile {
                    index,
                    path: find_library(&search_dirs, name, state.static_only, cwd),
                    state,
                }),
                _ => {}
            }
        }
        found
    }

    /// The output file named by `-o`, if any.
    pub fn output(&self) -> Option<&str> {
        self.items.iter().rev().find_map(|item| match item {
            Item::Output(_, path) => Some(path.as_str()),
            _ => None,
        })
    }

    pub fn inputs(&self) -> impl Iterator<Item = &Input> {
        self.items.iter().filter_map(|item| match item {
            Item::Input(input) => Some(input),
            _ => None,
        })
    }

    pub fn lto_options(&self) -> impl Iterator<Item = &LtoOpt> {
        self.items.iter().filter_map(|item| match item {
            Item::Lto(lto, _) => Some(lto),
            _ => None,
        })
    }

    /// Whether any option of the link is `opt`.
    pub fn has(&self, opt: &Opt) -> bool {
        self.items
            .iter()
            .any(|item| matches!(item, Item::Opt(o, _) if o == opt))
    }

    /// Is this a relocatable (`-r`) link?
    pub fn is_relocatable(&self) -> bool {
        self.has(&Opt::Relocatable)
    }

    /// True for invocations that link nothing (`--version`, `-v` alone, `--help`).
    pub fn is_query(&self) -> bool {
        let has_input = self
            .items
            .iter()
            .any(|i| matches!(i, Item::Input(_) | Item::Library(..)));
        self.has(&Opt::Query) && !has_input || self.items.is_empty()
    }
}

fn is_known_flag(name: &str) -> bool {
    // Options lld knows as plain flags although they start like a joined short option.
    name.starts_with("no-") || name.starts_with("Bst") || name.starts_with("Bdy")
}

/// The directory `-L DIR`, `-LDIR` or `--library-path=DIR` names.
fn library_path(tokens: &[String]) -> Option<PathBuf> {
    let t = &tokens[0];
    if tokens.len() == 2 && matches!(t.as_str(), "-L" | "--library-path" | "-library-path") {
        Some(PathBuf::from(&tokens[1]))
    } else if let Some(v) = t.strip_prefix("--library-path=") {
        Some(PathBuf::from(v))
    } else {
        t.strip_prefix("-L")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }
}

fn library_name(tokens: &[String]) -> &str {
    let t = &tokens[0];
    if tokens.len() == 2 {
        &tokens[1]
    } else if let Some(v) = t
        .strip_prefix("--library=")
        .or_else(|| t.strip_prefix("-library="))
    {
        v
    } else {
        &t[2..]
    }
}

fn find_library(dirs: &[PathBuf], name: &str, static_only: bool, cwd: &Path) -> Option<PathBuf> {
    for dir in dirs {
        let dir = cwd.join(dir);
        if let Some(exact) = name.strip_prefix(':') {
            let p = dir.join(exact);
            if p.is_file() {
                return Some(p);
            }
            continue;
        }
        if !static_only {
            let so = dir.join(format!("lib{name}.so"));
            if so.is_file() {
                return Some(so);
            }
        }
        let a = dir.join(format!("lib{name}.a"));
        if a.is_file() {
            return Some(a);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strings(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn parse(s: &str) -> LinkArgs {
        LinkArgs::parse(&strings(s)).unwrap()
    }

    #[test]
    fn parses_kernel_vmlinux_link() {
        let args = parse(
            "-m elf_x86_64 -mllvm -import-instr-limit=5 -z noexecstack -r -o vmlinux.o \
             -T .tmp_initcalls.lds --whole-archive vmlinux.a --no-whole-archive \
             --start-group lib/lib.a arch/x86/lib/lib.a --end-group",
        );
        let inputs: Vec<_> = args.inputs().collect();
        assert_eq!(inputs.len(), 3);
        assert_eq!(inputs[0].path, Path::new("vmlinux.a"));
        assert!(inputs[0].whole_archive);
        assert!(!inputs[1].whole_archive);
        assert_eq!(args.output(), Some("vmlinux.o"));
        assert!(args.is_relocatable());
        assert_eq!(
            args.lto_options().collect::<Vec<_>>(),
            vec![&LtoOpt::Llvm(ltoopts::LlvmOpt::parse(
                "-import-instr-limit=5"
            ))]
        );
    }

    #[test]
    fn parses_clang_driver_link() {
        let args = parse(
            "--hash-style=gnu --build-id --eh-frame-hdr -m elf_x86_64 -pie -dynamic-linker \
             /lib64/ld-linux-x86-64.so.2 -o x /lib/Scrt1.o -L/usr/lib -plugin-opt=mcpu=x86-64 \
             -plugin-opt=O2 -plugin-opt=thinlto a.o -lgcc --as-needed -lc --lto-O3 \
             -plugin-opt=-function-sections=1 --start-lib b.o c.o --end-lib -ofoo",
        );
        let inputs: Vec<_> = args.inputs().map(|i| (i.path.clone(), i.lazy)).collect();
        assert_eq!(
            inputs,
            vec![
                (PathBuf::from("/lib/Scrt1.o"), false),
                (PathBuf::from("a.o"), false),
                (PathBuf::from("b.o"), true),
                (PathBuf::from("c.o"), true)
            ]
        );
        assert_eq!(args.output(), Some("foo"));
        let lto: Vec<_> = args.lto_options().cloned().collect();
        assert_eq!(
            lto,
            vec![
                LtoOpt::NoEffect,
                LtoOpt::OptLevel("2".into()),
                LtoOpt::NoEffect,
                LtoOpt::OptLevel("3".into()),
                LtoOpt::Llvm(ltoopts::LlvmOpt::parse("-function-sections=1"))
            ]
        );
    }

    #[test]
    fn recognizes_lto_profile_options() {
        let args = parse("--lto-sample-profile=p.afdo --lto-basic-block-sections=bb.txt --thinlto-jobs=4 -o a a.o");
        let lto: Vec<_> = args.lto_options().cloned().collect();
        assert_eq!(
            lto,
            vec![
                LtoOpt::SampleProfile("p.afdo".into()),
                LtoOpt::BasicBlockSections("bb.txt".into()),
                LtoOpt::NoEffect
            ]
        );
        assert!(parse("--thinlto-index-only=x a.o")
            .lto_options()
            .any(|o| *o == LtoOpt::AlreadyDistributed));
    }

    #[test]
    fn queries_are_recognized() {
        assert!(parse("--version").is_query());
        assert!(parse("-v").is_query());
        assert!(!parse("-v a.o -o x").is_query());
    }

    #[test]
    fn missing_value_is_an_error() {
        let err = LinkArgs::parse(&strings("a.o -o")).unwrap_err();
        assert!(err.to_string().contains("-o"));
    }

    #[test]
    fn resolves_static_libraries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libfoo.a"), b"!<arch>\n").unwrap();
        let mut args = parse(&format!("-L{} -lfoo -lbar -o x", dir.path().display()));
        args.resolve_libraries(Path::new("/"));
        let inputs: Vec<_> = args.inputs().collect();
        assert_eq!(inputs.len(), 1);
        assert_eq!(inputs[0].path, dir.path().join("libfoo.a"));
        assert!(matches!(args.items[2], Item::Library(..)));
    }

    #[test]
    fn one_archive_state_serves_inputs_and_libraries() {
        let dir = tempfile::tempdir().unwrap();
        for lib in ["libfoo.a", "libfoo.so"] {
            std::fs::write(dir.path().join(lib), b"!<arch>\n").unwrap();
        }
        let mut args = parse(&format!(
            "--library-path={} --whole-archive a.o -lfoo --no-whole-archive -Bstatic --start-lib -lfoo b.o --end-lib -Bdynamic -lfoo",
            dir.path().display()
        ));
        assert!(matches!(&args.items[0], Item::Opt(Opt::LibraryPath(p), _) if p == dir.path()));
        args.resolve_libraries(Path::new("/"));
        let inputs: Vec<_> = args
            .inputs()
            .map(|i| {
                (
                    i.path.file_name().unwrap().to_owned(),
                    i.whole_archive,
                    i.lazy,
                )
            })
            .collect();
        let name = |n: &str| std::ffi::OsString::from(n);
        // The first -lfoo may take the shared library, which stays the linker's.
        assert_eq!(
            inputs,
            vec![
                (name("a.o"), true, false),
                (name("libfoo.a"), false, true),
                (name("b.o"), false, true),
            ]
        );
    }

    proptest! {
        /// Every token lands in exactly one item, in order: the parse loses nothing.
        #[test]
        fn parse_is_lossless(tokens in proptest::collection::vec(
            prop_oneof![
                Just("-o".to_string()), Just("-L".to_string()), Just("-mllvm".to_string()),
                Just("--whole-archive".to_string()), Just("--start-lib".to_string()),
                Just("-plugin-opt=O2".to_string()), Just("-lc".to_string()),
                "[a-z./]{1,8}", "-[a-zA-Z-]{1,12}(=[a-z0-9]{0,4})?",
            ], 0..24)) {
            if let Ok(args) = LinkArgs::parse(&tokens) {
                let back: Vec<String> = args.items.iter().flat_map(|item| item.tokens().to_vec()).collect();
                prop_assert_eq!(back, tokens);
            }
        }
    }
}
