//! Human output: a progress bar on a terminal, else one kbuild-style line per job; the
//! end-of-run summary; `-v` command echo.

use crate::events::{Event, ExecutedBy, Reporter};
use std::io::IsTerminal;
use std::time::Duration;

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
        ConsoleReporter { bar, verbose }
    }

    fn print(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
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
            Event::JobFinished { .. } => {
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
            }
            _ => {}
        }
    }
}
