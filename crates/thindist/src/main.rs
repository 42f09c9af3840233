//! The `thindist` command line. Invoked as `thindist-ld` (through a symlink) it is the linker.

use anyhow::{bail, Context, Result};
use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thindist::cache::{CacheConfig, Digests, DiskCache};
use thindist::driver::{self, LdSettings};
use thindist::exec::{Executor, LocalExecutor, Slots};
use thindist::invocation;
use thindist::plan::KeepNatives;
use thindist::remote::{RemoteExecutor, RemoteSettings};
use thindist::report::ExtraReporters;
use thindist::trace::TraceWriter;

/// mimalloc rather than glibc's malloc. A kernel relink allocates on several threads at once
/// (the flags look-ahead, the cache lookups, the build log), where glibc grew each thread's
/// arena a page at a time, an `mprotect` and a page fault each, and `malloc` and `free` were a
/// fifth of thindist's own CPU; with mimalloc that CPU is about 15% lower (bench/README.md).
/// Without transparent huge pages (`no_thp`): a 2 MiB page faulted in or compacted for a short
/// run cost more system time than mimalloc saved.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`, by its place in `mi_option_e` (`libmimalloc-sys` has no
/// constant for it; a test checks that it is the option with that default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory freed stays with the process rather than going back to the kernel a second later
/// (about 80 `madvise` calls in a one-file kernel relink, each page faulted in again if used
/// again): a run is short, and its peak is what it holds anyway.
fn keep_freed_memory() {
    // SAFETY: mimalloc's options may be set at any time, from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[derive(Parser)]
#[command(name = "thindist", version, about = "Distributed ThinLTO for Clang builds", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run a link as distributed ThinLTO: thin link, one back-end compile per module with its
    /// own flags, final link.
    #[command(
        after_help = "Examples:\n  thindist ld -j8 -- ld.lld-22 -o prog main.o libfoo.a\n  \
        thindist ld --compile-commands build/compile_commands.json -- clang-22 -fuse-ld=lld -flto=thin -o prog *.o\n  \
        ln -s $(which thindist) thindist-ld; make LD=$PWD/thindist-ld THINDIST_LINKER=ld.lld-22"
    )]
    Ld {
        #[command(flatten)]
        options: RunOptions,
        /// The link command: ld.lld (any version) or a clang driver with -fuse-ld=lld.
        #[arg(last = true, required = true, value_name = "LINKER ARGS")]
        command: Vec<String>,
    },
    /// Be lld's DTLTO distributor: run the back-end jobs of the JSON job file lld passes.
    #[command(
        after_help = "Example:\n  clang-22 -flto=thin -fuse-ld=lld -fthinlto-distributor=$(which thindist) \\\n    \
        -Xthinlto-distributor=distribute -Xthinlto-distributor=--compile-commands=compile_commands.json \\\n    \
        -o prog *.o"
    )]
    Distribute {
        #[command(flatten)]
        options: RunOptions,
        /// The job file lld wrote.
        #[arg(value_name = "JSON")]
        job_file: PathBuf,
    },
    /// Be a worker for a Remote Workers API scheduler (BuildGrid): take leases, run them, report.
    #[command(
        after_help = "Example:\n  thindist worker --remote grpc://127.0.0.1:50051 --capacity 4"
    )]
    Worker {
        #[command(flatten)]
        remote: RemoteOptions,
        #[command(flatten)]
        worker: WorkerOptions,
    },
    /// Show or manage the local cache.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
        #[command(flatten)]
        options: CacheOptions,
    },
    /// For one module of the last run: where its flags came from, its inputs and their
    /// digests, its key, and why it was compiled or taken from the cache.
    #[command(
        after_help = "Examples:\n  thindist explain src/foo.o\n  thindist explain --cache-dir /tmp/cache src/foo.o"
    )]
    Explain {
        /// The module (bitcode object) as the link named it.
        object: PathBuf,
        /// The build log to read [default: the newest of the cache's logs that has OBJECT].
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
        #[command(flatten)]
        options: CacheOptions,
    },
    /// Create DIR/thindist-ld, a symlink to this binary: the name under which it is the linker
    /// (`clang --ld-path=DIR/thindist-ld`, `make LD=DIR/thindist-ld`).
    #[command(
        name = "install-links",
        after_help = "Example:\n  thindist install-links ~/.local/bin"
    )]
    InstallLinks {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Run a compile unchanged and record the object's flags for its back end.
    #[command(after_help = "Example:\n  make CC='thindist cc -- clang-22'")]
    Cc {
        #[command(flatten)]
        options: CacheOptions,
        /// Do not file the record in the cache as well.
        #[arg(long, env = "THINDIST_NO_CACHE", value_parser = BoolishValueParser::new())]
        no_cache: bool,
        #[arg(last = true, required = true, value_name = "COMPILER ARGS")]
        command: Vec<String>,
    },
}

