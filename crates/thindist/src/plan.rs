//! The job plan: one back-end job per module the thin link listed, with the module's own
//! saved flags (or link-derived ones), its shard, its imports and its outputs.

use crate::flags::{self, FlagSources, FlagsProblem};
use crate::job::{BackendJob, FlagsSource, JobBuilder, JobFiles};
use crate::ltoopts::LinkCodegen;
use crate::thinlink;
use anyhow::{bail, Result};
use std::collections::{HashMap, HashSet};
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

/// How many arguments of a job's command are its own (they name its files), last.
const JOB_FILE_ARGS: usize = 5;

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

/// The jobs of a link's bitcode modules, made while the thin link runs: their commands,
/// outputs and what their saved flags lacked, without what only the thin link writes (their
/// import lists). [`plan`] takes each listed module's job from here.
pub struct Draft {
    index_dir: PathBuf,
    jobs: HashMap<PathBuf, Result<BackendJob>>,
    /// The modules and their labels, in link order.
    modules: Vec<(PathBuf, Option<String>)>,
    problems: Vec<FlagsProblem>,
    without_flags: Vec<PathBuf>,
}

/// The link's settings a job is made from, besides its saved flags: where its files go, how
/// its native object is kept, and its code-generation options.
pub struct JobSettings<'a> {
    pub cwd: &'a Path,
    pub work_dir: &'a Path,
    pub codegen: &'a LinkCodegen,
    pub keep: KeepNatives,
}

impl<'a> JobSettings<'a> {
    fn builder(&self, sources: &'a FlagSources) -> JobBuilder<'a> {
        job_builder(sources, self.cwd, self.codegen)
    }

    /// `module`'s job with its shard in `index_dir`, without imports.
    fn job(&self, builder: &mut JobBuilder, module: &Path, index_dir: &Path) -> Result<BackendJob> {
        let shard = thinlink::shard_path(index_dir, module);
        let native = thinlink::native_path(self.work_dir, module);
        let mut job = builder.job(job_files(module, shard, Vec::new(), native))?;
        job.published = publishes(
            self.keep,
            module,
            self.cwd,
            self.work_dir,
            &job.flags_source,
        )
        .then(|| native_name(module));
        Ok(job)
    }
}

impl Draft {
    /// The jobs of `modules` (each with its `ARCHIVE(MEMBER)` label, if it has one), their
    /// shards to be in `index_dir`.
    pub fn new(
        modules: &[(PathBuf, Option<String>)],
        index_dir: &Path,
        settings: &JobSettings,
        sources: &FlagSources,
    ) -> Draft {
        let mut builder = settings.builder(sources);
        let jobs = (modules.iter())
            .map(|(module, label)| {
                let job = settings.job(&mut builder, module, index_dir);
                let job = job.map(|job| BackendJob {
                    label: label.clone(),
                    ..job
                });
                (module.clone(), job)
            })
            .collect();
        Draft {
            index_dir: index_dir.to_path_buf(),
            jobs,
            modules: modules.to_vec(),
            problems: builder.problems,
            without_flags: builder.without_flags,
        }
    }

