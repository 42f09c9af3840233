//! What a run reports as it goes. The dispatcher emits these; reporters (progress, lines,
//! summary, trace, build log) consume them and never reach back into the run.

use crate::job::BackendJob;
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

/// How one job ended.
#[derive(Clone, Debug)]
pub struct JobOutcome {
    /// `None` on success, else what went wrong, in words.
    pub failure: Option<String>,
    /// What the compiler printed (stdout then stderr).
    pub output: String,
    pub duration: Duration,
    pub executed_by: ExecutedBy,
}

impl JobOutcome {
    pub fn succeeded(&self) -> bool {
        self.failure.is_none()
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
}

/// A consumer of events.
pub trait Reporter {
    fn on_event(&mut self, event: &Event);
}
