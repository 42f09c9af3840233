//! Runs one job the way the settings say: look its key up in the cache, else execute it (on
//! this machine or remotely), store the result, and note it for the build log.

use crate::buildlog::{self, BuildLog, Entry};
use crate::cache::key::SHARD_INPUT;
use crate::cache::{action_key_from, ActionKey, Digests, DiskCache, KeyPrefix};
use crate::events::{warn, ExecutedBy, JobOutcome};
use crate::exec::{Executor, LocalExecutor};
use crate::job::BackendJob;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// What [`JobRunner::prepare_lookups`] made beside the thin link, by native object.
    prepared: Mutex<HashMap<PathBuf, PreparedLookup>>,
}

/// Whether a promoted symbol that the module's last back end noted as imported has another
/// name now: `promoted` is the marker's list of their suffixes, and one no module of `job`'s
/// shard gives its promoted symbols any more belonged to a module that changed. Then the key of
/// what the job imports has changed too, and its probe would be wasted (a kernel's
/// `kernel/fork.c` changed: four of the eleven modules importing from it import a static
/// function of it).
fn renamed_since(promoted: &[u8], job: &BackendJob) -> bool {
    let noted: Vec<u64> = (String::from_utf8_lossy(promoted).lines())
        .filter_map(|line| line.parse().ok())
        .collect();
    if noted.is_empty() {
        return false;
    }
    match crate::cache::shard::import_shard(&job.shard, &job.cwd) {
        Ok(shard) => (noted.iter()).any(|suffix| !shard.promoted_suffixes.contains(suffix)),
        Err(_) => false,
    }
}

/// What [`JobRunner::by_imports`] found.
enum ByImports<'e, 'k> {
    /// The cache's answer.
    Hit(JobOutcome),
    /// What the job imports, under whose key the cache has nothing yet.
    Probed(&'e LocalExecutor, crate::probe::Imported),
    /// The job may note what it imports while it compiles (the cache cannot answer yet).
    ToNote(&'e LocalExecutor, &'k ActionKey),
    /// Nothing to be done by what it imports.
    Unknown,
}

/// The part of a job's lookup that needs neither its shard nor its import list.
struct PreparedLookup {
    prefix: KeyPrefix,
    command_json: Box<RawValue>,
    /// The key of the module's last back end and its native object's digest, when nothing that
    /// back end read but its shard has changed: that native object is already at the job's
    /// native path, fetched from the cache on the guess that the shard has not changed either.
    fetched: Option<(ActionKey, thindist_reapi::Digest)>,
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
            prepared: Mutex::default(),
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

    /// Does what the lookups of `jobs` can do before the thin link has written their shards
    /// and import lists, while it runs (it keeps one core busy; the lookups after it are on the
    /// critical path): each key's first lines and each build log command, and, for a module
    /// whose last back end read only files that have not changed since but its shard, that
    /// back end's native object, fetched from the cache. [`JobRunner::run_cached`] then only
    /// checks that the key came out as guessed: that the shard has the same bytes as then
    /// ([`ActionKey::holds_for`]), else by deriving the key. Stops when `thin_link_done` is
    /// set: what is not prepared by then is looked up as a whole.
    pub fn prepare_lookups<'j>(
        &self,
        jobs: impl Iterator<Item = &'j BackendJob>,
        thin_link_done: &AtomicBool,
    ) {
        let Some(cache) = &self.cache else { return };
        for job in jobs {
            if thin_link_done.load(Ordering::Relaxed) {
                break;
            }
            let Ok(prefix) = KeyPrefix::new(job, self.digests) else {
                continue;
            };
            let last = (self.previous.entries.get(&job.module)).filter(|entry| {
                entry.key.command_digest == prefix.command_digest()
                    && entry.key.compiler == prefix.compiler()
                    && !self.may_miss(job)
            });
            let native = job.cwd.join(&job.native);
            let fetched = last.and_then(|entry| {
                let digest = cache.get(&entry.key.hex, &native, self.digests).ok()??;
                Some((entry.key.clone(), digest))
            });
            let prepared = PreparedLookup {
                prefix,
                command_json: buildlog::command_json(&job.command),
                fetched,
            };
            (self.prepared.lock().unwrap()).insert(job.native.clone(), prepared);
        }
    }

    /// Removes the native objects fetched for jobs that were not looked up after all (their
    /// modules left out of the link by the thin link).
    pub fn forget_prepared(&self) {
        for (_, prepared) in self.prepared.lock().unwrap().drain() {
            if prepared.fetched.is_some() {
                // Where its job's native would go, in the run's work directory.
                let _ = std::fs::remove_file(prepared.prefix.native_path());
            }
        }
    }

