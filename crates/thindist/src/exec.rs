//! Processes: running back-end jobs (the local executor, a compiler process or fork per job,
//! and the dispatcher that starts the jobs expected to take longest first, never more at once
//! than make's jobserver or `-j` allows), tracked commands that an interrupt stops, the PATH
//! search, and handing the process over to the real linker.

use crate::events::{Event, ExecutedBy, JobFailure, JobOutcome, Reporter, Termination};
use crate::forkserver::ForkServers;
use crate::job::BackendJob;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Instant;

/// Runs one job to completion. On success the native object is at `job.native`.
pub trait Executor: Sync {
    fn execute(&self, job: &BackendJob) -> JobOutcome;

    /// Gets ready for `jobs`, which the local cache did not answer and which are about to be
    /// executed, all at once where that is cheaper than job by job (remote: the whole build's
    /// action-cache lookups and uploads).
    fn prepare(&self, _jobs: &mut dyn Iterator<Item = &BackendJob>) {}

    /// Gets ready to run the jobs of a flag set before the first job asks, while the thin link
    /// leaves a core idle; `samples` are one or two of its jobs as drafted (see
    /// [`crate::plan::Draft`]), `many` says whether the set has three jobs or more, and
    /// `at_once` how many jobs are likely to run at once. A local executor starts the
    /// compiler's fork servers and, for a set of many, derives and checks its cc1 template from
    /// the two samples, unless `thin_link_done` is set by then: the first job must not wait for
    /// that.
    fn start_early(
        &self,
        _samples: &[BackendJob],
        _many: bool,
        _at_once: usize,
        _thin_link_done: &AtomicBool,
    ) {
    }

    /// The executor as the local one it is, if it is: only that can run the variants of a
    /// job that say what it imports ([`crate::probe`]).
    fn local(&self) -> Option<&LocalExecutor> {
        None
    }

    /// No more jobs come: a local executor stops its fork servers now, beside the final link,
    /// rather than at the run's end (each server's exit takes a few milliseconds).
    fn finish(&self) {}

    /// A line for the end of the run about the executor itself, if it has one to say.
    fn report(&self) -> Option<String> {
        None
    }

    /// Whether every file of a job must lie below the build directory, named by a path that is
    /// the same in every link of the same output (remote execution: the input root mirrors the
    /// build directory, and the shards name modules by the paths the thin link was given).
    fn needs_paths_in_build_dir(&self) -> bool {
        false
    }
}

/// Children and temporary outputs (files, work directories) to clean up when the run is
/// interrupted.
#[derive(Default)]
pub struct Interrupts {
    pub cancelled: AtomicBool,
    /// The signal that interrupted the run, 0 while none has.
    signal: std::sync::atomic::AtomicI32,
    children: Mutex<HashSet<u32>>,
    temp_files: Mutex<HashSet<std::path::PathBuf>>,
}

pub fn interrupts() -> &'static Interrupts {
    static INTERRUPTS: OnceLock<Interrupts> = OnceLock::new();
    INTERRUPTS.get_or_init(Interrupts::default)
}

impl Interrupts {
    pub fn add_temp(&self, path: &Path) {
        self.temp_files.lock().unwrap().insert(path.to_path_buf());
    }
    pub fn remove_temp(&self, path: &Path) {
        self.temp_files.lock().unwrap().remove(path);
    }

    /// An error once the run is interrupted: no new child may start then.
    pub fn check_running(&self) -> std::io::Result<()> {
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "interrupted",
            ));
        }
        Ok(())
    }

    /// Records a running child, to be stopped on interrupt; one that started while the
    /// interrupt was stopping the others is stopped here.
    pub fn track(&self, pid: u32) {
        self.children.lock().unwrap().insert(pid);
        if self.cancelled.load(Ordering::SeqCst) {
            // SAFETY: kill(2) touches no memory of this process. The pid is a child spawned by
            // run_tracked that it has not yet waited for: it untracks the pid only after the
            // wait, so in that short window a reaped pid could have been reused.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }

    /// Forgets a child that has exited.
    pub fn untrack(&self, pid: u32) {
        self.children.lock().unwrap().remove(&pid);
    }

    /// The signal that interrupted the run, if one did.
    pub fn signal(&self) -> Option<i32> {
        Some(self.signal.load(Ordering::SeqCst)).filter(|s| *s != 0)
    }

    /// Stops every child and deletes temporary outputs: called on SIGINT/SIGTERM.
    pub fn interrupt(&self, signal: i32) {
        self.signal.store(signal, Ordering::SeqCst);
        self.cancelled.store(true, Ordering::SeqCst);
        for pid in self.children.lock().unwrap().iter() {
            // SAFETY: as in `track`: no memory is touched, and the pid is a tracked child that
            // is untracked only after it has been waited for.
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGTERM);
            }
        }
        for path in self.temp_files.lock().unwrap().iter() {
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(path);
            } else {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Installs the SIGINT/SIGTERM/SIGHUP handler: stop children, delete temporary outputs, exit 130.
pub fn install_interrupt_handler() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            eprintln!("thindist: interrupted; stopping back-end jobs");
            interrupts().interrupt(signal);
            // Give compilers a moment to remove their own temporary files.
            std::thread::sleep(std::time::Duration::from_millis(200));
            std::process::exit(128 + signal);
        }
    });
}

