//! The compiler fork server: the same objects as processes, a child killed by a signal fails its
//! job naming the signal, an interrupt stops forked children, and compilers that cannot host
//! the server (turned off, a script) run as processes.

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
    util::assert_fork_server_matches_processes(&p, &objects);
}

/// A module whose back end runs for seconds, so that a test can signal it while it runs.
fn slow_project() -> SmallProject {
    let big: String = (0..1500)
        .map(|i| {
            format!(
                "__attribute__((used)) int g{i}(int *a, int n) {{ int s = 0; for (int j = 0; j < n; j++) {{ s += a[j] * {} ^ (s >> 3); if (s & {}) s -= a[j + 1] * {i}; }} return s; }}\n",
                i + 3,
                i + 1
            )
        })
        .collect();
    let main = "int g0(int *, int); int main(int c, char **v) { (void)v; int a[9] = {0}; return g0(a, c) & 1; }\n";
    let p = SmallProject::new(&[("big.c", &big), ("main.c", main)]);
    p.compile_all(&["-O2"]);
    p
}

fn start_slow_link(p: &SmallProject) -> Child {
    p.cmd(thindist())
        .args(["ld", "-v", "-j1", "--no-cache", "--"])
        .args([
            "clang-22",
            "-fuse-ld=lld",
            "-flto=thin",
            "-o",
            "prog",
            "main.o",
            "big.o",
        ])
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

/// The back-end job of big.o as a forked child: a grandchild of thindist (the fork server is
/// its child), whose command line shows the job's command as a process's would.
fn wait_for_forked_job(thindist_pid: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for entry in std::fs::read_dir("/proc").unwrap() {
            let Ok(pid) = entry.unwrap().file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let grandchild = parent_of(pid).and_then(parent_of) == Some(thindist_pid);
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if grandchild && String::from_utf8_lossy(&cmdline).contains("-c\0big.o\0") {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no forked back-end job of big.o appeared"
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
    let p = slow_project();
    let link = start_slow_link(&p);
    let job = wait_for_forked_job(link.id() as i32);
    // SIGKILL, not SIGSEGV: clang catches SIGSEGV (its crash handler prints a stack dump and
    // may write a reproducer and exit 1, as a process does); nothing catches SIGKILL.
    // SAFETY: a signal to the forked compiler this test found running.
    unsafe { libc::kill(job, libc::SIGKILL) };
    let out = link.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("back-end compile of big.o failed: compiler exited with signal: 9 (SIGKILL)"),
        "{err}"
    );
    assert!(!p.path("prog").exists());
}

#[test]
fn an_interrupt_stops_forked_compilers() {
    let p = slow_project();
    let mut link = start_slow_link(&p);
    let job = wait_for_forked_job(link.id() as i32);
    // SAFETY: Ctrl-C to the thindist this test started.
    unsafe { libc::kill(link.id() as i32, libc::SIGINT) };
    let status = link.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(job) {
        assert!(
            Instant::now() < deadline,
            "the forked compiler {job} still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!p.path("prog").exists());
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
        "thindist: no fork server for {} (not an ELF program); running compiler processes",
        p.path("cc.sh").canonicalize().unwrap().display()
    );
    assert_eq!(err.matches(&said).count(), 1, "said once: {err}");
}
