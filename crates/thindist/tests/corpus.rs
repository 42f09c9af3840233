//! Real projects from Debian 12's sources, built the way their users build them, once with
//! in-process ThinLTO (`clang-22 -flto=thin -fuse-ld=lld`) and once with thindist as the `CC`
//! wrapper and the linker, each followed by its own test suite. Issue #10's contract: a build
//! through thindist leaves exactly the files the in-process build leaves, plus the
//! `.NAME.o.thindist.json` records of `thindist cc`, and touches nothing elsewhere.
//!
//! Per project, in fresh copies of the upstream tree, each build with its own TMPDIR, HOME and
//! thindist cache:
//! (a) the build and the project's test suite pass, in-process and through thindist;
//! (b) `/dev/null` is still the null device (the builds run in a private /dev when root; the
//!     machine's is checked too and restored if damaged);
//! (c) TMPDIR is empty after every step;
//! (d) the thindist tree holds the in-process tree's paths plus only `thindist cc` records
//!     (records of objects the build removed again, like configure's, pass with a note);
//! (e) relinking the removed linked outputs takes every back-end job from the cache.
//!
//! The recipes are `ci/corpus/PROJECT.sh`; the sources come from `ci/corpus/fetch.sh` (cached in
//! `$THINDIST_CORPUS_DIR`, default `/var/cache/thindist-corpus`). Set THINDIST_SKIP_CORPUS=1 to
//! skip these tests on purpose. Logs of every step stay in `CARGO_TARGET_TMPDIR/corpus/`.

mod util;

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use util::TestEnv;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script(name: &str) -> PathBuf {
    repo().join("ci/corpus").join(name)
}

fn log_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("corpus");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The upstream tarball of Debian source package `package`, downloaded once.
fn fetch(package: &str) -> PathBuf {
    let out = Command::new(script("fetch.sh"))
        .arg(package)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ci/corpus/fetch.sh {package} failed (set THINDIST_SKIP_CORPUS=1 to skip the corpus):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn devnull_is_null() -> bool {
    match std::fs::symlink_metadata("/dev/null") {
        Ok(m) => m.file_type().is_char_device() && m.rdev() == libc::makedev(1, 3),
        Err(_) => false,
    }
}

/// Checks the machine's /dev/null and restores it if something replaced it.
fn guard_devnull(after: &str, failures: &mut Vec<String>) {
    if devnull_is_null() {
        return;
    }
    let what = Command::new("ls").args(["-l", "/dev/null"]).output();
    let what = what
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let _ = std::fs::remove_file("/dev/null");
    let restored = Command::new("mknod")
        .args(["-m", "666", "/dev/null", "c", "1", "3"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    failures.push(format!(
        "(b) the machine's /dev/null was no longer the null device after {after} ({what}); {}",
        if restored {
            "restored it"
        } else {
            "COULD NOT RESTORE IT"
        }
    ));
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    InProcess,
    Thindist,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::InProcess => "inprocess",
            Mode::Thindist => "thindist",
        }
    }
}

/// One build of a project: a fresh copy of its tree with its own TestEnv.
struct Build {
    project: &'static str,
    mode: Mode,
    work: tempfile::TempDir,
    env: TestEnv,
}

struct StepResult {
    ok: bool,
    text: String,
    devnull: String,
    log: PathBuf,
}

impl Build {
    fn new(project: &'static str, mode: Mode, tarball: &Path) -> Self {
        let work = tempfile::tempdir().unwrap();
        let tree = work.path().join("src");
        std::fs::create_dir(&tree).unwrap();
        let status = Command::new("tar")
            .arg("-xf")
            .arg(tarball)
            .arg("-C")
            .arg(&tree)
            .arg("--strip-components=1")
            .status()
            .unwrap();
        assert!(status.success(), "unpacking {}", tarball.display());
        std::fs::create_dir(work.path().join("bin")).unwrap();
        std::os::unix::fs::symlink(util::thindist(), work.path().join("bin/thindist-ld")).unwrap();
        Build {
            project,
            mode,
            work,
            env: TestEnv::new(),
        }
    }

    fn tree(&self) -> PathBuf {
        self.work.path().join("src")
    }

    fn step(&self, step: &str) -> StepResult {
        let report = self.work.path().join("devnull-report");
        let _ = std::fs::remove_file(&report);
        let log = log_dir().join(format!("{}-{}-{step}.log", self.project, self.mode.name()));
        let start = Instant::now();
        let out = self
            .env
            .command(script("private-dev.sh"))
            .arg(script("run.sh"))
            .args([self.project, self.mode.name(), step])
            .current_dir(self.tree())
            .env("CORPUS_DEVNULL_REPORT", &report)
            .env("THINDIST", util::thindist())
            .env("THINDIST_LD", self.work.path().join("bin/thindist-ld"))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&log, &text).unwrap();
        eprintln!(
            "corpus: {} {} {step}: {} in {:.1}s (log {})",
            self.project,
            self.mode.name(),
            if out.status.success() { "ok" } else { "FAILED" },
            start.elapsed().as_secs_f64(),
            log.display()
        );
        StepResult {
            ok: out.status.success(),
            text,
            devnull: std::fs::read_to_string(&report)
                .unwrap_or_else(|_| "no report".into())
                .trim()
                .to_string(),
            log,
        }
    }

    /// Whatever is left in this build's TMPDIR.
    fn tmp_leftovers(&self) -> Vec<String> {
        paths(&self.env.tmp_dir()).into_iter().collect()
    }
}

