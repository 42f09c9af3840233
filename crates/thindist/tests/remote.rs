//! Remote execution against a real BuildGrid 0.4.4 (with PostgreSQL 15) on loopback, with two
//! `thindist worker` processes: the remote build equals the local one (natives and program byte
//! for byte), a rebuild from a clean
//! build directory executes nothing (action cache), a compile error on a worker reads like a
//! local one, and killing the server mid-build still ends in a correct build through the local
//! fallback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use thindist_testkit::Project;

fn thindist() -> &'static str {
    env!("CARGO_BIN_EXE_thindist")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// BuildGrid, its database and two workers; all stopped on drop.
struct Farm {
    dir: tempfile::TempDir,
    port: u16,
    workers: Vec<Child>,
}

impl Farm {
    /// The server and two workers.
    fn start() -> Farm {
        let mut farm = Farm::server();
        for _ in 0..2 {
            farm.add_worker(&[], None);
        }
        farm
    }

    /// The server alone.
    fn server() -> Farm {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port_pair();
        let out = Command::new(repo().join("ci/buildgrid.sh"))
            .arg("start")
            .arg(dir.path())
            .arg(port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "BuildGrid did not start (run ci/buildgrid.sh install; .ci/run does): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Farm {
            dir,
            port,
            workers: Vec::new(),
        }
    }

    /// Starts a worker of capacity 1 with `extra` options, logging what it does to `log`.
    fn add_worker(&mut self, extra: &[&str], log: Option<&Path>) {
        // Its leases and local CAS in the farm's directory, not the machine's TMPDIR.
        let tmp = self.dir.path().join("worker-tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let mut worker = Command::new(thindist());
        worker
            .args(["worker", "--remote", &self.url(), "--capacity", "1"])
            .args(extra)
            .env_remove("THINDIST_FORK_SERVER")
            .env("TMPDIR", &tmp)
            .stdout(std::process::Stdio::null());
        if let Some(log) = log {
            worker
                .env("THINDIST_LOG", "info")
                .stderr(std::fs::File::create(log).unwrap());
        }
        let worker = worker.spawn().unwrap();
        self.workers.push(worker);
    }

    /// Stops the workers as a service manager would (SIGTERM), so that each removes its
    /// leases and local CAS; the farm's directory must then hold none.
    fn stop_workers(&mut self) {
        for w in &mut self.workers {
            // SAFETY: kill(2) on a child this test started and has not yet waited for.
            unsafe { libc::kill(w.id() as libc::pid_t, libc::SIGTERM) };
            let _ = w.wait();
        }
        self.workers.clear();
        let tmp = self.dir.path().join("worker-tmp");
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            left.is_empty() || std::thread::panicking(),
            "workers left {left:?}"
        );
    }