#[derive(Subcommand)]
enum CacheAction {
    /// Entries and size, and the hits and misses of the last run.
    Stats,
    /// Remove least recently used entries down to the size limit.
    Prune,
    /// Remove every entry.
    Clear,
}

fn run_cache(action: &CacheAction, options: &CacheOptions) -> Result<i32> {
    let cache = options.open()?;
    match action {
        CacheAction::Stats => {
            let stats = cache.stats();
            println!("cache:   {}", cache.dir().display());
            println!("entries: {}", stats.entries);
            println!("links:   {}", stats.links);
            println!(
                "size:    {:.1} MiB (limit {})",
                stats.bytes as f64 / 1048576.0,
                options.cache_size
            );
            match cache.last_run() {
                Some(run) => println!("last run: {} hits, {} misses", run.hits, run.misses),
                None => println!("last run: none recorded"),
            }
        }
        CacheAction::Prune => println!("removed {} entries", cache.prune()),
        CacheAction::Clear => {
            cache.clear()?;
            println!("cleared {}", cache.dir().display());
        }
    }
    Ok(0)
}

/// `thindist install-links DIR`: DIR/thindist-ld -> this binary. An existing link to this
/// binary is left alone; anything else of that name is an error, never replaced.
fn install_links(dir: &Path) -> Result<i32> {
    let me = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("cannot tell where this thindist binary is")?;
    let link = dir.join("thindist-ld");
    if let Ok(target) = link.canonicalize() {
        if target == me {
            println!("{} already links to {}", link.display(), me.display());
            return Ok(0);
        }
        bail!(
            "{} exists and is not a link to {}; remove it first",
            link.display(),
            me.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::os::unix::fs::symlink(&me, &link)
        .with_context(|| format!("cannot create {}", link.display()))?;
    println!("{} -> {}", link.display(), me.display());
    Ok(0)
}

fn run_explain(object: &Path, log: Option<&Path>, options: &CacheOptions) -> Result<i32> {
    let cwd = std::env::current_dir()?;
    let cache = match log {
        Some(_) => None,
        None => Some(options.open()?),
    };
    let (log_path, entry) = thindist::buildlog::lookup(object, &cwd, log, cache.as_ref())?;
    println!("build log:  {}", log_path.display());
    if let Some(line) = thindist::buildlog::BuildLog::load(&log_path).restored_line() {
        println!("{line}");
    }
    println!("{entry}");
    Ok(0)
}

fn run_worker(remote: &RemoteOptions, options: &WorkerOptions) -> Result<i32> {
    let endpoint = remote
        .remote
        .as_deref()
        .context("thindist worker needs --remote URL (or THINDIST_REMOTE)")?;
    let mut config = thindist_reapi::worker::WorkerConfig::new(remote.config(endpoint)?);
    config.capacity = options.capacity;
    config.work_dir = options.work_dir.clone();
    config.cache_dir = options.cache_dir.clone();
    config.cache_size = options.cache_mib << 20;
    thindist::remote::run_worker(
        config,
        (options.fork_server.enabled, options.fork_server.cc1_workers),
        options.verbose,
    )?;
    Ok(0)
}

/// Options of a distributed run; each is also an environment variable, because thindist often
/// runs where no command line reaches it (as `thindist-ld` under make).
#[derive(Args, Clone, Debug)]
struct RunOptions {
    /// Back-end jobs at once [default: make's jobserver if passed in MAKEFLAGS, else the CPU count].
    #[arg(short = 'j', long, env = "THINDIST_JOBS")]
    jobs: Option<usize>,
    /// A compile_commands.json giving per-object flags.
    #[arg(long, env = "THINDIST_COMPILE_COMMANDS", value_name = "FILE")]
    compile_commands: Option<PathBuf>,
    /// Print every command.
    #[arg(short, long, env = "THINDIST_VERBOSE", value_parser = BoolishValueParser::new())]
    verbose: bool,
    /// Run every job even after one fails (the link still fails).
    #[arg(long, env = "THINDIST_KEEP_GOING", value_parser = BoolishValueParser::new())]
    keep_going: bool,
    /// Compiler for modules without saved flags [default: the clang beside the linker].
    #[arg(long, env = "THINDIST_COMPILER")]
    compiler: Option<String>,
    /// Write a Chrome trace-event JSON of the run (open in Perfetto or chrome://tracing).
    #[arg(long, env = "THINDIST_TRACE", value_name = "FILE")]
    trace: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheOptions,
    #[command(flatten)]
    remote: RemoteOptions,
    /// Do not use the local cache.
    #[arg(long, env = "THINDIST_NO_CACHE", value_parser = BoolishValueParser::new())]
    no_cache: bool,
    /// Keep each native object beside its bitcode as STEM.thinlto-native.o (always done in a
    /// kbuild tree; never for the clang driver's temporaries or regular archive members).
    #[arg(long, env = "THINDIST_KEEP_NATIVES", value_parser = BoolishValueParser::new())]
    keep_natives: bool,
    /// Keep the link's private work directory in TMPDIR (shards, import lists, response files,
    /// native objects) and print where it is; lld's --save-temps on the link line does the same.
    #[arg(long, env = "THINDIST_KEEP_WORK", value_parser = BoolishValueParser::new())]
    keep_work: bool,
    #[command(flatten)]
    fork_server: ForkServerOption,
}

/// Whether compiles fork from a compiler fork server (the local executor's and the worker's), and
/// a link's thin link and final link from one of its linker.
#[derive(Args, Clone, Debug)]
struct ForkServerOption {
    /// Run every compile, thin link and final link as a process of its own, not as a fork of a
    /// compiler's or the linker's fork server (THINDIST_FORK_SERVER=0 does the same).
    #[arg(
        long = "no-fork-server",
        env = "THINDIST_FORK_SERVER",
        action = clap::ArgAction::SetFalse,
        value_parser = BoolishValueParser::new()
    )]
    enabled: bool,
    /// Run no back end in a cc1 worker (a fork server's child that compiles job after job of
    /// one flag set through clang's cc1_main); each is then a forked driver
    /// (THINDIST_CC1_WORKERS=0 does the same).
    #[arg(
        long = "no-cc1-workers",
        env = "THINDIST_CC1_WORKERS",
        action = clap::ArgAction::SetFalse,
        value_parser = BoolishValueParser::new()
    )]
    cc1_workers: bool,
}

