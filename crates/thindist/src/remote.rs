//! Remote execution of back-end jobs over the Remote Execution API: each job becomes one
//! Action whose input root mirrors the build directory (the module, its shard, the modules it
//! imports, profiles), with a minimal environment, so the action digest is the same on every
//! client. Infrastructure failures are retried with backoff and then run locally with a warning,
//! unless remote-only is set.

use crate::cache::Digests;
use crate::events::{warn, ExecutedBy, JobFailure, JobOutcome, Termination};
use crate::exec::{native_problem, Executor, LocalExecutor};
use crate::job::BackendJob;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use thindist_reapi::{
    ActionSpec, Client, InputFile, PreparedAction, RemoteConfig, RemoteError, RemoteOutcome,
};

/// The environment every remote back end gets: the same on every client, so action digests match.
const REMOTE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

pub struct RemoteSettings {
    pub config: RemoteConfig,
    pub platform: Vec<(String, String)>,
    /// The compiler's path on the workers; default: the job's own compiler name.
    pub compiler: Option<String>,
    pub remote_only: bool,
    /// Local jobs at once when falling back.
    pub local_slots: usize,
}

pub struct RemoteExecutor {
    runtime: tokio::runtime::Runtime,
    client: Option<Arc<Client>>,
    settings: RemoteSettings,
    local: LocalExecutor,
    local_free: Mutex<usize>,
    local_freed: Condvar,
    /// Summed size of every job's inputs, to set against the bytes really uploaded.
    input_bytes: std::sync::atomic::AtomicU64,
    /// The run's digests, shared with the cache: inputs are hashed once per run, not once per
    /// job that imports them.
    digests: Arc<Digests>,
    /// The actions [`Executor::prepare`] readied, by native object.
    prepared: Mutex<HashMap<PathBuf, PreparedAction>>,
}

impl RemoteExecutor {
    /// Connects to the server. If it cannot be reached, every job runs locally (with one
    /// warning) unless remote-only is set, which makes that an error. Local jobs run on `local`.
    pub fn connect(
        settings: RemoteSettings,
        local: LocalExecutor,
        digests: Arc<Digests>,
    ) -> Result<RemoteExecutor> {
        // One thread serves every job in flight: their calls are waits, not work.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let client = match runtime.block_on(Client::connect(settings.config.clone())) {
            Ok(client) => Some(Arc::new(client)),
            Err(err) if settings.remote_only => {
                return Err(err.context("remote-only is set and the remote server is unusable"))
            }
            Err(err) => {
                warn(format!(
                    "remote execution unavailable, compiling locally: {err:#}"
                ));
                None
            }
        };
        let local_free = Mutex::new(settings.local_slots.max(1));
        Ok(RemoteExecutor {
            runtime,
            client,
            settings,
            local,
            local_free,
            local_freed: Condvar::new(),
            input_bytes: Default::default(),
            digests,
            prepared: Mutex::default(),
        })
    }

    /// Bytes sent to the CAS so far (for benchmarks).
    pub fn bytes_uploaded(&self) -> u64 {
        self.client
            .as_ref()
            .map(|c| c.bytes_uploaded())
            .unwrap_or(0)
    }

    fn spec(&self, job: &BackendJob) -> Result<ActionSpec> {
        let mut inputs = Vec::new();
        let files = std::iter::once(&job.module)
            .chain(std::iter::once(&job.shard))
            .chain(&job.imports)
            .chain(&job.extra_inputs);
        let mut seen = std::collections::HashSet::new();
        for path in files {
            if !seen.insert(path.clone()) {
                continue;
            }
            let root_path = in_root(path)?;
            let source = job.cwd.join(path);
            let digest = self
                .digests
                .file_digest(&source)
                .with_context(|| format!("cannot read input {}", source.display()))?;
            inputs.push(InputFile {
                path: root_path,
                digest,
                executable: false,
                source,
            });
        }
        let mut arguments = job.command.clone();
        if let Some(compiler) = &self.settings.compiler {
            arguments[0] = compiler.clone();
        }
        Ok(ActionSpec {
            arguments,
            env: vec![("PATH".into(), REMOTE_PATH.into())],
            inputs,
            output_files: vec![in_root(&job.native)?],
            platform: self.settings.platform.clone(),
            working_directory: String::new(),
            timeout: None,
            do_not_cache: false,
        })
    }

    /// One remote attempt, of the action `prepared` or else readied now: Ok(outcome) when the
    /// command ran (whatever its exit), Err for infrastructure failures.
    fn attempt(
        &self,
        client: &Arc<Client>,
        prepared: Option<PreparedAction>,
        spec: &ActionSpec,
        job: &BackendJob,
        started: Instant,
    ) -> std::result::Result<JobOutcome, RemoteError> {
        let native_in_root = in_root(&job.native).map_err(RemoteError::Infrastructure)?;
        let action = prepared.ok_or_else(|| spec.clone());
        // The calls run on the runtime's one thread, which serves every job in flight.
        let task = self
            .runtime
            .spawn(run_remotely(client.clone(), action, native_in_root));
        let (outcome, native_bytes) = self
            .runtime
            .block_on(task)
            .map_err(|e| RemoteError::Infrastructure(e.into()))??;
        let mut output = String::from_utf8_lossy(&outcome.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&outcome.stderr));
        let native = job.cwd.join(&job.native);
        let _ = std::fs::remove_file(&native);
        let done = |failure: Option<JobFailure>, output: String| JobOutcome {
            failure,
            output,
            duration: started.elapsed(),
            executed_by: ExecutedBy::Remote,
        };
        if outcome.exit_code != 0 {
            let end = Termination::Exit(outcome.exit_code);
            let failure = JobFailure::compiler(&spec.arguments[0], end, &output);
            return Ok(done(Some(failure), output));
        }
        if let Some(bytes) = native_bytes {
            crate::fsutil::write_atomic(&native, &bytes).map_err(RemoteError::Infrastructure)?;
        }
        let problem = native_problem(job);
        if problem.is_some() {
            let _ = std::fs::remove_file(&native);
        }
        Ok(done(problem, output))
    }

    fn run_locally(&self, job: &BackendJob) -> JobOutcome {
        let mut free = self.local_free.lock().unwrap();
        while *free == 0 {
            free = self.local_freed.wait(free).unwrap();
        }
        *free -= 1;
        drop(free);
        let outcome = self.local.execute(job);
        *self.local_free.lock().unwrap() += 1;
        self.local_freed.notify_one();
        outcome
    }
}

