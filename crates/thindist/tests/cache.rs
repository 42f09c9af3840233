//! The back-end cache: rebuilds compile only what changed, survive corruption and concurrency,
//! and hit after the tree moves.

mod util;

use std::path::Path;
use std::process::{Command, Output};
use util::{thindist, SmallProject};

const FILES: &[(&str, &str)] = &[
    ("main.c", "#include <stdio.h>\nint leaf(int); int mid(int); int other(int);\nint main(void){ printf(\"%d %d\\n\", mid(4), other(5)); return 0; }\n"),
    ("leaf.c", "int leaf(int x){ return x + 1; }\n"),
    ("mid.c", "int leaf(int);\nint mid(int x){ return leaf(x) * 2; }\n"),
    ("other.c", "int other(int x){ return x * 7; }\n"),
];

fn link(dir: &Path, cache: &Path, output: &str) -> Output {
    link_with(dir, cache, output, &[])
}

/// [`link`] with extra thindist options.
fn link_with(dir: &Path, cache: &Path, output: &str, options: &[&str]) -> Output {
    Command::new(thindist())
        .arg("ld")
        .args(options)
        .arg("--cache-dir")
        .arg(cache)
        .args([
            "--",
            "clang-22",
            "-fuse-ld=lld",
            "-flto=thin",
            "-o",
            output,
            "main.o",
            "leaf.o",
            "mid.o",
            "other.o",
        ])
        .current_dir(dir)
        .output()
        .unwrap()
}

/// (cache hits, misses) from the summary line.
fn hits_misses(out: &Output) -> (usize, usize) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let line = err.lines().find(|l| l.contains("; cache ")).expect(&err);
    let tail = &line[line.find("; cache ").unwrap() + 8..];
    let nums: Vec<usize> = tail
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(2)
        .map(|s| s.parse().unwrap())
        .collect();
    (nums[0], nums[1])
}

fn run(dir: &Path, prog: &str) -> String {
    String::from_utf8(Command::new(dir.join(prog)).output().unwrap().stdout).unwrap()
}

#[test]
fn unchanged_rebuild_compiles_nothing_and_an_edit_compiles_only_what_it_reaches() {
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    let cache = p.path("cache");
    assert_eq!(hits_misses(&link(p.dir(), &cache, "prog")), (0, 4));
    assert_eq!(
        hits_misses(&link(p.dir(), &cache, "prog")),
        (4, 0),
        "a no-change rebuild compiles nothing"
    );
    assert_eq!(run(p.dir(), "prog"), "10 35\n");

    // Change leaf's body: leaf.o changes, and mid.o imports leaf; other.o and main.o see
    // neither (main imports mid, whose body is unchanged bitcode... but its shard may name leaf).
    std::fs::write(p.path("leaf.c"), "int leaf(int x){ return x + 2; }\n").unwrap();
    let out = Command::new("clang-22")
        .args(["-O2", "-flto=thin", "-c", "leaf.c", "-o", "leaf.o"])
        .current_dir(p.dir())
        .status()
        .unwrap();
    assert!(out.success());
    let relinked = link(p.dir(), &cache, "prog");
    let (hits, misses) = hits_misses(&relinked);
    assert!(misses >= 2 && hits >= 1, "{hits} hits, {misses} misses");
    // Hits are reported as the jobs that ran are: one whole line each.
    let err = String::from_utf8_lossy(&relinked.stderr);
    let mut reported: Vec<&str> = (err.lines())
        .filter_map(|line| line.strip_prefix("  LTO     "))
        .collect();
    reported.sort_unstable();
    assert_eq!(reported, ["leaf.o", "main.o", "mid.o", "other.o"], "{err}");
    let text = explain(p.dir(), &cache, "other.o");
    assert!(text.contains("taken from the cache"), "{text}");
    let text = explain(p.dir(), &cache, "leaf.o");
    assert!(
        text.contains("why:") && text.contains("leaf.o changed ("),
        "{text}"
    );
    let command = (text.lines())
        .find_map(|line| line.strip_prefix("command:    "))
        .unwrap_or_default();
    assert!(
        command.starts_with("clang") && command.contains(" -c leaf.o -o "),
        "{text}"
    );
    let incremental = run(p.dir(), "prog");

    // The same tree built from scratch gives the same program.
    let clean = link(p.dir(), &p.path("fresh-cache"), "prog-clean");
    assert_eq!(hits_misses(&clean), (0, 4));
    assert_eq!(run(p.dir(), "prog-clean"), incremental);
    assert_eq!(incremental, "12 35\n");
    assert_eq!(
        std::fs::read(p.path("prog")).unwrap(),
        std::fs::read(p.path("prog-clean")).unwrap()
    );
}

