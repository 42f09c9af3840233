//! A back-end job: one module's native compile, and the one constructor both planners (the
//! thin link's, [`crate::plan`], and lld's DTLTO job file's, [`crate::dtlto`]) build jobs with.
//!
//! Jobs are plain data. Planning builds them; executors (local, remote) run them; the cache keys
//! them. Paths are kept as the link gave them (relative to `cwd` when the link used relative
//! paths), so that a job means the same thing in another checkout of the same tree.

use crate::flags::{self, FlagSources, FlagsProblem};
use anyhow::Result;
use std::path::{Path, PathBuf};

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
    /// Size of the module in bytes: how long its job takes, where no earlier run says.
    pub size: u64,
}

/// The files of one job, as the planner's input names them.
pub struct JobFiles {
    pub module: PathBuf,
    pub shard: PathBuf,
    pub imports: Vec<PathBuf>,
    pub native: PathBuf,
    /// The job's own arguments, last on its command line (they name the module, shard and
    /// native object).
    pub args: Vec<String>,
}

/// Builds jobs: looks up each module's saved flags and makes its command from them, or from
/// the link's options when it has none, and notes what it found wanting.
pub struct JobBuilder<'a> {
    sources: &'a FlagSources,
    cwd: &'a Path,
    /// The command of a module without saved flags, up to the job's own arguments.
    derived: Vec<String>,
    /// The compiler of a module with saved flags; `None`: the one it was compiled with.
    compiler: Option<String>,
    /// Options of the link that follow a module's saved ones, so the link wins where it speaks.
    link_options: Vec<String>,
    /// What follows those on a command built from saved flags, before the job's own
    /// arguments: [`flags::BACKEND_MODE`] and whatever else the planner's input format needs.
    mode: Vec<String>,
    /// Files every job reads besides its own.
    common_inputs: Vec<PathBuf>,
    /// Saved flags that existed but could not be used (the module fell back).
    pub problems: Vec<FlagsProblem>,
    /// Modules with no saved flags at all.
    pub without_flags: Vec<PathBuf>,
}

impl<'a> JobBuilder<'a> {
    /// `derived`: the command for modules without saved flags, up to the job's own arguments;
    /// `link_options` and then `mode` follow the options of modules with saved flags.
    pub fn new(
        sources: &'a FlagSources,
        cwd: &'a Path,
        derived: Vec<String>,
        link_options: Vec<String>,
        mode: Vec<String>,
    ) -> Self {
        JobBuilder {
            sources,
            cwd,
            derived,
            compiler: None,
            link_options,
            mode,
            common_inputs: Vec::new(),
            problems: Vec::new(),
            without_flags: Vec::new(),
        }
    }

    /// Every module with saved flags is compiled by `compiler`, not the one that compiled it.
    pub fn with_compiler(mut self, compiler: String) -> Self {
        self.compiler = Some(compiler);
        self
    }

    /// Every job also reads `inputs`.
    pub fn with_common_inputs(mut self, inputs: Vec<PathBuf>) -> Self {
        self.common_inputs = inputs;
        self
    }

    /// A module's command up to the job's own arguments, and where its flags came from.
    pub fn command_prefix(&mut self, module: &Path) -> Result<(Vec<String>, FlagsSource)> {
        let found = self
            .sources
            .backend_flags(module)?
            .unwrap_or_else(|problem| {
                self.problems.push(problem);
                None
            });
        Ok(match found {
            Some(found) => {
                let compiler = self.compiler.as_ref().unwrap_or(&found.compiler);
                let mut command = vec![compiler.clone()];
                command.extend(found.options.iter().cloned());
                command.extend(self.link_options.iter().cloned());
                command.extend(self.mode.iter().cloned());
                (command, found.source.clone())
            }
            None => {
                self.without_flags.push(module.to_path_buf());
                (self.derived.clone(), FlagsSource::LinkDerived)
            }
        })
    }

    pub fn job(&mut self, files: JobFiles) -> Result<BackendJob> {
        let (mut command, flags_source) = self.command_prefix(&files.module)?;
        command.extend(files.args);
        let mut extra_inputs = self.common_inputs.clone();
        extra_inputs.extend(flags::option_inputs(&command));
        let size = std::fs::metadata(self.cwd.join(&files.module))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(BackendJob {
            module: files.module,
            shard: files.shard,
            imports: files.imports,
            extra_inputs,
            native: files.native,
            published: None,
            label: None,
            command,
            cwd: self.cwd.to_path_buf(),
            flags_source,
            size,
        })
    }
}

#[cfg(test)]
impl BackendJob {
    /// A job of `module` with `size` and a placeholder command, for tests of what schedules
    /// and records jobs rather than runs them.
    pub fn placeholder(module: &str, size: u64) -> BackendJob {
        BackendJob {
            module: module.into(),
            shard: "s".into(),
            imports: vec![],
            extra_inputs: vec![],
            native: "n".into(),
            published: None,
            label: None,
            command: vec!["cc".into()],
            cwd: "/".into(),
            flags_source: FlagsSource::LinkDerived,
            size,
        }
    }
}
