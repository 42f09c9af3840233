//! Benchmarks that print thindist against lld's in-process ThinLTO side by side, as ratios, in
//! one run. Measures, never asserts.
//!
//!   cargo run --release -p thindist-bench -- core     # link: wall, CPU, peak memory, 2 sizes
//!   cargo run --release -p thindist-bench -- forkserver # back ends forked vs as processes
//!   cargo run --release -p thindist-bench -- cache    # no-change and one-file-change rebuilds
//!   cargo run --release -p thindist-bench -- dtlto    # thindist ld against lld's DTLTO path
//!   cargo run --release -p thindist-bench -- remote   # BuildGrid on loopback, 1 and 2 workers
//!   cargo run --release -p thindist-bench -- farm [--quick] # W workers on loopback (farm.rs)
//!   cargo run --release -p thindist-bench -- scale    # 5,000 modules: thindist's own peak memory

mod farm;
mod scale;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use thindist_testkit::Project;

const JOBS: usize = 2;

fn thindist() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().join("thindist");
    assert!(
        path.exists(),
        "build thindist first: cargo build --release -p thindist"
    );
    path
}

/// One measured run: wall time, CPU of the whole process tree, the largest resident set of
/// any one process in it, and what it printed on stderr.
struct Measurement {
    wall: Duration,
    cpu: Duration,
    max_rss_mib: f64,
    stderr: String,
}

// The child is reaped by wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn measure(cmd: &mut Command) -> Measurement {
    let stderr_file = tempfile::NamedTempFile::new().unwrap();
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(stderr_file.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child; usage is a valid out-pointer.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(pid, child.id() as i32);
    let stderr = std::fs::read_to_string(stderr_file.path()).unwrap_or_default();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed:\n{stderr}"
    );
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Measurement {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        stderr,
    }
}

fn row(name: &str, m: &Measurement) {
    println!(
        "  {name:<44} {:>8.2} s wall {:>8.2} s CPU {:>8.1} MiB peak",
        m.wall.as_secs_f64(),
        m.cpu.as_secs_f64(),
        m.max_rss_mib
    );
}

fn ratio(name: &str, a: &Measurement, b: &Measurement) {
    println!(
        "  {name:<44} {:>8.2}x wall {:>8.2}x CPU {:>8.2}x peak",
        a.wall.as_secs_f64() / b.wall.as_secs_f64(),
        a.cpu.as_secs_f64() / b.cpu.as_secs_f64(),
        a.max_rss_mib / b.max_rss_mib
    );
}

/// (modules, summed job seconds) from thindist's summary line.
fn summary(stderr: &str) -> (usize, f64) {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains(" modules in "))
        .unwrap_or_else(|| panic!("no summary in:\n{stderr}"));
    let modules = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let summed = line
        .split(", ")
        .nth(1)
        .and_then(|p| p.split('s').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    (modules, summed)
}

fn project(dir: &Path, modules: usize) -> Project {
    let p = Project::generate(dir, modules);
    p.compile(&[], |_| vec![]);
    p.partial_link(&[]);
    p
}

fn in_process(p: &Project, output: &str, extra: &[String]) -> Command {
    let mut c = Command::new("clang-22");
    c.args(p.clang_link_args(output))
        .arg(format!("-Wl,--thinlto-jobs={JOBS}"))
        .args(extra)
        .current_dir(&p.dir);
    c
}

fn thindist_ld(p: &Project, output: &str, options: &[&str]) -> Command {
    let mut c = Command::new(thindist());
    c.arg("ld")
        .arg(format!("-j{JOBS}"))
        .args(options)
        .arg("--")
        .arg("clang-22")
        .args(p.clang_link_args(output))
        .current_dir(&p.dir);
    c
}

fn core() {
    println!("== link: thindist ld -j{JOBS} against in-process ThinLTO --thinlto-jobs={JOBS} (no caches)");
    for modules in [200, 600] {
        let dir = tempfile::tempdir().unwrap();
        let p = project(dir.path(), modules);
        let inproc = in_process(&p, "prog-inproc", &[]).output().map(|_| ()).ok();
        let _ = inproc; // warm the page cache once
        let a = measure(&mut in_process(&p, "prog-inproc", &[]));
        let b = measure(&mut thindist_ld(&p, "prog-thindist", &["--no-cache"]));
        let (jobs, summed) = summary(&b.stderr);
        println!("{modules} modules:");
        row("in-process ThinLTO", &a);
        row("thindist", &b);
        ratio("thindist / in-process", &b, &a);
        println!(
            "  orchestration overhead: {:.2} s (wall {:.2} s - summed jobs {:.2} s / {JOBS} slots), {jobs} jobs",
            b.wall.as_secs_f64() - summed / JOBS as f64,
            b.wall.as_secs_f64(),
            summed
        );
    }
}

