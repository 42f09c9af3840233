//! `thindist ld`: a linker invocation run as distributed ThinLTO, stage by stage: link
//! arguments -> inputs -> thin link -> plan -> jobs -> final link -> report.

use crate::cache::{CacheConfig, DiskCache};
use crate::cmdline;
use crate::events::{Event, JobOutcome, Reporter};
use crate::exec::{self, Executor, Slots};
use crate::flags::FlagSources;
use crate::fsutil;
use crate::job::BackendJob;
use crate::linkargs::LinkArgs;
use crate::ltoopts::{LinkCodegen, LtoOpt};
use crate::plan::{self, KeepNatives};
use crate::report::{ConsoleReporter, Tally};
use crate::runner::JobRunner;
use crate::thinlink;
use crate::workdir::WorkDir;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Settings of one distributed link.
pub struct LdSettings {
    pub slots: Slots,
    pub compile_commands: Option<PathBuf>,
    pub verbose: bool,
    pub keep_going: bool,
    /// Compiler for modules without saved flags; derived from the linker when unset.
    pub compiler: Option<String>,
    /// The local cache; `None` turns it off.
    pub cache: Option<CacheConfig>,
    /// Keep each link's work directory (also lld's `--save-temps` on the link line).
    pub keep_work: bool,
    pub keep_natives: KeepNatives,
}

impl LdSettings {
    /// The cache of one run, or none (off, or refused with a warning).
    fn open_cache(&self) -> Option<DiskCache> {
        self.cache.as_ref().and_then(DiskCache::open_for_build)
    }

    /// The job runner of a link whose output is `output`; its build log lives in the cache
    /// directory (none when the cache is off), so nothing is written beside the output.
    fn job_runner<'a>(
        executor: &'a dyn Executor,
        cache: Option<DiskCache>,
        output: &Path,
    ) -> JobRunner<'a> {
        let log = cache.as_ref().map(|c| c.build_log_path(output));
        let runner = JobRunner::new(executor, cache);
        match log {
            Some(log) => runner.with_log(log),
            None => runner,
        }
    }
}

/// Reporters beyond the console that a run feeds (trace, build log).
pub type ExtraReporters<'a> = Vec<&'a mut dyn Reporter>;

/// The reporting side of one run: console output, the tally for the summary, and any extra
/// consumers of events.
pub struct Session<'a> {
    console: ConsoleReporter,
    /// No progress, summary or flags warnings: the link of a compile-and-link command.
    quiet: bool,
    tally: Tally,
    extra: ExtraReporters<'a>,
    started: Instant,
    parallel: usize,
}

impl<'a> Session<'a> {
    pub fn new(settings: &LdSettings, extra: ExtraReporters<'a>, quiet: bool) -> Self {
        let parallel = match &settings.slots {
            Slots::Fixed(n) => *n,
            Slots::Jobserver(_) => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        Session {
            console: ConsoleReporter::new(0, settings.verbose),
            quiet: quiet && !settings.verbose,
            tally: Tally::default(),
            extra,
            started: Instant::now(),
            parallel,
        }
    }

    /// Clears the progress bar and prints the summary line.
    pub fn finish(&self) {
        if self.quiet {
            return;
        }
        self.console.finish();
        eprintln!(
            "{}",
            self.tally.summary(self.started.elapsed(), self.parallel)
        );
    }
}

impl Reporter for Session<'_> {
    fn on_event(&mut self, event: &Event) {
        if !self.quiet {
            self.console.on_event(event);
        }
        self.tally.record(event);
        for r in self.extra.iter_mut() {
            r.on_event(event);
        }
    }
}

/// The real linker and its arguments, from what the user ran.
pub struct LinkerInvocation {
    pub linker: String,
    pub args: Vec<String>,
    /// The clang driver that named this linker, if the link came through one.
    pub driver: Option<String>,
}

fn is_compiler_driver(program: &str) -> bool {
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.contains("clang") || name == "cc" || name == "c++"
}