#[test]
fn corrupt_entry_is_detected_and_rebuilt() {
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    let cache = p.path("cache");
    hits_misses(&link(p.dir(), &cache, "prog"));
    // Flip a byte in every stored object; the program goes, so that the link is not simply
    // restored.
    std::fs::remove_file(p.path("prog")).unwrap();
    for shard in std::fs::read_dir(cache.join("blobs")).unwrap() {
        for entry in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let path = entry.unwrap().path();
            let mut bytes = std::fs::read(&path).unwrap();
            let n = bytes.len();
            bytes[n - 5] ^= 0x40;
            std::fs::write(&path, bytes).unwrap();
        }
    }
    let out = link(p.dir(), &cache, "prog");
    assert_eq!(hits_misses(&out), (0, 4));
    // One warning per stored object (the four natives), printed once (not also through the
    // log).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr
            .matches("is corrupt; removing it and compiling again")
            .count(),
        4,
        "{stderr}"
    );
    assert_eq!(run(p.dir(), "prog"), "10 35\n");
    assert_eq!(
        hits_misses(&link(p.dir(), &cache, "prog")),
        (4, 0),
        "rebuilt entries are good again"
    );
}

#[test]
fn concurrent_builds_share_one_cache() {
    let a = SmallProject::new(FILES);
    let b = SmallProject::new(FILES);
    a.compile_all(&["-O2"]);
    b.compile_all(&["-O2"]);
    let cache = a.path("shared-cache");
    for _ in 0..3 {
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| link(a.dir(), &cache, "prog"));
            let hb = s.spawn(|| link(b.dir(), &cache, "prog"));
            (ha.join().unwrap(), hb.join().unwrap())
        });
        hits_misses(&ra);
        hits_misses(&rb);
        assert_eq!(run(a.dir(), "prog"), "10 35\n");
        assert_eq!(run(b.dir(), "prog"), "10 35\n");
    }
}

#[test]
fn moved_tree_still_hits() {
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    let cache = tempfile::tempdir().unwrap();
    assert_eq!(hits_misses(&link(p.dir(), cache.path(), "prog")), (0, 4));
    let moved = tempfile::tempdir().unwrap();
    let dest = moved.path().join("elsewhere/tree");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(p.dir())
        .arg(&dest)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        !dest.join("prog.thindist").exists(),
        "no work directory beside the output"
    );
    assert_eq!(hits_misses(&link(&dest, cache.path(), "prog")), (4, 0));
    assert_eq!(run(&dest, "prog"), "10 35\n");
}

#[test]
fn no_cache_compiles_everything_and_cache_commands_work() {
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    let cache = p.path("cache");
    hits_misses(&link(p.dir(), &cache, "prog"));
    let out = link_with(p.dir(), &cache, "prog", &["--no-cache"]);
    assert_eq!(hits_misses(&out), (0, 4));
    let stats = Command::new(thindist())
        .args(["cache", "--cache-dir"])
        .arg(&cache)
        .arg("stats")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(text.contains("entries: 4"), "{text}");
    let clear = Command::new(thindist())
        .args(["cache", "--cache-dir"])
        .arg(&cache)
        .arg("clear")
        .output()
        .unwrap();
    assert!(clear.status.success());
    let stats = Command::new(thindist())
        .args(["cache", "--cache-dir"])
        .arg(&cache)
        .arg("stats")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&stats.stdout).contains("entries: 0"));
}