/// The gRPC status code the server failed a call with, if it did.
fn grpc_code(err: &RemoteError) -> Option<String> {
    let RemoteError::Infrastructure(err) = err;
    err.chain()
        .find_map(|e| e.downcast_ref::<thindist_reapi::CallFailed>())
        .map(|failed| format!("{:?}", failed.code))
}

/// The network half of an attempt: runs the action (readied now if it is only a spec) and
/// reads its native object (at `native_in_root`) if it ran and wrote one.
async fn run_remotely(
    client: Arc<Client>,
    action: std::result::Result<PreparedAction, ActionSpec>,
    native_in_root: String,
) -> std::result::Result<(RemoteOutcome, Option<Vec<u8>>), RemoteError> {
    let action = match action {
        Ok(action) => action,
        Err(spec) => client.prepare(std::slice::from_ref(&spec)).await?.remove(0),
    };
    let outcome = client.run_prepared(&action).await?;
    let mut native = None;
    if outcome.exit_code == 0 {
        if let Some((_, digest)) = outcome.outputs.iter().find(|(p, _)| *p == native_in_root) {
            native = Some(client.read_blob(digest).await?);
        }
    }
    Ok((outcome, native))
}

/// `path`'s place in the input root, which mirrors the build directory. The work directory of
/// a link with remote execution lies in the build directory (see
/// [`Executor::needs_paths_in_build_dir`]), so every input is below it.
fn in_root(path: &Path) -> Result<String> {
    let path = crate::fsutil::normalize(path);
    if path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        bail!("input {} lies outside the build directory, so it cannot be sent as part of the input root", path.display());
    }
    Ok(path.to_string_lossy().into_owned())
}

