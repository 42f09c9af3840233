//! The compiler fork server: the same objects as processes (with cc1 workers and without), a
//! child or cc1 worker killed by SIGKILL fails its job naming the signal, a job whose cc1 worker
//! crashes runs again as a forked driver, an interrupt stops forked children and cc1 workers,
//! and compilers that cannot host the server (turned off, a script) run as processes. The thin
//! link and the final link fork from a server of the linker and fail as its processes do, and a
//! link restored from the cache leaves no server behind.

mod util;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use util::{many_modules, many_objects, thindist, SmallProject};

#[test]
fn fork_server_objects_are_those_of_processes() {
    // Over 16 jobs a server, so that later jobs run after the server moved libLLVM's code
    // into huge pages.
    let p = many_modules(60);
    let objects = many_objects(60);
    let objects: Vec<&str> = objects.iter().map(String::as_str).collect();
    util::assert_fork_server_matches_processes(&p, &objects, true);
}

/// C source of `n` functions whose back end takes about a second a thousand.
fn slow_source(name: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "__attribute__((used)) int {name}{i}(int *a, int n) {{ int s = 0; for (int j = 0; j < n; j++) {{ s += a[j] * {} ^ (s >> 3); if (s & {}) s -= a[j + 1] * {i}; }} return s; }}\n",
                i + 3,
                i + 1
            )
        })
        .collect()
}

/// Modules whose back ends run for seconds, so that a test can signal one while it runs:
/// `(name, functions)`, and main.c, all with one flag set.
fn slow_project(modules: &[(&str, usize)]) -> SmallProject {
    let sources: Vec<(String, String)> = (modules.iter())
        .map(|(name, n)| (format!("{name}.c"), slow_source(name, *n)))
        .collect();
    let first = modules[0].0;
    let main = format!("int {first}0(int *, int); int main(int c, char **v) {{ (void)v; int a[9] = {{0}}; return {first}0(a, c) & 1; }}\n");
    let mut files: Vec<(&str, &str)> = (sources.iter())
        .map(|(f, s)| (f.as_str(), s.as_str()))
        .collect();
    files.push(("main.c", &main));
    let p = SmallProject::new(&files);
    p.compile_all(&["-O2"]);
    p
}

/// One slow module, big.o, which runs as a forked driver (a flag set's first job).
fn big_project() -> SmallProject {
    slow_project(&[("big", 1500)])
}

/// `thindist ld OPTIONS -- clang-22 ... -o prog main.o MODULES`.
fn link_main<M: AsRef<std::ffi::OsStr>>(
    p: &SmallProject,
    options: &[&str],
    modules: &[M],
) -> Command {
    let mut command = p.cmd(thindist());
    command
        .arg("ld")
        .args(options)
        .args([
            "--",
            "clang-22",
            "-fuse-ld=lld",
            "-flto=thin",
            "-o",
            "prog",
            "main.o",
        ])
        .args(modules);
    command
}