    fn url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }

    /// Actions the server has executed (its scheduler's jobs table).
    fn executed(&self) -> usize {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &(self.port + 1).to_string(),
                "-U",
                "postgres",
                "-tAc",
                "select count(*) from jobs",
                "bgd",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("psql: {}", String::from_utf8_lossy(&out.stderr)))
    }

    fn kill_server(&self) {
        let pid = std::fs::read_to_string(self.dir.path().join("bgd.pid.shell")).unwrap();
        Command::new("kill")
            .arg("-9")
            .arg(pid.trim())
            .status()
            .unwrap();
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        self.stop_workers();
        let _ = Command::new(repo().join("ci/buildgrid.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// A port p with p+1 free too (BuildGrid on p, PostgreSQL on p+1).
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair");
}

fn build(project: &Project, farm_url: &str, output: &str, extra: &[&str]) -> Output {
    Command::new(thindist())
        .args(["ld", "--no-cache", "--remote", farm_url])
        .args(extra)
        .arg("--")
        .arg("clang-22")
        .args(project.clang_link_args(output))
        .current_dir(&project.dir)
        .output()
        .unwrap()
}

/// Every `*.thinlto-native.o` below `dir`, with its bytes.
fn natives(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".thinlto-native.o") {
                let bytes = std::fs::read(&path).unwrap();
                found.push((path, bytes));
            }
        }
    }
    found
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn remote_builds_equal_local_ones_hit_the_action_cache_and_survive_a_dead_server() {
    let farm = Farm::start();
    let work = tempfile::tempdir().unwrap();
    let project = Project::generate(&work.path().join("tree"), 40);
    project.compile(&[], |_| vec![]);
    project.partial_link(&[]);
    project.link_in_process("prog-local", 2);
    let expected = project.run_program("prog-local");

    // 1. Remote build: same program; every module ran on the farm.
    let out = build(
        &project,
        &farm.url(),
        "prog-remote",
        &["--remote-only", "--keep-natives"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(" remote"), "{}", stderr(&out));
    assert_eq!(project.run_program("prog-remote"), expected);
    let executed = farm.executed();
    assert!(executed >= 30, "only {executed} actions ran remotely");
    // The natives the workers compiled, and the program linked from them, are byte for byte
    // those of a local build.
    let remote_natives = natives(&project.dir);
    assert!(
        remote_natives.len() >= 20,
        "{} natives",
        remote_natives.len()
    );
    let out = Command::new(thindist())
        .args(["ld", "--no-cache", "--keep-natives", "--", "clang-22"])
        .args(project.clang_link_args("prog-local-build"))
        .current_dir(&project.dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for (path, bytes) in &remote_natives {
        assert!(
            std::fs::read(path).unwrap() == *bytes,
            "{} differs between the remote and the local build",
            path.display()
        );
    }
    assert!(
        std::fs::read(project.dir.join("prog-remote")).unwrap()
            == std::fs::read(project.dir.join("prog-local-build")).unwrap(),
        "the remote and the local build linked different programs"
    );
    // The work directory (in the build directory for remote jobs, see workdir.rs) is gone.
    let left: Vec<_> = std::fs::read_dir(&project.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("thindist"))
        .collect();
    assert!(
        left.is_empty(),
        "work files left in the build directory: {left:?}"
    );

    // 2. A clean build directory (a fresh copy of the tree): nothing executes, all from the
    //    remote action cache.
    let copy = work.path().join("copy");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(&project.dir)
        .arg(&copy)
        .status()
        .unwrap()
        .success());
    for leftover in [
        "prog-remote.thindist",
        "prog-remote",
        "lib/libreg.a.thindist",
    ] {
        let _ = std::fs::remove_dir_all(copy.join(leftover));
        let _ = std::fs::remove_file(copy.join(leftover));
    }
    let copied = Project {
        dir: copy.clone(),
        modules: project.modules,
    };
    let out = build(&copied, &farm.url(), "prog-remote", &["--remote-only"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(copied.run_program("prog-remote"), expected);
    assert_eq!(
        farm.executed(),
        executed,
        "the rebuild executed actions instead of using the action cache"
    );

    // 3. A compile error on a worker is reported like a local one.
    let record = serde_json::json!({"argv": ["clang-22", "-O2", "-mllvm", "-no-such-llvm-option", "-c", "src/m0000.c", "-o", "src/m0000.o"], "cwd": project.dir});
    std::fs::write(
        project.dir.join("src/.m0000.o.thindist.json"),
        record.to_string(),
    )
    .unwrap();
    let out = build(&project, &farm.url(), "prog-broken", &["--remote-only"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("back-end compile of src/m0000.o failed")
            && err.contains("no-such-llvm-option"),
        "{err}"
    );
    assert!(err.contains("to reproduce: cd "), "{err}");
    std::fs::remove_file(project.dir.join("src/.m0000.o.thindist.json")).unwrap();

    // 4. Kill the server in the middle of a build of new actions (-O1 everywhere): the build
    //    falls back to local compiles and is still correct.
    let o1 = work.path().join("o1");
    std::fs::create_dir_all(&o1).unwrap();
    let slow = Project::generate(&o1, 120);
    slow.compile(&[], |_| vec!["-O1".into()]);
    slow.partial_link(&[]);
    slow.link_in_process("prog-local", 2);
    let expected = slow.run_program("prog-local");
    let before = farm.executed();
    let child = Command::new(thindist())
        .args([
            "ld",
            "--no-cache",
            "--remote",
            &farm.url(),
            "--remote-timeout",
            "5",
            "--",
        ])
        .arg("clang-22")
        .args(slow.clang_link_args("prog-remote"))
        .current_dir(&slow.dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while farm.executed() < before + 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the remote build never started executing"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    farm.kill_server();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("compiling it locally") || err.contains("compiling locally"),
        "no fallback warning: {err}"
    );
    assert_eq!(slow.run_program("prog-remote"), expected);

    // 5. With the server gone, --remote-only fails instead of falling back.
    let out = build(
        &project,
        &farm.url(),
        "prog-only",
        &["--remote-only", "--remote-timeout", "3"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("remote"), "{}", stderr(&out));
}

/// Blobs the worker fetched for each lease since `from` (a byte offset of its log).
fn fetched_per_lease(log: &Path, from: usize) -> Vec<u64> {
    let text = std::fs::read_to_string(log).unwrap();
    text[from..]
        .lines()
        .filter_map(|l| {
            l.split_once("blobs fetched")?
                .0
                .rsplit_once(": ")?
                .1
                .trim()
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn a_worker_fetches_inputs_once_and_its_fork_server_and_cc1_workers_compile_what_processes_do() {
    let mut farm = Farm::server();
    let work = tempfile::tempdir().unwrap();
    let forking_log = work.path().join("forking-worker.log");
    farm.add_worker(&["--verbose"], Some(&forking_log));
    let project = Project::generate(&work.path().join("tree"), 30);
    project.compile(&[], |_| vec![]);
    project.partial_link(&[]);

    // 1. Compiled by a worker that forks its compiles from a fork server.
    let out = build(
        &project,
        &farm.url(),
        "prog-1",
        &["--remote-only", "--keep-natives"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let forked = natives(&project.dir);
    assert!(forked.len() >= 15, "{} natives", forked.len());
    let log = std::fs::read_to_string(&forking_log).unwrap();
    assert!(log.contains("fork server for "), "{log}");
    // Each lease runs in a directory of its own, and still its back ends share cc1 workers.
    assert!(log.contains("cc1 workers for "), "{log}");
    let first = fetched_per_lease(&forking_log, 0);
    assert!(first.len() >= 15 && first.iter().sum::<u64>() > 0, "{log}");

    // 2. The same link with new actions (the compiler named differently) over the same inputs
    //    (the shards lie in a work directory named after the output): the worker's local CAS
    //    has every input already.
    let out = build(
        &project,
        &farm.url(),
        "prog-1",
        &["--remote-only", "--remote-compiler", "/usr/bin/clang-22"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let again = fetched_per_lease(&forking_log, log.len());
    assert_eq!(
        again.len(),
        first.len(),
        "{}",
        std::fs::read_to_string(&forking_log).unwrap()
    );
    assert!(again.iter().all(|&n| n == 0), "fetched again: {again:?}");

    // 3. A worker that runs compiler processes compiles the same objects, byte for byte.
    farm.stop_workers();
    let process_log = work.path().join("process-worker.log");
    farm.add_worker(&["--verbose", "--no-fork-server"], Some(&process_log));
    let out = build(
        &project,
        &farm.url(),
        "prog-3",
        &[
            "--remote-only",
            "--keep-natives",
            "--remote-compiler",
            "/usr/lib/llvm-22/bin/clang",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let log = std::fs::read_to_string(&process_log).unwrap();
    assert!(
        !log.contains("fork server for ") && log.contains("blobs fetched"),
        "{log}"
    );
    for (path, bytes) in &forked {
        assert!(
            std::fs::read(path).unwrap() == *bytes,
            "{} differs between the forking and the process worker",
            path.display()
        );
    }
    assert!(
        std::fs::read(project.dir.join("prog-1")).unwrap()
            == std::fs::read(project.dir.join("prog-3")).unwrap()
    );
}