/// `program` as exec finds it from `cwd` (a path as is, a bare name as the first executable
/// file on PATH, relative entries taken from `cwd`), with symbolic links resolved.
pub fn find_program(program: &str, cwd: &Path) -> Option<PathBuf> {
    which::which_in(program, std::env::var_os("PATH"), cwd)
        .ok()?
        .canonicalize()
        .ok()
}

/// Runs the real linker with the original arguments, replacing this process.
pub fn pass_through(linker: &str, args: &[String]) -> anyhow::Result<i32> {
    use std::os::unix::process::CommandExt;
    let err = Command::new(linker).args(args).exec();
    anyhow::bail!("cannot run the linker {linker}: {err}")
}

/// Runs a command, recording its pid so an interrupt can stop it. Returns (exit status, output).
pub fn run_tracked(command: &mut Command) -> std::io::Result<(std::process::ExitStatus, String)> {
    interrupts().check_running()?;
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    interrupts().track(pid);
    let result = child.wait_with_output();
    interrupts().untrack(pid);
    let output = result?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok((output.status, text))
}

/// Runs back-end compiles on this machine: as forks of a compiler's fork server where one can
/// run, else as processes.
pub struct LocalExecutor {
    fork_servers: Option<ForkServers>,
}

impl LocalExecutor {
    /// `fork_server` false runs every compile as a process; `cc1_workers` false runs none in
    /// a fork server's cc1 worker; `verbose` says once per compiler whether it has a fork
    /// server.
    pub fn new(fork_server: bool, cc1_workers: bool, verbose: bool) -> LocalExecutor {
        if verbose && !fork_server {
            eprintln!("thindist: fork server off; running compiler processes");
        }
        LocalExecutor {
            fork_servers: fork_server.then(|| ForkServers::new(verbose, cc1_workers)),
        }
    }

    /// Runs `job`'s command, with none of the checks of its output that
    /// [`Executor::execute`] makes.
    pub(crate) fn run(
        &self,
        job: &BackendJob,
    ) -> std::io::Result<(std::process::ExitStatus, String)> {
        if let Some(result) =
            (self.fork_servers.as_ref()).and_then(|servers| servers.run_backend(job))
        {
            return result;
        }
        let mut command = Command::new(&job.command[0]);
        command.args(&job.command[1..]).current_dir(&job.cwd);
        run_tracked(&mut command)
    }
}

impl Executor for LocalExecutor {
    fn start_early(
        &self,
        samples: &[BackendJob],
        many: bool,
        at_once: usize,
        thin_link_done: &AtomicBool,
    ) {
        if let Some(servers) = &self.fork_servers {
            servers.start_early(samples, many, at_once, thin_link_done);
        }
    }

    fn local(&self) -> Option<&LocalExecutor> {
        Some(self)
    }

    fn finish(&self) {
        if let Some(servers) = &self.fork_servers {
            servers.stop();
        }
    }