/// Resolves `LINKER ARGS...`: an lld command as is, or a clang driver command turned into the
/// lld command it runs (`-###`).
pub fn resolve_invocation(command: &[String], cwd: &Path) -> Result<LinkerInvocation> {
    let Some((program, args)) = command.split_first() else {
        bail!("no linker command given (usage: thindist ld -- LINKER ARGS...)");
    };
    if !is_compiler_driver(program) {
        return Ok(LinkerInvocation {
            linker: program.clone(),
            args: args.to_vec(),
            driver: None,
        });
    }
    let output = Command::new(program)
        .args(args)
        .arg("-###")
        .current_dir(cwd)
        .output()
        .with_context(|| format!("cannot run the compiler driver {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} -### failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let text = String::from_utf8_lossy(&output.stderr);
    let jobs: Vec<Vec<String>> = text
        .lines()
        .filter(|l| l.starts_with(" \""))
        .map(cmdline::tokenize_gnu)
        .collect();
    match jobs.as_slice() {
        [link] if link.first().is_some_and(|l| l.contains("ld")) => Ok(LinkerInvocation {
            linker: link[0].clone(),
            args: link[1..].to_vec(),
            driver: Some(program.clone()),
        }),
        _ => bail!(
            "{program} runs {} commands for this invocation; thindist ld takes a pure link (compile sources separately)",
            jobs.len()
        ),
    }
}

/// Guesses the clang that matches a linker: `ld.lld-22` -> `clang-22` beside it.
fn default_compiler(invocation: &LinkerInvocation) -> String {
    if let Some(driver) = &invocation.driver {
        return driver.clone();
    }
    let linker = Path::new(&invocation.linker);
    let name = linker
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clang = match name.strip_prefix("ld.lld") {
        Some(suffix) => format!("clang{suffix}"),
        None => "clang".to_string(),
    };
    match linker.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) if dir.join(&clang).exists() => dir.join(&clang).to_string_lossy().into_owned(),
        _ => clang,
    }
}

/// Runs the real linker with the original arguments, replacing this process.
pub fn pass_through(linker: &str, args: &[String]) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    let err = Command::new(linker).args(args).exec();
    bail!("cannot run the linker {linker}: {err}")
}