/// How `thindist worker` runs its leases.
#[derive(Args, Clone, Debug)]
struct WorkerOptions {
    /// Leases to run at once.
    #[arg(long, env = "THINDIST_WORKER_CAPACITY", default_value_t = 1)]
    capacity: usize,
    /// Where each lease gets its fresh input directory [default: the temp directory].
    #[arg(long, env = "THINDIST_WORKER_DIR", value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Where the worker's local CAS makes its directory of fetched blobs (removed when the
    /// worker stops), best on the file system of the work directory [default: the work directory].
    #[arg(long, env = "THINDIST_WORKER_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// MiB the worker's local CAS may hold; the least recently used blobs go beyond it.
    #[arg(long, env = "THINDIST_WORKER_CACHE_MIB", default_value_t = 2048)]
    cache_mib: u64,
    #[command(flatten)]
    fork_server: ForkServerOption,
    /// Say whether each compiler has a fork server.
    #[arg(short, long)]
    verbose: bool,
}

/// Remote jobs in flight unless `--remote-jobs` says otherwise.
const REMOTE_JOBS: usize = 64;

/// Remote execution over the Bazel Remote Execution API v2.
#[derive(Args, Clone, Debug)]
struct RemoteOptions {
    /// Remote execution server, grpc://HOST:PORT or grpcs://HOST:PORT.
    #[arg(long, env = "THINDIST_REMOTE", value_name = "URL")]
    remote: Option<String>,
    /// Instance name on the server.
    #[arg(
        long,
        env = "THINDIST_REMOTE_INSTANCE",
        default_value = "",
        value_name = "NAME"
    )]
    remote_instance: String,
    /// PEM file of the TLS roots to trust [default: the system's].
    #[arg(long, env = "THINDIST_REMOTE_CA", value_name = "FILE")]
    remote_ca: Option<PathBuf>,
    /// PEM client certificate, for servers that require mutual TLS.
    #[arg(long, env = "THINDIST_REMOTE_CERT", value_name = "FILE")]
    remote_cert: Option<PathBuf>,
    /// PEM client key, with --remote-cert.
    #[arg(long, env = "THINDIST_REMOTE_KEY", value_name = "FILE")]
    remote_key: Option<PathBuf>,
    /// Extra header on every call, NAME=VALUE (repeatable; comma-separated in the environment).
    #[arg(
        long,
        env = "THINDIST_REMOTE_HEADER",
        value_delimiter = ',',
        value_name = "NAME=VALUE"
    )]
    remote_header: Vec<String>,
    /// Platform property of every action, NAME=VALUE (repeatable).
    #[arg(
        long,
        env = "THINDIST_REMOTE_PLATFORM",
        value_delimiter = ',',
        value_name = "NAME=VALUE"
    )]
    remote_platform: Vec<String>,
    /// The compiler's path on the workers [default: the job's own compiler name].
    #[arg(long, env = "THINDIST_REMOTE_COMPILER", value_name = "PATH")]
    remote_compiler: Option<String>,
    /// Seconds before a call (other than Execute) times out.
    #[arg(
        long,
        env = "THINDIST_REMOTE_TIMEOUT",
        default_value_t = 60,
        value_name = "SECS"
    )]
    remote_timeout: u64,
    /// Seconds an Execute may take, queueing included.
    #[arg(
        long,
        env = "THINDIST_REMOTE_EXECUTE_TIMEOUT",
        default_value_t = 3600,
        value_name = "SECS"
    )]
    remote_execute_timeout: u64,
    /// Jobs in flight on the remote server [default: 64]. Each is a wait on the network, not
    /// work here; the server holds a thread or stream for each.
    #[arg(long, env = "THINDIST_REMOTE_JOBS", value_name = "N")]
    remote_jobs: Option<usize>,
    /// Never fall back to local compiles when remote execution fails.
    #[arg(long, env = "THINDIST_REMOTE_ONLY", value_parser = BoolishValueParser::new())]
    remote_only: bool,
}