    /// The drafted jobs, in link order.
    pub fn jobs(&self) -> impl Iterator<Item = &BackendJob> {
        (self.modules.iter()).filter_map(|(module, _)| self.jobs.get(module)?.as_ref().ok())
    }
}

/// The options before a job's own arguments: those of its flag set.
pub fn flag_set(job: &BackendJob) -> &[String] {
    &job.command[..job.command.len().saturating_sub(JOB_FILE_ARGS)]
}

/// One job per module the thin link listed, its shard and import list in `index_dir`, taken
/// from `draft` (made with `settings` and `sources`).
///
/// Only the import lists are read here, on two threads: the plan is on the critical path
/// between the thin link and the first job (building the kernel's 554 commands took 10 ms on
/// one thread, which the draft spends while the thin link runs).
pub fn plan(
    mut draft: Draft,
    modules: &[PathBuf],
    index_dir: &Path,
    (settings, sources): (&JobSettings, &FlagSources),
) -> Result<Plan> {
    // The thin link moved its files elsewhere (no room in the work directory): the drafted
    // commands name the wrong shards.
    if draft.index_dir != index_dir {
        draft = Draft::new(&draft.modules, index_dir, settings, sources);
    }
    let listed: HashSet<&Path> = modules.iter().map(PathBuf::as_path).collect();
    let mut builder = settings.builder(sources);
    let mut jobs = Vec::with_capacity(modules.len());
    for module in modules {
        jobs.push(match draft.jobs.remove(module) {
            Some(job) => job?,
            None => settings.job(&mut builder, module, index_dir)?,
        });
    }
    let with_imports = |jobs: &mut [BackendJob]| -> Result<()> {
        for job in jobs {
            let shard = settings.cwd.join(&job.shard);
            if std::fs::metadata(&shard).is_err() {
                bail!(
                    "the thin link wrote no summary shard {} for module {}",
                    job.shard.display(),
                    job.module.display()
                );
            }
            let imports = thinlink::imports_path(index_dir, &job.module);
            job.imports = thinlink::read_imports(&settings.cwd.join(imports))?;
        }
        Ok(())
    };
    let (first, second) = jobs.split_at_mut(modules.len() / 2);
    std::thread::scope(|scope| {
        let second = scope.spawn(|| with_imports(second));
        let first = with_imports(first);
        first.and(crate::exec::join_or_resume(second))
    })?;
    let mut problems = draft.problems;
    problems.retain(|problem| listed.contains(problem.module.as_path()));
    problems.extend(builder.problems);
    let mut without_flags = draft.without_flags;
    without_flags.retain(|module| listed.contains(module.as_path()));
    without_flags.extend(builder.without_flags);
    Ok(Plan {
        jobs,
        problems,
        without_flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linkargs::LinkArgs;

    /// A build directory with modules a.o, b.o and c.o: a.o has saved flags, b.o a saved
    /// command that is empty (a problem), c.o none.
    fn build_dir() -> (tempfile::TempDir, FlagSources, LinkCodegen) {
        let dir = tempfile::tempdir().unwrap();
        let cwd = dir.path();
        for module in ["a.o", "b.o", "c.o"] {
            std::fs::write(cwd.join(module), b"BC").unwrap();
        }
        let db = cwd.join("compile_commands.json");
        let entries = serde_json::json!([
            {"directory": cwd, "file": "a.c", "output": "a.o",
             "arguments": ["clang-22", "-O1", "-ffunction-sections", "-c", "a.c", "-o", "a.o"]},
            {"directory": cwd, "file": "b.c", "output": "b.o", "arguments": []},
        ]);
        std::fs::write(&db, entries.to_string()).unwrap();
        let sources = FlagSources::new(Some(&db), Vec::new(), cwd).unwrap();
        let args = LinkArgs::parse(&["a.o".to_string(), "-o".to_string(), "prog".to_string()]);
        let codegen = LinkCodegen::from_link(&args.unwrap(), "clang-22".to_string()).unwrap();
        (dir, sources, codegen)
    }

    /// The settings of a link in `cwd` with its work directory at `work`.
    fn settings<'a>(cwd: &'a Path, codegen: &'a LinkCodegen, keep: KeepNatives) -> JobSettings<'a> {
        JobSettings {
            cwd,
            work_dir: Path::new("work"),
            codegen,
            keep,
        }
    }

    /// What the thin link writes for `module` in `index_dir`: its shard, and its import list.
    fn thin_linked(cwd: &Path, index_dir: &Path, module: &str, imports: &str) {
        let index_dir = cwd.join(index_dir);
        std::fs::create_dir_all(&index_dir).unwrap();
        std::fs::write(index_dir.join(format!("{module}.thinlto.bc")), b"BC").unwrap();
        std::fs::write(index_dir.join(format!("{module}.imports")), imports).unwrap();
    }

    #[test]
    fn the_plan_takes_the_listed_modules_drafted_jobs_with_their_imports_and_problems() {
        let (dir, sources, codegen) = build_dir();
        let cwd = dir.path();
        let settings = settings(cwd, &codegen, KeepNatives::Always);
        let modules = [
            (PathBuf::from("a.o"), None),
            (PathBuf::from("b.o"), None),
            (PathBuf::from("c.o"), Some("lib.a(c.o)".to_string())),
        ];
        let index_dir = Path::new("work/index");
        let draft = Draft::new(&modules, index_dir, &settings, &sources);
        assert_eq!(draft.jobs().count(), 3);
        // The thin link listed c.o and a.o only (b.o was not needed), in its own order.
        thin_linked(cwd, index_dir, "a.o", "c.o\n");
        thin_linked(cwd, index_dir, "c.o", "");
        let listed = [PathBuf::from("c.o"), PathBuf::from("a.o")];
        let plan = plan(draft, &listed, index_dir, (&settings, &sources)).unwrap();

        let planned: Vec<&Path> = plan.jobs.iter().map(|j| j.module.as_path()).collect();
        assert_eq!(planned, [Path::new("c.o"), Path::new("a.o")]);
        let (c, a) = (&plan.jobs[0], &plan.jobs[1]);
        assert_eq!(a.imports, [PathBuf::from("c.o")]);
        assert!(c.imports.is_empty());
        assert!(a.command.contains(&"-ffunction-sections".to_string()));
        assert!(a
            .command
            .contains(&"-fthinlto-index=work/index/a.o.thinlto.bc".to_string()));
        assert_eq!(c.label.as_deref(), Some("lib.a(c.o)"));
        assert_eq!(a.published, Some(PathBuf::from("a.thinlto-native.o")));
        // Only what the listed modules lack is reported: b.o's empty command is not.
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
        assert_eq!(plan.without_flags, [PathBuf::from("c.o")]);
    }

    #[test]
    fn a_thin_link_that_moved_its_files_gets_jobs_that_name_them() {
        let (dir, sources, codegen) = build_dir();
        let cwd = dir.path();
        let settings = settings(cwd, &codegen, KeepNatives::Kbuild);
        let modules = [(PathBuf::from("a.o"), None), (PathBuf::from("b.o"), None)];
        let draft = Draft::new(&modules, Path::new("work/index"), &settings, &sources);
        // No room in the index directory: the thin link wrote into the work directory.
        thin_linked(cwd, Path::new("work"), "a.o", "");
        thin_linked(cwd, Path::new("work"), "b.o", "");
        let listed = [PathBuf::from("a.o"), PathBuf::from("b.o")];
        let plan = plan(draft, &listed, Path::new("work"), (&settings, &sources)).unwrap();

        assert_eq!(plan.jobs[0].shard, PathBuf::from("work/a.o.thinlto.bc"));
        assert!(plan.jobs[0]
            .command
            .contains(&"-fthinlto-index=work/a.o.thinlto.bc".to_string()));
        // Each problem once, though the jobs were drafted twice.
        let problems: Vec<&Path> = plan.problems.iter().map(|p| p.module.as_path()).collect();
        assert_eq!(problems, [Path::new("b.o")]);
    }

    #[test]
    fn a_listed_module_without_a_shard_is_an_error_that_names_it() {
        let (dir, sources, codegen) = build_dir();
        let cwd = dir.path();
        let settings = settings(cwd, &codegen, KeepNatives::Kbuild);
        let modules = [(PathBuf::from("a.o"), None)];
        let draft = Draft::new(&modules, Path::new("work/index"), &settings, &sources);
        std::fs::create_dir_all(cwd.join("work/index")).unwrap();
        let listed = [PathBuf::from("a.o")];
        let err = plan(
            draft,
            &listed,
            Path::new("work/index"),
            (&settings, &sources),
        );
        let err = format!("{:#}", err.err().expect("no shard"));
        assert!(
            err.contains("no summary shard work/index/a.o.thinlto.bc for module a.o"),
            "{err}"
        );
    }

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
