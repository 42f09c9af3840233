//! A back-end job: one module's native compile, as planned from the thin link.
//!
//! Jobs are plain data. Planning builds them; executors (local, remote) run them; the cache keys
//! them. Paths are kept as the link gave them (relative to `cwd` when the link used relative
//! paths), so that a job means the same thing in another checkout of the same tree.

use std::path::PathBuf;

/// Where a job's compiler flags came from, in order of preference.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FlagsSource {
    /// A record written by `thindist cc` beside the object.
    ThindistRecord(PathBuf),
    /// An entry of a compile_commands.json.
    CompileCommands(PathBuf),
    /// A kbuild `.NAME.o.cmd` file.
    KbuildCmd(PathBuf),
    /// A compile command found on the command line of the shell that runs this link (kbuild's
    /// single-object modules link right after compiling, before the `.cmd` file exists).
    ParentShell,
    /// No record: options derived from the link, as lld's DTLTO does.
    LinkDerived,
}

impl std::fmt::Display for FlagsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            FlagsSource::ThindistRecord(p) => write!(f, "thindist record {}", p.display()),
            FlagsSource::CompileCommands(p) => write!(f, "compile_commands.json {}", p.display()),
            FlagsSource::KbuildCmd(p) => write!(f, "kbuild command file {}", p.display()),
            FlagsSource::ParentShell => f.write_str("the compile command of the calling shell"),
            FlagsSource::LinkDerived => f.write_str("derived from the link (no saved flags)"),
        }
    }
}

impl BackendJob {
    /// The module as messages name it.
    pub fn name(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| self.module.display().to_string())
    }
}

/// One module's back-end compile.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BackendJob {
    /// The bitcode module, as the thin link named it.
    pub module: PathBuf,
    /// The summary shard the thin link wrote for it (`--thinlto-index-only`).
    pub shard: PathBuf,
    /// Modules this job may import function bodies from (its `.imports` file).
    pub imports: Vec<PathBuf>,
    /// Other files the compile reads (sample profiles, propeller profiles).
    pub extra_inputs: Vec<PathBuf>,
    /// Where this link's native object is written.
    pub native: PathBuf,
    /// Where the native object is also published beside its bitcode (`STEM.thinlto-native.o`).
    pub published: Option<PathBuf>,
    /// How the user knows the module when its path is thindist's own: `ARCHIVE(MEMBER)`, as
    /// lld names it, for a member extracted from a regular archive.
    pub label: Option<String>,
    /// The whole compiler command line, compiler first. It names `module`, `shard` and `native`.
    pub command: Vec<String>,
    /// The directory the command runs in: the build directory.
    pub cwd: PathBuf,
    pub flags_source: FlagsSource,
    /// Size of the module in bytes; the largest jobs start first.
    pub size: u64,
}
