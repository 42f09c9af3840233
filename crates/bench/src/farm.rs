//! `thindist-bench farm`: remote execution at farm scale on a simulated farm. BuildGrid (tuned
//! as `ci/buildgrid.sh` does, its thread pool raised for the largest W) and W `thindist worker`s
//! of capacity 1 on loopback; on the workers a compiler wrapper that sleeps a fixed delay before
//! running clang, so each action costs the farm at least the delay; the generated project, local
//! cache off. Per W it prints the wall time against the ideal (ceil(jobs / W) x delay) and the
//! CPU per action of the client (thindist itself, and with its thin and final links), the
//! server (BuildGrid and PostgreSQL) and the workers (without their compilers), and names the
//! side that limits.
//!
//!   thindist-bench farm [--workers 1,2,4] [--delay 0.25] [--modules 121] [--quick]
//!                       [--remote-jobs N] [--endpoint URL --instance NAME --platform K=V ...]
//!
//! With `--endpoint` nothing is started: the build goes to that farm, whose workers run the
//! compiler `--remote-compiler` names (default `clang-22`); `--workers` is then the one W the
//! farm has, for the ideal, and only the client's CPU is measured. A second run of the same
//! build there comes from the action cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Options {
    workers: Vec<usize>,
    delay: f64,
    modules: usize,
    remote_jobs: Option<usize>,
    /// A real farm: (endpoint, instance, platform properties, compiler on its workers).
    endpoint: Option<(String, String, Vec<String>, String)>,
}

fn options(args: &[String]) -> Options {
    let mut o = Options {
        workers: vec![1, 2, 4, 8, 16, 32],
        delay: 0.25,
        modules: 121,
        remote_jobs: None,
        endpoint: None,
    };
    let (mut instance, mut platform, mut compiler) = (String::new(), Vec::new(), None);
    let mut endpoint = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| panic!("{arg} needs a value"))
                .clone()
        };
        match arg.as_str() {
            "--workers" => {
                o.workers = value()
                    .split(',')
                    .map(|w| w.parse().expect("--workers takes numbers: 1,2,4"))
                    .collect()
            }
            "--delay" => o.delay = value().parse().expect("--delay takes seconds"),
            "--modules" => o.modules = value().parse().expect("--modules takes a number"),
            "--remote-jobs" => o.remote_jobs = Some(value().parse().expect("a number")),
            "--quick" => o.workers = vec![1, 4, 16],
            "--endpoint" => endpoint = Some(value()),
            "--instance" => instance = value(),
            "--platform" => platform.push(value()),
            "--remote-compiler" => compiler = Some(value()),
            other => panic!("farm: unknown option {other}"),
        }
    }
    o.workers.sort();
    o.workers.dedup();
    assert!(
        endpoint.is_none() || o.workers.len() == 1,
        "with --endpoint, --workers names the farm's one W"
    );
    o.endpoint = endpoint.map(|e| {
        let compiler = compiler.unwrap_or_else(|| "clang-22".into());
        (e, instance, platform, compiler)
    });
    o
}

/// CPU seconds of one process: (its own threads, its reaped children).
fn process_cpu(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let f = |i: usize| fields[i].parse::<f64>().unwrap_or(0.0) / tick;
    // After the command name: state, ppid, ... utime is field 14 of the line, so index 11.
    Some((f(11) + f(12), f(13) + f(14)))
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds of `roots` and every live descendant, with the children they reaped: a process
/// tree's consumption so far, as long as its roots live.
fn tree_cpu(roots: &[u32]) -> f64 {
    let parents: HashMap<u32, u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect();
    let in_tree = |mut pid: u32| loop {
        if roots.contains(&pid) {
            return true;
        }
        match parents.get(&pid) {
            Some(&parent) if parent > 1 => pid = parent,
            _ => return false,
        }
    };
    parents
        .keys()
        .filter(|&&pid| in_tree(pid))
        .filter_map(|&pid| process_cpu(pid))
        .map(|(own, children)| own + children)
        .sum()
}

/// CPU seconds the whole machine has been busy (every process, this farm's or not) and idle.
fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // user nice system idle iowait irq softirq steal ...
    let idle = ticks.get(3).unwrap_or(&0.0) + ticks.get(4).unwrap_or(&0.0);
    let busy: f64 = ticks.iter().take(8).sum::<f64>() - idle;
    (busy / tick, idle / tick)
}

/// The farm started here: BuildGrid with its database, and the workers so far.
struct Farm {
    dir: tempfile::TempDir,
    port: u16,
    workers: Vec<Child>,
}