/// Runs one link in distributed mode. Returns the exit code.
pub fn run_ld(
    invocation: LinkerInvocation,
    settings: &LdSettings,
    executor: &dyn Executor,
    extra_reporters: ExtraReporters,
) -> Result<i32> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let expanded = cmdline::expand_response_files(&invocation.args)?;
    let mut args = LinkArgs::parse(&expanded)?;
    if args.is_query() || args.lto_options().any(|o| *o == LtoOpt::AlreadyDistributed) {
        return pass_through(&invocation.linker, &invocation.args);
    }
    args.resolve_libraries(&cwd);
    let keep_work = settings.keep_work || args.lto_options().any(|o| *o == LtoOpt::SaveTemps);
    let output = args.output().unwrap_or("a.out").to_string();
    let in_build_dir = executor
        .needs_paths_in_build_dir()
        .then_some((cwd.as_path(), output.as_str()));
    let work = WorkDir::create(keep_work, in_build_dir)?;
    let link = thinlink::prepare(args, &cwd, work.path())?;
    if !link.has_bitcode() {
        drop(work);
        return pass_through(&invocation.linker, &invocation.args);
    }
    // The link's code-generation options, refused now if no back end could apply them.
    let codegen = LinkCodegen::from_link(
        &link.args,
        settings
            .compiler
            .clone()
            .unwrap_or_else(|| default_compiler(&invocation)),
    )?;
    codegen.check_compiler()?;
    for warning in &codegen.warnings {
        eprintln!("thindist: warning: {warning}");
    }
    // A compile-and-link command (every bitcode input is a temporary of the clang driver) is
    // as quiet as lld: configure probes may judge a compiler by whether it printed anything.
    let quiet = link.bitcode_is_all_temporary();
    let mut session = Session::new(settings, extra_reporters, quiet);

    // Thin link.
    let thin_command = link.thin_link_command(&invocation.linker)?;
    let thin_started = Instant::now();
    session.on_event(&Event::ThinLinkStarted {
        command: &thin_command,
    });
    let thin = link.run_thin_link(thin_command, &cwd)?;
    session.on_event(&Event::ThinLinkFinished {
        modules: thin.modules.len(),
        duration: thin_started.elapsed(),
    });

    // Plan.
    let cache = settings.open_cache();
    let sources = FlagSources::new(
        settings.compile_commands.as_deref(),
        parent_shell_commands(),
        &cwd,
    )?
    .with_records(cache.as_ref().map(DiskCache::records_dir));
    let plan = plan::plan(
        &thin.modules,
        &link.work_dir,
        &cwd,
        &sources,
        &codegen,
        settings.keep_natives,
        &link.member_labels(),
    )?;
    if !session.quiet {
        warn_about_flags(&plan.problems, &plan.without_flags);
    }

    // Back ends.
    let result = run_backends(
        &plan.jobs,
        settings,
        (executor, cache),
        &cwd.join(&output),
        &mut session,
    );
    let natives = match result {
        Ok(natives) => natives,
        Err(err) => {
            session.finish();
            return Err(err.context("the link was not run"));
        }
    };

    // Final link. lld writes its output as it always does: a regular file through a temporary
    // beside it that is renamed into place only on success, anything else (/dev/null, a FIFO)
    // in place.
    let final_args = link.final_link_args(&natives);
    let rsp = link.work_dir.join("finallink.rsp");
    cmdline::write_response_file(&rsp, &final_args)?;
    let final_command = vec![invocation.linker.clone(), format!("@{}", rsp.display())];
    let final_started = Instant::now();
    session.on_event(&Event::FinalLinkStarted {
        command: &final_command,
    });
    let result = exec::run_tracked(
        Command::new(&final_command[0])
            .args(&final_command[1..])
            .current_dir(&cwd),
    );
    let (status, text) =
        result.with_context(|| format!("cannot run the linker {}", invocation.linker))?;
    session.on_event(&Event::FinalLinkFinished {
        duration: final_started.elapsed(),
    });
    session.finish();
    eprint!("{text}");
    if !status.success() {
        bail!(
            "the final link failed ({status})\n  to reproduce: cd {} && {}\n  (its response file and native objects are removed with the work directory; THINDIST_KEEP_WORK=1 keeps them)",
            cwd.display(),
            cmdline::shell_line(&final_command)
        );
    }
    Ok(0)
}

/// Runs the jobs through the cache and `executor`, keeping the build log at `log`, and
/// records the run's hits and misses in the cache.
fn run_backends(
    jobs: &[BackendJob],
    settings: &LdSettings,
    (executor, cache): (&dyn Executor, Option<DiskCache>),
    output: &Path,
    session: &mut Session,
) -> Result<HashMap<PathBuf, PathBuf>> {
    let runner = LdSettings::job_runner(executor, cache, output);
    runner.prepare(jobs);
    let result = run_jobs(jobs, settings, &|job| runner.run(job), session);
    runner.finish(
        session.tally.cache_hits as u64,
        (session.tally.modules - session.tally.cache_hits) as u64,
    );
    result
}