fn forkserver() {
    println!("== back ends: compiler fork server against a compiler process per job (thindist ld -j{JOBS}, no caches)");
    for modules in [200, 600] {
        let dir = tempfile::tempdir().unwrap();
        let p = project(dir.path(), modules);
        let mut processes = thindist_ld(&p, "prog-processes", &["--no-cache", "--no-fork-server"]);
        measure(&mut processes); // warm the page cache once
        let a = measure(&mut processes);
        let b = measure(&mut thindist_ld(&p, "prog-forked", &["--no-cache"]));
        let per_job = |m: &Measurement| {
            let (jobs, summed) = summary(&m.stderr);
            summed / jobs as f64 * 1000.0
        };
        println!("{modules} modules:");
        row("processes", &a);
        row("fork server", &b);
        ratio("fork server / processes", &b, &a);
        println!(
            "  per-job time: {:.1} ms forked against {:.1} ms as a process",
            per_job(&b),
            per_job(&a)
        );
    }
}

fn touch_module(p: &Project, i: usize, salt: &str) {
    let src = p.dir.join(p.source(i));
    let text = std::fs::read_to_string(&src)
        .unwrap()
        .replace("acc = (acc << 1)", &format!("acc = (acc << 1) + {salt}"));
    std::fs::write(&src, text).unwrap();
    let obj = p.object(i);
    let ok = Command::new("clang-22")
        .args(["-O2", "-flto=thin", "-c"])
        .arg(p.source(i))
        .arg("-o")
        .arg(&obj)
        .current_dir(&p.dir)
        .status()
        .unwrap();
    assert!(ok.success());
}

fn cache() {
    println!("== rebuilds: thindist's cache against lld's --thinlto-cache-dir (both warm)");
    let dir = tempfile::tempdir().unwrap();
    let p = project(dir.path(), 200);
    let lld_cache = format!(
        "-Wl,--thinlto-cache-dir={}",
        dir.path().join("lld-cache").display()
    );
    let td_cache = dir.path().join("td-cache");
    let td_cache = td_cache.to_str().unwrap();
    let td = |out: &str| thindist_ld(&p, out, &["--cache-dir", td_cache]);
    measure(&mut in_process(
        &p,
        "prog-inproc",
        std::slice::from_ref(&lld_cache),
    ));
    measure(&mut td("prog-thindist"));
    let a = measure(&mut in_process(
        &p,
        "prog-inproc",
        std::slice::from_ref(&lld_cache),
    ));
    let b = measure(&mut td("prog-thindist"));
    println!("no-change rebuild (200 modules):");
    row("in-process, warm --thinlto-cache-dir", &a);
    row("thindist, warm cache (link restored)", &b);
    ratio("thindist / in-process", &b, &a);
    // With the outputs gone thindist cannot restore the link: every back end is a cache hit.
    for out in ["prog-inproc", "prog-thindist"] {
        std::fs::remove_file(p.dir.join(out)).unwrap();
    }
    let a = measure(&mut in_process(
        &p,
        "prog-inproc",
        std::slice::from_ref(&lld_cache),
    ));
    let b = measure(&mut td("prog-thindist"));
    println!("no-change rebuild, outputs removed (every back end a cache hit):");
    row("in-process, warm --thinlto-cache-dir", &a);
    row("thindist, warm cache", &b);
    ratio("thindist / in-process", &b, &a);
    print_cache_line(&b);
    touch_module(&p, 3, "1");
    let a = measure(&mut in_process(
        &p,
        "prog-inproc",
        std::slice::from_ref(&lld_cache),
    ));
    let b = measure(&mut td("prog-thindist"));
    println!("one-file-change rebuild (m0003.c edited):");
    row("in-process, warm --thinlto-cache-dir", &a);
    row("thindist, warm cache", &b);
    ratio("thindist / in-process", &b, &a);
    print_cache_line(&b);
}