    fn execute(&self, job: &BackendJob) -> JobOutcome {
        let start = Instant::now();
        let native = job.cwd.join(&job.native);
        let outcome = |failure: Option<JobFailure>, output: String| {
            if failure.is_some() {
                // Nothing invalid may stay where a valid object is expected.
                let _ = std::fs::remove_file(&native);
            }
            JobOutcome {
                failure,
                output,
                duration: start.elapsed(),
                executed_by: ExecutedBy::Local,
            }
        };
        // A stale object from an earlier run must not pass for this run's output.
        let _ = std::fs::remove_file(&native);
        if let Some(dir) = native.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                let failure = JobFailure::CannotCreateDir {
                    dir: dir.to_path_buf(),
                    error: e.to_string(),
                };
                return outcome(Some(failure), String::new());
            }
        }
        let compiler = &job.command[0];
        match self.run(job) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let failure = JobFailure::CompilerNotFound {
                    compiler: compiler.clone(),
                    flags_source: job.flags_source.clone(),
                };
                outcome(Some(failure), String::new())
            }
            Err(e) => {
                let failure = JobFailure::CannotStart {
                    compiler: compiler.clone(),
                    error: e.to_string(),
                };
                outcome(Some(failure), String::new())
            }
            Ok((status, output)) if !status.success() => {
                let failure = JobFailure::compiler(compiler, Termination::of(status), &output);
                outcome(Some(failure), output)
            }
            Ok((_, output)) => outcome(native_problem(job), output),
        }
    }
}

/// What is wrong with a job's native object after its compiler exited 0, if anything. clang
/// exits 0 and writes an empty object when it cannot load the summary shard ("Error loading
/// index file"), so existence alone proves nothing.
pub fn native_problem(job: &BackendJob) -> Option<JobFailure> {
    let native = job.cwd.join(&job.native);
    if !native.is_file() {
        return Some(JobFailure::NoOutput {
            native: job.native.clone(),
        });
    }
    if crate::inputs::kind_of_file(&native) != crate::inputs::FileKind::Elf {
        return Some(JobFailure::NotAnObject {
            native: job.native.clone(),
            shard: job.shard.clone(),
        });
    }
    None
}

/// How many jobs may run at once.
pub enum Slots {
    /// `-j N`, or the CPU count.
    Fixed(usize),
    /// GNU make's jobserver: one implicit slot, more by token.
    Jobserver(jobserver::Client),
}

impl Slots {
    /// make's jobserver when MAKEFLAGS passes a usable one, else `default` slots.
    pub fn from_env_or(default: usize) -> Slots {
        // SAFETY: the descriptors MAKEFLAGS names must still be make's, not numbers reused by
        // files this process opened. The only descriptors opened before this that stay open
        // are the signal handler's socket pair, and `true` makes the crate refuse descriptors
        // that are not pipes.
        let found = unsafe { jobserver::Client::from_env_ext(true) };
        match found.client {
            Ok(client) => Slots::Jobserver(client),
            Err(_) => Slots::Fixed(default.max(1)),
        }
    }

    /// How many jobs are likely to run at once on this machine: `-j N` up to the CPU count,
    /// and with make's jobserver the CPU count (a link mostly runs when little else does).
    pub fn likely_at_once(&self) -> usize {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        match self {
            Slots::Fixed(n) => (*n).clamp(1, cpus),
            Slots::Jobserver(_) => cpus,
        }
    }

    /// How many threads this process's own short work (cache lookups) may use: `-j N` up to
    /// the CPU count, or make's implicit slot plus the tokens free at once, which are given
    /// back when the returned tokens are dropped.
    pub fn threads_now(&self) -> (usize, Vec<jobserver::Acquired>) {
        match self {
            Slots::Fixed(_) => (self.likely_at_once(), Vec::new()),
            Slots::Jobserver(client) => {
                let tokens: Vec<_> = (1..self.likely_at_once())
                    .map_while(|_| client.try_acquire().ok().flatten())
                    .collect();
                (1 + tokens.len(), tokens)
            }
        }
    }
}

/// Runs one job, turning a panic into the job's failure: this loop waits for every job's
/// `Finished`, so a job thread that died without sending one would hang the run.
fn run_caught(run: &(dyn Fn(&BackendJob) -> JobOutcome + Sync), job: &BackendJob) -> JobOutcome {
    let start = Instant::now();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(job)))
        .unwrap_or_else(|panic| panicked(panic, start))
}

/// The failure of a job whose run panicked (begun at `start`), with the panic's message.
fn panicked(panic: Box<dyn std::any::Any + Send>, start: Instant) -> JobOutcome {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    JobOutcome {
        failure: Some(JobFailure::Internal(what)),
        output: String::new(),
        duration: start.elapsed(),
        executed_by: ExecutedBy::Local,
    }
}

