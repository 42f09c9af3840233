//! The job plan: one back-end job per module the thin link listed, with the module's own
//! saved flags (or link-derived ones), its shard, its imports and its outputs.

use crate::flags::{self, FlagSources, FlagsProblem};
use crate::job::{BackendJob, FlagsSource};
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
        || abs.parent() == Some(std::env::temp_dir().as_path());
    !temporary
        && (keep == KeepNatives::Always
            || matches!(source, FlagsSource::KbuildCmd(_) | FlagsSource::ParentShell))
}

/// A module's compiler and back-end options before the link's own ([`LinkCodegen::all_jobs`]),
/// where they came from, and why its saved flags could not be used, if they could not.
pub struct ModuleFlags {
    pub compiler: String,
    pub options: Vec<String>,
    pub source: FlagsSource,
    pub problem: Option<FlagsProblem>,
}

/// Looks `module`'s saved flags up and turns them into back-end options, or takes the
/// link-derived ones where there are none (or none usable).
pub fn module_flags(
    module: &Path,
    cwd: &Path,
    sources: &FlagSources,
    codegen: &LinkCodegen,
) -> Result<ModuleFlags> {
    let (found, problem) = match sources.lookup(module) {
        Ok(found) => (found, None),
        Err(problem) => (None, Some(problem)),
    };
    let (compiler, options, source) = match found {
        Some((saved, source)) => {
            let (compiler, options) = flags::backend_options(&saved, cwd)?;
            (compiler, options, source)
        }
        None => (
            codegen.default_compiler.clone(),
            codegen.derived.clone(),
            FlagsSource::LinkDerived,
        ),
    };
    Ok(ModuleFlags {
        compiler,
        options,
        source,
        problem,
    })
}

pub fn plan(
    modules: &[PathBuf],
    work_dir: &Path,
    cwd: &Path,
    sources: &FlagSources,
    codegen: &LinkCodegen,
    keep: KeepNatives,
    labels: &std::collections::HashMap<PathBuf, String>,
) -> Result<Plan> {
    let mut plan = Plan {
        jobs: Vec::with_capacity(modules.len()),
        problems: Vec::new(),
        without_flags: Vec::new(),
    };
    for module in modules {
        let shard = thinlink::shard_path(work_dir, module);
        let imports_file = thinlink::imports_path(work_dir, module);
        let shard_meta = std::fs::metadata(cwd.join(&shard));
        if shard_meta.is_err() {
            bail!(
                "the thin link wrote no summary shard {} for module {}",
                shard.display(),
                module.display()
            );
        }
        let imports = thinlink::read_imports(&cwd.join(&imports_file))?;
        let size = std::fs::metadata(cwd.join(module))
            .map(|m| m.len())
            .unwrap_or(0);
        let ModuleFlags {
            compiler,
            mut options,
            source: flags_source,
            problem,
        } = module_flags(module, cwd, sources, codegen)?;
        plan.problems.extend(problem);
        if flags_source == FlagsSource::LinkDerived {
            plan.without_flags.push(module.clone());
        }
        options.extend(codegen.all_jobs.iter().cloned());
        let extra_inputs = flags::option_inputs(&options);
        let native = thinlink::native_path(work_dir, module);
        let published =
            publishes(keep, module, cwd, work_dir, &flags_source).then(|| native_name(module));
        let mut command = vec![compiler];
        command.extend(options);
        command.extend(flags::BACKEND_MODE.map(String::from));
        command.extend([
            format!("-fthinlto-index={}", shard.display()),
            "-c".to_string(),
            module.to_string_lossy().into_owned(),
            "-o".to_string(),
            native.to_string_lossy().into_owned(),
        ]);
        plan.jobs.push(BackendJob {
            module: module.clone(),
            shard,
            imports,
            extra_inputs,
            native,
            published,
            label: labels.get(module).cloned(),
            command,
            cwd: cwd.to_path_buf(),
            flags_source,
            size,
        });
    }
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