/// The `cache N hits, M misses` of thindist's summary line.
fn print_cache_line(m: &Measurement) {
    let line = m
        .stderr
        .lines()
        .rev()
        .find(|l| l.contains("; cache "))
        .unwrap_or("");
    println!(
        "  thindist: {}",
        &line[line.find("; cache ").map_or(0, |i| i + 2)..]
    );
}

fn dtlto() {
    println!("== thindist ld against lld's DTLTO with thindist as distributor (no caches)");
    let dir = tempfile::tempdir().unwrap();
    let p = project(dir.path(), 200);
    let a = measure(&mut thindist_ld(&p, "prog-ld", &["--no-cache"]));
    let mut c = Command::new("clang-22");
    c.args(p.clang_link_args("prog-dtlto"))
        .arg(format!("-fthinlto-distributor={}", thindist().display()))
        .args([
            "-Xthinlto-distributor=distribute",
            "-Xthinlto-distributor=--no-cache",
        ])
        .arg(format!("-Xthinlto-distributor=-j{JOBS}"))
        .current_dir(&p.dir);
    let b = measure(&mut c);
    row("thindist ld", &a);
    row("clang -fthinlto-distributor=thindist", &b);
    ratio("DTLTO path / thindist ld", &b, &a);
}

fn remote() {
    println!("== remote execution on loopback: BuildGrid 0.4.4 + thindist workers");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let farm = tempfile::tempdir().unwrap();
    let port = 47311u16;
    let started = Command::new(repo.join("ci/buildgrid.sh"))
        .arg("start")
        .arg(farm.path())
        .arg(port.to_string())
        .status()
        .unwrap();
    assert!(started.success(), "BuildGrid did not start");
    let url = format!("grpc://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let p = project(dir.path(), 200);
    let local = measure(&mut thindist_ld(&p, "prog-local", &["--no-cache"]));
    let (jobs, local_summed) = summary(&local.stderr);
    row("local, -j2", &local);
    let mut workers = Vec::new();
    // Each run names the compiler differently, so its actions are new to the action cache.
    for (n, compiler) in [(1, "clang-22"), (2, "/usr/bin/clang-22")] {
        while workers.len() < n {
            workers.push(
                Command::new(thindist())
                    .args(["worker", "--remote", &url])
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
        }
        let m = measure(&mut thindist_ld(
            &p,
            "prog-remote",
            &[
                "--no-cache",
                "--remote",
                &url,
                "--remote-only",
                "--remote-jobs",
                "8",
                "--compiler",
                compiler,
            ],
        ));
        let (_, summed) = summary(&m.stderr);
        row(&format!("remote, {n} worker(s)"), &m);
        ratio(&format!("remote {n} worker(s) / local"), &m, &local);
        println!(
            "  per-job time: {:.3} s remote against {:.3} s local ({:+.3} s overhead per job)",
            summed / jobs as f64,
            local_summed / jobs as f64,
            (summed - local_summed) / jobs as f64
        );
        if let Some(line) = m.stderr.lines().find(|l| l.contains("bytes uploaded")) {
            let nums: Vec<f64> = line
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            if nums.len() == 2 {
                println!(
                    "  uploaded {:.1} MiB for {:.1} MiB of job inputs: {:.1}% after deduplication",
                    nums[0] / 1048576.0,
                    nums[1] / 1048576.0,
                    100.0 * nums[0] / nums[1]
                );
            }
        }
    }
    for mut w in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    let _ = Command::new(repo.join("ci/buildgrid.sh"))
        .arg("stop")
        .arg(farm.path())
        .status();
}

fn main() {
    let which: Vec<String> = std::env::args().skip(1).collect();
    if which.first().is_some_and(|w| w == "farm") {
        return farm::main(&which[1..]);
    }
    let all = which.is_empty();
    let wants = |name: &str| all || which.iter().any(|w| w == name);
    if wants("core") {
        core();
    }
    if wants("forkserver") {
        forkserver();
    }
    if wants("cache") {
        cache();
    }
    if wants("dtlto") {
        dtlto();
    }
    if wants("remote") {
        remote();
    }
    if wants("scale") {
        scale::scale();
    }
}
