//! The job plan: one back-end job per module the thin link listed, with the module's own
//! saved flags (or link-derived ones), its shard, its imports and its outputs.

use crate::flags::{self, FlagSources, FlagsProblem};
use crate::job::{BackendJob, FlagsSource, JobBuilder, JobFiles};
use crate::ltoopts::LinkCodegen;
use crate::thinlink;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// The planned jobs and what planning found wanting.
pub struct Plan {
    pub jobs: Vec<BackendJob>,
    /// Saved flags that existed but could not be used (the module fell back).
    pub problems: Vec<FlagsProblem>,
    /// Modules with no saved flags at all.
    pub without_flags: Vec<PathBuf>,
}

/// `STEM.thinlto-native.o` for `STEM.o` (kbuild's naming).
pub fn native_name(module: &Path) -> PathBuf {
    let s = module.to_string_lossy();
    let stem = s.strip_suffix(".o").unwrap_or(&s);
    PathBuf::from(format!("{stem}.thinlto-native.o"))
}

/// Where native objects are kept beside their bitcode (`STEM.thinlto-native.o`), for objtool,
/// livepatch tools and `thindist explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepNatives {
    /// In a kbuild tree (the module's flags came from its `.NAME.o.cmd`, or from the shell
    /// command that compiled it right before this link, as kbuild does for single-object
    /// modules), as the kernel's own distributed mode does; nowhere else.
    Kbuild,
    /// For every module the user built (`--keep-natives`).
    Always,
}

/// Whether `module`'s native object is published beside it. Never for temporaries (the clang
/// driver writes its objects straight into TMPDIR) or for members extracted into the work
/// directory.
fn publishes(
    keep: KeepNatives,
    module: &Path,
    cwd: &Path,
    work_dir: &Path,
    source: &FlagsSource,
) -> bool {
    let abs = crate::fsutil::normalize(&cwd.join(module));
    let temporary = abs.starts_with(crate::fsutil::normalize(&cwd.join(work_dir)))
        || crate::workdir::is_driver_temporary(&abs);
    !temporary
        && (keep == KeepNatives::Always
            || matches!(source, FlagsSource::KbuildCmd(_) | FlagsSource::ParentShell))
}

/// The job constructor of a link's modules: saved flags, then the link's code-generation
/// options, then [`flags::BACKEND_MODE`].
pub fn job_builder<'a>(
    sources: &'a FlagSources,
    cwd: &'a Path,
    codegen: &LinkCodegen,
) -> JobBuilder<'a> {
    let mode: Vec<String> = flags::BACKEND_MODE.map(String::from).into();
    let mut derived = vec![codegen.default_compiler.clone()];
    derived.extend(codegen.derived.iter().cloned());
    derived.extend(codegen.all_jobs.iter().cloned());
    derived.extend(mode.iter().cloned());
    JobBuilder::new(sources, cwd, derived, codegen.all_jobs.clone(), mode)
}

/// A job's files, and its own arguments that name them.
fn job_files(module: &Path, shard: PathBuf, imports: Vec<PathBuf>, native: PathBuf) -> JobFiles {
    let args = vec![
        format!("-fthinlto-index={}", shard.display()),
        "-c".to_string(),
        module.to_string_lossy().into_owned(),
        "-o".to_string(),
        native.to_string_lossy().into_owned(),
    ];
    JobFiles {
        module: module.to_path_buf(),
        shard,
        imports,
        native,
        args,
    }
}

/// Before the thin link: `module`'s job as the plan will make it, with the files it will have
/// named in the same form (shard and native object in `work_dir`), though not the same names.
/// An executor can get ready with its command (see [`crate::exec::Executor::start_early`]).
pub fn sample_job(builder: &mut JobBuilder, module: &Path, work_dir: &Path) -> Result<BackendJob> {
    let shard = thinlink::shard_path(work_dir, module);
    let native = thinlink::native_path(work_dir, module);
    builder.job(job_files(module, shard, Vec::new(), native))
}

/// One job per module the thin link listed, run in `cwd`, with the link's code-generation
/// options; `labels` names members extracted from regular archives.
///
/// Planned on two threads: the plan is on the critical path between the thin link and the
/// first job, while the thin link's core has nothing else to do (10 ms for the kernel's 554
/// modules on one thread, mostly building their command lines).
pub fn plan(
    modules: &[PathBuf],
    (work_dir, index_dir): (&Path, &Path),
    cwd: &Path,
    sources: &FlagSources,
    codegen: &LinkCodegen,
    keep: KeepNatives,
    labels: &std::collections::HashMap<PathBuf, String>,
) -> Result<Plan> {
    let plan_part = |modules: &[PathBuf]| -> Result<Plan> {
        let mut builder = job_builder(sources, cwd, codegen);
        let mut jobs = Vec::with_capacity(modules.len());
        for module in modules {
            let shard = thinlink::shard_path(index_dir, module);
            if std::fs::metadata(cwd.join(&shard)).is_err() {
                bail!(
                    "the thin link wrote no summary shard {} for module {}",
                    shard.display(),
                    module.display()
                );
            }
            let imports =
                thinlink::read_imports(&cwd.join(thinlink::imports_path(index_dir, module)))?;
            let native = thinlink::native_path(work_dir, module);
            let mut job = builder.job(job_files(module, shard, imports, native))?;
            job.published = publishes(keep, module, cwd, work_dir, &job.flags_source)
                .then(|| native_name(module));
            job.label = labels.get(module).cloned();
            jobs.push(job);
        }
        Ok(Plan {
            jobs,
            problems: builder.problems,
            without_flags: builder.without_flags,
        })
    };
    let (first, second) = modules.split_at(modules.len() / 2);
    let (first, second) = std::thread::scope(|scope| {
        let second = scope.spawn(|| plan_part(second));
        let first = plan_part(first);
        (first, crate::exec::join_or_resume(second))
    });
    let (mut plan, second) = (first?, second?);
    plan.jobs.extend(second.jobs);
    plan.problems.extend(second.problems);
    plan.without_flags.extend(second.without_flags);
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_names_follow_kbuild() {
        assert_eq!(
            native_name(Path::new("kernel/fork.o")),
            PathBuf::from("kernel/fork.thinlto-native.o")
        );
        assert_eq!(
            native_name(Path::new("x.bc")),
            PathBuf::from("x.bc.thinlto-native.o")
        );
    }
}
