//! Human output: a progress bar on a terminal, else one kbuild-style line per job; the
//! end-of-run summary; `-v` command echo.

use crate::events::{self, Event, ExecutedBy, JobOutcome, Reporter};
use crate::exec::Slots;
use crate::job::BackendJob;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Totals a run's jobs for the summary line.
#[derive(Default)]
pub struct Tally {
    pub modules: usize,
    pub summed: Duration,
    pub slowest: Option<(Duration, String)>,
    pub cache_hits: usize,
    pub remote: usize,
}

impl Tally {
    pub fn record(&mut self, event: &Event) {
        if let Event::JobFinished { job, outcome } = event {
            self.modules += 1;
            match outcome.executed_by {
                ExecutedBy::Cache => self.cache_hits += 1,
                ExecutedBy::Remote => self.remote += 1,
                ExecutedBy::Local => {}
            }
            self.summed += outcome.duration;
            if self
                .slowest
                .as_ref()
                .is_none_or(|(d, _)| outcome.duration > *d)
            {
                self.slowest = Some((outcome.duration, job.name()));
            }
        }
    }

    /// One line: modules, wall time, summed job time, the slowest module (the critical path:
    /// no run can be shorter), how far the run was from a perfect spread of the summed time over
    /// the slots, and cache use.
    pub fn summary(&self, wall: Duration, parallel: usize) -> String {
        let slots = parallel.clamp(1, self.modules.max(1));
        let ideal = self.summed.as_secs_f64() / slots as f64;
        let mut line = format!(
            "thindist: {} modules in {:.2}s wall, {:.2}s summed job time (ideal {:.2}s on {} slots)",
            self.modules,
            wall.as_secs_f64(),
            self.summed.as_secs_f64(),
            ideal,
            slots
        );
        if let Some((d, module)) = &self.slowest {
            line.push_str(&format!(
                ", critical path {:.2}s {}",
                d.as_secs_f64(),
                module
            ));
        }
        line.push_str(&format!(
            "; cache {} hits, {} misses",
            self.cache_hits,
            self.modules - self.cache_hits
        ));
        if self.remote > 0 {
            line.push_str(&format!("; {} remote", self.remote));
        }
        line
    }
}

/// Progress on a terminal, kbuild-style lines elsewhere.
pub struct ConsoleReporter {
    bar: Option<indicatif::ProgressBar>,
    verbose: bool,
    /// Lines held for one write (see [`Session::batched`]).
    held: Option<String>,
}

impl ConsoleReporter {
    /// The bar's length is set when the thin link has said how many modules there are.
    pub fn new(verbose: bool) -> Self {
        let bar = (std::io::stderr().is_terminal() && !verbose).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} LTO [{bar:30}] {pos}/{len} {elapsed} {wide_msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        ConsoleReporter {
            bar,
            verbose,
            held: None,
        }
    }

    fn print(&mut self, line: &str) {
        match (&self.bar, &mut self.held) {
            (Some(bar), _) => bar.println(line),
            (None, Some(held)) => {
                held.push_str(line);
                held.push('\n');
            }
            // One write, not one for the line and one for its newline as `eprintln!` does.
            (None, None) => write_stderr(&format!("{line}\n")),
        }
    }

    /// Holds the lines printed from now on until [`ConsoleReporter::release`].
    fn hold(&mut self) {
        self.held.get_or_insert_with(String::new);
    }

