//! What a run reports as it goes. The dispatcher emits these; reporters (progress, lines,
//! summary, trace, build log) consume them and never reach back into the run.

use crate::job::{BackendJob, FlagsSource};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where a job's native object came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExecutedBy {
    Local,
    Remote,
    Cache,
}

impl ExecutedBy {
    pub fn name(self) -> &'static str {
        match self {
            ExecutedBy::Local => "local",
            ExecutedBy::Remote => "remote",
            ExecutedBy::Cache => "cache",
        }
    }
}

/// How a compiler that failed ended: its exit code, or the signal that killed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Termination {
    Exit(i32),
    Signal(i32),
}

impl Termination {
    pub fn of(status: std::process::ExitStatus) -> Termination {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Termination::Exit(code),
            (None, signal) => Termination::Signal(signal.unwrap_or(0)),
        }
    }
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        use std::os::unix::process::ExitStatusExt;
        match self {
            Termination::Exit(code) => write!(f, "exit status: {code}"),
            // The standard library names the signal: "signal: 9 (SIGKILL)".
            Termination::Signal(signal) => {
                write!(f, "{}", std::process::ExitStatus::from_raw(*signal))
            }
        }
    }
}

/// Why a back-end job failed. Local and remote runs fail the same ways and are reported
/// alike; the outcome's [`ExecutedBy`] says where it ran.
#[derive(Clone, Debug)]
pub enum JobFailure {
    /// The compiler the command names does not exist.
    CompilerNotFound {
        compiler: String,
        flags_source: FlagsSource,
    },
    /// The compiler could not be started for another reason.
    CannotStart {
        compiler: String,
        error: String,
    },
    /// The directory of the native object could not be created.
    CannotCreateDir {
        dir: PathBuf,
        error: String,
    },
    /// The compiler failed. `unreadable_bitcode`: its output says it cannot read the module.
    Compiler {
        compiler: String,
        end: Termination,
        unreadable_bitcode: bool,
    },
    /// The compiler exited 0 but wrote no native object.
    NoOutput {
        native: PathBuf,
    },
    /// The compiler exited 0 but what it wrote is not an object file (clang does that when it
    /// cannot load the summary shard).
    NotAnObject {
        native: PathBuf,
        shard: PathBuf,
    },
    /// An input could not be read or placed in the remote input root.
    Input(String),
    /// The remote server failed the action, with the gRPC status code when it gave one.
    Remote {
        code: Option<String>,
        message: String,
        attempts: u32,
    },
    Interrupted,
    /// The native object could not be published beside its bitcode.
    CannotPublish {
        dest: PathBuf,
        error: String,
    },
    /// thindist itself failed while running the job (a bug).
    Internal(String),
}

impl JobFailure {
    /// The failure of a compiler that ended with `end` after printing `output`.
    pub fn compiler(compiler: &str, end: Termination, output: &str) -> JobFailure {
        JobFailure::Compiler {
            compiler: compiler.to_string(),
            end,
            unreadable_bitcode: looks_like_bitcode_version_mismatch(output),
        }
    }

    /// Whether the compiler ran and this is what it did (as opposed to the run around it).
    fn is_the_compilers(&self) -> bool {
        matches!(
            self,
            JobFailure::Compiler { .. }
                | JobFailure::NoOutput { .. }
                | JobFailure::NotAnObject { .. }
        )
    }
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

impl fmt::Display for JobFailure {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            JobFailure::CompilerNotFound {
                compiler,
                flags_source,
            } => write!(f, "compiler {compiler} not found ({flags_source})"),
            JobFailure::CannotStart { compiler, error } => {
                write!(f, "cannot run compiler {compiler}: {error}")
            }
            JobFailure::CannotCreateDir { dir, error } => {
                write!(f, "cannot create {}: {error}", dir.display())
            }
            JobFailure::Compiler {
                compiler,
                end,
                unreadable_bitcode,
            } => {
                write!(f, "compiler exited with {end}")?;
                if *unreadable_bitcode {
                    write!(f, "; {compiler} cannot read this bitcode: it is probably older than the compiler that wrote it")?;
                }
                Ok(())
            }
            JobFailure::NoOutput { native } => {
                write!(f, "compiler exited 0 but wrote no {}", native.display())
            }
            JobFailure::NotAnObject { native, shard } => write!(
                f,
                "compiler exited 0 but {} is not an object file (empty or cut short; is the shard {} intact?)",
                native.display(),
                shard.display()
            ),
            JobFailure::Input(message) => f.write_str(message),
            JobFailure::Remote {
                code,
                message,
                attempts,
            } => {
                write!(f, "remote execution failed after {attempts} attempt(s)")?;
                if let Some(code) = code {
                    write!(f, " (gRPC status {code})")?;
                }
                write!(f, ": {message}")
            }
            JobFailure::Interrupted => f.write_str("interrupted"),
            JobFailure::CannotPublish { dest, error } => {
                write!(f, "cannot publish the native object as {}: {error}", dest.display())
            }
            JobFailure::Internal(what) => write!(
                f,
                "thindist failed internally while running this job (a bug; please report it): {what}"
            ),
        }
    }
}

