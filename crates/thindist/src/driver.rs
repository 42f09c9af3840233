//! The two ways in, as chains of stages. `thindist ld`: invocation -> [`Link`] (inputs, thin
//! link) -> [`BackendPhase`] (plan, jobs) -> final link. `thindist distribute`: lld's DTLTO
//! job file -> [`BackendPhase`].

use crate::backend::BackendPhase;
use crate::cache::{CacheConfig, Digests};
use crate::cmdline;
use crate::dtlto;
use crate::exec::{join_or_resume, pass_through, Executor, SharedItems, Slots};
use crate::flags::FlagSources;
use crate::forkserver::ProgramServer;
use crate::invocation::{self, LinkerInvocation};
use crate::job::BackendJob;
use crate::link::Link;
use crate::linkargs::LinkArgs;
use crate::ltoopts::{LinkCodegen, LtoOpt};
use crate::plan::{self, KeepNatives};
use crate::relink::Relink;
use crate::report::{warn_about_flags, ExtraReporters, Session};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

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
    /// Run the thin link and the final link as forks of a fork server of the linker.
    pub linker_fork_server: bool,
}

/// What one run works with: its settings, where its jobs run, and the file digests its cache
/// keys and its executor share (each input is hashed once per run).
pub struct Run<'a> {
    pub settings: &'a LdSettings,
    pub executor: &'a dyn Executor,
    pub digests: &'a Digests,
}

impl<'a> Run<'a> {
    fn backend_phase(&self, output: &Path) -> BackendPhase<'a> {
        let settings = self.settings;
        BackendPhase::new(
            (&settings.slots, settings.keep_going),
            settings.cache.as_ref(),
            self.executor,
            self.digests,
            output,
        )
    }
}