    /// Writes the held lines at once.
    fn release(&mut self) {
        if let Some(held) = self.held.take() {
            write_stderr(&held);
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Writes `text` to standard error, in one write where the system takes it whole.
fn write_stderr(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

impl Reporter for ConsoleReporter {
    fn on_event(&mut self, event: &Event) {
        match event {
            Event::ThinLinkStarted { command } | Event::FinalLinkStarted { command }
                if self.verbose =>
            {
                self.print(&crate::cmdline::shell_line(command));
            }
            Event::ThinLinkFinished { modules, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_length(*modules as u64);
                }
            }
            Event::JobStarted { job } => {
                if self.verbose {
                    self.print(&crate::cmdline::shell_line(&job.command));
                } else if self.bar.is_none() {
                    self.print(&format!("  LTO     {}", job.name()));
                }
                if let Some(bar) = &self.bar {
                    bar.set_message(job.name());
                }
            }
            Event::JobFinished { outcome, .. } => {
                if let Some(warnings) = outcome.warnings() {
                    self.print(warnings);
                }
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
            }
            Event::Warning { message } => self.print(&events::warning_line(message)),
            _ => {}
        }
    }
}

/// Reporters beyond the console that a run feeds (trace, build log).
pub type ExtraReporters<'a> = Vec<&'a mut dyn Reporter>;

/// The reporting side of one run: console output, the tally for the summary, and any extra
/// consumers of events. Warnings raised on job threads while it lives reach them as events.
pub struct Session<'a> {
    console: ConsoleReporter,
    /// No progress, summary or flags warnings: the link of a compile-and-link command.
    quiet: bool,
    tally: Tally,
    extra: ExtraReporters<'a>,
    started: Instant,
    parallel: usize,
}

impl<'a> Session<'a> {
    pub fn new(slots: &Slots, verbose: bool, extra: ExtraReporters<'a>, quiet: bool) -> Self {
        let parallel = match slots {
            Slots::Fixed(n) => *n,
            Slots::Jobserver(_) => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        events::hold_warnings();
        Session {
            console: ConsoleReporter::new(verbose),
            quiet: quiet && !verbose,
            tally: Tally::default(),
            extra,
            started: Instant::now(),
            parallel,
        }
    }

    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// The run's cache hits and misses so far.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        let hits = self.tally.cache_hits;
        (hits as u64, (self.tally.modules - hits) as u64)
    }

    pub fn warn(&mut self, message: &str) {
        self.on_event(&Event::Warning { message });
    }

    /// Runs `report` with the console's lines held and written at once at its end: the
    /// hundreds of cache hits reported together after the lookups were a write each (two,
    /// with the newline) between the lookups and the first job that runs.
    pub fn batched(&mut self, report: impl FnOnce(&mut Self)) {
        self.console.hold();
        report(self);
        self.console.release();
    }

    /// Shows the warnings raised on other threads since the last event.
    fn show_pending_warnings(&mut self, release: bool) {
        for message in events::take_warnings(release) {
            self.send(&Event::Warning { message: &message });
        }
    }

    fn send(&mut self, event: &Event) {
        match event {
            Event::Warning { message } if self.quiet => {
                eprintln!("{}", events::warning_line(message))
            }
            Event::JobFinished { outcome, .. } if self.quiet => {
                if let Some(warnings) = outcome.warnings() {
                    eprintln!("{warnings}");
                }
            }
            _ if self.quiet => {}
            _ => self.console.on_event(event),
        }
        self.tally.record(event);
        for r in self.extra.iter_mut() {
            r.on_event(event);
        }
    }

    /// Clears the progress bar and prints the summary line.
    pub fn finish(&mut self) {
        self.show_pending_warnings(true);
        if self.quiet {
            return;
        }
        self.console.finish();
        eprintln!(
            "{}",
            self.tally.summary(self.started.elapsed(), self.parallel)
        );
    }
}

impl Drop for Session<'_> {
    /// A run that ended early (an error) still shows its warnings.
    fn drop(&mut self) {
        self.show_pending_warnings(true);
    }
}

impl Reporter for Session<'_> {
    fn on_event(&mut self, event: &Event) {
        self.show_pending_warnings(false);
        self.send(event);
    }
}

/// Prints a failed job: the module, the reason, the compiler's output and the command that
/// reproduces it.
pub fn report_failure(job: &BackendJob, outcome: &JobOutcome) {
    eprintln!(
        "thindist: error: back-end compile of {} failed: {}",
        job.name(),
        outcome.failure_text().unwrap_or_default()
    );
    if !outcome.output.trim().is_empty() {
        eprintln!("{}", outcome.output.trim_end());
    }
    eprintln!("  flags from: {}", job.flags_source);
    eprintln!(
        "  to reproduce: cd {} && {}",
        job.cwd.display(),
        crate::cmdline::shell_line(&job.command)
    );
}

/// Warns about modules whose saved flags could not be used or were missing.
pub fn warn_about_flags(
    session: &mut Session,
    problems: &[crate::flags::FlagsProblem],
    without_flags: &[PathBuf],
) {
    for problem in problems {
        session.warn(&format!(
            "{}: {}; compiled with options derived from the link",
            problem.module.display(),
            problem.message
        ));
    }
    if !without_flags.is_empty() {
        let shown: Vec<String> = without_flags
            .iter()
            .take(5)
            .map(|m| m.display().to_string())
            .collect();
        let more = without_flags.len().saturating_sub(shown.len());
        session.warn(&format!(
            "{} module(s) had no saved flags and were compiled with options derived from the link: {}{}",
            without_flags.len(),
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ));
    }
}