impl Executor for RemoteExecutor {
    fn execute(&self, job: &BackendJob) -> JobOutcome {
        let started = Instant::now();
        let fail = |failure: JobFailure| JobOutcome {
            failure: Some(failure),
            output: String::new(),
            duration: started.elapsed(),
            executed_by: ExecutedBy::Remote,
        };
        let Some(client) = &self.client else {
            return self.run_locally(job);
        };
        let spec = match self.spec(job) {
            Ok(spec) => spec,
            Err(err) if self.settings.remote_only => {
                return fail(JobFailure::Input(format!("{err:#}")))
            }
            Err(err) => {
                warn(format!("{} runs locally: {err:#}", job.name()));
                return self.run_locally(job);
            }
        };
        let input_bytes = spec.inputs.iter().map(|i| i.digest.size as u64).sum();
        self.input_bytes
            .fetch_add(input_bytes, std::sync::atomic::Ordering::Relaxed);
        // Readied with the whole build; a retry readies it again on its own.
        let mut prepared = self.prepared.lock().unwrap().remove(&job.native);
        let mut delay = Duration::from_millis(250);
        let mut attempt = 0;
        let last_error = loop {
            attempt += 1;
            match self.attempt(client, prepared.take(), &spec, job, started) {
                Ok(outcome) => return outcome,
                Err(err) => {
                    tracing::debug!("remote attempt {attempt} for {} failed: {err}", job.name());
                    if crate::exec::interrupts()
                        .cancelled
                        .load(std::sync::atomic::Ordering::SeqCst)
                    {
                        return fail(JobFailure::Interrupted);
                    }
                    // A server that refused the action (by its status code) would refuse it
                    // again.
                    if attempt == 3 || !err.is_transient() {
                        break err;
                    }
                    std::thread::sleep(delay);
                    delay *= 2;
                }
            }
        };
        if self.settings.remote_only {
            return fail(JobFailure::Remote {
                code: grpc_code(&last_error),
                message: last_error.to_string(),
                attempts: attempt,
            });
        }
        warn(format!(
            "remote execution of {} failed ({last_error}); compiling it locally",
            job.name()
        ));
        self.run_locally(job)
    }

    fn finish(&self) {
        self.local.finish();
    }

    fn needs_paths_in_build_dir(&self) -> bool {
        true
    }

    fn prepare(&self, jobs: &mut dyn Iterator<Item = &BackendJob>) {
        let Some(client) = &self.client else { return };
        // A job whose action cannot be built is left out; it fails or runs locally when its
        // turn comes, with the reason.
        let (jobs, specs): (Vec<&BackendJob>, Vec<ActionSpec>) = jobs
            .filter_map(|job| Some((job, self.spec(job).ok()?)))
            .unzip();
        match self.runtime.block_on(client.prepare(&specs)) {
            Ok(prepared) => {
                let mut readied = self.prepared.lock().unwrap();
                for (job, action) in jobs.into_iter().zip(prepared) {
                    readied.insert(job.native.clone(), action);
                }
            }
            // Each job tries again on its own, with retries and the fallback.
            Err(err) => tracing::debug!("preparing the remote build failed: {err}"),
        }
    }

    fn report(&self) -> Option<String> {
        let inputs = self.input_bytes.load(std::sync::atomic::Ordering::Relaxed);
        self.client.as_ref().map(|_| {
            format!(
                "thindist: remote: {} bytes uploaded for {inputs} bytes of job inputs",
                self.bytes_uploaded()
            )
        })
    }
}

/// A worker's commands as forks of their compiler's fork server, as local back ends run.
struct ForkServerRunner(crate::forkserver::ForkServers);

impl thindist_reapi::worker::CommandRunner for ForkServerRunner {
    fn run(
        &self,
        arguments: &[String],
        cwd: &Path,
        env: &[(String, String)],
    ) -> Option<std::io::Result<thindist_reapi::worker::CommandOutput>> {
        let result = self.0.run_in_env(arguments, cwd, env)?;
        // A fork's stdout and stderr arrive as one text; compilers write to stderr.
        Some(
            result.map(|(status, output)| {
                (status.code().unwrap_or(-1), Vec::new(), output.into_bytes())
            }),
        )
    }
}

/// `thindist worker`: runs bots until SIGINT or SIGTERM, their compiles forked from a fork
/// server when `fork_server` is set and the compiler allows it, back ends in its cc1 workers
/// when `cc1_workers` is set too.
pub fn run_worker(
    mut config: thindist_reapi::worker::WorkerConfig,
    (fork_server, cc1_workers): (bool, bool),
    verbose: bool,
) -> Result<()> {
    if fork_server {
        let servers = crate::forkserver::ForkServers::new(verbose, cc1_workers);
        config.runner = Some(Arc::new(ForkServerRunner(servers)));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            let _ = tx.send(true);
        });
        thindist_reapi::worker::run(config, rx).await
    })
}