/// Runs one link in distributed mode. Returns the exit code. For a process that ends after it:
/// a successful link leaves some of its memory for the process's exit to take back.
pub fn run_ld(invocation: LinkerInvocation, run: Run, reporters: ExtraReporters) -> Result<i32> {
    let settings = run.settings;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let expanded = cmdline::expand_response_files(&invocation.args)?;
    let mut args = LinkArgs::parse(&expanded)?;
    if args.is_query() || args.lto_options().any(|o| *o == LtoOpt::AlreadyDistributed) {
        return pass_through(&invocation.linker, &invocation.args);
    }
    args.resolve_libraries(&cwd);
    // The linker's fork server starts up (about 13 ms of lld's) while the link is prepared and
    // checked, so that the thin link waits for it as little as can be: before the inputs are
    // read (3 ms of a kernel's) where the output's build log says the link had back ends the
    // last time, else once the inputs are known to hold bitcode.
    let spawn_server = || ProgramServer::spawn(&invocation.linker, &cwd, settings.verbose);
    let output = cwd.join(args.output().unwrap_or("a.out"));
    let had_backends =
        (settings.cache.as_ref()).is_some_and(|c| c.build_log_path(&output).exists());
    let early_server = (settings.linker_fork_server && had_backends).then(spawn_server);
    let in_build_dir = run.executor.needs_paths_in_build_dir();
    let mut link = Link::prepare(
        &invocation.linker,
        args,
        &cwd,
        settings.keep_work,
        in_build_dir,
    )?;
    if !link.prepared().has_bitcode() {
        drop((link, early_server));
        return pass_through(&invocation.linker, &invocation.args);
    }
    if settings.linker_fork_server {
        link.use_linker_server(early_server.unwrap_or_else(spawn_server));
    }
    // The link's code-generation options, refused now if no back end could apply them.
    let compiler =
        (settings.compiler.clone()).unwrap_or_else(|| invocation::default_compiler(&invocation));
    let codegen = LinkCodegen::from_link(link.args(), compiler)?;
    // A compile-and-link command (every bitcode input is a temporary of the clang driver) is
    // as quiet as lld: configure probes may judge a compiler by whether it printed anything.
    let quiet = link.prepared().bitcode_is_all_temporary();
    let mut session = Session::new(&settings.slots, settings.verbose, reporters, quiet);
    for warning in &codegen.warnings {
        session.warn(warning);
    }
    let sources = FlagSources::new(
        settings.compile_commands.as_deref(),
        invocation::parent_shell_commands(),
        &cwd,
    )?;
    let relink = Relink::new(
        (&invocation.linker, invocation.driver.as_deref()),
        link.prepared(),
        &codegen,
        settings,
        &cwd,
        sources.clone(),
        run.digests,
    );
    // A link restored as an earlier one wrote it needs no compiler; its identity is in the
    // record.
    if relink.as_ref().is_some_and(Relink::restore) {
        return Ok(0);
    }
    codegen.check_compiler(run.digests)?;

    // The thin link keeps one core busy: meanwhile the back-end phase opens the cache and
    // reads the build log, every module's job is drafted from its saved flags (the plan then
    // only reads the import lists the thin link writes), and the executor gets ready for each
    // flag set (its compiler's fork server, its cc1 template).
    let thin_link_done = std::sync::atomic::AtomicBool::new(false);
    let job_settings = plan::JobSettings {
        cwd: &cwd,
        work_dir: link.work_dir(),
        codegen: &codegen,
        keep: settings.keep_natives,
    };
    let (thin_linked, (backends, sources, draft)) = std::thread::scope(|scope| {
        let ready = scope.spawn(|| {
            let backends = run.backend_phase(&output);
            let sources = backends.with_records(sources);
            let modules = link.prepared().bitcode_modules();
            let draft = plan::Draft::new(&modules, link.index_dir(), &job_settings, &sources);
            let mut flag_sets: BTreeMap<&[String], Vec<&BackendJob>> = BTreeMap::new();
            for job in draft.jobs() {
                flag_sets.entry(plan::flag_set(job)).or_default().push(job);
            }
            // Largest first; a template costs two dry runs of the compiler, which the first
            // jobs would otherwise wait for, but the first job must not wait for them either:
            // the sets the thin link leaves no time for get theirs from their own jobs. Only a
            // set of which three jobs or more may well run gets one now (dry runs beside the
            // thin link slow it down, and fewer jobs do not win them back): a set whose
            // modules, and those they imported from, are as the build log's run found them
            // gets its template from its own jobs if they run after all.
            let mut flag_sets: Vec<Vec<&BackendJob>> = flag_sets.into_values().collect();
            flag_sets.sort_by_key(|jobs| std::cmp::Reverse(jobs.len()));
            let at_once = settings.slots.likely_at_once();
            for jobs in &flag_sets {
                // A sample's dry run reads its module.
                let samples: Vec<BackendJob> = (jobs.iter())
                    .filter(|job| cwd.join(&job.module).is_file())
                    .take(2)
                    .map(|job| (*job).clone())
                    .collect();
                let many = jobs
                    .iter()
                    .filter(|job| backends.may_miss(job))
                    .nth(2)
                    .is_some();
                run.executor
                    .start_early(&samples, many, at_once, &thin_link_done);
            }
            backends.prepare_lookups(draft.jobs(), &thin_link_done);
            (backends, sources, draft)
        });
        let thin_linked = link.thin_link(&mut session);
        thin_link_done.store(true, Ordering::Relaxed);
        (thin_linked, join_or_resume(ready))
    });
    let thin_linked = thin_linked?;
    let plan = plan::plan(
        draft,
        &thin_linked.modules,
        &thin_linked.index_dir,
        (&job_settings, &sources),
    )?;
    if !session.is_quiet() {
        warn_about_flags(&mut session, &plan.problems, &plan.without_flags);
    }
    let natives = backends.run(&plan.jobs, &mut session);
    let counts = session.hits_and_misses();
    let natives = match natives {
        Ok(natives) => natives,
        Err(err) => {
            backends.finish(counts);
            session.finish();
            return Err(err.context("the link was not run"));
        }
    };

    // The build log, the record's inputs, flags and blobs, and what the digests learnt do not
    // depend on the final link: saved and computed meanwhile (lld's final link leaves a core
    // idle for most of its time), the fork servers stopped and the index files removed. The
    // memo's save at the run's end then writes only what the record adds, usually nothing.
    // The final link's response file is written first: those threads starting beside it held
    // the final link up by up to 5 ms.
    let final_command = link.final_link_command(&natives);
    let (final_link, record_start) = std::thread::scope(|scope| {
        let finished = scope.spawn(|| {
            run.executor.finish();
            backends.finish(counts);
            link.remove_index_files();
        });
        let record_start = scope.spawn(|| {
            let start = (relink.as_ref()).map(|relink| relink.start_record(&plan.jobs));
            save_digest_memo(run.digests);
            start
        });
        let final_link = final_command.and_then(|command| link.final_link(&command, &mut session));
        join_or_resume(finished);
        (final_link, join_or_resume(record_start).flatten())
    });
    let (printed, linked) = final_link?;
    session.finish();
    eprint!("{printed}");
    linked?;
    // The link is recorded (and the digest memo saved, if the record taught it anything) while
    // the linker's server exits and the natives are removed, which would otherwise hold up the
    // run's end by several milliseconds (the record needs neither); the natives the removal
    // has not reached when the record is done are shared between both threads (a kernel's 554
    // took 8-10 ms on one, about as long as the record).
    let native_paths: Vec<&PathBuf> = natives.values().collect();
    let natives = SharedItems::new(&native_paths);
    let remove_natives = || link.remove_natives(natives.take().copied());
    std::thread::scope(|scope| {
        let link = &link;
        scope.spawn(move || link.stop_linker_server());
        scope.spawn(remove_natives);
        if let (Some(relink), Some(start)) = (&relink, record_start) {
            relink.record(start, &printed);
        }
        // After the record, which tells it the digests of the files the final link read.
        save_digest_memo(run.digests);
        remove_natives();
    });
    // The plan and the flag lookups (a kernel's are a quarter of a million strings, 3.5 ms to
    // free one by one) are left for the process's exit to take back whole: the binary ends
    // right after the link.
    std::mem::forget(plan);
    std::mem::forget(sources.take_lookups());
    Ok(0)
}