/// Every path under `root`, relative, directories with a trailing `/`; symlinks not followed.
fn paths(root: &Path) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                all.insert(format!("{rel}/"));
                stack.push(path);
            } else {
                all.insert(rel);
            }
        }
    }
    all
}

/// `path` with what legitimately differs between the two builds masked: zstd names its object
/// directories `conf_HASH` after a hash of the compile command, which names `thindist cc`.
fn normalize(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(i) = rest.find("conf_") {
        let (head, tail) = rest.split_at(i + "conf_".len());
        out.push_str(head);
        let hex = tail.chars().take_while(|c| c.is_ascii_hexdigit()).count();
        if hex == 32 {
            out.push_str("HASH");
            rest = &tail[32..];
        } else {
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// `DIR/.NAME.thindist.json` -> `DIR/NAME`, for the records of `thindist cc`.
fn recorded_object(path: &str) -> Option<String> {
    let (dir, name) = match path.rsplit_once('/') {
        Some((d, n)) => (format!("{d}/"), n),
        None => (String::new(), path),
    };
    let object = name.strip_prefix('.')?.strip_suffix(".thindist.json")?;
    object.ends_with(".o").then(|| format!("{dir}{object}"))
}

fn excerpt(list: &[&String]) -> String {
    let mut s: String = list.iter().take(40).map(|p| format!("\n    {p}")).collect();
    if list.len() > 40 {
        s.push_str(&format!("\n    ... and {} more", list.len() - 40));
    }
    s
}

/// `paths` sorted into what issue #10 names (link directories `OUTPUT.thindist/`, native objects
/// `X.thinlto-native.o`, temporary files `*.thindist-tmp*`) and the rest, shown in full.
fn classify(paths: &[&String]) -> String {
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    let mut in_dirs = 0;
    let mut native: Vec<&String> = Vec::new();
    let mut temporary: Vec<&String> = Vec::new();
    let mut other: Vec<&String> = Vec::new();
    for p in paths {
        if let Some(i) = p.find(".thindist/") {
            dirs.insert(p[..i + ".thindist/".len()].to_string());
            in_dirs += 1;
        } else if p.contains("thindist-tmp") {
            temporary.push(p);
        } else if p.ends_with(".thinlto-native.o") {
            native.push(p);
        } else {
            other.push(p);
        }
    }
    let mut s = String::new();
    if !dirs.is_empty() {
        let dirs: Vec<String> = dirs.into_iter().collect();
        let dirs: Vec<&String> = dirs.iter().collect();
        s += &format!(
            "\n   {in_dirs} in {} OUTPUT.thindist/ directories:{}",
            dirs.len(),
            excerpt(&dirs)
        );
    }
    if !native.is_empty() {
        s += &format!(
            "\n   {} native objects X.thinlto-native.o:{}",
            native.len(),
            excerpt(&native[..native.len().min(5)])
        );
        if native.len() > 5 {
            s += &format!("\n    ... and {} more", native.len() - 5);
        }
    }
    if !temporary.is_empty() {
        s += &format!(
            "\n   {} temporary files:{}",
            temporary.len(),
            excerpt(&temporary[..temporary.len().min(5)])
        );
        if temporary.len() > 5 {
            s += &format!("\n    ... and {} more", temporary.len() - 5);
        }
    }
    if !other.is_empty() {
        s += &format!("\n   {} other paths:{}", other.len(), excerpt(&other));
    }
    s
}

/// (d): the differences between the two trees that are not `thindist cc` records. Records of
/// objects the build removed again (configure's `.conftest.o.thindist.json`) are records the
/// user asked for, so they pass, but they are shown on stderr.
fn compare_trees(in_process: &BTreeSet<String>, thindist: &BTreeSet<String>) -> Option<String> {
    let mut extra = Vec::new();
    let mut orphan_records = Vec::new();
    for p in thindist.difference(in_process) {
        match recorded_object(p) {
            Some(object) if in_process.contains(&object) => {}
            Some(_) => orphan_records.push(p),
            None => extra.push(p),
        }
    }
    if !orphan_records.is_empty() {
        eprintln!(
            "corpus: note: {} thindist cc record(s) of objects the build removed:{}",
            orphan_records.len(),
            excerpt(&orphan_records)
        );
    }
    let missing: Vec<&String> = in_process.difference(thindist).collect();
    if extra.is_empty() && missing.is_empty() {
        return None;
    }
    let mut msg =
        String::from("(d) the tree after the thindist build differs from the in-process one:");
    if !extra.is_empty() {
        msg += &format!(
            "\n  {} path(s) only after thindist:{}",
            extra.len(),
            classify(&extra)
        );
    }
    if !missing.is_empty() {
        msg += &format!(
            "\n  {} path(s) only after in-process:{}",
            missing.len(),
            excerpt(&missing)
        );
    }
    Some(msg)
}

/// The `cache N hits, M misses` of every thindist summary line in `text`.
fn cache_summaries(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|line| {
            let rest = &line[line.find("; cache ")? + "; cache ".len()..];
            let words: Vec<&str> = rest.split_whitespace().collect();
            match words.as_slice() {
                [hits, "hits,", misses, "misses", ..] => {
                    Some((hits.parse().ok()?, misses.parse().ok()?))
                }
                _ => None,
            }
        })
        .collect()
}

fn tail(text: &str) -> &str {
    let mut start = text.len().saturating_sub(4000);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn corpus_project(project: &'static str, package: &str) {
    if std::env::var_os("THINDIST_SKIP_CORPUS").is_some() {
        eprintln!("corpus test {project} skipped: THINDIST_SKIP_CORPUS is set");
        return;
    }
    // One project at a time: each build already uses both cores.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tarball = fetch(package);
    let mut failures: Vec<String> = Vec::new();
    guard_devnull("nothing (it was broken before the test)", &mut failures);
    assert!(failures.is_empty(), "{failures:?}");

    // The reference: in-process ThinLTO. Everything here must pass, or the recipe is wrong.
    let reference = Build::new(project, Mode::InProcess, &tarball);
    for step in ["build", "check"] {
        let r = reference.step(step);
        guard_devnull(&format!("the in-process {step}"), &mut failures);
        assert!(
            r.ok && r.devnull == "ok" && failures.is_empty(),
            "in-process {project} {step} failed (the recipe or the machine, not thindist): \
             /dev/null {}, {failures:?}, log {}:\n{}",
            r.devnull,
            r.log.display(),
            tail(&r.text)
        );
        let left = reference.tmp_leftovers();
        assert!(
            left.is_empty(),
            "the in-process {step} left files in TMPDIR: {left:?}"
        );
    }

    // The same build through thindist.
    let build = Build::new(project, Mode::Thindist, &tarball);
    let mut tmp_seen = BTreeSet::new();
    for step in ["build", "check", "relink"] {
        if step == "relink" {
            // (d) is about the finished build and its test suite, before anything is removed.
            let normalized = |tree: &Path| paths(tree).iter().map(|p| normalize(p)).collect();
            if let Some(diff) =
                compare_trees(&normalized(&reference.tree()), &normalized(&build.tree()))
            {
                failures.push(diff);
            }
        }
        let r = build.step(step);
        guard_devnull(&format!("the thindist {step}"), &mut failures);
        if r.devnull != "ok" {
            failures.push(format!(
                "(b) /dev/null after the thindist {step} (private /dev): {}",
                r.devnull
            ));
        }
        let all_left = build.tmp_leftovers();
        let left: Vec<&String> = all_left.iter().filter(|p| !tmp_seen.contains(*p)).collect();
        if !left.is_empty() {
            failures.push(format!(
                "(c) the thindist {step} left {} new path(s) in TMPDIR:{}",
                left.len(),
                classify(&left)
            ));
        }
        tmp_seen.extend(all_left.iter().cloned());
        if !r.ok {
            let hint = if failures.iter().any(|f| f.starts_with("(b)")) {
                " (after /dev/null was replaced, which alone can fail it: a test suite that checks \
                 /dev/null, like zstd's, or a process opening it while it is missing, e.g. \
                 `cannot run the linker ld.lld-22: No such file or directory`)"
            } else {
                ""
            };
            failures.push(format!(
                "(a) the thindist {step} failed{hint} (log {}):\n{}",
                r.log.display(),
                tail(&r.text)
            ));
            break;
        }
        if step == "relink" {
            let summaries = cache_summaries(&r.text);
            let missed: Vec<&(u64, u64)> = summaries.iter().filter(|(_, m)| *m > 0).collect();
            if summaries.is_empty() {
                failures.push(format!(
                    "(e) the relink printed no thindist summary line (log {})",
                    r.log.display()
                ));
            } else if !missed.is_empty() {
                failures.push(format!(
                    "(e) {} of {} relinks missed the cache (hits, misses): {missed:?} (log {})",
                    missed.len(),
                    summaries.len(),
                    r.log.display()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{project} through thindist broke issue #10's contract:\n{}",
        failures.join("\n")
    );
}

#[test]
fn corpus_xz_utils_autoconf_libtool() {
    corpus_project("xz-utils", "xz-utils");
}

#[test]
fn corpus_json_c_cmake_ninja() {
    corpus_project("json-c", "json-c");
}

#[test]
fn corpus_zstd_plain_makefile() {
    corpus_project("zstd", "libzstd");
}

#[test]
fn recorded_object_and_summary_parsing() {
    assert_eq!(
        recorded_object("a/.x.o.thindist.json").as_deref(),
        Some("a/x.o")
    );
    assert_eq!(
        recorded_object(".x.c.o.thindist.json").as_deref(),
        Some("x.c.o")
    );
    assert_eq!(recorded_object("a/x.thindist.json"), None);
    assert_eq!(
        normalize("programs/obj/conf_9716f2c806f413cd37470782602ea15e/x.o"),
        "programs/obj/conf_HASH/x.o"
    );
    assert_eq!(normalize("a/conf_12/b"), "a/conf_12/b");
    assert_eq!(
        cache_summaries(
            "x\nthindist: 3 modules in 1.00s wall, 2.00s summed job time (ideal 1.00s on 2 slots), \
             critical path 0.50s a.o; cache 2 hits, 1 misses\n"
        ),
        vec![(2, 1)]
    );
}
