//! Runs one job the way the settings say: look its key up in the cache, else execute it (on
//! this machine or remotely), store the result, and note it for the build log.

use crate::buildlog::{self, BuildLog, Entry};
use crate::cache::key::SHARD_INPUT;
use crate::cache::{action_key, ActionKey, Digests, DiskCache};
use crate::events::{warn, ExecutedBy, JobOutcome};
use crate::exec::Executor;
use crate::job::BackendJob;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

pub struct JobRunner<'a> {
    executor: &'a dyn Executor,
    cache: Option<DiskCache>,
    /// The run's digests, shared with the executor: each input is hashed once per run.
    digests: &'a Digests,
    previous: BuildLog,
    log: Mutex<BuildLog>,
    log_path: Option<PathBuf>,
    /// The keys [`JobRunner::run_cached`] sought (`None`: there was none), by native object,
    /// for `run` to take rather than seek again.
    sought_keys: Mutex<HashMap<PathBuf, Option<ActionKey>>>,
}

impl<'a> JobRunner<'a> {
    pub fn new(executor: &'a dyn Executor, cache: Option<DiskCache>, digests: &'a Digests) -> Self {
        JobRunner {
            executor,
            cache,
            digests,
            previous: BuildLog::default(),
            log: Mutex::new(BuildLog::default()),
            log_path: None,
            sought_keys: Mutex::default(),
        }
    }

    /// Keeps the build log of this link at `path`, starting from what it held.
    pub fn with_log(mut self, path: PathBuf) -> Self {
        self.previous = BuildLog::load(&path);
        self.log_path = Some(path);
        self
    }

    /// How long each of `jobs` is expected to take, for the dispatcher to start the longest
    /// first: see [`BuildLog::expected_costs`].
    pub fn expected_costs(&self, jobs: &[&BackendJob]) -> Vec<u64> {
        self.previous.expected_costs(jobs)
    }

    pub fn has_cache(&self) -> bool {
        self.cache.is_some()
    }

    /// Whether the cache may well not answer `job`: the build log has no earlier back end of
    /// its module, or a file that back end read (its module, a module it imported from) has
    /// changed since. (Imports the thin link now makes differently only it tells.)
    pub fn may_miss(&self, job: &BackendJob) -> bool {
        let Some(entry) = self.previous.entries.get(&job.module) else {
            return true;
        };
        (entry.key.inputs.iter())
            .filter(|(path, _)| path != SHARD_INPUT)
            .any(|(path, recorded)| {
                self.digests.file(&job.cwd.join(path)).ok().as_ref() != Some(recorded)
            })
    }

    /// Lets the executor get ready for `jobs`, which the cache did not answer.
    pub fn prepare(&self, jobs: &[&BackendJob]) {
        self.executor.prepare(&mut jobs.iter().copied());
    }

    /// The job's result from the cache, noted for the build log; `None` when the cache is off
    /// or has none, the job's key then kept for [`JobRunner::run`].
    pub fn run_cached(&self, job: &BackendJob) -> Option<JobOutcome> {
        let started = Instant::now();
        let cache = self.cache.as_ref()?;
        let key = self.key(job);
        match key
            .as_ref()
            .and_then(|key| self.cached(cache, job, key, started))
        {
            Some(outcome) => {
                self.note(job, key, &outcome);
                Some(outcome)
            }
            None => {
                let mut keys = self.sought_keys.lock().unwrap();
                keys.insert(job.native.clone(), key);
                None
            }
        }
    }

    /// Runs the job: from the cache if it has the result (again: a parallel link may have
    /// stored it since [`JobRunner::run_cached`] asked), else on the executor, storing the
    /// result.
    pub fn run(&self, job: &BackendJob) -> JobOutcome {
        let started = Instant::now();
        let sought = self.sought_keys.lock().unwrap().remove(&job.native);
        let key = sought.unwrap_or_else(|| self.key(job));
        let cached = match (&self.cache, &key) {
            (Some(cache), Some(key)) => self.cached(cache, job, key, started),
            _ => None,
        };
        let outcome = cached.unwrap_or_else(|| {
            let outcome = self.executor.execute(job);
            if let (Some(cache), Some(key), true) = (&self.cache, &key, outcome.succeeded()) {
                if let Err(err) = cache.put(&key.hex, &job.cwd.join(&job.native)) {
                    warn(format!("cannot cache {}: {err:#}", job.name()));
                }
            }
            outcome
        });
        self.note(job, key, &outcome);
        outcome
    }

    /// The job's key, if the cache or the build log needs it: with neither it is not worth
    /// its cost (the compiler's identity is a `--version` process, each shard is read and
    /// hashed). Without a key the job still runs; it just cannot be cached.
    fn key(&self, job: &BackendJob) -> Option<ActionKey> {
        if self.cache.is_none() && self.log_path.is_none() {
            return None;
        }
        action_key(job, self.digests)
            .map_err(|err| warn(format!("{} will not be cached: {err:#}", job.name())))
            .ok()
    }