/// Saves what the run's digests learnt to the cache's digest memo; a failure only costs the
/// next run the reading of files it could have known by their stat.
pub fn save_digest_memo(digests: &Digests) {
    if let Err(err) = digests.save() {
        eprintln!("thindist: warning: cannot save the digest memo: {err:#}");
    }
}

/// `thindist distribute JSON`: runs the jobs of lld's DTLTO job file. Returns the exit code.
pub fn run_distribute(job_file: &Path, run: Run, reporters: ExtraReporters) -> Result<i32> {
    let settings = run.settings;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let text = std::fs::read_to_string(job_file)
        .with_context(|| format!("cannot read the DTLTO job file {}", job_file.display()))?;
    let file =
        dtlto::parse_job_file(&text).with_context(|| format!("in {}", job_file.display()))?;
    let mut session = Session::new(&settings.slots, settings.verbose, reporters, false);
    let backends = run.backend_phase(&cwd.join(&file.common.linker_output));
    let sources = FlagSources::new(settings.compile_commands.as_deref(), Vec::new(), &cwd)?;
    let (jobs, problems) = dtlto::plan_jobs(&file, &cwd, &backends.with_records(sources))?;
    warn_about_flags(&mut session, &problems, &[]);
    let result = backends.run(&jobs, &mut session);
    backends.finish(session.hits_and_misses());
    session.finish();
    result.with_context(|| format!("the back ends for {} failed", file.common.linker_output))?;
    Ok(0)
}