/// What `thindist explain OBJECT` prints about the last run in `dir`.
fn explain(dir: &Path, cache: &Path, object: &str) -> String {
    let out = Command::new(thindist())
        .args(["explain", "--cache-dir"])
        .arg(cache)
        .arg(object)
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `helper` too big for main.o to import: main.o's back end reads no module but its own.
fn big_helper() -> String {
    let step = "        s += i * x; s ^= s >> 3; s += x * 13; s -= i; s ^= s << 2; s += i % 5;\n        s ^= s >> 7; s += x ^ i; s *= 3; s += s >> 11; s ^= x + i; s -= s >> 5;\n        if (s & 1) s += 17; else s -= 23;\n";
    format!(
        "int helper(int x) {{\n    int s = 0;\n    for (int i = 0; i < x * 7; i++) {{\n{}    }}\n    return s;\n}}\n",
        step.repeat(6)
    )
}

#[test]
fn a_module_whose_shard_alone_changed_is_compiled_again() {
    // main.o itself does not change, nor does any module its last back end read; but helper
    // becomes small enough to import, so its shard does. The native object of its last back
    // end, fetched beside the thin link on the guess that its key stayed the same, must give
    // way to a back end of the new shard.
    let p = SmallProject::new(&[
        (
            "main.c",
            "#include <stdio.h>\nint helper(int);\nint main(int argc, char **argv) { printf(\"%d\\n\", helper(argc)); return 0; }\n",
        ),
        ("helper.c", &big_helper()),
    ]);
    p.compile_all(&["-O2"]);
    let cache = p.path("cache");
    let link = |output: &str, options: &[&str]| {
        let out = p
            .cmd(thindist())
            .arg("ld")
            .args(options)
            .arg("--cache-dir")
            .arg(&cache)
            .args(["--", "clang-22", "-fuse-ld=lld", "-flto=thin", "-o", output])
            .args(["main.o", "helper.o"])
            .output()
            .unwrap();
        hits_misses(&out)
    };
    assert_eq!(link("prog", &[]), (0, 2));
    std::fs::write(p.path("helper.c"), "int helper(int x) { return x + 41; }\n").unwrap();
    // main.o is compiled again too, to the same bitcode.
    p.compile_all(&["-O2"]);
    assert_eq!(link("prog", &[]), (0, 2), "main.o's new shard is a miss");
    assert_eq!(run(p.dir(), "prog"), "42\n");
    assert_eq!(link("fresh", &["--no-cache"]), (0, 2));
    assert_eq!(
        std::fs::read(p.path("prog")).unwrap(),
        std::fs::read(p.path("fresh")).unwrap(),
        "the cached link's program is the one a link without the cache writes"
    );
}

/// A project of main.c, which calls `leaf` from lib.c, and the link of its objects with
/// `cache`: (hits, misses) of each link, after lib.c is given `lib_c` and compiled again.
struct ImportingProject {
    p: SmallProject,
}

impl ImportingProject {
    fn new(lib_c: &str) -> Self {
        let p = SmallProject::new(&[
            (
                "main.c",
                "#include <stdio.h>\nint leaf(int);\nint main(int argc, char **argv) { printf(\"%d\\n\", leaf(argc)); return 0; }\n",
            ),
            ("lib.c", lib_c),
        ]);
        p.compile_all(&["-O2"]);
        ImportingProject { p }
    }

    fn link(&self, output: &str, options: &[&str]) -> (usize, usize) {
        let out = (self.p.cmd(thindist()).arg("ld").args(options))
            .arg("--cache-dir")
            .arg(self.p.path("cache"))
            .args(["--", "clang-22", "-fuse-ld=lld", "-flto=thin", "-o", output])
            .args(["main.o", "lib.o"])
            .output()
            .unwrap();
        hits_misses(&out)
    }

    fn relink(&self, lib_c: &str) -> (usize, usize) {
        std::fs::write(self.p.path("lib.c"), lib_c).unwrap();
        let compiled = (self.p.cmd("clang-22"))
            .args(["-O2", "-flto=thin", "-c", "lib.c", "-o", "lib.o"])
            .status()
            .unwrap();
        assert!(compiled.success());
        self.link("prog", &[])
    }

    /// The program's output, checked to be the program a link without the cache writes.
    fn run_checked(&self) -> String {
        assert_eq!(self.link("fresh", &["--no-cache"]), (0, 2));
        assert_eq!(
            std::fs::read(self.p.path("prog")).unwrap(),
            std::fs::read(self.p.path("fresh")).unwrap(),
            "the cached link's program is the one a link without the cache writes"
        );
        run(self.p.dir(), "prog")
    }
}

#[test]
fn a_module_that_imports_what_it_did_before_is_taken_from_the_cache_by_what_it_imports() {
    // main.o imports leaf from lib.o. Each edit of lib.c changes lib.o and so main.o's action
    // key; only the edit of leaf changes what main.o imports.
    let lib = |leaf: &str, other: &str| {
        format!("int leaf(int x) {{ return {leaf}; }}\nint other(int x) {{ return {other}; }}\n")
    };
    let p = ImportingProject::new(&lib("x + 1", "x * 5"));
    assert_eq!(p.link("prog", &[]), (0, 2));
    // The first edit elsewhere in lib.c: main.o is compiled again, noting what it imports.
    assert_eq!(p.relink(&lib("x + 1", "x * 6")), (0, 2));
    // The next one: main.o imports what it did, and the cache has that.
    assert_eq!(p.relink(&lib("x + 1", "x * 7")), (1, 1));
    let text = explain(p.p.dir(), &p.p.path("cache"), "main.o");
    assert!(
        text.contains("taken from the cache") && text.contains("what it imports is as it was"),
        "{text}"
    );
    // Native objects: two of the first link, three of the first relink (lib.o's, main.o's under
    // its action key and under the key of what it imports), two of the second (lib.o's, and
    // main.o's hit stored under its new action key). The marker of what main.o imported is not
    // one.
    let stats = (p.p.cmd(thindist()).args(["cache", "--cache-dir"]))
        .arg(p.p.path("cache"))
        .arg("stats")
        .output()
        .unwrap();
    let stats = String::from_utf8_lossy(&stats.stdout);
    assert!(stats.contains("entries: 7\n"), "{stats}");
    assert_eq!(p.run_checked(), "2\n");
    // Unchanged since: its action key answers.
    assert_eq!(p.link("prog", &[]), (2, 0));
    // leaf changes, which main.o imports.
    assert_eq!(p.relink(&lib("x + 2", "x * 7")), (0, 2));
    assert_eq!(p.run_checked(), "3\n");
}

#[test]
fn a_module_that_imports_a_promoted_local_is_compiled_again_when_its_module_changes() {
    // leaf calls a static function of lib.c: main.o imports leaf and refers to that function
    // by the name the thin link promotes it to, which follows lib.o's content hash. Each edit
    // of lib.c renames it, so main.o's native object from before could not be linked.
    let lib = |other: &str| {
        format!(
            "__attribute__((noinline)) static int twice(int x) {{ return 2 * x; }}\nint leaf(int x) {{ return twice(x) + 1; }}\nint other(int x) {{ return {other}; }}\n"
        )
    };
    let p = ImportingProject::new(&lib("x * 5"));
    assert_eq!(p.link("prog", &[]), (0, 2));
    for other in ["x * 6", "x * 7", "x * 8"] {
        assert_eq!(p.relink(&lib(other)), (0, 2), "{other}");
        assert_eq!(p.run_checked(), "3\n");
    }
}