    /// The job's native object from the cache, put in place, if the cache holds it.
    fn cached(
        &self,
        cache: &DiskCache,
        job: &BackendJob,
        key: &ActionKey,
        started: Instant,
    ) -> Option<JobOutcome> {
        let native = job.cwd.join(&job.native);
        match cache.get(&key.hex, &native, self.digests) {
            Ok(Some(digest)) => {
                // Publishing it need not read it again.
                self.digests.made_file(&native, digest);
                Some(JobOutcome {
                    failure: None,
                    output: String::new(),
                    duration: started.elapsed(),
                    executed_by: ExecutedBy::Cache,
                })
            }
            Ok(None) => None,
            Err(err) => {
                warn(format!("cache lookup for {} failed: {err:#}", job.name()));
                None
            }
        }
    }

    /// Notes the job's back end for the build log, when it has a key.
    fn note(&self, job: &BackendJob, key: Option<ActionKey>, outcome: &JobOutcome) {
        let Some(key) = key else { return };
        let previous_entry = self.previous.entries.get(&job.module);
        let compiled_ms = buildlog::compiled_ms(previous_entry, outcome);
        let previous = previous_entry.map(|e| &e.key);
        let mut reason = buildlog::explain(previous, &key);
        if outcome.executed_by != ExecutedBy::Cache && previous.is_some_and(|p| p.hex == key.hex) {
            reason.push_str(", but its result was not in the cache");
        }
        let entry = Entry {
            module: job.module.clone(),
            flags_source: job.flags_source.clone(),
            command: buildlog::command_json(&job.command),
            key,
            executed_by: Some(outcome.executed_by),
            succeeded: outcome.succeeded(),
            duration_ms: outcome.duration.as_millis(),
            compiled_ms,
            reason,
            published: job.published.as_ref().map(|p| job.cwd.join(p)),
        };
        let mut log = self.log.lock().unwrap();
        log.cwd = Some(job.cwd.clone());
        log.entries.insert(job.module.clone(), entry);
    }

    /// Saves the build log and the cache's run counts, and prunes the cache.
    pub fn finish(self, hits: u64, misses: u64) {
        if let Some(path) = &self.log_path {
            let mut log = self.log.lock().unwrap();
            // Modules not rebuilt this run keep their history.
            for (module, entry) in &self.previous.entries {
                log.entries
                    .entry(module.clone())
                    .or_insert_with(|| entry.clone());
            }
            if let Err(err) = log.save(path) {
                warn(format!("{err:#}"));
            }
        }
        if let Some(cache) = &self.cache {
            let _ = cache.record_last_run(&crate::cache::store::LastRun { hits, misses });
            cache.prune_if_due();
        }
        // The logs' strings (a kernel link's are a quarter of a million) are left for the
        // process's exit to free: freeing them one by one took longer than saving the log,
        // on a core the final link needs.
        std::mem::forget((self.previous, self.log));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::LocalExecutor;
    use crate::job::FlagsSource;
    use std::path::Path;

    /// A build log entry for `module`, whose back end read `inputs` (module first) in `dir` as
    /// they are now, and a summary shard, listed second as [`action_key`] lists it.
    fn entry(dir: &Path, module: &str, inputs: &[&str]) -> Entry {
        let digest = |path: &str| Digests::default().file(&dir.join(path)).unwrap();
        let any = digest(module);
        let mut inputs: Vec<(String, String)> =
            inputs.iter().map(|p| (p.to_string(), digest(p))).collect();
        inputs.insert(1, (SHARD_INPUT.to_string(), "5".repeat(64)));
        Entry {
            module: module.into(),
            flags_source: FlagsSource::LinkDerived,
            command: buildlog::command_json(&["cc".into()]),
            key: ActionKey {
                hex: any.clone(),
                compiler: "cc".into(),
                command_digest: any,
                inputs,
            },
            executed_by: Some(ExecutedBy::Local),
            succeeded: true,
            duration_ms: 1,
            compiled_ms: Some(1),
            reason: String::new(),
            published: None,
        }
    }

    /// What a runner with `log` answers for each module in `dir`, with fresh digests.
    fn may_miss(dir: &Path, log: &Path, modules: &[&str]) -> Vec<bool> {
        let executor = LocalExecutor::new(false, false, false);
        let digests = Digests::default();
        let runner = JobRunner::new(&executor, None, &digests).with_log(log.to_path_buf());
        (modules.iter())
            .map(|module| {
                let mut job = BackendJob::placeholder(module, 1);
                job.cwd = dir.to_path_buf();
                runner.may_miss(&job)
            })
            .collect()
    }

    #[test]
    fn a_job_may_miss_when_its_module_or_a_module_it_imported_from_changed_or_is_new() {
        let dir = tempfile::tempdir().unwrap();
        for (file, text) in [("a.o", "a"), ("b.o", "b"), ("c.o", "c"), ("d.o", "d")] {
            std::fs::write(dir.path().join(file), text).unwrap();
        }
        let log = dir.path().join("log");
        let mut previous = BuildLog::default();
        for (module, inputs) in [("a.o", &["a.o", "b.o"][..]), ("c.o", &["c.o"][..])] {
            (previous.entries).insert(module.into(), entry(dir.path(), module, inputs));
        }
        previous.save(&log).unwrap();
        let modules = ["a.o", "c.o", "d.o"];
        assert_eq!(may_miss(dir.path(), &log, &modules), [false, false, true]);
        std::fs::write(dir.path().join("b.o"), "b, changed").unwrap();
        assert_eq!(may_miss(dir.path(), &log, &modules), [true, false, true]);
        std::fs::write(dir.path().join("c.o"), "c, changed").unwrap();
        assert_eq!(may_miss(dir.path(), &log, &modules), [true, true, true]);
    }
}
