//! The back-end phase, the same for `thindist ld` and `thindist distribute`: it owns the run's
//! cache and build log (through [`JobRunner`]), runs planned jobs on the slots through the
//! cache and the executor, publishes native objects beside their bitcode (a job's as it ends,
//! the cache hits' on the slots the other jobs leave free), reports failures, and records the
//! run's hits and misses.

use crate::cache::{CacheConfig, Digests, DiskCache};
use crate::events::{Event, JobFailure, JobOutcome, Reporter};
use crate::exec::{self, Executor, SharedItems, Slots};
use crate::flags::FlagSources;
use crate::fsutil;
use crate::job::BackendJob;
use crate::report::{report_failure, Session};
use crate::runner::JobRunner;
use anyhow::{bail, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// Module -> native object, for the jobs that succeeded.
pub type Natives = HashMap<PathBuf, PathBuf>;

pub struct BackendPhase<'a> {
    slots: &'a Slots,
    keep_going: bool,
    runner: JobRunner<'a>,
    digests: &'a Digests,
    /// Where `thindist cc` files flag records by content, in the cache.
    records: Option<PathBuf>,
}

impl<'a> BackendPhase<'a> {
    /// The phase of the link whose output is `output`: the cache (none when off, or refused
    /// with a warning), and the build log in the cache directory, so nothing is written beside
    /// the output.
    pub fn new(
        (slots, keep_going): (&'a Slots, bool),
        cache: Option<&CacheConfig>,
        executor: &'a dyn Executor,
        digests: &'a Digests,
        output: &Path,
    ) -> Self {
        let cache = cache.and_then(DiskCache::open_for_build);
        let records = cache.as_ref().map(DiskCache::records_dir);
        let log = cache.as_ref().map(|c| c.build_log_path(output));
        let runner = JobRunner::new(executor, cache, digests);
        let runner = match log {
            Some(log) => runner.with_log(log),
            None => runner,
        };
        BackendPhase {
            slots,
            keep_going,
            runner,
            digests,
            records,
        }
    }

    /// Whether the cache may well not answer `job` (see [`JobRunner::may_miss`]).
    pub fn may_miss(&self, job: &BackendJob) -> bool {
        !self.runner.has_cache() || self.runner.may_miss(job)
    }

    /// Prepares the cache lookups of `jobs` while the thin link runs, until `thin_link_done`
    /// is set (see [`JobRunner::prepare_lookups`]).
    pub fn prepare_lookups<'j>(
        &self,
        jobs: impl Iterator<Item = &'j BackendJob>,
        thin_link_done: &AtomicBool,
    ) {
        self.runner.prepare_lookups(jobs, thin_link_done);
    }

    /// `sources` with the flag records the cache holds.
    pub fn with_records(&self, sources: FlagSources) -> FlagSources {
        sources.with_records(self.records.clone())
    }