impl Farm {
    fn start(threads: usize) -> Farm {
        let dir = tempfile::tempdir().unwrap();
        let port = 47411u16;
        let started = Command::new(repo().join("ci/buildgrid.sh"))
            .arg("start")
            .arg(dir.path())
            .arg(port.to_string())
            .env("BUILDGRID_THREADS", threads.to_string())
            .status()
            .unwrap();
        assert!(
            started.success(),
            "BuildGrid did not start (ci/buildgrid.sh install)"
        );
        Farm {
            dir,
            port,
            workers: Vec::new(),
        }
    }

    fn url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }

    fn grow_to(&mut self, n: usize) {
        while self.workers.len() < n {
            let worker = Command::new(super::thindist())
                .args(["worker", "--remote", &self.url(), "--capacity", "1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            self.workers.push(worker);
        }
        // Time for the new bots to open their sessions.
        std::thread::sleep(Duration::from_secs(2));
    }

    /// BuildGrid's process and PostgreSQL's postmaster, whose trees are the server.
    fn server_roots(&self) -> Vec<u32> {
        let read = |name: &str| {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            text.lines().next().and_then(|l| l.trim().parse().ok())
        };
        [read("bgd.pid.shell"), read("pg/postmaster.pid")]
            .into_iter()
            .flatten()
            .collect()
    }

    /// CPU of the workers themselves, without their compilers (their reaped children) and
    /// without their fork servers (children that live on).
    fn workers_cpu(&self) -> f64 {
        self.workers
            .iter()
            .filter_map(|w| process_cpu(w.id()))
            .map(|(own, _)| own)
            .sum()
    }

    /// CPU of the workers' compilers so far (wrappers, clang, fork servers).
    fn compilers_cpu(&self) -> f64 {
        let roots: Vec<u32> = self.workers.iter().map(Child::id).collect();
        tree_cpu(&roots) - self.workers_cpu()
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = Command::new(repo().join("ci/buildgrid.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A client run: wall, thindist's own CPU, and its children's (thin and final links).
struct ClientRun {
    wall: f64,
    own: f64,
    children: f64,
    stderr: String,
}

fn run_client(cmd: &mut Command) -> ClientRun {
    let stderr_file = tempfile::NamedTempFile::new().unwrap();
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(stderr_file.reopen().unwrap())
        .spawn()
        .unwrap();
    // Wait without reaping, so that /proc still has the exited process's CPU.
    // SAFETY: siginfo is a valid out-pointer; waiting for our own child.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let waited = unsafe {
        libc::waitid(
            libc::P_PID,
            child.id(),
            &mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    let wall = start.elapsed().as_secs_f64();
    assert_eq!(waited, 0, "waitid: {}", std::io::Error::last_os_error());
    let (own, children) = process_cpu(child.id()).unwrap();
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(stderr_file.path()).unwrap_or_default();
    assert!(status.success(), "{cmd:?} failed:\n{stderr}");
    ClientRun {
        wall,
        own,
        children,
        stderr,
    }
}

/// The compiler the workers run: sleeps `delay`, then clang. Its path is part of every action,
/// so a wrapper per run makes every run's actions new to the action cache.
fn wrapper(dir: &Path, name: &str, delay: f64) -> PathBuf {
    let path = dir.join(name).join("clang");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        format!("#!/bin/sh\nsleep {delay}\nexec clang-22 \"$@\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

pub fn main(args: &[String]) {
    let o = options(args);
    let largest = *o.workers.last().expect("--workers names no W");
    println!(
        "== farm: {} modules, compile delay {} s on the workers, W = {:?}{}",
        o.modules,
        o.delay,
        o.workers,
        o.endpoint
            .as_ref()
            .map(|e| format!(", farm at {}", e.0))
            .unwrap_or_else(|| ", BuildGrid and workers on loopback".into())
    );
    let work = tempfile::tempdir().unwrap();
    let project = super::project(&work.path().join("tree"), o.modules);
    // Every Execute stream and every bot's long-poll holds one of BuildGrid's threads (64:
    // thindist's default of jobs in flight).
    let remote_jobs_max = o.remote_jobs.unwrap_or(64);
    let mut farm = o
        .endpoint
        .is_none()
        .then(|| Farm::start(2 * largest + remote_jobs_max + 16));
    println!(
        "  {:>3} {:>8} {:>8} {:>6}   {:>17} {:>13} {:>9} {:>9} {:>8}  limiting side",
        "W",
        "wall",
        "ideal",
        "ratio",
        "client ms/action",
        "server",
        "workers",
        "compiles",
        "machine"
    );
    println!(
        "  {:>3} {:>8} {:>8} {:>6}   {:>17} {:>13} {:>9} {:>9} {:>8}",
        "", "s", "s", "", "own (+links)", "ms/action", "ms/action", "ms/action", "busy"
    );
    for &w in &o.workers {
        let mut cmd = Command::new(super::thindist());
        cmd.args(["ld", "--no-cache", "--remote-only"]);
        match (&o.endpoint, &mut farm) {
            (Some((endpoint, instance, platform, compiler)), _) => {
                cmd.args(["--remote", endpoint, "--remote-instance", instance]);
                cmd.args(["--remote-compiler", compiler]);
                for p in platform {
                    cmd.args(["--remote-platform", p]);
                }
            }
            (None, Some(farm)) => {
                farm.grow_to(w);
                let compiler = wrapper(work.path(), &format!("w{w}"), o.delay);
                cmd.args(["--remote", &farm.url()]);
                cmd.arg("--remote-compiler").arg(compiler);
            }
            (None, None) => unreachable!(),
        }
        if let Some(n) = o.remote_jobs {
            cmd.args(["--remote-jobs", &n.to_string()]);
        }
        cmd.arg("--")
            .arg("clang-22")
            .args(project.clang_link_args(&format!("prog-w{w}")))
            .current_dir(&project.dir);
        let before = farm.as_ref().map(|f| {
            (
                tree_cpu(&f.server_roots()),
                f.workers_cpu(),
                f.compilers_cpu(),
            )
        });
        let machine_before = machine_cpu();
        let client = run_client(&mut cmd);
        let machine_after = machine_cpu();
        let (jobs, _) = super::summary(&client.stderr);
        let after = farm.as_ref().map(|f| {
            (
                tree_cpu(&f.server_roots()),
                f.workers_cpu(),
                f.compilers_cpu(),
            )
        });
        let per_action = |cpu: f64| 1000.0 * cpu / jobs as f64;
        // Of all cores, other processes' included: the machine is shared.
        let machine = (machine_after.0 - machine_before.0)
            / (machine_after.0 + machine_after.1 - machine_before.0 - machine_before.1);
        let ideal = (jobs as f64 / w as f64).ceil() * o.delay;
        let ratio = client.wall / ideal;
        let (server, workers, compiles) = match (before, after) {
            (Some(b), Some(a)) => (a.0 - b.0, a.1 - b.1, a.2 - b.2),
            _ => (f64::NAN, f64::NAN, f64::NAN),
        };
        let shown = |cpu: f64| {
            if cpu.is_nan() {
                "-".to_string()
            } else {
                format!("{:.1}", per_action(cpu))
            }
        };
        println!(
            "  {w:>3} {:>8.2} {:>8.2} {:>5.2}x   {:>7.2} ({:>6.2}) {:>13} {:>9} {:>9} {:>7.0}%  {}",
            client.wall,
            ideal,
            ratio,
            per_action(client.own),
            per_action(client.own + client.children),
            shown(server),
            shown(workers),
            shown(compiles),
            100.0 * machine,
            limiting(
                &o,
                w,
                jobs,
                client.wall,
                [client.own + client.children, server, workers + compiles],
                machine
            )
        );
    }
}

/// Which side holds the farm back: none while the wall is near the ideal (the workers' compile
/// time is all there is); else the server or the client when it keeps most of a core busy
/// (BuildGrid is one Python process), or the machine when all of its cores are busy (this farm
/// shares them with whatever else runs); else the round trips of scheduling, with what they
/// add to each action.
fn limiting(o: &Options, w: usize, jobs: usize, wall: f64, cpu: [f64; 3], machine: f64) -> String {
    let ideal = (jobs as f64 / w as f64).ceil() * o.delay;
    if wall < 1.25 * ideal {
        return "workers (at the ideal)".into();
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let [client, server, farm] = cpu.map(|c| if c.is_nan() { 0.0 } else { c / wall });
    if server >= 0.7 && server >= client {
        format!("server ({server:.2} cores)")
    } else if client >= 0.7 {
        format!("client ({client:.2} cores)")
    } else if machine >= 0.85 {
        format!(
            "the machine (this farm {:.0}% of its cores, the rest others')",
            100.0 * (client + server + farm) / cores
        )
    } else {
        let added = (wall - ideal) * w as f64 / jobs as f64;
        format!(
            "scheduling round trips (+{:.0} ms an action)",
            1000.0 * added
        )
    }
}
