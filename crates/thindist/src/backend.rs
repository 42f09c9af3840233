//! The back-end phase, the same for `thindist ld` and `thindist distribute`: it owns the run's
//! cache and build log (through [`JobRunner`]), runs planned jobs on the slots through the
//! cache and the executor, publishes native objects beside their bitcode as each job ends,
//! reports failures, and records the run's hits and misses.

use crate::cache::{CacheConfig, Digests, DiskCache};
use crate::events::JobFailure;
use crate::exec::{self, Executor, Slots};
use crate::flags::FlagSources;
use crate::fsutil;
use crate::job::BackendJob;
use crate::report::{report_failure, Session};
use crate::runner::JobRunner;
use anyhow::{bail, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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

    /// `sources` with the flag records the cache holds.
    pub fn with_records(&self, sources: FlagSources) -> FlagSources {
        sources.with_records(self.records.clone())
    }

    /// Runs `jobs`, publishes each native object beside its bitcode, and reports failures.
    /// Returns the native objects, or an error if any job failed or the run was interrupted.
    /// [`BackendPhase::finish`] records the run afterwards.
    pub fn run(&self, jobs: &[BackendJob], session: &mut Session) -> Result<Natives> {
        self.runner.prepare(jobs);
        // Published as each job ends, while the others run.
        let run_job = |job: &BackendJob| {
            let mut outcome = self.runner.run(job);
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
        };
        let costs = self.runner.expected_costs(jobs);
        let outcomes = exec::dispatch(jobs, &costs, self.slots, self.keep_going, &run_job, session);
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
