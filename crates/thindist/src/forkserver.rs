//! Compiler fork servers: most of a small back-end job's time is the compiler's start-up (exec,
//! dynamic linking of libLLVM and libclang-cpp, their static constructors), about 15 ms of 27.
//! A fork server is the compiler itself, started once with a preload library
//! (`preload/forkserver.c`) that stops it after static initialisation and then, for each job,
//! forks a child from that idle state which calls the compiler's own `main` with the job's
//! arguments, environment and directory. clang runs cc1 in-process (`-fintegrated-cc1`, the
//! default), so the job then needs no exec at all.
//!
//! One server serves one job at a time and a compiler gets as many servers as jobs run at once
//! (at most the slots): each job thread then owns its server for the whole job, with a blocking
//! request and reply, and the server needs neither threads nor SIGCHLD handling.
//!
//! Where the compiler is clang and exports `cc1_main`, a back-end job whose flag set has a cc1
//! template ([`crate::cc1`]) runs instead in the server's cc1 worker: a child that runs job
//! after job of one flag set through `cc1_main`, with no fork, no fresh address space and no
//! exit per job. A worker that dies of anything but SIGKILL (a compiler crash, say) has its job
//! run again as a forked driver, which reports the crash as clang does.
//!
//! The child is the server's, not thindist's, so the server reports its pid (tracked in
//! [`crate::exec::interrupts`] as a process's is) and its wait status. Anything that keeps a
//! server from starting (a compiler that is not a dynamically linked glibc ELF, a script, a
//! preload that did not take, no handshake in time) makes that compiler run as processes.

use crate::cc1::{self, Cc1Template, JobFiles};
use crate::exec::interrupts;
use crate::job::BackendJob;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

static LIBRARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libthindist-forkserver.so"));

/// How long a starting server may take to say it is one. A compiler that ignored the preload
/// runs with no arguments, fails and closes the socket at once; this only bounds one that hangs.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a server told to stop may take to stop its worker and exit before it is killed.
const SERVER_EXIT_TIMEOUT: Duration = Duration::from_secs(2);

/// Room in a server's command line for each child to show its job's command (longer commands
/// are cut short there; only ps and pgrep see this).
const CMDLINE_SPACE: usize = 32 * 1024;

/// The fd on which a server finds its socket (THINDIST_FORK_SERVER_FD).
const SERVER_FD: i32 = 3;
/// The fd from which a server loads the preload library; it closes it once loaded.
const LIBRARY_FD: i32 = 4;
/// The kinds of request a server takes (preload/forkserver.c): a driver job, a cc1 job (for
/// its worker), and a second server forked from this one.
const KIND_DRIVER: u32 = 0;
const KIND_CC1: u32 = 1;
const KIND_FORK_SERVER: u32 = 2;

/// glibc malloc settings for a server, which every job's child inherits with its heap.
/// - A child starts with the server's small heap and used to fault in each new 4 KiB page of
///   its own one at a time: half of a small back end's 1,100 page faults, and on a virtual
///   machine most of its system time. With each growth of the heap padded by 8 MiB and the heap
///   allowed transparent huge pages, a child's heap comes mostly in 2 MiB pages (600 generated
///   modules: 597,000 page faults before, 446,000-473,000 after; bench/README.md).
/// - A back end allocates and frees blocks of megabytes again and again. glibc gives each block
///   above its (growing) mmap threshold pages of its own and returns them when it is freed, and
///   returns any freed top of the heap beyond 128 KiB: every such block was new memory that the
///   kernel had to clear. With blocks of up to 32 MiB (glibc's most) taken from the heap and up
///   to 128 MiB of freed heap kept, a child and a cc1 worker reuse their memory, for job after
///   job in a worker (kernel one-file relink: the time the kernel spent clearing pages for the
///   back ends fell from 22 ms to 3; bench/README.md). An idle worker holds at most that much
///   more until its server stops.
///
/// The heap's addresses and its size are all they change, and a job's own processes (the
/// assembler, say) get the job's environment, not these.
const SERVER_MALLOC_TUNABLES: [(&str, &str); 4] = [
    ("glibc.malloc.hugetlb", "1"),
    ("glibc.malloc.top_pad", "8388608"),
    ("glibc.malloc.mmap_threshold", "33554432"),
    ("glibc.malloc.trim_threshold", "134217728"),
];

/// The GLIBC_TUNABLES a server starts with: the user's (`name=value:name=value`), then each of
/// [`SERVER_MALLOC_TUNABLES`] the user did not set. A glibc without one ignores it.
fn server_tunables(user: Option<&OsStr>) -> OsString {
    let user = user.unwrap_or_default();
    let set_by_user = |name: &str| {
        user.as_bytes()
            .split(|&b| b == b':')
            .any(|tunable| tunable.split(|&b| b == b'=').next() == Some(name.as_bytes()))
    };
    let mut tunables = user.to_owned();
    for (name, value) in SERVER_MALLOC_TUNABLES {
        if !set_by_user(name) {
            if !tunables.is_empty() {
                tunables.push(":");
            }
            tunables.push(format!("{name}={value}"));
        }
    }
    tunables
}

/// The fork servers of one run, by compiler.
pub struct ForkServers {
    verbose: bool,
    /// Whether back ends may run in cc1 workers.
    cc1_workers: bool,
    compilers: Mutex<HashMap<PathBuf, Pool>>,
    library: OnceLock<Result<OwnedFd, String>>,
    /// The cc1 templates of the run's flag sets, by worker key.
    templates: Mutex<HashMap<String, TemplateState>>,
    /// The compilers whose jobs have run in cc1 workers (said once each with `-v`).
    cc1_compilers: Mutex<std::collections::HashSet<PathBuf>>,
}

/// A fork server of one program: the linker, whose thin link and final link fork from it. It
/// is spawned as soon as a link is known to need it and answers its handshake at the first
/// job, so that its start-up (about 12 ms of lld's) runs while thindist prepares the link.
pub struct ProgramServer {
    program: PathBuf,
    verbose: bool,
    state: Mutex<ProgramState>,
}