    /// Runs `jobs`, publishes each native object beside its bitcode, and reports failures.
    /// Returns the native objects, or an error if any job failed or the run was interrupted.
    /// [`BackendPhase::finish`] records the run afterwards.
    pub fn run(&self, jobs: &[BackendJob], session: &mut Session) -> Result<Natives> {
        // The cache answers first, on every thread that may run: then the jobs it does not
        // answer start longest first with the cores to themselves. The hits' natives are
        // published on the slots those jobs leave free (a kernel relink: 3.5 of its lookups'
        // 11.5 ms, on the core its last back ends leave idle), shared by every slot that frees
        // before they are done, still before the phase ends.
        let mut outcomes = self.answers_from_cache(jobs, session);
        let a_hit_failed = outcomes.iter().flatten().any(|o| !o.succeeded());
        let (unanswered_at, unanswered): (Vec<usize>, Vec<&BackendJob>) = (jobs.iter())
            .enumerate()
            .filter(|(index, _)| outcomes[*index].is_none())
            .unzip();
        let hits: Vec<(usize, JobOutcome)> = (outcomes.iter_mut().enumerate())
            .filter_map(|(index, outcome)| Some((index, outcome.take()?)))
            .collect();
        let unpublished = SharedItems::new(&hits);
        let published = std::sync::Mutex::new(Vec::with_capacity(hits.len()));
        let publish_hits = || {
            let mine: Vec<(usize, JobOutcome)> = (unpublished.take())
                .map(|(index, hit)| (*index, self.published(&jobs[*index], hit.clone())))
                .collect();
            published.lock().unwrap().extend(mine);
        };
        if self.keep_going || !a_hit_failed {
            self.runner.prepare(&unanswered);
            let costs = self.runner.expected_costs(&unanswered);
            let run = |job: &BackendJob| self.published(job, self.runner.run(job));
            let ran = exec::dispatch(
                &unanswered,
                &costs,
                self.slots,
                self.keep_going,
                (&run, Some(&publish_hits)),
                session,
            );
            for (index, outcome) in unanswered_at.into_iter().zip(ran) {
                outcomes[index] = outcome;
            }
        } else {
            publish_hits();
        }
        // Hits an interruption left unpublished count as they are.
        for (index, outcome) in hits.into_iter().chain(published.into_inner().unwrap()) {
            outcomes[index] = Some(outcome);
        }
        if let Some(signal) = exec::interrupts().signal() {
            bail!("interrupted by signal {signal}");
        }
        let mut failed = 0;
        let mut natives = HashMap::new();
        for (job, outcome) in jobs.iter().zip(&outcomes) {
            match outcome {
                Some(o) if o.succeeded() => {
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

    /// The cache's answer for each job (none without a cache), its native object not yet
    /// published, each answer reported as a job that started and finished.
    fn answers_from_cache(&self, jobs: &[BackendJob], session: &mut Session) -> exec::Outcomes {
        if !self.runner.has_cache() {
            return vec![None; jobs.len()];
        }
        let started = Instant::now();
        let (threads, tokens) = self.slots.threads_now();
        let outcomes = exec::look_up_all(jobs, threads, &|job| self.runner.run_cached(job));
        drop(tokens);
        self.runner.forget_prepared();
        let answered = jobs.iter().zip(&outcomes).filter(|(_, o)| o.is_some());
        session.on_event(&Event::CacheLookupsFinished {
            hits: answered.clone().count(),
            duration: started.elapsed(),
        });
        session.batched(|session| {
            for (job, outcome) in answered {
                let outcome = outcome.as_ref().expect("answered");
                session.on_event(&Event::JobStarted { job });
                session.on_event(&Event::JobFinished { job, outcome });
            }
        });
        outcomes
    }

    /// `outcome` of `job`, its native object published beside its bitcode if it is to be,
    /// as each job ends, while the others run.
    fn published(&self, job: &BackendJob, mut outcome: JobOutcome) -> JobOutcome {
        if let (true, Some(published)) = (outcome.succeeded(), &job.published) {
            let dest = job.cwd.join(published);
            if let Err(err) = self.publish(&job.cwd.join(&job.native), &dest) {
                outcome.failure = Some(JobFailure::CannotPublish {
                    dest,
                    error: format!("{err:#}"),
                });
            }
        }
        outcome
    }

    /// Saves the build log and the cache's run counts (`session`'s hits and misses), and
    /// prunes the cache.
    pub fn finish(self, (hits, misses): (u64, u64)) {
        self.runner.finish(hits, misses);
    }

    /// Publishes `native` at `dest`, which a rebuild usually finds holding it already: then
    /// only its modification time changes, and no copy is made.
    fn publish(&self, native: &Path, dest: &Path) -> Result<()> {
        let digest = self.digests.file_digest(native)?;
        if !self
            .digests
            .touch_if_holds(dest, &digest, fsutil::NEW_FILE_MODE)
        {
            fsutil::publish(native, dest)?;
        }
        Ok(())
    }
}
