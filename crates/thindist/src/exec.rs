//! Running back-end jobs: the local executor (a compiler process per job) and the dispatcher
//! that starts jobs largest first, never more at once than make's jobserver or `-j` allows.

use crate::events::{Event, ExecutedBy, JobOutcome, Reporter};
use crate::job::BackendJob;
use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Instant;

/// Runs one job to completion. On success the native object is at `job.native`.
pub trait Executor: Sync {
    fn execute(&self, job: &BackendJob) -> JobOutcome;
}

/// Children and temporary outputs to clean up when the run is interrupted.
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

    /// The signal that interrupted the run, if one did.
    pub fn signal(&self) -> Option<i32> {
        Some(self.signal.load(Ordering::SeqCst)).filter(|s| *s != 0)
    }

    /// Stops every child and deletes temporary outputs: called on SIGINT/SIGTERM.
    pub fn interrupt(&self, signal: i32) {
        self.signal.store(signal, Ordering::SeqCst);
        self.cancelled.store(true, Ordering::SeqCst);
        for pid in self.children.lock().unwrap().iter() {
            // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGTERM);
            }
        }
        for path in self.temp_files.lock().unwrap().iter() {
            let _ = std::fs::remove_file(path);
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

/// Runs a command, recording its pid so an interrupt can stop it. Returns (exit status, output).
pub fn run_tracked(command: &mut Command) -> std::io::Result<(std::process::ExitStatus, String)> {
    if interrupts().cancelled.load(Ordering::SeqCst) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Interrupted,
            "interrupted",
        ));
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    interrupts().children.lock().unwrap().insert(pid);
    let result = child.wait_with_output();
    interrupts().children.lock().unwrap().remove(&pid);
    let output = result?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok((output.status, text))
}

/// Runs back-end compiles as processes on this machine.
pub struct LocalExecutor;

impl Executor for LocalExecutor {
    fn execute(&self, job: &BackendJob) -> JobOutcome {
        let start = Instant::now();
        let native = job.cwd.join(&job.native);
        let failure = |failure: String, output: String| {
            // Nothing invalid may stay where a valid object is expected.
            let _ = std::fs::remove_file(&native);
            JobOutcome {
                failure: Some(failure),
                output,
                duration: start.elapsed(),
                executed_by: ExecutedBy::Local,
            }
        };
        // A stale object from an earlier run must not pass for this run's output.
        let _ = std::fs::remove_file(&native);
        if let Some(dir) = native.parent() {
            if let Err(e) = std::fs::create_dir_all(dir) {
                return failure(
                    format!("cannot create {}: {e}", dir.display()),
                    String::new(),
                );
            }
        }
        let mut command = Command::new(&job.command[0]);
        command.args(&job.command[1..]).current_dir(&job.cwd);
        match run_tracked(&mut command) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => failure(
                format!(
                    "compiler {} not found ({})",
                    job.command[0],
                    job.flags_source.describe()
                ),
                String::new(),
            ),
            Err(e) => failure(
                format!("cannot run compiler {}: {e}", job.command[0]),
                String::new(),
            ),
            Ok((status, output)) if !status.success() => {
                let mut reason = format!("compiler exited with {status}");
                if looks_like_bitcode_version_mismatch(&output) {
                    reason.push_str(&format!(
                        "; {} cannot read this bitcode: it is probably older than the compiler that wrote it",
                        job.command[0]
                    ));
                }
                failure(reason, output)
            }
            Ok((_, output)) => match native_problem(job) {
                Some(problem) => failure(problem, output),
                None => JobOutcome {
                    failure: None,
                    output,
                    duration: start.elapsed(),
                    executed_by: ExecutedBy::Local,
                },
            },
        }
    }
}