/// What a helper thread returned; a panic there is a bug to show, as it would have been on
/// this thread.
pub(crate) fn join_or_resume<T>(thread: std::thread::ScopedJoinHandle<'_, T>) -> T {
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The result of running all jobs: one outcome per job, in the order of `jobs`; `None` for jobs
/// not started because an earlier one failed.
pub type Outcomes = Vec<Option<JobOutcome>>;

/// Asks `look_up` about every job, on `threads` threads that each take the next job as they
/// finish one, and returns its answers in the order of `jobs`: `None` for a job it left to
/// [`dispatch`] (or did not reach because the run was interrupted). For cache lookups, which
/// answer most jobs of a rebuild: through [`dispatch`] each cost two hand-overs between
/// threads, more than the lookup itself.
pub fn look_up_all(
    jobs: &[BackendJob],
    threads: usize,
    look_up: &(dyn Fn(&BackendJob) -> Option<JobOutcome> + Sync),
) -> Outcomes {
    let unasked = SharedItems::new(jobs);
    let work = || {
        let mut answers = Vec::new();
        for (index, job) in unasked.take_indexed() {
            if interrupts().cancelled.load(Ordering::SeqCst) {
                break;
            }
            let start = Instant::now();
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| look_up(job)))
                .unwrap_or_else(|panic| Some(panicked(panic, start)));
            answers.extend(answer.map(|outcome| (index, outcome)));
        }
        answers
    };
    let mut outcomes: Outcomes = vec![None; jobs.len()];
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let answers = helpers.into_iter().flat_map(join_or_resume);
        for (index, outcome) in work().into_iter().chain(answers) {
            outcomes[index] = Some(outcome);
        }
    });
    outcomes
}

/// Items that threads share out: each takes the next one no thread has taken, so that every
/// item is taken once, by whichever thread is free.
pub struct SharedItems<'a, T> {
    items: &'a [T],
    next: AtomicUsize,
}

impl<'a, T> SharedItems<'a, T> {
    pub fn new(items: &'a [T]) -> Self {
        SharedItems {
            items,
            next: AtomicUsize::new(0),
        }
    }

    /// The items not taken yet, each taken as this iterator reaches it.
    pub fn take(&self) -> impl Iterator<Item = &'a T> + '_ {
        self.take_indexed().map(|(_, item)| item)
    }

