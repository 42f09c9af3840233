//! Runs one job the way the settings say: look its key up in the cache, else execute it (on
//! this machine or remotely), store the result, and note it for the build log.

use crate::buildlog::{self, BuildLog, Entry};
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
    /// Keys [`JobRunner::prepare`] computed, by native object, for `run` to take.
    prepared_keys: Mutex<HashMap<PathBuf, ActionKey>>,
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
            prepared_keys: Mutex::default(),
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
    pub fn expected_costs(&self, jobs: &[BackendJob]) -> Vec<u64> {
        self.previous.expected_costs(jobs)
    }

    /// Lets the executor get ready for the jobs that the cache will not answer.
    pub fn prepare(&self, jobs: &[BackendJob]) {
        let mut to_execute = jobs.iter().filter(|job| {
            let cached = |cache: &DiskCache| {
                action_key(job, self.digests).is_ok_and(|key| {
                    let found = cache.contains(&key.hex);
                    let mut keys = self.prepared_keys.lock().unwrap();
                    keys.insert(job.native.clone(), key);
                    found
                })
            };
            !self.cache.as_ref().is_some_and(cached)
        });
        self.executor.prepare(&mut to_execute);
    }

    pub fn run(&self, job: &BackendJob) -> JobOutcome {
        let started = Instant::now();
        // The key serves the cache and the build log; with neither, it is not worth its cost
        // (the compiler's identity is a `--version` process, each shard is read and hashed).
        let keyed = self.cache.is_some() || self.log_path.is_some();
        let prepared = self.prepared_keys.lock().unwrap().remove(&job.native);
        let key = match prepared
            .map(Ok)
            .or_else(|| keyed.then(|| action_key(job, self.digests)))
        {
            None => None,
            Some(Ok(key)) => Some(key),
            Some(Err(err)) => {
                // Without a key the job still runs; it just cannot be cached.
                warn(format!("{} will not be cached: {err:#}", job.name()));
                None
            }
        };
        let native = job.cwd.join(&job.native);
        let mut outcome = None;
        if let (Some(cache), Some(key)) = (&self.cache, &key) {
            match cache.get(&key.hex, &native) {
                Ok(Some(digest)) => {
                    // Publishing it need not read it again.
                    self.digests.made_file(&native, digest);
                    outcome = Some(JobOutcome {
                        failure: None,
                        output: String::new(),
                        duration: started.elapsed(),
                        executed_by: ExecutedBy::Cache,
                    })
                }
                Ok(None) => {}
                Err(err) => warn(format!("cache lookup for {} failed: {err:#}", job.name())),
            }
        }
        let outcome = outcome.unwrap_or_else(|| {
            let outcome = self.executor.execute(job);
            if let (Some(cache), Some(key), true) = (&self.cache, &key, outcome.succeeded()) {
                if let Err(err) = cache.put(&key.hex, &native) {
                    warn(format!("cannot cache {}: {err:#}", job.name()));
                }
            }
            outcome
        });
        if let Some(key) = key {
            let previous_entry = self.previous.entries.get(&job.module);
            let compiled_ms = buildlog::compiled_ms(previous_entry, &outcome);
            let previous = previous_entry.map(|e| &e.key);
            let mut reason = buildlog::explain(previous, &key);
            if outcome.executed_by != ExecutedBy::Cache
                && previous.is_some_and(|p| p.hex == key.hex)
            {
                reason.push_str(", but its result was not in the cache");
            }
            let entry = Entry {
                module: job.module.clone(),
                flags_source: job.flags_source.clone(),
                command: job.command.clone(),
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
        outcome
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