/// How one job ended.
#[derive(Clone, Debug)]
pub struct JobOutcome {
    /// `None` on success, else why it failed.
    pub failure: Option<JobFailure>,
    /// What the compiler printed (stdout then stderr).
    pub output: String,
    pub duration: Duration,
    pub executed_by: ExecutedBy,
}

impl JobOutcome {
    pub fn succeeded(&self) -> bool {
        self.failure.is_none()
    }

    /// What the compiler of a job that succeeded said (its warnings), to be shown as a
    /// compiler process's would be; a failed job's output goes with its failure report.
    pub fn warnings(&self) -> Option<&str> {
        let text = self.output.trim_end();
        (self.succeeded() && !text.trim_start().is_empty()).then_some(text)
    }

    /// Why the job failed, saying so when the compiler ran on a remote worker.
    pub fn failure_text(&self) -> Option<String> {
        let failure = self.failure.as_ref()?;
        let remotely = self.executed_by == ExecutedBy::Remote && failure.is_the_compilers();
        Some(format!(
            "{failure}{}",
            if remotely { " (remotely)" } else { "" }
        ))
    }
}

#[derive(Debug)]
pub enum Event<'a> {
    ThinLinkStarted {
        command: &'a [String],
    },
    ThinLinkFinished {
        modules: usize,
        duration: Duration,
    },
    /// The cache has been asked about every job (before any runs), in `duration`; the
    /// `hits` it answered are reported next, each as started and finished.
    CacheLookupsFinished {
        hits: usize,
        duration: Duration,
    },
    JobStarted {
        job: &'a BackendJob,
    },
    JobFinished {
        job: &'a BackendJob,
        outcome: &'a JobOutcome,
    },
    FinalLinkStarted {
        command: &'a [String],
    },
    FinalLinkFinished {
        duration: Duration,
    },
    /// Something the user should know that does not stop the run; printed as
    /// `thindist: warning: MESSAGE`.
    Warning {
        message: &'a str,
    },
}

/// Warnings raised on threads that cannot reach the run's reporter (job threads: the cache,
/// the remote executor). While a run reports, they wait here until its reporter takes them
/// ([`take_warnings`]) and shows them as [`Event::Warning`], so they never garble a progress
/// bar; otherwise [`warn`] prints them at once.
static PENDING_WARNINGS: std::sync::Mutex<Option<Vec<String>>> = std::sync::Mutex::new(None);

/// A warning as it is printed.
pub fn warning_line(message: &str) -> String {
    format!("thindist: warning: {message}")
}

/// Raises a warning from any thread.
pub fn warn(message: String) {
    let mut pending = PENDING_WARNINGS.lock().unwrap_or_else(|e| e.into_inner());
    match pending.as_mut() {
        Some(waiting) => waiting.push(message),
        None => eprintln!("{}", warning_line(&message)),
    }
}

/// Starts holding warnings for a reporter to take.
pub fn hold_warnings() {
    let mut pending = PENDING_WARNINGS.lock().unwrap_or_else(|e| e.into_inner());
    pending.get_or_insert_with(Vec::new);
}

/// The warnings raised since the last call; with `release`, later ones are printed at once.
pub fn take_warnings(release: bool) -> Vec<String> {
    let mut pending = PENDING_WARNINGS.lock().unwrap_or_else(|e| e.into_inner());
    let taken = pending.as_mut().map(std::mem::take).unwrap_or_default();
    if release {
        *pending = None;
    }
    taken
}

/// A consumer of events.
pub trait Reporter {
    fn on_event(&mut self, event: &Event);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_the_same_wherever_the_compiler_ran() {
        let failure = JobFailure::compiler(
            "clang-14",
            Termination::Exit(1),
            "error: Unknown attribute kind (91)",
        );
        let outcome = |executed_by| JobOutcome {
            failure: Some(failure.clone()),
            output: String::new(),
            duration: Duration::ZERO,
            executed_by,
        };
        let hint = "compiler exited with exit status: 1; clang-14 cannot read this bitcode";
        let local = outcome(ExecutedBy::Local).failure_text().unwrap();
        let remote = outcome(ExecutedBy::Remote).failure_text().unwrap();
        assert!(local.starts_with(hint), "{local}");
        assert!(
            remote.starts_with(hint) && remote.ends_with(" (remotely)"),
            "{remote}"
        );
    }

    #[test]
    fn signals_are_named() {
        assert_eq!(
            Termination::Signal(libc::SIGKILL).to_string(),
            "signal: 9 (SIGKILL)"
        );
        assert_eq!(Termination::Exit(3).to_string(), "exit status: 3");
    }
}