enum ProgramState {
    /// Spawned; its handshake not read yet.
    Spawned(Server),
    Ready(Server),
    /// It could not start, or stopped: jobs run as processes.
    Gone,
}

impl ProgramServer {
    /// Spawns a server of `program`, as `cwd` and PATH find it; `None` when it cannot have one
    /// (`-v` says why).
    pub fn spawn(program: &str, cwd: &Path, verbose: bool) -> Option<ProgramServer> {
        let path = resolve(program, cwd, std::env::var_os("PATH"))?;
        // Not a server for many jobs: each of its two binds what it uses, where binding every
        // symbol at once would make the thin link wait for a third longer start-up.
        let spawned = library_file().and_then(|library| Server::spawn(&path, &library, false));
        let server = spawned
            .map_err(|reason| {
                if verbose {
                    say_no_server(&path, &reason);
                }
            })
            .ok()?;
        Some(ProgramServer {
            program: path,
            verbose,
            state: Mutex::new(ProgramState::Spawned(server)),
        })
    }

    /// Runs `command` in `cwd`, with this process's environment, as a forked child of the
    /// server, as [`crate::exec::run_tracked`] runs a process; `None` when the server cannot
    /// run it.
    pub fn run(&self, command: &[String], cwd: &Path) -> Option<io::Result<(ExitStatus, String)>> {
        let mut state = self.state.lock().unwrap();
        *state = match std::mem::replace(&mut *state, ProgramState::Gone) {
            ProgramState::Spawned(mut server) => match server.handshake(&self.program) {
                Ok(()) => {
                    if self.verbose {
                        say_server(&self.program);
                    }
                    ProgramState::Ready(server)
                }
                Err(reason) => {
                    if self.verbose {
                        say_no_server(&self.program, &reason);
                    }
                    ProgramState::Gone
                }
            },
            started => started,
        };
        let ProgramState::Ready(server) = &mut *state else {
            return None;
        };
        match server.run(&Request::driver(command, cwd, None)) {
            Sent::Ran(result) => Some(result),
            Sent::Lost(e) => {
                *state = ProgramState::Gone;
                Some(Err(e))
            }
            Sent::NotStarted | Sent::WorkerDied(..) => {
                *state = ProgramState::Gone;
                None
            }
        }
    }

    /// Stops the server (waiting for it to exit); a later job runs as a process.
    pub fn stop(&self) {
        let state = std::mem::replace(&mut *self.state.lock().unwrap(), ProgramState::Gone);
        if let ProgramState::Spawned(mut server) = state {
            // Still starting, and never to serve: no need to wait for its start-up.
            if let ServerProcess::Started(process) = &mut server.process {
                let _ = process.kill();
            }
        }
    }
}

impl Drop for ProgramServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What `-v` says of a program that has a fork server.
fn say_server(program: &Path) {
    eprintln!("thindist: fork server for {}", program.display());
}

/// What `-v` says of a program that runs as processes because it has no fork server.
fn say_no_server(program: &Path, reason: &str) {
    eprintln!(
        "thindist: no fork server for {} ({reason}); running it as processes",
        program.display()
    );
}

/// How far a flag set's cc1 template has come. Its first job runs as a driver; the second
/// derives the template from its dry run; the third checks it against its own dry run. Only
/// then do the flag set's jobs go to cc1 workers.
enum TemplateState {
    /// One job seen.
    Seen,
    /// A job is deriving or checking the template: the others run as drivers meanwhile.
    Busy,
    Derived(Cc1Template),
    Checked(Cc1Template),
    Unusable,
}

enum Pool {
    /// Servers not running a job now.
    Usable(Vec<Server>),
    /// A server could not start: this compiler runs as processes.
    Unusable,
}

struct Server {
    stream: UnixStream,
    process: ServerProcess,
    /// Whether the compiler exports clang's cc1_main, so that the server can run cc1 jobs.
    cc1: bool,
}

/// A server's process: started by thindist, or forked by another server from its warm state
/// (that server waits for it when both end).
enum ServerProcess {
    Started(Child),
    /// Its pid, which the tests read to see it gone.
    Forked(#[cfg_attr(not(test), allow(dead_code))] u32),
}

impl ServerProcess {
    #[cfg(test)]
    fn id(&self) -> u32 {
        match self {
            ServerProcess::Started(child) => child.id(),
            ServerProcess::Forked(pid) => *pid,
        }
    }
}

/// What a server is asked to run.
#[derive(Clone, Copy)]
struct Request<'a> {
    /// A cc1 job's worker key; `None` for a driver job.
    worker_key: Option<&'a str>,
    argv: &'a [String],
    /// The command the job's child shows (`ps`), if not `argv`.
    shown: &'a [String],
    cwd: &'a Path,
    env: Option<&'a [(String, String)]>,
}

impl<'a> Request<'a> {
    /// A driver job: `argv` as a process would run it.
    fn driver(argv: &'a [String], cwd: &'a Path, env: Option<&'a [(String, String)]>) -> Self {
        Request {
            worker_key: None,
            argv,
            shown: &[],
            cwd,
            env,
        }
    }
}

/// Where the cc1 command of a driver job comes from: the cc1 template of the flag set of
/// `driver` filled with `files`, and `appended` after it.
struct Cc1Of<'a> {
    driver: Request<'a>,
    files: Option<JobFiles<'a>>,
    appended: &'a [String],
}

