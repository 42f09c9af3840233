//! One distributed link: the output it writes, its private work directory (where it is, and
//! its removal on every path), and its two runs of the real linker, the thin link and the
//! final link, both through the tracked process runner so that Ctrl-C stops either.

use crate::backend::Natives;
use crate::cmdline;
use crate::events::{Event, Reporter};
use crate::exec;
use crate::forkserver::ProgramServer;
use crate::linkargs::LinkArgs;
use crate::ltoopts::LtoOpt;
use crate::thinlink::{self, PreparedLink};
use crate::workdir::WorkDir;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Instant;

/// What the thin link wrote: the modules it listed, in its order, and the directory that holds
/// their summary shards and import lists.
pub struct ThinLinked {
    pub modules: Vec<PathBuf>,
    pub index_dir: PathBuf,
}

pub struct Link {
    linker: String,
    /// The linker's fork server, which the thin link and the final link fork from.
    linker_server: Option<ProgramServer>,
    cwd: PathBuf,
    prepared: PreparedLink,
    /// Declared last: removed after everything that names a path in it.
    work: WorkDir,
}

impl Link {
    /// Creates the work directory of the link `args` run by `linker` in `cwd` and prepares
    /// its inputs (extracting archive members with bitcode into it). `keep_work` (or lld's
    /// `--save-temps` on the link line) keeps the directory; `in_build_dir` puts it in the
    /// build directory (see [`crate::exec::Executor::needs_paths_in_build_dir`]).
    pub fn prepare(
        linker: &str,
        args: LinkArgs,
        cwd: &Path,
        keep_work: bool,
        in_build_dir: bool,
    ) -> Result<Link> {
        let keep = keep_work || args.lto_options().any(|o| *o == LtoOpt::SaveTemps);
        let output = output_name(&args).to_string();
        let work = WorkDir::create(keep, cwd, &output, in_build_dir)?;
        let prepared = thinlink::prepare(args, cwd, &work)?;
        Ok(Link {
            linker: linker.to_string(),
            linker_server: None,
            cwd: cwd.to_path_buf(),
            prepared,
            work,
        })
    }

    pub fn prepared(&self) -> &PreparedLink {
        &self.prepared
    }

    /// Gives the link its linker's fork server (see [`ProgramServer::spawn`]), whose thin link
    /// and final link then fork from it.
    pub fn use_linker_server(&mut self, server: Option<ProgramServer>) {
        self.linker_server = server;
    }

    /// Stops the linker's fork server once the final link has run.
    pub fn stop_linker_server(&self) {
        if let Some(server) = &self.linker_server {
            server.stop();
        }
    }

    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// Where the thin link is to write its shards and import lists (it may have to move them:
    /// see [`ThinLinked::index_dir`]).
    pub fn index_dir(&self) -> &Path {
        self.work.index()
    }

    /// Removes the summary shards and import lists: called once every back end has run.
    pub fn remove_index_files(&self) {
        self.work.remove_own_index_files();
    }

    /// Removes native objects from the work directory: called once the final link has read
    /// them (by threads that share the work, each with its own share).
    pub fn remove_natives<'a>(&self, natives: impl IntoIterator<Item = &'a PathBuf>) {
        self.work.remove_files(&self.cwd, natives);
    }

    pub fn args(&self) -> &LinkArgs {
        &self.prepared.args
    }

    /// Runs the thin link and returns the modules it listed, in its order, and where it wrote
    /// their shards and import lists.
    pub fn thin_link(&self, reporter: &mut dyn Reporter) -> Result<ThinLinked> {
        let mut index_dir = self.work.index();
        let mut command = self.prepared.thin_link_command(&self.linker, index_dir)?;
        let started = Instant::now();
        reporter.on_event(&Event::ThinLinkStarted { command: &command });
        let _ = std::fs::remove_file(self.cwd.join(index_dir).join("modules.list"));
        let (mut status, mut text) = self.run_linker(&command)?;
        // lld's messages are not translated: this is strerror(ENOSPC) in any locale.
        if !status.success() && text.contains("No space left on device") {
            if let Some(full) = self.work.empty_own_index() {
                reporter.on_event(&Event::Warning {
                    message: &format!(
                        "no room for the thin link's index files in {}: linking again with them in {} (TMPDIR says where work files go)",
                        full.display(),
                        self.work.path().display()
                    ),
                });
                index_dir = self.work.path();
                command = self.prepared.thin_link_command(&self.linker, index_dir)?;
                (status, text) = self.run_linker(&command)?;
            }
        }
        if !status.success() {
            bail!(
                "the thin link failed ({status}):\n{}\n  to reproduce: cd {} && {}\n  (its response file is removed with the work directory; THINDIST_KEEP_WORK=1 keeps it)",
                text.trim_end(),
                self.cwd.display(),
                cmdline::shell_line(&command)
            );
        }
        let modules = PreparedLink::listed_modules(&self.cwd, index_dir)?;
        reporter.on_event(&Event::ThinLinkFinished {
            modules: modules.len(),
            duration: started.elapsed(),
        });
        Ok(ThinLinked {
            modules,
            index_dir: index_dir.to_path_buf(),
        })
    }

    /// The final link's command, with each module's native object, its arguments written to
    /// a response file in the work directory.
    pub fn final_link_command(&self, natives: &Natives) -> Result<Vec<String>> {
        let rsp = self.work_dir().join("finallink.rsp");
        cmdline::write_response_file(&rsp, &self.prepared.final_link_args(natives))?;
        Ok(vec![self.linker.clone(), format!("@{}", rsp.display())])
    }

    /// Runs the final link's `command` ([`Self::final_link_command`]). lld writes its output as
    /// it always does: a regular file through a temporary beside it that is renamed into place
    /// only on success, anything else (/dev/null, a FIFO) in place. Returns what the linker
    /// printed, for the caller to show after its own report, and whether it succeeded.
    pub fn final_link(
        &self,
        command: &[String],
        reporter: &mut dyn Reporter,
    ) -> Result<(String, Result<()>)> {
        let started = Instant::now();
        reporter.on_event(&Event::FinalLinkStarted { command });
        let (status, text) = self.run_linker(command)?;
        reporter.on_event(&Event::FinalLinkFinished {
            duration: started.elapsed(),
        });
        let linked = match status.success() {
            true => Ok(()),
            false => Err(anyhow::anyhow!(
                "the final link failed ({status})\n  to reproduce: cd {} && {}\n  (its response file and native objects are removed with the work directory; THINDIST_KEEP_WORK=1 keeps them)",
                self.cwd.display(),
                cmdline::shell_line(command)
            )),
        };
        Ok((text, linked))
    }

    /// Runs the linker: forked from its server if it has one that can, else as a process.
    fn run_linker(&self, command: &[String]) -> Result<(ExitStatus, String)> {
        let forked =
            (self.linker_server.as_ref()).and_then(|server| server.run(command, &self.cwd));
        match forked {
            Some(result) => result,
            None => exec::run_tracked(
                Command::new(&command[0])
                    .args(&command[1..])
                    .current_dir(&self.cwd),
            ),
        }
        .with_context(|| format!("cannot run the linker {}", command[0]))
    }
}

/// The output a link writes, as its arguments name it: lld's default is `a.out`.
fn output_name(args: &LinkArgs) -> &str {
    args.output().unwrap_or("a.out")
}