fn pairs(values: &[String], what: &str) -> Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|v| {
            v.split_once('=')
                .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
                .with_context(|| format!("{what} {v:?} is not NAME=VALUE"))
        })
        .collect()
}

impl RemoteOptions {
    fn config(&self, endpoint: &str) -> Result<thindist_reapi::RemoteConfig> {
        let mut config = thindist_reapi::RemoteConfig::new(endpoint);
        config.instance = self.remote_instance.clone();
        config.tls_ca = self.remote_ca.clone();
        config.tls_cert = self.remote_cert.clone();
        config.tls_key = self.remote_key.clone();
        config.headers = pairs(&self.remote_header, "--remote-header")?;
        config.timeout = std::time::Duration::from_secs(self.remote_timeout);
        config.execute_timeout = std::time::Duration::from_secs(self.remote_execute_timeout);
        Ok(config)
    }

    /// The executor these options ask for: remote when --remote is set, else local.
    fn executor(
        &self,
        cpus: usize,
        local: LocalExecutor,
        digests: Arc<Digests>,
    ) -> Result<Box<dyn Executor>> {
        let Some(endpoint) = &self.remote else {
            return Ok(Box::new(local));
        };
        Ok(Box::new(RemoteExecutor::connect(
            RemoteSettings {
                config: self.config(endpoint)?,
                platform: pairs(&self.remote_platform, "--remote-platform")?,
                compiler: self.remote_compiler.clone(),
                remote_only: self.remote_only,
                local_slots: cpus,
            },
            local,
            digests,
        )?))
    }
}