/// Runs planned jobs, publishes each native object beside its bitcode, and reports failures.
/// Returns module -> native object for the jobs that succeeded, or an error if any failed.
fn run_jobs(
    jobs: &[BackendJob],
    settings: &LdSettings,
    run_job: &(dyn Fn(&BackendJob) -> JobOutcome + Sync),
    session: &mut Session,
) -> Result<HashMap<PathBuf, PathBuf>> {
    let outcomes = exec::dispatch(jobs, &settings.slots, settings.keep_going, run_job, session);
    if let Some(signal) = exec::interrupts().signal() {
        bail!("interrupted by signal {signal}");
    }
    let mut failed = 0;
    let mut natives = HashMap::new();
    for (job, outcome) in jobs.iter().zip(&outcomes) {
        match outcome {
            Some(o) if o.succeeded() => {
                if let Some(published) = &job.published {
                    fsutil::publish(&job.cwd.join(&job.native), &job.cwd.join(published))?;
                }
                natives.insert(job.module.clone(), job.native.clone());
            }
            Some(o) => {
                failed += 1;
                report_failure(job, o);
            }
            None => {}
        }
    }
    if failed > 0 {
        bail!("{failed} back-end compile(s) failed");
    }
    Ok(natives)
}

/// Warns about modules whose saved flags could not be used or were missing.
pub fn warn_about_flags(problems: &[crate::flags::FlagsProblem], without_flags: &[PathBuf]) {
    for problem in problems {
        eprintln!(
            "thindist: warning: {}: {}; compiled with options derived from the link",
            problem.module.display(),
            problem.message
        );
    }
    if !without_flags.is_empty() {
        let shown: Vec<String> = without_flags
            .iter()
            .take(5)
            .map(|m| m.display().to_string())
            .collect();
        let more = without_flags.len().saturating_sub(shown.len());
        eprintln!(
            "thindist: warning: {} module(s) had no saved flags and were compiled with options derived from the link: {}{}",
            without_flags.len(),
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        );
    }
}

/// `thindist distribute JSON`: runs the jobs of lld's DTLTO job file. Returns the exit code.
pub fn run_distribute(
    job_file: &Path,
    settings: &LdSettings,
    executor: &dyn Executor,
    extra_reporters: ExtraReporters,
) -> Result<i32> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let text = std::fs::read_to_string(job_file)
        .with_context(|| format!("cannot read the DTLTO job file {}", job_file.display()))?;
    let file = crate::dtlto::parse_job_file(&text)
        .with_context(|| format!("in {}", job_file.display()))?;
    let cache = settings.open_cache();
    let sources = FlagSources::new(settings.compile_commands.as_deref(), Vec::new(), &cwd)?
        .with_records(cache.as_ref().map(DiskCache::records_dir));
    let (jobs, problems) = crate::dtlto::plan_jobs(&file, &cwd, &sources)?;
    warn_about_flags(&problems, &[]);
    let mut session = Session::new(settings, extra_reporters, false);
    let output = cwd.join(&file.common.linker_output);
    let result = run_backends(&jobs, settings, (executor, cache), &output, &mut session);
    session.finish();
    result.with_context(|| format!("the back ends for {} failed", file.common.linker_output))?;
    Ok(0)
}

/// Prints a failed job: the module, the reason, the compiler's output and the command that
/// reproduces it.
pub fn report_failure(job: &BackendJob, outcome: &JobOutcome) {
    eprintln!(
        "thindist: error: back-end compile of {} failed: {}",
        job.name(),
        outcome.failure.as_deref().unwrap_or("unknown failure")
    );
    if !outcome.output.trim().is_empty() {
        eprintln!("{}", outcome.output.trim_end());
    }
    eprintln!("  flags from: {}", job.flags_source.describe());
    eprintln!(
        "  to reproduce: cd {} && {}",
        job.cwd.display(),
        cmdline::shell_line(&job.command)
    );
}

/// The commands of the shell that started this process, when that is `sh -c SCRIPT`: kbuild
/// links single-object modules in the same shell command that compiles them.
fn parent_shell_commands() -> Vec<Vec<String>> {
    let ppid = std::os::unix::process::parent_id();
    let Ok(raw) = std::fs::read(format!("/proc/{ppid}/cmdline")) else {
        return Vec::new();
    };
    let argv: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    match argv.iter().position(|a| a == "-c") {
        Some(i) if argv.get(i + 1).is_some() => crate::shell::split_commands(&argv[i + 1]),
        _ => Vec::new(),
    }
}