    /// The job's result from the cache, noted for the build log; `None` when the cache is off
    /// or has none, the job's key then kept for [`JobRunner::run`].
    pub fn run_cached(&self, job: &BackendJob) -> Option<JobOutcome> {
        let started = Instant::now();
        let cache = self.cache.as_ref()?;
        let prepared = self.prepared.lock().unwrap().remove(&job.native);
        // Made for this very job, or for one the plan made again (with other file names): then
        // only the native fetched on the guess is of use, once the key is derived.
        let (prefix, command_json, fetched) = match prepared {
            Some(p) if p.prefix.is_for(job) => (Some(p.prefix), Some(p.command_json), p.fetched),
            Some(p) => (None, None, p.fetched),
            None => (None, None, None),
        };
        let native = job.cwd.join(&job.native);
        let (key, guessed) = match fetched {
            // The guess was checked against this job's command and files (prepare_lookups), and
            // its shard has the bytes it had: the last key is this job's.
            Some((last, digest)) if prefix.is_some() && last.holds_for(job) => {
                (Some(last), Some(self.hit(&native, digest, started)))
            }
            fetched => {
                let key = self.key(job, prefix);
                let guessed = fetched.and_then(|(last, digest)| {
                    if key.as_ref().is_some_and(|key| key.hex == last.hex) {
                        return Some(self.hit(&native, digest, started));
                    }
                    // The shard changed: nothing of the guess may stay where the job's native
                    // goes.
                    let _ = std::fs::remove_file(&native);
                    None
                });
                (key, guessed)
            }
        };
        let answer = guessed
            .or_else(|| (key.as_ref()).and_then(|key| self.cached(cache, job, &key.hex, started)));
        match answer {
            Some(outcome) => {
                self.note(job, key, &outcome, command_json, false);
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
    /// stored it since [`JobRunner::run_cached`] asked), or has it under the key of what the
    /// job imports ([`JobRunner::by_imports`]), else on the executor, storing the result under
    /// its action key and, where it was found, the key of what it imports.
    pub fn run(&self, job: &BackendJob) -> JobOutcome {
        let started = Instant::now();
        let sought = self.sought_keys.lock().unwrap().remove(&job.native);
        let key = sought.unwrap_or_else(|| self.key(job, None));
        let native = job.cwd.join(&job.native);
        let cached = match (&self.cache, &key) {
            (Some(cache), Some(key)) => self.cached(cache, job, &key.hex, started),
            _ => None,
        };
        let by_imports = match (&self.cache, &key, &cached) {
            (Some(cache), Some(key), None) => self.by_imports(cache, job, key, started),
            _ => ByImports::Unknown,
        };
        let imported_as_before = matches!(by_imports, ByImports::Hit(_));
        let (outcome, imported) = match (cached, by_imports) {
            (Some(outcome), _) | (None, ByImports::Hit(outcome)) => (outcome, None),
            (None, ByImports::Probed(local, imported)) => (local.execute(job), Some(imported)),
            (None, ByImports::ToNote(local, key)) => {
                crate::probe::compile_noting_imports(local, job, key)
            }
            (None, ByImports::Unknown) => (self.executor.execute(job), None),
        };
        if let (Some(cache), Some(key), true, false) = (
            &self.cache,
            &key,
            outcome.succeeded(),
            outcome.executed_by == ExecutedBy::Cache,
        ) {
            self.store(cache, job, &key.hex, &native);
            if let Some(imported) = imported {
                self.store(cache, job, &imported.key, &native);
                let marker = crate::cache::key::import_keyed_marker(key);
                let promoted: String = (imported.promoted.iter())
                    .map(|s| format!("{s}\n"))
                    .collect();
                if let Err(err) = cache.put_entry(&marker, &[], promoted.as_bytes()) {
                    warn(format!("cannot cache {}: {err:#}", job.name()));
                }
            }
        }
        self.note(job, key, &outcome, None, imported_as_before);
        outcome
    }

    fn store(&self, cache: &DiskCache, job: &BackendJob, key: &str, native: &Path) {
        if let Err(err) = cache.put(key, native) {
            warn(format!("cannot cache {}: {err:#}", job.name()));
        }
    }

    /// How a job the cache did not answer by its action key may yet be answered by the key of
    /// what it imports ([`crate::cache::key::import_key`]). That can be only where its
    /// module's last back end had the same compiler, command and module and another action key
    /// (only the modules it imports from, or its shard, changed), and where a back end of the
    /// module stored its result under that key too (the marker says so): then a probe
    /// ([`crate::probe`], a fifth to a half of a back end's time) gives the key. Where no back
    /// end did yet, this one notes what it imports while it compiles, for the next.
    fn by_imports<'k>(
        &self,
        cache: &DiskCache,
        job: &BackendJob,
        key: &'k ActionKey,
        started: Instant,
    ) -> ByImports<'a, 'k> {
        let Some(local) = self.executor.local() else {
            return ByImports::Unknown;
        };
        let Some(last) = self
            .previous
            .entries
            .get(&job.module)
            .map(|entry| &entry.key)
        else {
            return ByImports::Unknown;
        };
        let only_imports_changed = last.compiler == key.compiler
            && last.command_digest == key.command_digest
            && last.inputs.first() == key.inputs.first()
            && last.hex != key.hex;
        if !only_imports_changed || job.imports.is_empty() {
            return ByImports::Unknown;
        }
        let marker = crate::cache::key::import_keyed_marker(key);
        let Ok(Some((_, promoted))) = cache.get_entry(&marker) else {
            return ByImports::ToNote(local, key);
        };
        if renamed_since(&promoted, job) {
            return ByImports::ToNote(local, key);
        }
        let Some(imported) = crate::probe::probe(local, job, key) else {
            return ByImports::Unknown;
        };
        match self.cached(cache, job, &imported.key, started) {
            Some(outcome) => {
                // The next link with the same inputs finds it by its action key.
                self.store(cache, job, &key.hex, &job.cwd.join(&job.native));
                ByImports::Hit(outcome)
            }
            None => ByImports::Probed(local, imported),
        }
    }

    /// The job's key, if the cache or the build log needs it: with neither it is not worth
    /// its cost (the compiler's identity is a `--version` process, each shard is read and
    /// hashed). Without a key the job still runs; it just cannot be cached.
    /// `prefix`: its first lines, if [`JobRunner::prepare_lookups`] made them.
    fn key(&self, job: &BackendJob, prefix: Option<KeyPrefix>) -> Option<ActionKey> {
        if self.cache.is_none() && self.log_path.is_none() {
            return None;
        }
        action_key_from(prefix, job, self.digests)
            .map_err(|err| warn(format!("{} will not be cached: {err:#}", job.name())))
            .ok()
    }

    /// The job's native object from the cache, put in place, if the cache holds it.
    fn cached(
        &self,
        cache: &DiskCache,
        job: &BackendJob,
        key: &str,
        started: Instant,
    ) -> Option<JobOutcome> {
        let native = job.cwd.join(&job.native);
        match cache.get(key, &native, self.digests) {
            Ok(Some(digest)) => Some(self.hit(&native, digest, started)),
            Ok(None) => None,
            Err(err) => {
                warn(format!("cache lookup for {} failed: {err:#}", job.name()));
                None
            }
        }
    }

    /// The outcome of a job the cache answered (since `started`) with `native`, of `digest`.
    fn hit(&self, native: &Path, digest: thindist_reapi::Digest, started: Instant) -> JobOutcome {
        // Publishing it need not read it again.
        self.digests.made_file(native, digest);
        JobOutcome {
            failure: None,
            output: String::new(),
            duration: started.elapsed(),
            executed_by: ExecutedBy::Cache,
        }
    }

    /// Notes the job's back end for the build log, when it has a key. `command_json`: the
    /// job's command as the log has it, if it was made already; `imported_as_before`: the
    /// cache answered by the key of what the job imports.
    fn note(
        &self,
        job: &BackendJob,
        key: Option<ActionKey>,
        outcome: &JobOutcome,
        command_json: Option<Box<RawValue>>,
        imported_as_before: bool,
    ) {
        let Some(key) = key else { return };
        let previous_entry = self.previous.entries.get(&job.module);
        let compiled_ms = buildlog::compiled_ms(previous_entry, outcome);
        let previous = previous_entry.map(|e| &e.key);
        let mut reason = buildlog::explain(previous, &key);
        if outcome.executed_by != ExecutedBy::Cache && previous.is_some_and(|p| p.hex == key.hex) {
            reason.push_str(", but its result was not in the cache");
        }
        if imported_as_before {
            reason.push_str(
                ", but what it imports is as it was in a back end the cache holds (the same key of what it imports)",
            );
        }
        let entry = Entry {
            module: job.module.clone(),
            flags_source: job.flags_source.clone(),
            command: command_json.unwrap_or_else(|| buildlog::command_json(&job.command)),
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
                shard_bytes: None,
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
    fn a_native_fetched_beside_the_thin_link_counts_only_for_the_key_it_was_fetched_for() {
        use crate::cache::key::tests::{job_in, thin_link_importing_nothing};
        use crate::cache::{action_key, CacheConfig};
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        // a.o imports from b.o; its last back end's native object is in the cache.
        let job = job_in(dir, "a.o", "n.o");
        let config = CacheConfig {
            dir: dir.join("cache"),
            max_bytes: 1 << 30,
            shared: false,
        };
        let key = action_key(&job, &Digests::default()).unwrap();
        let native = dir.join("n.o");
        std::fs::write(&native, "a.o's native object").unwrap();
        DiskCache::open(&config)
            .unwrap()
            .put(&key.hex, &native)
            .unwrap();
        std::fs::remove_file(&native).unwrap();
        let log = dir.join("log");
        let mut previous = BuildLog::default();
        let last = Entry {
            key,
            ..entry(dir, "a.o", &["a.o", "b.o"])
        };
        previous.entries.insert("a.o".into(), last);
        previous.save(&log).unwrap();
        let executor = LocalExecutor::new(false, false, false);
        // Prepares the lookup of `drafted` and looks `planned` up: what was fetched, how the
        // job was answered and the command the build log notes for it.
        let prepared_lookup = |drafted: &BackendJob, planned: &BackendJob| {
            let digests = Digests::default();
            let cache = DiskCache::open(&config).unwrap();
            let runner = JobRunner::new(&executor, Some(cache), &digests).with_log(log.clone());
            runner.prepare_lookups(std::iter::once(drafted), &AtomicBool::new(false));
            let fetched = std::fs::read(&native).ok();
            let answer = runner.run_cached(planned).map(|o| o.executed_by);
            let noted = (runner.log.lock().unwrap().entries.get(&planned.module))
                .map(|entry| entry.command.get().to_string());
            (fetched, answer, noted)
        };

        // The same shard: the native fetched on the guess is the job's.
        let (fetched, hit, _) = prepared_lookup(&job, &job);
        assert_eq!(fetched.as_deref(), Some(&b"a.o's native object"[..]));
        assert_eq!(hit, Some(ExecutedBy::Cache));
        assert!(native.exists());
        std::fs::remove_file(&native).unwrap();

        // The plan made the job again with its shard elsewhere (the same bytes): the guess
        // still holds, and the log notes the command the job has, not the drafted one.
        std::fs::create_dir(dir.join("moved")).unwrap();
        std::fs::copy(dir.join("a.o.thinlto.bc"), dir.join("moved/a.o.thinlto.bc")).unwrap();
        let mut moved = BackendJob {
            shard: "moved/a.o.thinlto.bc".into(),
            ..job.clone()
        };
        moved.command[2] = "-fthinlto-index=moved/a.o.thinlto.bc".into();
        let (fetched, hit, noted) = prepared_lookup(&job, &moved);
        assert!(fetched.is_some());
        assert_eq!(hit, Some(ExecutedBy::Cache));
        assert!(noted.unwrap().contains("moved/a.o.thinlto.bc"));
        std::fs::remove_file(&native).unwrap();

        // A thin link that imports nothing writes a.o another shard, though neither a.o nor
        // b.o changed: the guess is fetched, found wrong, and leaves nothing behind.
        thin_link_importing_nothing(dir);
        let job = BackendJob {
            imports: vec![],
            ..job
        };
        let (fetched, hit, _) = prepared_lookup(&job, &job);
        assert!(fetched.is_some(), "guessed from the unchanged modules");
        assert_eq!(hit, None, "a new shard is a new key");
        assert!(
            !native.exists(),
            "the wrong guess is gone from where the native goes"
        );
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

    #[test]
    fn a_promoted_symbol_renamed_by_a_change_of_its_module_is_seen_before_any_probe() {
        use crate::cache::key::tests::{compiling_job_in, run, thin_link};
        let d = tempfile::tempdir().unwrap();
        let job = compiling_job_in(d.path());
        // b, which a.o imports, calls a static function of b.o: a.o refers to it by the name
        // the thin link promotes it to.
        let relink_with = |b_c: &str| {
            std::fs::write(d.path().join("b.c"), b_c).unwrap();
            run(
                d.path(),
                &["clang-22", "-O2", "-flto=thin", "-c", "b.c", "-o", "b.o"],
            );
            thin_link(d.path(), "a.o", &[]);
        };
        let b_c = "__attribute__((noinline)) static int twice(int x) { return 2 * x; }\nint b(int x) { return twice(x) + 1; }\n";
        relink_with(b_c);
        let key = crate::cache::action_key(&job, &Digests::default()).unwrap();
        let local = LocalExecutor::new(false, false, false);
        let imported = crate::probe::probe(&local, &job, &key).unwrap();
        assert_eq!(
            imported.promoted.len(),
            1,
            "a.o refers to b.o's promoted twice"
        );
        let noted: String = (imported.promoted.iter())
            .map(|s| format!("{s}\n"))
            .collect();
        assert!(
            !renamed_since(noted.as_bytes(), &job),
            "nothing changed yet"
        );
        relink_with(&format!("{b_c}int c(int x) {{ return x; }}\n"));
        assert!(
            renamed_since(noted.as_bytes(), &job),
            "b.o's change renamed twice"
        );
        assert!(!renamed_since(b"", &job), "nothing noted, nothing renamed");
    }
}