    /// [`SharedItems::take`], with each item's position in the slice.
    pub fn take_indexed(&self) -> impl Iterator<Item = (usize, &'a T)> + '_ {
        std::iter::from_fn(|| {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            Some((index, self.items.get(index)?))
        })
    }
}

/// How [`dispatch`] runs a job.
pub type RunJob<'a> = &'a (dyn Fn(&BackendJob) -> JobOutcome + Sync);
/// Work [`dispatch`] runs on the slots no job waits for, which the calls share: each takes
/// what the others have not (see [`SharedItems`]), and returns once nothing is left.
pub type IdleWork<'a> = &'a (dyn Fn() + Sync);

/// Runs `jobs` with `run`, those of the highest expected `costs` first, emitting events to
/// `reporter` on this thread, and `idle_work` on every slot that is free once no job waits for
/// one, until a call of it has returned (at once without jobs; not at all if the run is
/// interrupted): work that must be done before the jobs' end but need not delay any of them,
/// which the last job's slot helps finish when it ends first (a kernel relink's hits took
/// 4.5-6 ms to publish on one slot, and held the final link up by up to 4.5 ms).
/// Without `keep_going`, no new job starts after a failure.
///
/// This thread owns all run state: it starts a job whenever a slot is free, and with make's
/// jobserver it asks for one token per waiting job through the jobserver's helper thread, so a
/// request can be dropped once no job waits (a blocking acquire would wait forever for tokens
/// that nobody holds). A job's token goes back to make as soon as its end has been reported.
pub fn dispatch(
    jobs: &[&BackendJob],
    costs: &[u64],
    slots: &Slots,
    keep_going: bool,
    (run, idle_work): (RunJob, Option<IdleWork>),
    reporter: &mut dyn Reporter,
) -> Outcomes {
    let mut pending: std::collections::VecDeque<usize> = (0..jobs.len()).collect();
    pending
        .make_contiguous()
        .sort_by_key(|&i| std::cmp::Reverse(costs[i]));
    enum Message {
        Token(std::io::Result<jobserver::Acquired>),
        Finished(usize, JobOutcome),
        IdleWorkDone,
    }
    /// What a worker is given instead of a job's index for `idle_work`.
    const IDLE_WORK: usize = usize::MAX;
    // Set once a call of the idle work returns: the work is all taken then.
    let mut idle_work_done = idle_work.is_none();
    let (tx, rx) = mpsc::channel::<Message>();
    let mut outcomes: Outcomes = vec![None; jobs.len()];
    // Slots this process may use without a token: `-j N`, or make's one implicit slot.
    let mut free_slots = match slots {
        Slots::Fixed(n) => (*n).max(1),
        Slots::Jobserver(_) => 1,
    };
    let helper = match slots {
        Slots::Jobserver(client) => {
            let tx = tx.clone();
            client
                .clone()
                .into_helper_thread(move |token| {
                    let _ = tx.send(Message::Token(token));
                })
                .ok()
        }
        Slots::Fixed(_) => None,
    };
    let mut requested = 0usize;
    let mut held_tokens: std::collections::HashMap<usize, jobserver::Acquired> =
        std::collections::HashMap::new();
    let mut running = 0usize;
    let mut stopped = false;
    // Jobs go to worker threads that take one after another: a thread per job cost thousands
    // of thread starts in a link of mostly cache hits. A worker is added only when every
    // one is busy, so there are never more than jobs ran at once.
    let (work_tx, work_rx) = mpsc::channel::<usize>();
    let work_rx = std::sync::Mutex::new(work_rx);
    let mut workers = 0usize;
    std::thread::scope(|scope| {
        let mut start = |index: usize, running: usize, reporter: &mut dyn Reporter| {
            if index != IDLE_WORK {
                reporter.on_event(&Event::JobStarted { job: jobs[index] });
            }
            if workers < running {
                workers += 1;
                let (tx, work_rx) = (tx.clone(), &work_rx);
                scope.spawn(move || loop {
                    let next = work_rx.lock().unwrap().recv();
                    let Ok(index) = next else { break };
                    if index == IDLE_WORK {
                        let work = idle_work.expect("idle work was given");
                        // A panic there is a bug to show, once the jobs' slots are settled.
                        let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
                        let _ = tx.send(Message::IdleWorkDone);
                        if let Err(panic) = done {
                            std::panic::resume_unwind(panic);
                        }
                        continue;
                    }
                    let _ = tx.send(Message::Finished(index, run_caught(run, jobs[index])));
                });
            }
            let _ = work_tx.send(index);
        };
        loop {
            let cancelled = interrupts().cancelled.load(Ordering::SeqCst);
            while free_slots > 0 && !stopped && !cancelled {
                let Some(index) = pending.pop_front() else {
                    break;
                };
                free_slots -= 1;
                running += 1;
                start(index, running, reporter);
            }
            while free_slots > 0 && (pending.is_empty() || stopped) && !cancelled && !idle_work_done
            {
                free_slots -= 1;
                running += 1;
                start(IDLE_WORK, running, reporter);
            }
            if let Some(helper) = &helper {
                while requested < pending.len() && !stopped && !cancelled {
                    helper.request_token();
                    requested += 1;
                }
            }
            if running == 0 && (pending.is_empty() || stopped || cancelled) {
                break;
            }
            let Ok(message) = rx.recv() else { break };
            match message {
                Message::Token(token) => {
                    requested = requested.saturating_sub(1);
                    match (token, pending.pop_front()) {
                        (Ok(token), Some(index)) if !stopped && !cancelled => {
                            held_tokens.insert(index, token);
                            running += 1;
                            start(index, running, reporter);
                        }
                        (_, Some(index)) => pending.push_front(index),
                        (_, None) => {}
                    }
                }
                Message::IdleWorkDone => {
                    idle_work_done = true;
                    running -= 1;
                    free_slots += 1;
                }
                Message::Finished(index, outcome) => {
                    running -= 1;
                    if !outcome.succeeded() && !keep_going {
                        stopped = true;
                    }
                    reporter.on_event(&Event::JobFinished {
                        job: jobs[index],
                        outcome: &outcome,
                    });
                    outcomes[index] = Some(outcome);
                    // Report the end before giving the slot back, so that no report ever shows
                    // more jobs at once than there were slots.
                    if held_tokens.remove(&index).is_none() {
                        free_slots += 1;
                    }
                }
            }
        }
        // Idle workers end when no more work can come.
        drop(work_tx);
    });
    // Dropping the helper cancels token requests still outstanding.
    drop(helper);
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quiet;
    impl Reporter for Quiet {
        fn on_event(&mut self, _: &Event) {}
    }

    fn job(name: &str) -> BackendJob {
        BackendJob::placeholder(name, 0)
    }

    /// What a job that ran locally and succeeded at once returns.
    fn succeeded() -> JobOutcome {
        JobOutcome {
            failure: None,
            output: String::new(),
            duration: std::time::Duration::ZERO,
            executed_by: ExecutedBy::Local,
        }
    }

    #[test]
    fn a_panicking_job_fails_and_the_run_ends() {
        let jobs = [job("a.o"), job("boom.o"), job("c.o")];
        let run = |job: &BackendJob| {
            if job.module.as_os_str() == "boom.o" {
                panic!("index out of range");
            }
            succeeded()
        };
        // Run on another thread so that a hang fails the test instead of stalling it.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let jobs: Vec<&BackendJob> = jobs.iter().collect();
            let outcomes = dispatch(
                &jobs,
                &[0; 3],
                &Slots::Fixed(2),
                true,
                (&run, None),
                &mut Quiet,
            );
            let _ = tx.send(outcomes);
        });
        let outcomes = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the run ends");
        let failure = outcomes[1].as_ref().unwrap().failure_text().unwrap();
        assert!(failure.contains("index out of range"), "{failure}");
        assert!(
            outcomes[0].as_ref().unwrap().succeeded() && outcomes[2].as_ref().unwrap().succeeded()
        );
    }

    /// Jobs start in order of their expected costs, the highest first, whatever their sizes.
    #[test]
    fn jobs_start_longest_expected_first() {
        let jobs: Vec<BackendJob> = (0..4).map(|i| job(&format!("m{i}.o"))).collect();
        let started = std::sync::Mutex::new(Vec::new());
        let run = |job: &BackendJob| {
            started.lock().unwrap().push(job.module.clone());
            succeeded()
        };
        dispatch(
            &jobs.iter().collect::<Vec<_>>(),
            &[5, 40, 1, 7],
            &Slots::Fixed(1),
            false,
            (&run, None),
            &mut Quiet,
        );
        let order: Vec<PathBuf> = ["m1.o", "m3.o", "m0.o", "m2.o"].map(PathBuf::from).into();
        assert_eq!(*started.lock().unwrap(), order);
    }

    /// The idle work runs on slots no job waits for: once every job has started (or none may
    /// start after a failure), never beside as many jobs as there are slots, and at once when
    /// there are no jobs; every slot that comes free before it is done takes a share, and each
    /// item is done once.
    #[test]
    fn idle_work_runs_on_the_slots_no_job_waits_for() {
        /// Counts the jobs started, as the dispatcher reports them before handing them over.
        struct Starts<'a>(&'a AtomicUsize);
        impl Reporter for Starts<'_> {
            fn on_event(&mut self, event: &Event) {
                if let Event::JobStarted { .. } = event {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        for (count, failing) in [(0, None), (6, None), (7, None), (6, Some("m1.o"))] {
            let jobs: Vec<BackendJob> = (0..count).map(|i| job(&format!("m{i}.o"))).collect();
            let (at_once, most, started) = (
                AtomicUsize::new(0),
                AtomicUsize::new(0),
                AtomicUsize::new(0),
            );
            let busy = |ms| {
                let now = at_once.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                at_once.fetch_sub(1, Ordering::SeqCst);
            };
            let run = |job: &BackendJob| {
                busy(5);
                match failing == job.module.to_str() {
                    true => JobOutcome {
                        failure: Some(JobFailure::Internal("failed".into())),
                        ..succeeded()
                    },
                    false => succeeded(),
                }
            };
            let items: Vec<usize> = (0..20).collect();
            let shared = SharedItems::new(&items);
            let (calls, done) = (
                std::sync::Mutex::new(Vec::new()),
                std::sync::Mutex::new(Vec::new()),
            );
            let idle = || {
                calls.lock().unwrap().push(started.load(Ordering::SeqCst));
                for item in shared.take() {
                    busy(1);
                    done.lock().unwrap().push(*item);
                }
            };
            let outcomes = dispatch(
                &jobs.iter().collect::<Vec<_>>(),
                &vec![0; count],
                &Slots::Fixed(2),
                false,
                (&run, Some(&idle)),
                &mut Starts(&started),
            );
            let ran = outcomes.iter().flatten().count();
            let calls = calls.into_inner().unwrap();
            assert!(
                !calls.is_empty() && calls.iter().all(|&seen| seen == ran),
                "{count} jobs, {failing:?}: {calls:?}"
            );
            // Both slots come free long before the 20 ms of idle work are done (with an odd
            // count, the last job's slot after the first call has started).
            if failing.is_none() {
                assert_eq!(calls.len(), 2, "{count} jobs: a share for each slot");
            }
            let mut done = done.into_inner().unwrap();
            done.sort();
            assert_eq!(done, items, "every item once");
            assert!(most.load(Ordering::SeqCst) <= 2);
            if failing.is_some() {
                assert!(ran < count, "no job starts after the failure");
            }
        }
    }

    /// Many jobs, with a fixed number of slots or make's jobserver: every job runs, no more at
    /// once than there are slots, and on no more threads than that (threads are reused).
    #[test]
    fn jobs_run_on_as_many_threads_as_run_at_once() {
        use std::sync::Mutex;
        let jobserver = jobserver::Client::new(2).unwrap();
        // make's one implicit slot and two tokens.
        for (slots, most) in [(Slots::Fixed(3), 3), (Slots::Jobserver(jobserver), 3)] {
            let jobs: Vec<BackendJob> = (0..200).map(|i| job(&format!("m{i}.o"))).collect();
            let (now, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
            let threads = Mutex::new(std::collections::HashSet::new());
            let run = |_: &BackendJob| {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(running, Ordering::SeqCst);
                threads.lock().unwrap().insert(std::thread::current().id());
                std::thread::sleep(std::time::Duration::from_micros(200));
                now.fetch_sub(1, Ordering::SeqCst);
                succeeded()
            };
            let jobs: Vec<&BackendJob> = jobs.iter().collect();
            let outcomes = dispatch(&jobs, &[0; 200], &slots, false, (&run, None), &mut Quiet);
            assert!(outcomes
                .iter()
                .all(|o| o.as_ref().is_some_and(|o| o.succeeded())));
            assert!(peak.load(Ordering::SeqCst) <= most);
            let threads = threads.lock().unwrap().len();
            assert!((1..=most).contains(&threads), "{threads} threads");
        }
    }

    /// Every job is asked about once, the answers land at their jobs, a job left unanswered
    /// stays `None`, a panic is its job's failure, and the work is spread over the threads.
    #[test]
    fn look_up_all_answers_each_job_in_place() {
        let jobs: Vec<BackendJob> = (0..300).map(|i| job(&format!("m{i}.o"))).collect();
        let asked = Mutex::new(Vec::new());
        let threads = Mutex::new(std::collections::HashSet::new());
        let look_up = |job: &BackendJob| {
            let name = job.module.to_string_lossy().into_owned();
            asked.lock().unwrap().push(name.clone());
            threads.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(std::time::Duration::from_micros(100));
            let number: usize = name[1..name.len() - 2].parse().unwrap();
            match number % 3 {
                0 => Some(JobOutcome {
                    duration: std::time::Duration::from_millis(number as u64),
                    ..succeeded()
                }),
                1 => None,
                _ if number == 11 => panic!("lookup of m11.o broke"),
                _ => None,
            }
        };
        let answers = look_up_all(&jobs, 3, &look_up);
        assert_eq!(asked.lock().unwrap().len(), 300, "each job asked once");
        assert!(threads.lock().unwrap().len() > 1, "one thread did all");
        for (i, answer) in answers.iter().enumerate() {
            match (i % 3, answer) {
                (0, Some(o)) => assert_eq!(o.duration.as_millis() as usize, i),
                (_, Some(o)) if i == 11 => {
                    assert!(o.failure_text().unwrap().contains("lookup of m11.o broke"))
                }
                (_, None) if i % 3 != 0 && i != 11 => {}
                _ => panic!("job {i}: {answer:?}"),
            }
        }
    }

    /// Short work runs on `-j N` threads up to the CPU count; with a jobserver whose tokens
    /// cannot be taken without waiting (one made in this process), on make's implicit slot
    /// alone. The tokens a real jobserver gives are checked under make, in tests/options.rs.
    #[test]
    fn threads_now_never_exceed_the_cpus_or_wait_for_a_token() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(Slots::Fixed(64).threads_now().0, cpus);
        assert_eq!(Slots::Fixed(1).threads_now().0, 1);
        let client = jobserver::Client::new(8).unwrap();
        let (threads, tokens) = Slots::Jobserver(client).threads_now();
        assert_eq!((threads, tokens.len()), (1, 0));
    }
}