#[derive(Args, Clone, Debug)]
struct CacheOptions {
    /// The local cache directory [default: $XDG_CACHE_HOME/thindist].
    #[arg(long, env = "THINDIST_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Size limit of the local cache; least recently used entries go first.
    #[arg(
        long,
        env = "THINDIST_CACHE_SIZE",
        default_value = "10G",
        value_name = "SIZE"
    )]
    cache_size: String,
    /// The cache is shared by several users on purpose: use it whoever owns it or can write
    /// it (each of them can then plant objects in the others' builds).
    #[arg(long, env = "THINDIST_CACHE_SHARED", value_parser = BoolishValueParser::new())]
    cache_shared: bool,
}

/// Why there is no cache when no directory is named.
const NO_CACHE_DIR: &str = "neither XDG_CACHE_HOME nor HOME is set; pass --cache-dir DIR";

impl CacheOptions {
    /// The cache these options name; `None` when no directory is named and there is no
    /// default one (neither XDG_CACHE_HOME nor HOME is set).
    fn config(&self) -> Result<Option<CacheConfig>> {
        let max_bytes =
            thindist::cache::store::parse_size(&self.cache_size).context("--cache-size")?;
        Ok(self
            .cache_dir
            .clone()
            .or_else(thindist::cache::store::default_dir)
            .map(|dir| CacheConfig {
                dir,
                max_bytes,
                shared: self.cache_shared,
            }))
    }

    fn open(&self) -> Result<DiskCache> {
        let config = self
            .config()?
            .with_context(|| format!("no cache directory: {NO_CACHE_DIR}"))?;
        DiskCache::open(&config)
    }
}

impl RunOptions {
    /// The options from the environment alone.
    fn from_env() -> Result<RunOptions> {
        #[derive(Parser)]
        struct EnvOnly {
            #[command(flatten)]
            options: RunOptions,
        }
        Ok(EnvOnly::try_parse_from(["thindist-ld"])?.options)
    }

    fn settings(&self) -> Result<LdSettings> {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let slots = match (self.jobs, &self.remote.remote) {
            (Some(n), _) => Slots::Fixed(n.max(1)),
            // Remote jobs wait on the network: as many in flight as a farm has workers.
            (None, Some(_)) => Slots::Fixed(self.remote.remote_jobs.unwrap_or(REMOTE_JOBS).max(1)),
            (None, None) => Slots::from_env_or(cpus),
        };
        Ok(LdSettings {
            slots,
            compile_commands: self.compile_commands.clone(),
            verbose: self.verbose,
            keep_going: self.keep_going,
            cache: if self.no_cache {
                None
            } else {
                let config = self.cache.config()?;
                if config.is_none() {
                    eprintln!("thindist: note: no cache: {NO_CACHE_DIR}");
                }
                config
            },
            compiler: self.compiler.clone(),
            keep_work: self.keep_work,
            keep_natives: if self.keep_natives {
                KeepNatives::Always
            } else {
                KeepNatives::Kbuild
            },
            linker_fork_server: self.fork_server.enabled,
        })
    }
}