/// What is wrong with a job's native object after its compiler exited 0, if anything. clang
/// exits 0 and writes an empty object when it cannot load the summary shard ("Error loading
/// index file"), so existence alone proves nothing.
pub fn native_problem(job: &BackendJob) -> Option<String> {
    let native = job.cwd.join(&job.native);
    if !native.is_file() {
        return Some(format!(
            "compiler exited 0 but wrote no {}",
            job.native.display()
        ));
    }
    if crate::inputs::kind_of_file(&native) != crate::inputs::FileKind::Elf {
        return Some(format!(
            "compiler exited 0 but {} is not an object file (empty or cut short; is the shard {} intact?)",
            job.native.display(),
            job.shard.display()
        ));
    }
    None
}

fn looks_like_bitcode_version_mismatch(output: &str) -> bool {
    [
        "Reader: 'LLVM",
        "Unknown attribute kind",
        "Invalid record",
        "Unknown bitstream version",
        "Invalid bitcode",
        "Malformed block",
        "Unsupported version",
    ]
    .iter()
    .any(|needle| output.contains(needle))
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
        // SAFETY: called once, early, before this process opens other files, as the crate requires.
        let found = unsafe { jobserver::Client::from_env_ext(true) };
        match found.client {
            Ok(client) => Slots::Jobserver(client),
            Err(_) => Slots::Fixed(default.max(1)),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Slots::Fixed(n) => format!("{n} parallel jobs"),
            Slots::Jobserver(_) => "make's jobserver".to_string(),
        }
    }
}

/// The result of running all jobs: one outcome per job, in the order of `jobs`; `None` for jobs
/// not started because an earlier one failed.
pub type Outcomes = Vec<Option<JobOutcome>>;

/// Runs `jobs` with `run`, largest first, emitting events to `reporter` on this thread.
/// Without `keep_going`, no new job starts after a failure.
pub fn dispatch(
    jobs: &[BackendJob],
    slots: &Slots,
    keep_going: bool,
    run: &(dyn Fn(&BackendJob) -> JobOutcome + Sync),
    reporter: &mut dyn Reporter,
) -> Outcomes {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(jobs[i].size));
    let queue = Mutex::new(order.into_iter());
    let stop = AtomicBool::new(false);
    let workers = match slots {
        Slots::Fixed(n) => (*n).min(jobs.len()).max(1),
        Slots::Jobserver(_) => jobs.len().clamp(1, 64),
    };
    enum Message {
        Started(usize),
        Finished(usize, JobOutcome),
    }
    let (tx, rx) = mpsc::channel::<Message>();
    let mut outcomes: Outcomes = vec![None; jobs.len()];
    std::thread::scope(|scope| {
        for worker in 0..workers {
            let tx = tx.clone();
            let queue = &queue;
            let stop = &stop;
            scope.spawn(move || loop {
                // Worker 0 runs on make's implicit slot; the others hold a token per job.
                let token = match slots {
                    Slots::Jobserver(client) if worker > 0 => match client.acquire() {
                        Ok(token) => Some(token),
                        Err(_) => return,
                    },
                    _ => None,
                };
                if stop.load(Ordering::SeqCst) || interrupts().cancelled.load(Ordering::SeqCst) {
                    return;
                }
                let Some(index) = queue.lock().unwrap().next() else {
                    return;
                };
                let _ = tx.send(Message::Started(index));
                let outcome = run(&jobs[index]);
                if !outcome.succeeded() && !keep_going {
                    stop.store(true, Ordering::SeqCst);
                }
                // Report the end before giving the slot back, so that no report ever shows more
                // jobs at once than there were slots.
                let _ = tx.send(Message::Finished(index, outcome));
                drop(token);
            });
        }
        drop(tx);
        for message in rx {
            match message {
                Message::Started(i) => reporter.on_event(&Event::JobStarted { job: &jobs[i] }),
                Message::Finished(i, outcome) => {
                    reporter.on_event(&Event::JobFinished {
                        job: &jobs[i],
                        outcome: &outcome,
                    });
                    outcomes[i] = Some(outcome);
                }
            }
        }
    });
    outcomes
}