impl Drop for Server {
    /// Closing its socket ends the server, which first stops its cc1 worker and waits for it:
    /// the CPU time of the worker's jobs then counts in thindist's children's, as processes'
    /// would (`time`, GNU make's accounting). One that does not end soon is killed.
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        // A forked server is its parent server's to wait for.
        let ServerProcess::Started(process) = &mut self.process else {
            return;
        };
        let deadline = std::time::Instant::now() + SERVER_EXIT_TIMEOUT;
        while matches!(process.try_wait(), Ok(None)) {
            if std::time::Instant::now() > deadline {
                let _ = process.kill();
                let _ = process.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for ForkServers {
    /// As [`ForkServers::stop`]: every socket closed before any server is waited for, also
    /// when a run ends in an error without stopping them.
    fn drop(&mut self) {
        self.stop();
    }
}

/// How a job given to a server ended.
enum Sent {
    /// The job ran (or could not, as a process may not) and the server waits for the next.
    Ran(io::Result<(ExitStatus, String)>),
    /// The server died with the job's child started, or perhaps started: the job fails (a
    /// process run now could race that child for the output), and the server goes.
    Lost(io::Error),
    /// No child was started: the job can still run as a process; the server goes.
    NotStarted,
    /// The cc1 worker running the job died (its wait status; output until then); the server
    /// stays.
    WorkerDied(ExitStatus, String),
}

impl ForkServers {
    /// `cc1_workers` lets back ends run in cc1 workers where the compiler allows it.
    pub fn new(verbose: bool, cc1_workers: bool) -> ForkServers {
        ForkServers {
            verbose,
            cc1_workers,
            compilers: Mutex::new(HashMap::new()),
            library: OnceLock::new(),
            templates: Mutex::new(HashMap::new()),
            cc1_compilers: Mutex::new(Default::default()),
        }
    }

    /// Runs a back-end job through its compiler's server: in a cc1 worker when its flag set
    /// has a checked template, else as a forked driver. (exit status, stdout then stderr), as
    /// [`crate::exec::run_tracked`] returns for a process; `None` when no server can run it,
    /// and the caller then runs a process.
    pub fn run_backend(&self, job: &BackendJob) -> Option<io::Result<(ExitStatus, String)>> {
        let compiler = resolve(&job.command[0], &job.cwd, std::env::var_os("PATH"))?;
        let driver = Request::driver(&job.command, &job.cwd, None);
        // A job that only adds where its stages go runs in its flag set's cc1 worker.
        let split = cc1::split_stage_options(&job.command);
        let cc1_of = match &split {
            Some((flag_set, stage_options)) => Cc1Of {
                driver: Request::driver(flag_set, &job.cwd, None),
                files: JobFiles::of(job),
                appended: stage_options,
            },
            None => Cc1Of {
                driver,
                files: JobFiles::of(job),
                appended: &[],
            },
        };
        self.run_compile(&compiler, &driver, cc1_of, &job.name())
    }

    /// Runs `command` in `cwd` with exactly the environment `env`, as a remote worker runs an
    /// action's command, as [`ForkServers::run_backend`] runs a job: a back end as thindist
    /// writes its command (`-fthinlto-index=SHARD -c MODULE -o NATIVE`) may run in a cc1 worker.
    pub fn run_in_env(
        &self,
        command: &[String],
        cwd: &Path,
        env: &[(String, String)],
    ) -> Option<io::Result<(ExitStatus, String)>> {
        let path = (env.iter())
            .find(|(name, _)| name == "PATH")
            .map(|(_, value)| value.into());
        let compiler = resolve(&command[0], cwd, path)?;
        let driver = Request::driver(command, cwd, Some(env));
        let files = JobFiles::from_command(command, cwd);
        let name = files.as_ref().map_or("", JobFiles::module).to_string();
        let cc1_of = Cc1Of {
            driver,
            files,
            appended: &[],
        };
        self.run_compile(&compiler, &driver, cc1_of, &name)
    }

    /// Runs the driver job `driver` of `compiler`, the back end of module `name`, in a cc1
    /// worker if it can (the cc1 command of `cc1_of`), else as a forked driver.
    fn run_compile(
        &self,
        compiler: &Path,
        driver: &Request,
        cc1_of: Cc1Of,
        name: &str,
    ) -> Option<io::Result<(ExitStatus, String)>> {
        let mut server = self.take(compiler)?;
        let cc1 = match cc1_of.files {
            Some(files) if self.cc1_workers && server.cc1 => {
                let command = self.cc1_command(&mut server, compiler, &cc1_of.driver, &files);
                command.map(|(key, mut argv)| {
                    argv.extend_from_slice(cc1_of.appended);
                    (key, argv)
                })
            }
            _ => None,
        };
        let sent = match cc1 {
            Some((key, argv)) => {
                let request = Request {
                    worker_key: Some(&key),
                    argv: &argv,
                    shown: driver.argv,
                    ..*driver
                };
                match server.run(&request) {
                    Sent::WorkerDied(status, output) if status.signal() == Some(libc::SIGKILL) => {
                        Sent::Ran(Ok((status, output)))
                    }
                    Sent::WorkerDied(status, _) => {
                        if self.verbose {
                            eprintln!(
                                "thindist: the cc1 worker compiling {name} died ({status}); \
                                 compiling it again as a forked driver"
                            );
                        }
                        server.run(driver)
                    }
                    Sent::NotStarted => server.run(driver),
                    sent => sent,
                }
            }
            None => server.run(driver),
        };
        self.end_job(compiler, server, sent)
    }

    /// The worker key and cc1 command of the back end `driver` runs, whose files are `files`,
    /// once its flag set's template is checked; moves the template along (see
    /// [`TemplateState`]) with `server`'s dry runs.
    fn cc1_command(
        &self,
        server: &mut Server,
        compiler: &Path,
        driver: &Request,
        files: &JobFiles,
    ) -> Option<(String, Vec<String>)> {
        let mut key = Sha256::new();
        let mut add = |part: &[u8]| {
            key.update(part);
            key.update([0]);
        };
        add(compiler.as_os_str().as_bytes());
        // The directory is marked in the driver key, not part of the worker key: a worker
        // enters each job's directory.
        add(cc1::driver_key(driver.argv, files)?.as_bytes());
        // A remote action's own environment (a local job's is this process's, the same for all).
        for (name, value) in driver.env.unwrap_or_default() {
            add(format!("{name}={value}").as_bytes());
        }
        let key = hex::encode(key.finalize());
        let state = {
            let mut templates = self.templates.lock().unwrap();
            let Some(state) = templates.get_mut(&key) else {
                templates.insert(key, TemplateState::Seen);
                return None;
            };
            match state {
                TemplateState::Checked(template) => return Some((key, template.command(files))),
                TemplateState::Busy | TemplateState::Unusable => return None,
                TemplateState::Seen | TemplateState::Derived(_) => {
                    std::mem::replace(state, TemplateState::Busy)
                }
            }
        };
        let output = server.dry_run(driver);
        let next = match (state, output) {
            (TemplateState::Seen, Some(output)) => Cc1Template::from_dry_run(&output, files)
                .map_or(TemplateState::Unusable, TemplateState::Derived),
            (TemplateState::Derived(template), Some(output))
                if template.matches_dry_run(&output, files) =>
            {
                TemplateState::Checked(template)
            }
            _ => TemplateState::Unusable,
        };
        let command = match &next {
            TemplateState::Checked(template) => Some((key.clone(), template.command(files))),
            _ => None,
        };
        if command.is_some()
            && self.verbose
            && (self.cc1_compilers.lock().unwrap()).insert(compiler.to_path_buf())
        {
            eprintln!("thindist: cc1 workers for {}", compiler.display());
        }
        self.templates.lock().unwrap().insert(key, next);
        command
    }

    /// What a job that `server` ran gives its caller; the server goes back to the pool if it
    /// can take another.
    fn end_job(
        &self,
        compiler: &Path,
        server: Server,
        sent: Sent,
    ) -> Option<io::Result<(ExitStatus, String)>> {
        match sent {
            Sent::Ran(result) => {
                self.give_back(compiler, server);
                Some(result)
            }
            Sent::Lost(e) => Some(Err(e)),
            Sent::NotStarted | Sent::WorkerDied(..) => None,
        }
    }

    /// Starts a server for the compiler of a flag set's `samples` (one or two of its jobs) if
    /// it has none yet, so that the first job does not wait for the compiler's start-up, and
    /// forks it into `at_once` servers (one per job that may run at once); and for a flag set
    /// of `many` jobs, takes the samples through what its first three jobs would do for its
    /// cc1 template (seen, derived, checked), so that all its jobs can go to cc1 workers; but
    /// no step once `thin_link_done` is set (the flag set's jobs take the rest).
    pub fn start_early(
        &self,
        samples: &[BackendJob],
        many: bool,
        at_once: usize,
        thin_link_done: &AtomicBool,
    ) {
        let Some(first) = samples.first() else {
            return;
        };
        let Some(compiler) = resolve(&first.command[0], &first.cwd, std::env::var_os("PATH"))
        else {
            return;
        };
        // The compiler's idle servers; `None` when it cannot have any.
        let idle = || match self.compilers.lock().unwrap().get(&compiler) {
            Some(Pool::Usable(idle)) => Some(idle.len()),
            Some(Pool::Unusable) => None,
            None => Some(0),
        };
        let Some(idle_now) = idle() else {
            return;
        };
        let sets_template = many && samples.len() >= 2 && self.cc1_workers;
        if idle_now >= at_once.max(1) && !sets_template {
            return;
        }
        let Some(mut server) = self.take(&compiler) else {
            return;
        };
        if sets_template && server.cc1 {
            for job in [first, first, &samples[1]] {
                let (Some(files), false) =
                    (JobFiles::of(job), thin_link_done.load(Ordering::Relaxed))
                else {
                    break;
                };
                let driver = Request::driver(&job.command, &job.cwd, None);
                self.cc1_command(&mut server, &compiler, &driver, &files);
            }
        }
        // Forked now, while the thin link runs: a second slot's first job would otherwise
        // wait for a whole start-up of the compiler, on a core the other jobs need.
        let wanted = || idle().is_some_and(|idle| idle.saturating_add(1) < at_once);
        while wanted() && !thin_link_done.load(Ordering::Relaxed) {
            match server.fork_server(&compiler) {
                Ok(forked) => self.give_back(&compiler, forked),
                // A server that cannot fork one may not serve either: it goes.
                Err(_) => return,
            }
        }
        self.give_back(&compiler, server);
    }

    /// Stops every idle server; a job that comes later starts one again. They are taken out
    /// under the lock and stopped (their sockets closed, and waited for) after it.
    pub fn stop(&self) {
        let idle: Vec<Server> = (self.compilers.lock().unwrap().values_mut())
            .flat_map(|pool| match pool {
                Pool::Usable(idle) => std::mem::take(idle),
                Pool::Unusable => Vec::new(),
            })
            .collect();
        // Every socket closed before any server is waited for: a server waits for the servers
        // forked from it.
        for server in &idle {
            let _ = server.stream.shutdown(std::net::Shutdown::Both);
        }
        drop(idle);
    }

    fn give_back(&self, compiler: &Path, server: Server) {
        if let Some(Pool::Usable(idle)) = self.compilers.lock().unwrap().get_mut(compiler) {
            idle.push(server);
        }
    }

    /// An idle server of `compiler`, started if none is idle.
    fn take(&self, compiler: &Path) -> Option<Server> {
        match self.compilers.lock().unwrap().get_mut(compiler) {
            Some(Pool::Unusable) => return None,
            Some(Pool::Usable(idle)) => {
                if let Some(server) = idle.pop() {
                    return Some(server);
                }
            }
            None => {}
        }
        // Started outside the lock: a start takes the compiler's whole start-up.
        let started = self
            .library()
            .and_then(|library| Server::start(compiler, library));
        let mut compilers = self.compilers.lock().unwrap();
        match started {
            Ok(server) => {
                if !compilers.contains_key(compiler) {
                    if self.verbose {
                        say_server(compiler);
                    }
                    compilers.insert(compiler.to_path_buf(), Pool::Usable(Vec::new()));
                }
                Some(server)
            }
            Err(reason) => {
                if !matches!(compilers.get(compiler), Some(Pool::Unusable)) && self.verbose {
                    say_no_server(compiler, &reason);
                }
                compilers.insert(compiler.to_path_buf(), Pool::Unusable);
                None
            }
        }
    }

    /// The preload library, made on first use.
    fn library(&self) -> Result<&OwnedFd, String> {
        self.library
            .get_or_init(library_file)
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// The compiler a command runs, as exec finds it (the first executable file on PATH, relative
/// entries taken from `cwd`, where the process would start), with symbolic links resolved: one
/// server serves every name of the same compiler.
fn resolve(program: &str, cwd: &Path, path: Option<std::ffi::OsString>) -> Option<PathBuf> {
    which::which_in(program, path, cwd)
        .ok()?
        .canonicalize()
        .ok()
}

/// Why `path` cannot host the preload, if it cannot: only a dynamically linked glibc program
/// calls glibc's `__libc_start_main` through the dynamic linker. A script would also pass the
/// preload on to whatever it runs, skipping what the script itself does.
fn unsuitable(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let mut header = [0u8; 64];
    if file.read_exact_at(&mut header, 0).is_err() || &header[..4] != b"\x7fELF" {
        return Some("not an ELF program".into());
    }
    // 64-bit little-endian only, as on the machines thindist runs on.
    if header[4] != 2 || header[5] != 1 {
        return Some("not a 64-bit little-endian ELF program".into());
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as u64;
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (
        u64_at(&header, 0x20),
        u16_at(&header, 0x36),
        u16_at(&header, 0x38),
    );
    for i in 0..phnum {
        let mut ph = [0u8; 56];
        if phentsize < 56 || file.read_exact_at(&mut ph, phoff + i * phentsize).is_err() {
            break;
        }
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes(ph[..4].try_into().unwrap()) != PT_INTERP {
            continue;
        }
        let mut interp = vec![0u8; u64_at(&ph, 32).min(4096) as usize];
        if file.read_exact_at(&mut interp, u64_at(&ph, 8)).is_err() {
            break;
        }
        let interp = String::from_utf8_lossy(&interp);
        return (!interp.contains("ld-linux")).then(|| {
            format!(
                "not a glibc program (interpreter {})",
                interp.trim_end_matches('\0')
            )
        });
    }
    Some("statically linked".into())
}

/// The embedded preload library in a sealed memory file: no file on disk that another user
/// could replace, and nothing left in TMPDIR. A server inherits it as [`LIBRARY_FD`] and loads
/// it as `/proc/self/fd/4`.
fn library_file() -> Result<OwnedFd, String> {
    let error = |what: &str| {
        format!(
            "cannot {what} the preload library: {}",
            io::Error::last_os_error()
        )
    };
    // SAFETY: plain system calls on an fd this function owns.
    unsafe {
        let fd = libc::memfd_create(
            c"thindist-forkserver".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        );
        if fd < 0 {
            return Err(error("create"));
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut file = std::fs::File::from(fd);
        file.write_all(LIBRARY)
            .map_err(|e| format!("cannot write the preload library: {e}"))?;
        let seals =
            libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        if libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) != 0 {
            return Err(error("seal"));
        }
        Ok(file.into())
    }
}

impl Server {
    fn start(compiler: &Path, library: &OwnedFd) -> Result<Server, String> {
        let mut server = Server::spawn(compiler, library, true)?;
        server.handshake(compiler)?;
        Ok(server)
    }

    /// Starts a server of `compiler`, whose handshake is still to be read ([`Server::handshake`]).
    /// A server for `many_jobs` (a compiler's) binds every symbol of its libraries in its
    /// start-up, not lazily in each child, and tunes the heap its children inherit for them
    /// ([`SERVER_MALLOC_TUNABLES`]); a linker's two jobs gain from neither (its thin link used
    /// 10 ms more CPU with the tunables).
    fn spawn(compiler: &Path, library: &OwnedFd, many_jobs: bool) -> Result<Server, String> {
        if let Some(reason) = unsuitable(compiler) {
            return Err(reason);
        }
        let (stream, theirs) = UnixStream::pair().map_err(|e| e.to_string())?;
        let inherited = [
            (theirs.as_raw_fd(), SERVER_FD),
            (library.as_raw_fd(), LIBRARY_FD),
        ];
        // Keep a preload the user set: a process of the compiler would have it too.
        let mut preload = std::ffi::OsString::from(format!("/proc/self/fd/{LIBRARY_FD}"));
        if let Some(user) = std::env::var_os("LD_PRELOAD").filter(|p| !p.is_empty()) {
            preload.push(":");
            preload.push(user);
        }
        let mut command = Command::new(compiler);
        command
            .arg(" ".repeat(CMDLINE_SPACE))
            .env("LD_PRELOAD", preload)
            .env("THINDIST_FORK_SERVER_FD", SERVER_FD.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if many_jobs {
            // Every symbol bound once in the server, not lazily in every child (each lazy
            // binding also copies a page of the library's GOT): about 120 page faults and 5%
            // of a small job's CPU. Jobs run with their own environment, not the server's.
            command.env("LD_BIND_NOW", "1").env(
                "GLIBC_TUNABLES",
                server_tunables(std::env::var_os("GLIBC_TUNABLES").as_deref()),
            );
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Copies above the targets first, so that neither dup2 overwrites the other's
                // source; dup2 leaves the targets open across exec.
                let mut high = [0; 2];
                for (i, (fd, _)) in inherited.iter().enumerate() {
                    high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                    if high[i] < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                for (i, (_, target)) in inherited.iter().enumerate() {
                    if libc::dup2(high[i], *target) != *target {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let process = command.spawn().map_err(|e| e.to_string())?;
        drop(theirs);
        Ok(Server {
            stream,
            process: ServerProcess::Started(process),
            cc1: false,
        })
    }

    /// A second server of `compiler` forked from this idle one: it costs a fork, not the
    /// compiler's start-up (the dynamic linking of its libraries, most of it binding every
    /// symbol at once, and their constructors).
    fn fork_server(&mut self, compiler: &Path) -> Result<Server, String> {
        let (stream, theirs) = UnixStream::pair().map_err(|e| e.to_string())?;
        let header = [0, 0, 0, KIND_FORK_SERVER, 0];
        let fds = [theirs.as_raw_fd(), theirs.as_raw_fd()];
        send_with_fds(&self.stream, &header, fds).map_err(|e| e.to_string())?;
        drop(theirs);
        let mut reply = [0u8; 4];
        (&self.stream)
            .read_exact(&mut reply)
            .map_err(|e| e.to_string())?;
        let pid = i32::from_ne_bytes(reply);
        let mut status = [0u8; 8];
        (&self.stream)
            .read_exact(&mut status)
            .map_err(|e| e.to_string())?;
        if pid <= 0 {
            return Err(format!(
                "no server forked: {}",
                io::Error::from_raw_os_error(-pid)
            ));
        }
        let mut server = Server {
            stream,
            process: ServerProcess::Forked(pid as u32),
            cc1: false,
        };
        server.handshake(compiler)?;
        Ok(server)
    }

    /// Checks that the process is a fork server, and of `compiler`, not of a program it ran.
    fn handshake(&mut self, compiler: &Path) -> Result<(), String> {
        let refused = |what: &str| format!("{what} (the preload library did not take)");
        let mut stream = &self.stream;
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut magic = [0u8; 8];
        stream
            .read_exact(&mut magic)
            .map_err(|e| refused(&format!("no handshake: {e}")))?;
        if &magic[..4] != b"TDFS" {
            return Err(refused("a wrong handshake"));
        }
        let mut exe = vec![0u8; u32::from_ne_bytes(magic[4..].try_into().unwrap()) as usize];
        stream
            .read_exact(&mut exe)
            .map_err(|e| refused(&format!("no handshake: {e}")))?;
        if Path::new(std::ffi::OsStr::from_bytes(&exe)) != compiler {
            return Err(format!(
                "the server is {}, not the compiler",
                String::from_utf8_lossy(&exe)
            ));
        }
        let mut features = [0u8; 4];
        stream
            .read_exact(&mut features)
            .map_err(|e| refused(&format!("no handshake: {e}")))?;
        self.cc1 = u32::from_ne_bytes(features) & 1 != 0;
        stream.set_read_timeout(None).map_err(|e| e.to_string())
    }

    /// Runs one job: sends it, tracks the child (or worker) for interrupts while it runs, and
    /// collects its exit status and output.
    fn run(&mut self, request: &Request) -> Sent {
        if let Err(e) = interrupts().check_running() {
            return Sent::Ran(Err(e));
        }
        let (Ok(mut stdout), Ok(mut stderr)) = (tempfile::tempfile(), tempfile::tempfile()) else {
            return Sent::NotStarted;
        };
        let mut payload = Vec::new();
        let mut push = |bytes: &[u8]| {
            payload.extend_from_slice(bytes);
            payload.push(0);
        };
        push(request.worker_key.unwrap_or_default().as_bytes());
        push(request.cwd.as_os_str().as_bytes());
        for arg in request.argv {
            push(arg.as_bytes());
        }
        let vars: Vec<(OsString, OsString)> = match request.env {
            Some(env) => env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
            None => std::env::vars_os().collect(),
        };
        for (key, value) in &vars {
            push(&[key.as_bytes(), b"=", value.as_bytes()].concat());
        }
        for arg in request.shown {
            push(arg.as_bytes());
        }
        let header = [
            payload.len() as u32,
            request.argv.len() as u32,
            vars.len() as u32,
            match request.worker_key {
                Some(_) => KIND_CC1,
                None => KIND_DRIVER,
            },
            request.shown.len() as u32,
        ];
        let sent = send_with_fds(
            &self.stream,
            &header,
            [stdout.as_raw_fd(), stderr.as_raw_fd()],
        )
        .and_then(|()| (&self.stream).write_all(&payload));
        if sent.is_err() {
            return Sent::NotStarted;
        }
        let died = |e: io::Error| io::Error::other(format!("the compiler's fork server died: {e}"));
        let mut reply = [0u8; 4];
        if let Err(e) = (&self.stream).read_exact(&mut reply) {
            return Sent::Lost(died(e));
        }
        let pid = i32::from_ne_bytes(reply);
        if pid <= 0 {
            // No child or worker took the job (-errno).
            return Sent::NotStarted;
        }
        interrupts().track(pid as u32);
        let mut result = [0u8; 8];
        let status = (&self.stream).read_exact(&mut result);
        interrupts().untrack(pid as u32);
        if let Err(e) = status {
            // SAFETY: the server died; its child must not outlive the job.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Sent::Lost(died(e));
        }
        let status = ExitStatus::from_raw(i32::from_ne_bytes(result[..4].try_into().unwrap()));
        let worker_died = result[4..] != [0; 4];
        let mut output = Vec::new();
        for file in [&mut stdout, &mut stderr] {
            if let Err(e) = file.rewind().and_then(|_| file.read_to_end(&mut output)) {
                return Sent::Ran(Err(e));
            }
        }
        let output = String::from_utf8_lossy(&output).into_owned();
        if worker_died {
            return Sent::WorkerDied(status, output);
        }
        Sent::Ran(Ok((status, output)))
    }

    /// The dry run (`-###`) of the driver job `driver`: what it prints, if it succeeds.
    fn dry_run(&mut self, driver: &Request) -> Option<String> {
        let mut argv = driver.argv.to_vec();
        argv.push("-###".into());
        let request = Request::driver(&argv, driver.cwd, driver.env);
        match self.run(&request) {
            Sent::Ran(Ok((status, output))) if status.success() => Some(output),
            _ => None,
        }
    }
}

/// Sends `header` with two fds attached (SCM_RIGHTS).
fn send_with_fds(stream: &UnixStream, header: &[u32; 5], fds: [i32; 2]) -> io::Result<()> {
    const FDS_LEN: usize = 2 * std::mem::size_of::<i32>();
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: CMSG_SPACE is a pure computation.
    let control_len = unsafe { libc::CMSG_SPACE(FDS_LEN as u32) } as usize;
    assert!(control_len <= std::mem::size_of_val(&control));
    let mut iov = libc::iovec {
        iov_base: header.as_ptr() as *mut libc::c_void,
        iov_len: std::mem::size_of_val(header),
    };
    // SAFETY: msg points at live buffers of the given lengths for the duration of sendmsg.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = control_len as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(FDS_LEN as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(cmsg), FDS_LEN);
        let sent = libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        // The fds went with the first byte; send whatever of the header did not.
        let rest =
            &std::slice::from_raw_parts(header.as_ptr() as *const u8, iov.iov_len)[sent as usize..];
        (&*stream).write_all(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The process ids of the idle servers of every compiler.
    fn idle_pids(servers: &ForkServers) -> Vec<u32> {
        (servers.compilers.lock().unwrap().values())
            .flat_map(|pool| match pool {
                Pool::Usable(idle) => idle.iter().map(|s| s.process.id()).collect(),
                Pool::Unusable => Vec::new(),
            })
            .collect()
    }

    /// Stopped, a server's process is gone (waited for, so it is no zombie either); a later
    /// job's start makes a new one.
    #[test]
    fn stopped_servers_exit_and_start_again_when_asked() {
        let servers = ForkServers::new(false, true);
        let cwd = std::env::current_dir().unwrap();
        let compiler = resolve("clang-22", &cwd, std::env::var_os("PATH")).unwrap();
        let server = servers.take(&compiler).expect("a server");
        servers.give_back(&compiler, server);
        let started = idle_pids(&servers);
        assert_eq!(started.len(), 1, "clang-22 has a fork server");
        servers.stop();
        assert!(idle_pids(&servers).is_empty());
        assert!(!Path::new(&format!("/proc/{}", started[0])).exists());
        // As a job takes one and gives it back.
        let server = servers.take(&compiler).expect("a new server");
        servers.give_back(&compiler, server);
        let again = idle_pids(&servers);
        assert!(again.len() == 1 && again != started);
    }

    /// Fork servers of clang-22, with one server started and a second forked from it.
    fn started_and_forked() -> (ForkServers, PathBuf, Server, Server) {
        let servers = ForkServers::new(false, true);
        let cwd = std::env::current_dir().unwrap();
        let compiler = resolve("clang-22", &cwd, std::env::var_os("PATH")).unwrap();
        let mut started = servers.take(&compiler).expect("a server");
        let forked = started.fork_server(&compiler).expect("a forked server");
        (servers, compiler, started, forked)
    }

    /// Neither of `pids` is a process any more.
    fn assert_gone(pids: Vec<u32>) {
        for pid in pids {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "{pid} is still there"
            );
        }
    }

    /// A server forked from an idle one greets thindist as a started one does, runs jobs, and
    /// is gone with its parent when the servers stop.
    #[test]
    fn a_forked_server_runs_jobs_and_stops_with_its_parent() {
        let (servers, compiler, mut started, mut forked) = started_and_forked();
        let cwd = std::env::current_dir().unwrap();
        assert!(matches!(forked.process, ServerProcess::Forked(_)));
        assert_ne!(forked.process.id(), started.process.id());
        assert_eq!(forked.cc1, started.cc1);
        for server in [&mut forked, &mut started] {
            let argv = ["clang-22".to_string(), "--version".to_string()];
            match server.run(&Request::driver(&argv, &cwd, None)) {
                Sent::Ran(Ok((status, output))) => {
                    assert!(
                        status.success() && output.contains("clang version"),
                        "{output}"
                    )
                }
                _ => panic!("the job did not run"),
            }
        }
        servers.give_back(&compiler, started);
        servers.give_back(&compiler, forked);
        let pids = idle_pids(&servers);
        assert_eq!(pids.len(), 2);
        servers.stop();
        assert_gone(pids);
    }

    /// A program for [`ProgramServer`] tests that prints its first argument, then: `prog
    /// exit-early N` calls `_exit(N)`, `prog return N` returns N from main, each leaving behind
    /// a process it forked (without exec) that holds its files for two seconds; `prog segv` dies
    /// of SIGSEGV.
    fn exiting_program(dir: &Path) -> PathBuf {
        let source = r#"
            #include <signal.h>
            #include <stdio.h>
            #include <stdlib.h>
            #include <string.h>
            #include <unistd.h>
            int main(int argc, char **argv) {
                printf("%s\n", argv[1]);
                fflush(stdout);
                if (strcmp(argv[1], "segv") != 0 && fork() == 0) {
                    sleep(2);
                    _exit(0);
                }
                if (strcmp(argv[1], "exit-early") == 0)
                    _exit(atoi(argv[2]));
                if (strcmp(argv[1], "segv") == 0)
                    raise(SIGSEGV);
                return atoi(argv[2]);
            }
        "#;
        let program = dir.join("prog");
        let mut cc = Command::new("clang-22")
            .args(["-x", "c", "-", "-o"])
            .arg(&program)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        cc.stdin
            .take()
            .unwrap()
            .write_all(source.as_bytes())
            .unwrap();
        assert!(cc.wait().unwrap().success());
        program
    }

    /// A job that calls `_exit` is answered with its exit code and output as it exits, one that
    /// returns from main or is killed by a signal as its process ends: neither waits for a
    /// process it forked that still holds its files.
    #[test]
    fn a_program_server_reports_each_way_a_job_ends() {
        let dir = tempfile::tempdir().unwrap();
        let program = exiting_program(dir.path());
        let server =
            ProgramServer::spawn(program.to_str().unwrap(), dir.path(), false).expect("a server");
        let run = |args: &[&str]| {
            let mut command = vec![program.to_string_lossy().into_owned()];
            command.extend(args.iter().map(|a| a.to_string()));
            let started = std::time::Instant::now();
            let (status, output) = server.run(&command, dir.path()).unwrap().unwrap();
            (status, output, started.elapsed())
        };
        let (status, output, took) = run(&["exit-early", "7"]);
        assert_eq!((status.code(), output.as_str()), (Some(7), "exit-early\n"));
        assert!(
            took < Duration::from_millis(1500),
            "{took:?}: waited for the forked process"
        );
        let (status, output, took) = run(&["return", "5"]);
        assert_eq!((status.code(), output.as_str()), (Some(5), "return\n"));
        assert!(
            took < Duration::from_millis(1500),
            "{took:?}: waited for the forked process"
        );
        let (status, _, _) = run(&["segv"]);
        assert_eq!(status.signal(), Some(libc::SIGSEGV));
        // The server still serves, its children reaped.
        let (status, _, _) = run(&["exit-early", "0"]);
        assert!(status.success());
    }

    /// Servers dropped without a stop (a run that ends in an error) go as promptly as stopped
    /// ones, whatever their order: a server waits for the servers forked from it, so every
    /// socket must be closed before any server is waited for.
    #[test]
    fn dropped_servers_do_not_wait_for_each_other() {
        let (servers, compiler, started, forked) = started_and_forked();
        // The parent first: dropped in this order, it would wait for its child's socket.
        servers.give_back(&compiler, started);
        servers.give_back(&compiler, forked);
        let pids = idle_pids(&servers);
        let dropping = std::time::Instant::now();
        drop(servers);
        assert!(
            dropping.elapsed() < Duration::from_millis(500),
            "{:?} to drop",
            dropping.elapsed()
        );
        assert_gone(pids);
    }

    /// Got ready early for jobs that may run two at once, a compiler has two idle servers, the
    /// second forked from the first; asked again, it makes none; once the thin link is done, it
    /// forks none.
    #[test]
    fn start_early_forks_a_server_for_each_job_at_once() {
        let kinds = |servers: &ForkServers| -> Vec<bool> {
            (servers.compilers.lock().unwrap().values())
                .flat_map(|pool| match pool {
                    Pool::Usable(idle) => idle
                        .iter()
                        .map(|s| matches!(s.process, ServerProcess::Forked(_)))
                        .collect(),
                    Pool::Unusable => Vec::new(),
                })
                .collect()
        };
        let mut sample = BackendJob::placeholder("a.o", 1);
        sample.command = vec!["clang-22".into()];
        let (running, done) = (AtomicBool::new(false), AtomicBool::new(true));
        let servers = ForkServers::new(false, true);
        servers.start_early(std::slice::from_ref(&sample), false, 2, &running);
        let mut started = kinds(&servers);
        started.sort();
        assert_eq!(started, [false, true], "one started, one forked");
        servers.start_early(std::slice::from_ref(&sample), false, 2, &running);
        assert_eq!(kinds(&servers).len(), 2, "no more than needed");
        servers.stop();
        let late = ForkServers::new(false, true);
        late.start_early(std::slice::from_ref(&sample), false, 2, &done);
        assert_eq!(
            kinds(&late),
            [false],
            "only the first once the thin link is done"
        );
        late.stop();
    }

    #[test]
    fn server_tunables_add_the_malloc_settings_the_user_did_not_make() {
        let tunables =
            |user: Option<&str>| server_tunables(user.map(OsStr::new)).into_string().unwrap();
        const OURS: &str =
            "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=134217728";
        assert_eq!(
            tunables(None),
            format!("glibc.malloc.hugetlb=1:glibc.malloc.top_pad=8388608:{OURS}")
        );
        assert_eq!(
            tunables(Some("glibc.malloc.top_pad=0")),
            format!("glibc.malloc.top_pad=0:glibc.malloc.hugetlb=1:{OURS}")
        );
        assert_eq!(
            tunables(Some("glibc.malloc.hugetlb=0:glibc.malloc.top_pad=4096")),
            format!("glibc.malloc.hugetlb=0:glibc.malloc.top_pad=4096:{OURS}")
        );
        assert_eq!(
            tunables(Some("glibc.malloc.trim_threshold=0")),
            "glibc.malloc.trim_threshold=0:glibc.malloc.hugetlb=1:glibc.malloc.top_pad=8388608:glibc.malloc.mmap_threshold=33554432"
        );
        assert_eq!(
            tunables(Some("glibc.malloc.hugetlb_x=2")),
            format!("glibc.malloc.hugetlb_x=2:glibc.malloc.hugetlb=1:glibc.malloc.top_pad=8388608:{OURS}")
        );
    }

    proptest! {
        /// Whatever the user set comes first and unchanged, and each setting has one value.
        #[test]
        fn server_tunables_keep_the_users(user in "[a-z._=:0-9]{0,60}") {
            let tunables = server_tunables(Some(OsStr::new(&user))).into_string().unwrap();
            prop_assert!(tunables.starts_with(&user));
            for (name, _) in SERVER_MALLOC_TUNABLES {
                let settings = tunables
                    .split(':')
                    .filter(|t| t.split('=').next() == Some(name))
                    .count();
                let users = user.split(':').filter(|t| t.split('=').next() == Some(name)).count();
                prop_assert_eq!(settings, users.max(1));
            }
        }
    }

    #[test]
    fn scripts_and_static_programs_are_unsuitable() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("cc");
        std::fs::write(&script, "#!/bin/sh\nexec clang-22 \"$@\"\n").unwrap();
        assert_eq!(unsuitable(&script).as_deref(), Some("not an ELF program"));
        assert_eq!(unsuitable(Path::new("/bin/sh")), None);
        // Debian's ldconfig is static-pie: no dynamic linker to load the preload.
        assert_eq!(
            unsuitable(Path::new("/sbin/ldconfig")).as_deref(),
            Some("statically linked")
        );
    }
}