/// Links main.o and `modules` one job at a time (largest first), verbose.
fn start_slow_link(p: &SmallProject, modules: &[&str]) -> Child {
    link_main(p, &["-v", "-j1", "--no-cache"], modules)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The parent pid of `pid`, from /proc/PID/stat (after the parenthesised name, which may hold
/// spaces).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The back-end job of `object` as a forked child or cc1 worker: a grandchild of thindist (the
/// fork server is its child), whose command line shows the job's command as a process's would.
/// Not the driver's dry run (`-###`) that derives or checks its flag set's cc1 template,
/// which shows the same command: a test that signalled it instead saw its job run as a driver.
fn wait_for_forked_job(thindist_pid: i32, object: &str) -> i32 {
    let shown = format!("-c\0{object}\0");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for entry in std::fs::read_dir("/proc").unwrap() {
            let Ok(pid) = entry.unwrap().file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let grandchild = parent_of(pid).and_then(parent_of) == Some(thindist_pid);
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let dry_run = cmdline.split(|b| *b == 0).any(|arg| arg == b"-###");
            if grandchild && !dry_run && String::from_utf8_lossy(&cmdline).contains(&shown) {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no forked back-end job of {object} appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn gone(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty()
        || stat[stat.rfind(')').unwrap() + 1..]
            .trim_start()
            .starts_with('Z')
}

#[test]
fn a_forked_compiler_killed_by_a_signal_fails_its_job_naming_it() {
    let p = big_project();
    let link = start_slow_link(&p, &["big.o"]);
    let job = wait_for_forked_job(link.id() as i32, "big.o");
    // SIGKILL, not SIGSEGV: clang catches SIGSEGV (its crash handler prints a stack dump and
    // may write a reproducer and exit 1, as a process does); nothing catches SIGKILL.
    // SAFETY: a signal to the forked compiler this test found running.
    unsafe { libc::kill(job, libc::SIGKILL) };
    assert_failed_by_sigkill(&p, &link.wait_with_output().unwrap(), "big.o");
}

/// The link whose job of `object` was killed by SIGKILL failed naming the signal, and left no
/// program.
fn assert_failed_by_sigkill(p: &SmallProject, out: &std::process::Output, object: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let said =
        format!("back-end compile of {object} failed: compiler exited with signal: 9 (SIGKILL)");
    assert!(err.contains(&said), "{err}");
    assert!(!p.path("prog").exists());
}

#[test]
fn an_interrupt_stops_forked_compilers() {
    let p = big_project();
    assert_interrupt_stops_the_job_of(&p, &["big.o"], "big.o");
}

/// Ctrl-C to a link of main.o and `modules` while `object`'s job runs: the link exits 130,
/// the process running the job goes, and no program is left.
fn assert_interrupt_stops_the_job_of(p: &SmallProject, modules: &[&str], object: &str) {
    let mut link = start_slow_link(p, modules);
    let job = wait_for_forked_job(link.id() as i32, object);
    // SAFETY: Ctrl-C to the thindist this test started.
    unsafe { libc::kill(link.id() as i32, libc::SIGINT) };
    let status = link.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(job) {
        assert!(
            Instant::now() < deadline,
            "the compiler {job} of {object} still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!p.path("prog").exists());
}

/// The same for a job in a cc1 worker (the third of three slow modules of one flag set).
#[test]
fn an_interrupt_stops_cc1_workers() {
    let p = slow_project(&CC1_WORKER_PROJECT);
    assert_interrupt_stops_the_job_of(&p, &["w1.o", "w2.o", "w3.o"], "w3.o");
}

/// Three slow modules of one flag set: linked one job at a time, the third (w3.o) runs in a
/// cc1 worker.
const CC1_WORKER_PROJECT: [(&str, usize); 3] = [("w1", 1400), ("w2", 1300), ("w3", 1200)];

/// A link of [`CC1_WORKER_PROJECT`] that signals the cc1 worker while it compiles w3.o.
fn signal_cc1_worker(signal: i32) -> (SmallProject, std::process::Output) {
    let p = slow_project(&CC1_WORKER_PROJECT);
    let link = start_slow_link(&p, &["w1.o", "w2.o", "w3.o"]);
    let worker = wait_for_forked_job(link.id() as i32, "w3.o");
    // SAFETY: a signal to the cc1 worker this test found running.
    unsafe { libc::kill(worker, signal) };
    let out = link.wait_with_output().unwrap();
    (p, out)
}

#[test]
fn a_job_whose_cc1_worker_crashes_runs_again_as_a_forked_driver() {
    let (p, out) = signal_cc1_worker(libc::SIGSEGV);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("thindist: cc1 workers for "), "{err}");
    assert!(
        err.contains("thindist: the cc1 worker compiling w3.o died (signal: 11 (SIGSEGV)")
            && err.contains("compiling it again as a forked driver"),
        "{err}"
    );
    assert!(Command::new(p.path("prog"))
        .status()
        .unwrap()
        .code()
        .is_some());
}

#[test]
fn a_cc1_worker_killed_by_sigkill_fails_its_job_naming_it() {
    let (p, out) = signal_cc1_worker(libc::SIGKILL);
    assert_failed_by_sigkill(&p, &out, "w3.o");
}

/// A job's diagnostics and failure read the same from a cc1 worker as from a forked driver:
/// back-end warnings (a stack frame over `-Wframe-larger-than`), and the same made errors.
#[test]
fn cc1_workers_report_what_forked_drivers_report() {
    let n = 6;
    let mut files: Vec<(String, String)> = (0..n)
        .map(|i| (format!("s{i}.c"), format!("int s{i}(int x) {{ volatile int a[64]; a[x & 63] = x; return a[(x + {i}) & 63]; }}\n")))
        .collect();
    let calls: String = (0..n).map(|i| format!("+ s{i}(c)")).collect();
    let decls: String = (0..n).map(|i| format!("int s{i}(int);")).collect();
    files.push((
        "main.c".into(),
        format!("{decls}\nint main(int c, char **v) {{ (void)v; return (0 {calls}) & 1; }}\n"),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let p = SmallProject::new(&refs);
    let objects: Vec<String> = (0..n).map(|i| format!("s{i}.o")).collect();
    let main = p
        .cmd(thindist())
        .args(["cc", "--", "clang-22", "-O2", "-flto=thin", "-c", "main.c"])
        .status()
        .unwrap();
    assert!(main.success());
    for werror in [false, true] {
        for i in 0..n {
            let status = p
                .cmd(thindist())
                .args([
                    "cc",
                    "--",
                    "clang-22",
                    "-O2",
                    "-flto=thin",
                    "-Wframe-larger-than=64",
                ])
                .args(werror.then_some("-Werror=frame-larger-than"))
                .args(["-c", &format!("s{i}.c"), "-o", &format!("s{i}.o")])
                .status()
                .unwrap();
            assert!(status.success());
        }
        let link = |env: &[(&str, &str)]| {
            let out = link_main(&p, &["-j1", "--no-cache", "--keep-going"], &objects)
                .envs(env.iter().copied())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            // All but the summary, whose times differ.
            let err: Vec<&str> = (err.lines())
                .filter(|l| !l.starts_with("thindist: 7 modules in "))
                .collect();
            (out.status.success(), err.join("\n"))
        };
        let in_workers = link(&[]);
        let forked = link(&[("THINDIST_CC1_WORKERS", "0")]);
        assert_eq!(in_workers, forked);
        let (succeeded, err) = in_workers;
        assert_eq!(succeeded, !werror, "{err}");
        assert_eq!(err.matches("stack frame size (").count(), n, "{err}");
    }
}

/// The CPU time (user and system) of a command and the children it waited for, as `time`
/// and make report it.
#[expect(
    clippy::zombie_processes,
    reason = "wait4 reaps the child, which Child::wait cannot do and give its rusage"
)]
fn cpu_time(command: &mut Command) -> Duration {
    let child = command.spawn().unwrap();
    let mut status = 0;
    // SAFETY: wait4 on the child just spawned, with buffers this function owns.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(
            libc::wait4(child.id() as i32, &mut status, 0, &mut usage),
            child.id() as i32
        );
        usage
    };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// The compiles a cc1 worker ran count in thindist's CPU time, as forked drivers' do: the
/// worker is waited for when its server stops.
#[test]
fn cc1_workers_cpu_time_counts_as_thindists() {
    // Modules whose compiles outweigh a process's start and end, which workers save.
    let names: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    let modules: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 200)).collect();
    let p = slow_project(&modules);
    let objects: Vec<String> = names.iter().map(|n| format!("{n}.o")).collect();
    let link = |cc1_workers: &str| {
        cpu_time(
            link_main(&p, &["-j2", "--no-cache"], &objects)
                .env("THINDIST_CC1_WORKERS", cc1_workers)
                .stderr(Stdio::null()),
        )
    };
    let (in_workers, forked) = (link("1"), link("0"));
    assert!(
        in_workers.as_secs_f64() > forked.as_secs_f64() * 0.7,
        "{in_workers:?} with cc1 workers, {forked:?} as forked drivers"
    );
}

fn link_verbose(p: &SmallProject, options: &[&str], env: &[(&str, &str)]) -> String {
    let out = p
        .cmd(thindist())
        .envs(env.iter().copied())
        .args(["ld", "-v", "-j2", "--no-cache"])
        .args(options)
        .args(["--", "clang-22", "-fuse-ld=lld", "-flto=thin", "-o", "prog"])
        .args(many_objects(3))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(Command::new(p.path("prog"))
        .status()
        .unwrap()
        .code()
        .is_some());
    err
}

#[test]
fn turned_off_it_runs_processes() {
    let p = many_modules(3);
    for (options, env) in [
        (&[][..], &[("THINDIST_FORK_SERVER", "0")][..]),
        (&["--no-fork-server"][..], &[][..]),
    ] {
        let err = link_verbose(&p, options, env);
        assert!(
            err.contains("thindist: fork server off; running compiler processes"),
            "{err}"
        );
        assert!(!err.contains("fork server for"), "{err}");
    }
}

#[test]
fn a_script_compiler_runs_as_processes() {
    let p = many_modules(3);
    std::fs::write(p.path("cc.sh"), "#!/bin/sh\nexec clang-22 \"$@\"\n").unwrap();
    util::make_executable(&p.path("cc.sh"));
    // The modules have no saved flags: every job runs --compiler.
    let err = link_verbose(&p, &["--compiler", "./cc.sh"], &[]);
    let said = format!(
        "thindist: no fork server for {} (not an ELF program); running it as processes",
        p.path("cc.sh").canonicalize().unwrap().display()
    );
    assert_eq!(err.matches(&said).count(), 1, "said once: {err}");
}

/// stderr of `thindist ld -v` of `p`'s `a.o` (and `more` inputs) into `prog` with `linker`,
/// and whether it succeeded.
fn link_with_linker(
    p: &SmallProject,
    linker: &str,
    more: &[&str],
    env: &[(&str, &str)],
) -> (bool, String) {
    let out = p
        .cmd(thindist())
        .envs(env.iter().copied())
        .args(["ld", "-v", "--no-cache", "--", linker])
        .args(["-e", "main", "-o", "prog", "a.o"])
        .args(more)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The lines lld printed (`ld.lld: ...`), without thindist's.
fn linker_lines(err: &str) -> Vec<&str> {
    err.lines().filter(|l| l.contains("ld.lld")).collect()
}

/// The failed link of `p`'s `a.o` and `more` through the linker's fork server and as lld
/// processes: what thindist printed each time; lld printed the same lines.
fn failed_link_forked_and_as_processes(p: &SmallProject, more: &[&str]) -> (String, String) {
    let lld = which::which("ld.lld-22").unwrap().canonicalize().unwrap();
    let (ok, forked) = link_with_linker(p, "ld.lld-22", more, &[]);
    assert!(!ok, "{forked}");
    assert!(
        forked.contains(&format!("thindist: fork server for {}", lld.display())),
        "{forked}"
    );
    let no_server = [("THINDIST_FORK_SERVER", "0")];
    let (ok, process) = link_with_linker(p, "ld.lld-22", more, &no_server);
    assert!(!ok, "{process}");
    assert!(!process.contains("fork server for"), "{process}");
    assert!(!linker_lines(&forked).is_empty(), "{forked}");
    assert_eq!(linker_lines(&forked), linker_lines(&process));
    assert!(!p.path("prog").exists());
    p.assert_no_temp_files();
    (forked, process)
}

#[test]
fn the_thin_link_forks_from_the_linkers_server_and_fails_as_its_process_does() {
    let p = SmallProject::new(&[("a.c", "int main(void){return 0;}\n")]);
    p.compile_all(&["-O2"]);
    let (forked, process) = failed_link_forked_and_as_processes(&p, &["does-not-exist.o"]);
    for err in [&forked, &process] {
        assert!(
            err.contains("the thin link failed (exit status: 1)"),
            "{err}"
        );
        assert!(err.contains("does-not-exist.o"), "{err}");
    }
}

#[test]
fn the_final_link_forks_from_the_linkers_server_and_fails_as_its_process_does() {
    let p = SmallProject::with_undefined_symbol();
    let (forked, process) = failed_link_forked_and_as_processes(&p, &[]);
    assert!(
        (linker_lines(&forked).iter()).any(|l| l.contains("undefined symbol: missing")),
        "{forked}"
    );
    for err in [&forked, &process] {
        assert!(
            err.contains("the final link failed (exit status: 1)"),
            "{err}"
        );
    }
}

/// The processes whose environment holds `marker` (a variable set for one test's runs only).
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if environ
            .split(|b| *b == 0)
            .any(|var| var == marker.as_bytes())
        {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push(format!("{:?}: {}", entry.file_name(), cmdline.trim()));
        }
    }
    found
}

/// Nor one started before the inputs were read, for an output whose last link had back ends,
/// when the output is linked again from objects without bitcode.
#[test]
fn no_linker_server_outlives_a_link_its_restore_or_a_link_without_bitcode() {
    let p = SmallProject::new(&[("a.c", "int main(void){return 0;}\n")]);
    p.compile_all(&["-O2"]);
    let compiled = (p.cmd("clang-22"))
        .args(["-O2", "-c", "a.c", "-o", "plain.o"])
        .status()
        .unwrap();
    assert!(compiled.success());
    let marker = format!("THINDIST_TEST_RUN={}", std::process::id());
    let (name, value) = marker.split_once('=').unwrap();
    for (input, expected) in [
        ("a.o", "cache 0 hits, 1 misses"),
        ("a.o", "restored from the cache"),
        ("plain.o", ""),
    ] {
        let out = p
            .cmd(thindist())
            .env(name, value)
            .args(["ld", "-v", "--", "ld.lld-22"])
            .args(["-e", "main", "-o", "prog", input])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && err.contains(expected), "{err}");
        assert_eq!(processes_with(&marker), Vec::<String>::new(), "{err}");
    }
}

#[test]
fn a_script_linker_runs_as_processes() {
    let p = SmallProject::new(&[("a.c", "int main(void){return 0;}\n")]);
    p.compile_all(&["-O2"]);
    std::fs::write(p.path("ld.sh"), "#!/bin/sh\nexec ld.lld-22 \"$@\"\n").unwrap();
    util::make_executable(&p.path("ld.sh"));
    // No clang beside the script: the modules' compiler is named.
    let (ok, err) = link_with_linker(&p, "./ld.sh", &[], &[("THINDIST_COMPILER", "clang-22")]);
    assert!(ok, "{err}");
    let said = format!(
        "thindist: no fork server for {} (not an ELF program); running it as processes",
        p.path("ld.sh").canonicalize().unwrap().display()
    );
    assert_eq!(err.matches(&said).count(), 1, "said once: {err}");
    assert!(p.path("prog").exists());
}