/// How a run is entered: a link, or lld's DTLTO job file.
enum Entry<'a> {
    Link(&'a [String]),
    JobFile(&'a Path),
}

fn run(options: &RunOptions, entry: Entry, config_file: Option<&Path>) -> Result<i32> {
    thindist::exec::install_interrupt_handler();
    if options.verbose {
        match config_file {
            Some(path) => eprintln!("thindist: config file {}", path.display()),
            None => eprintln!("thindist: no config file"),
        }
    }
    let settings = options.settings()?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let local = LocalExecutor::new(
        options.fork_server.enabled,
        options.fork_server.cc1_workers,
        options.verbose,
    );
    // Unchanged inputs are known by their stat across runs, through the cache's digest memo.
    let memo_dir = (settings.cache.as_ref()).and_then(|c| DiskCache::open(c).ok());
    let digests = Arc::new(memo_dir.map_or_else(Digests::default, |c| Digests::with_memo(c.dir())));
    let executor = options.remote.executor(cpus, local, digests.clone())?;
    let mut trace = options.trace.as_ref().map(|_| TraceWriter::new());
    let mut extra: ExtraReporters = Vec::new();
    if let Some(trace) = trace.as_mut() {
        extra.push(trace);
    }
    let run = driver::Run {
        settings: &settings,
        executor: executor.as_ref(),
        digests: &digests,
    };
    let result = match entry {
        Entry::Link(command) => {
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            let invocation = invocation::resolve_invocation(command, &cwd)?;
            driver::run_ld(invocation, run, extra)
        }
        Entry::JobFile(path) => driver::run_distribute(path, run, extra),
    };
    // Done at the end of a successful link already; anything learnt since is saved here.
    driver::save_digest_memo(&digests);
    if let Some(line) = executor.report() {
        eprintln!("{line}");
    }
    if let (Some(trace), Some(path)) = (trace, &options.trace) {
        trace.write(path)?;
    }
    result
}

/// The environment variable of every option: the keys a config file may set.
fn option_variables() -> Vec<String> {
    use clap::CommandFactory;
    let mut names = Vec::new();
    let mut commands = vec![Cli::command()];
    while let Some(command) = commands.pop() {
        names.extend(
            command
                .get_arguments()
                .filter_map(|arg| arg.get_env())
                .map(|env| env.to_string_lossy().into_owned()),
        );
        commands.extend(command.get_subcommands().cloned());
    }
    names
}

fn main() {
    keep_freed_memory();
    // THINDIST_LOG=debug shows what thindist decides and why (retries, reconnects).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("THINDIST_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let config_file = match std::env::current_dir()
        .map_err(anyhow::Error::from)
        .and_then(|cwd| thindist::config::apply_config_file(&cwd, &option_variables()))
    {
        Ok(file) => file,
        Err(err) => {
            eprintln!("thindist: error: {err:#}");
            exit_now(1);
        }
    };
    let config_file = config_file.as_deref();
    let argv0 = std::env::args().next().unwrap_or_default();
    let invoked_as = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let result = if invoked_as.starts_with("thindist-ld") {
        let args: Vec<String> = std::env::args().skip(1).collect();
        RunOptions::from_env().and_then(|options| {
            let mut command = vec![invocation::real_linker()?];
            command.extend(args);
            run(&options, Entry::Link(&command), config_file)
        })
    } else {
        let cli = Cli::parse();
        match &cli.command {
            Commands::Ld { options, command } => run(options, Entry::Link(command), config_file),
            Commands::Distribute { options, job_file } => {
                run(options, Entry::JobFile(job_file), config_file)
            }
            Commands::Cc {
                options,
                no_cache,
                command,
            } => {
                // Quietly without the cache when it is off or unusable: a compiler wrapper
                // must not add noise to every compile; the link says why.
                let cache = (!no_cache)
                    .then(|| options.config().ok().flatten())
                    .flatten()
                    .and_then(|config| DiskCache::open(&config).ok());
                thindist::cc::run_cc(command, cache.as_ref())
            }
            Commands::Cache { action, options } => run_cache(action, options),
            Commands::InstallLinks { dir } => install_links(dir),
            Commands::Worker { remote, worker } => run_worker(remote, worker),
            Commands::Explain {
                object,
                log,
                options,
            } => run_explain(object, log.as_deref(), options),
        }
    };
    // An interrupted run exits as the signal says; the handler already said why.
    if let Some(signal) = thindist::exec::interrupts().signal() {
        exit_now(128 + signal);
    }
    match result {
        Ok(code) => exit_now(code),
        Err(err) => {
            eprintln!("thindist: error: {err:#}");
            exit_now(1);
        }
    }
}

/// Ends the process with `code` once standard output is flushed, without running exit
/// handlers: mimalloc's frees every page it holds (with the purges it then made, 2 ms at the
/// end of a kernel link), memory the kernel takes back anyway. Nothing else thindist uses
/// registers one; its files are written and its work directory removed before this.
fn exit_now(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: `_exit` ends the process; no code of this process runs after it.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option set is mimalloc's purge delay: the one whose default is a second (no option
    /// beside it in `mi_option_e` has that default), and it is then -1, never.
    #[test]
    fn the_option_set_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads an option.
            let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
            assert_eq!(default, 1000);
        }
        keep_freed_memory();
        // SAFETY: reads an option.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            -1
        );
    }
}
