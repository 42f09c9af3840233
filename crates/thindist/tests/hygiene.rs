//! A build through thindist leaves exactly the files that the same build leaves with in-process
//! ThinLTO (plus `thindist cc`'s records): outputs written as lld writes them (`/dev/null` and
//! other devices in place), work files in a private TMPDIR directory that is removed, native
//! objects beside the bitcode only when asked, and cache hits for temporaries and other trees.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use util::{thindist, tree_paths, SmallProject};

const FILES: &[(&str, &str)] = &[
    ("main.c", "#include <stdio.h>\nint twice(int);\nint main(void){ printf(\"%d\\n\", twice(21)); return 0; }\n"),
    ("twice.c", "int twice(int x){ return 2 * x; }\n"),
];

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `clang-22 -flto=thin ARGS` with thindist as the linker, as a configure probe or a small
/// Makefile runs it.
fn clang_via_thindist_ld(p: &SmallProject, args: &[&str]) -> Output {
    let ld = p.env.thindist_ld();
    p.cmd("clang-22")
        .args(["-flto=thin", "-fuse-ld=lld"])
        .arg(format!("--ld-path={}", ld.display()))
        .args(args)
        .output()
        .unwrap()
}

fn run(program: &Path) -> String {
    String::from_utf8_lossy(&Command::new(program).output().unwrap().stdout).into_owned()
}

fn summary_hits_misses(err: &str) -> (usize, usize) {
    let line = err
        .lines()
        .rfind(|l| l.contains(" hits, "))
        .unwrap_or_else(|| panic!("no summary: {err}"));
    let nums: Vec<usize> = line
        .split("cache ")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    (nums[0], nums[1])
}

#[test]
fn link_leaves_only_its_output_and_the_work_directory_is_removed() {
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    let before = tree_paths(p.dir());
    let out = p.ld_clang(&["-o", "prog", "main.o", "twice.o"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut expected = before.clone();
    expected.push(PathBuf::from("prog"));
    expected.sort();
    assert_eq!(tree_paths(p.dir()), expected, "only the output is new");
    assert_eq!(
        p.env.tmp_contents(),
        Vec::<PathBuf>::new(),
        "TMPDIR is left empty"
    );
    assert_eq!(run(&p.path("prog")), "42\n");
    // A failing back end removes the work directory too.
    p.write_record(
        "twice.o",
        &[
            "clang-22",
            "-mllvm",
            "-no-such-option",
            "-c",
            "twice.c",
            "-o",
            "twice.o",
        ],
    );
    let out = p.ld_clang(&["-o", "prog2", "main.o", "twice.o"]);
    assert!(!out.status.success());
    assert_eq!(
        p.env.tmp_contents(),
        Vec::<PathBuf>::new(),
        "TMPDIR is left empty"
    );
    assert!(!p.path("prog2").exists());
}

#[test]
fn keep_natives_puts_them_beside_the_bitcode_and_keep_work_keeps_the_work_directory() {
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    let out = p.ld_with(
        &["--keep-natives", "--keep-work"],
        &[
            "-o",
            "prog",
            "main.o",
            "twice.o",
            "-lc",
            "-dynamic-linker",
            "/lib64/ld-linux-x86-64.so.2",
            "-L/usr/lib/x86_64-linux-gnu",
        ],
    );
    let err = stderr(&out);
    // The link may fail without crt files; what matters is what was kept before it.
    assert!(p.path("twice.thinlto-native.o").exists(), "{err}");
    assert!(err.contains("keeping this link's work files in"), "{err}");
    let kept = p.env.tmp_contents();
    assert!(
        kept.iter().any(|k| k.ends_with("twice.o.thinlto.bc")),
        "{kept:?}"
    );
}

/// The file system type `stat -f` names for `dir`.
fn fs_type(dir: &str) -> String {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T", dir])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The `thindist-*` directories in `dir`.
fn ours_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ours: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("thindist-")
        })
        .collect();
    ours.sort();
    ours
}

/// Links `prog` from `p` with TMPDIR unset and XDG_RUNTIME_DIR set to `runtime_dir` (or unset);
/// returns what thindist printed.
fn link_with_default_tmpdir(
    p: &SmallProject,
    runtime_dir: Option<&Path>,
    extra: &[&str],
) -> String {
    let mut cmd = p.cmd(thindist());
    cmd.args(["ld", "-v"])
        .args(extra)
        .args([
            "--",
            "clang-22",
            "-fuse-ld=lld",
            "-flto=thin",
            "-o",
            "prog",
            "main.o",
            "twice.o",
        ])
        .env_remove("TMPDIR");
    match runtime_dir {
        Some(dir) => cmd.env("XDG_RUNTIME_DIR", dir),
        None => cmd.env_remove("XDG_RUNTIME_DIR"),
    };
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stderr(&out)
}

/// The work and index directories a `--keep-work` link printed that it kept.
fn kept_dirs(printed: &str) -> Vec<PathBuf> {
    printed
        .lines()
        .filter_map(|l| l.strip_prefix("thindist: keeping this link's work files in "))
        .map(PathBuf::from)
        .collect()
}

/// Held by the tests that leave TMPDIR to its default: each compares what it finds in /tmp and
/// /dev/shm before and after its links.
static DEFAULT_TMPDIR: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether the tests of index directories cannot run here: /tmp is a memory file system
/// already, or there is no /dev/shm with the 256 MiB free that thindist asks of one.
fn skip_unless_tmp_on_disk_and_dev_shm() -> bool {
    let out = Command::new("stat")
        .args(["-f", "-c", "%a %S", "/dev/shm"])
        .output()
        .unwrap();
    let free: u64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|n| n.parse::<u64>().unwrap_or(0))
        .product();
    let skip = fs_type("/tmp") == "tmpfs" || fs_type("/dev/shm") != "tmpfs" || free < 256 << 20;
    if skip {
        eprintln!("skipped: /tmp is a memory file system already, or no /dev/shm with room");
    }
    skip
}

#[test]
fn with_tmpdir_left_to_a_disk_default_the_index_files_go_to_memory_and_are_removed() {
    if skip_unless_tmp_on_disk_and_dev_shm() {
        return;
    }
    let _alone = DEFAULT_TMPDIR.lock().unwrap_or_else(|e| e.into_inner());
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    let shm = Path::new("/dev/shm");
    // Kept: the shards are in a directory of their own in /dev/shm, the natives in /tmp.
    let before = ours_in(shm);
    let err = link_with_default_tmpdir(&p, None, &["--keep-work", "--no-cache"]);
    let kept = kept_dirs(&err);
    assert_eq!(kept.len(), 2, "{err}");
    let (work, index) = (&kept[0], &kept[1]);
    assert!(
        work.starts_with("/tmp") && index.starts_with(shm),
        "{kept:?}"
    );
    for dir in &kept {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
    }
    let shards = tree_paths(index);
    assert!(
        shards.iter().any(|f| f.ends_with("twice.o.thinlto.bc")),
        "{shards:?}"
    );
    assert!(tree_paths(work)
        .iter()
        .any(|f| f.ends_with("twice.o.native.o")));
    for dir in &kept {
        std::fs::remove_dir_all(dir).unwrap();
    }
    // Not kept: nothing is left in either place.
    let tmp_before = ours_in(Path::new("/tmp"));
    link_with_default_tmpdir(&p, None, &[]);
    assert_eq!(run(&p.path("prog")), "42\n");
    assert_eq!(ours_in(shm), before);
    assert_eq!(ours_in(Path::new("/tmp")), tmp_before);
}

/// A tmpfs with the given mount options, mounted for one test and unmounted when dropped.
struct MountedTmpfs(tempfile::TempDir);

impl MountedTmpfs {
    /// The mounted tmpfs, or `None` (saying the test is skipped) where mounting is refused.
    fn mount(options: &str) -> Option<MountedTmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("{options},mode=0700")])
            .arg("thindist-test")
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs here (not root, or no CAP_SYS_ADMIN)");
        }
        mounted.then_some(MountedTmpfs(dir))
    }
}

impl Drop for MountedTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_memory_file_system_without_room_for_a_large_thin_link_is_passed_over() {
    if skip_unless_tmp_on_disk_and_dev_shm() {
        return;
    }
    let _alone = DEFAULT_TMPDIR.lock().unwrap_or_else(|e| e.into_inner());
    // A container's /dev/shm is 64 MiB: as XDG_RUNTIME_DIR here, so that the next choice,
    // this machine's /dev/shm, shows that it was passed over.
    let Some(small) = MountedTmpfs::mount("size=64m") else {
        return;
    };
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    let err = link_with_default_tmpdir(&p, Some(small.0.path()), &["--keep-work", "--no-cache"]);
    let kept = kept_dirs(&err);
    assert_eq!(kept.len(), 2, "{err}");
    assert!(kept[1].starts_with("/dev/shm"), "{kept:?}");
    for dir in &kept {
        std::fs::remove_dir_all(dir).unwrap();
    }
    assert!(tree_paths(small.0.path()).is_empty());
}

#[test]
fn a_thin_link_that_fills_the_memory_file_system_runs_again_on_disk() {
    if skip_unless_tmp_on_disk_and_dev_shm() {
        return;
    }
    let _alone = DEFAULT_TMPDIR.lock().unwrap_or_else(|e| e.into_inner());
    // Room enough to be chosen, but inodes for the index directory and one file only.
    let Some(full) = MountedTmpfs::mount("size=300m,nr_inodes=3") else {
        return;
    };
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    let tmp_before = ours_in(Path::new("/tmp"));
    let err = link_with_default_tmpdir(&p, Some(full.0.path()), &["--no-cache"]);
    assert!(
        err.contains("thindist: warning: no room for the thin link's index files in"),
        "{err}"
    );
    assert_eq!(run(&p.path("prog")), "42\n");
    assert!(tree_paths(full.0.path()).is_empty());
    assert_eq!(ours_in(Path::new("/tmp")), tmp_before);
}

#[test]
fn an_object_file_glob_does_not_pick_up_native_objects() {
    // A Makefile that archives `*.o` and links the archive, built twice.
    let p = SmallProject::new(FILES);
    for _ in 0..2 {
        p.compile_all(&["-O2"]);
        let objects: Vec<String> = std::fs::read_dir(p.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".o"))
            .collect();
        assert_eq!(objects.len(), 2, "{objects:?}");
        let _ = std::fs::remove_file(p.path("libx.a"));
        let ar = Command::new("llvm-ar-22")
            .arg("rcs")
            .arg(p.path("libx.a"))
            .args(objects.iter().map(|o| p.path(o)))
            .status()
            .unwrap();
        assert!(ar.success());
        let out = p.ld_clang(&["-o", "prog", "libx.a"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

#[test]
fn output_to_a_device_is_written_in_place() {
    if !is_root() {
        eprintln!("skipped: mknod needs root");
        return;
    }
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    let device = p.path("null");
    let made = Command::new("mknod")
        .args(["-m", "666"])
        .arg(&device)
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success());
    let before = tree_paths(p.dir());
    let out = p.ld_clang(&["-o", "null", "main.o", "twice.o"]);
    assert!(out.status.success(), "{}", stderr(&out));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&device)
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(
        tree_paths(p.dir()),
        before,
        "nothing created beside the device"
    );
    assert_eq!(p.env.tmp_contents(), Vec::<PathBuf>::new());
}

/// The real `/dev/null`, as configure probes use it, checked and restored.
#[test]
fn probes_linking_and_compiling_to_dev_null_leave_it_a_device() {
    if !is_root() {
        eprintln!("skipped: a check of the real /dev/null needs root to restore it");
        return;
    }
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            use std::os::unix::fs::FileTypeExt;
            let ok = std::fs::metadata("/dev/null").is_ok_and(|m| m.file_type().is_char_device());
            if !ok {
                let _ = std::fs::remove_file("/dev/null");
                let _ = Command::new("mknod")
                    .args(["-m", "666", "/dev/null", "c", "1", "3"])
                    .status();
                panic!("/dev/null was replaced (restored it)");
            }
        }
    }
    let _guard = Guard;
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    let out = clang_via_thindist_ld(&p, &["main.c", "twice.c", "-o", "/dev/null"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = p.ld(&["-shared", "-o", "/dev/null", "main.o", "twice.o"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = p
        .cmd(thindist())
        .args([
            "cc",
            "--",
            "clang-22",
            "-flto=thin",
            "-c",
            "twice.c",
            "-o",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!Path::new("/dev/.null.thindist.json").exists());
    assert!(!Path::new("/dev/null.thindist").exists());
    assert!(!Path::new("/dev/null.thinlto-native.o").exists());
    assert_eq!(p.env.tmp_contents(), Vec::<PathBuf>::new());
}

#[test]
fn compile_and_link_in_one_command_leaves_tmpdir_empty_and_hits_the_cache_next_time() {
    let p = SmallProject::new(FILES);
    let before = tree_paths(p.dir());
    let last_run = || {
        let out = p.cmd(thindist()).args(["cache", "stats"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("last run:"))
            .unwrap()
            .to_string()
    };
    let first = clang_via_thindist_ld(&p, &["-O2", "main.c", "twice.c", "-o", "prog"]);
    assert!(first.status.success(), "{}", stderr(&first));
    // As quiet as lld: configure probes may judge a compiler by what it prints.
    assert_eq!(stderr(&first), "");
    assert_eq!(last_run(), "last run: 0 hits, 2 misses");
    assert_eq!(
        p.env.tmp_contents(),
        Vec::<PathBuf>::new(),
        "TMPDIR is left empty"
    );
    let mut expected = before.clone();
    expected.push(PathBuf::from("prog"));
    expected.sort();
    assert_eq!(tree_paths(p.dir()), expected);
    assert_eq!(run(&p.path("prog")), "42\n");
    // The driver names its temporaries anew each time; their content is what counts.
    let second = clang_via_thindist_ld(&p, &["-O2", "main.c", "twice.c", "-o", "prog"]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(last_run(), "last run: 2 hits, 0 misses");
}

#[test]
fn output_errors_are_lld_s() {
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    std::fs::create_dir(p.path("adir")).unwrap();
    let out = p.ld_clang(&["-o", "adir", "main.o", "twice.o"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot open output file adir: Is a directory"),
        "{}",
        stderr(&out)
    );
    assert_eq!(p.env.tmp_contents(), Vec::<PathBuf>::new());
    // A symlinked output ends as lld leaves it.
    std::fs::write(p.path("target"), "old").unwrap();
    std::os::unix::fs::symlink("target", p.path("link-inproc")).unwrap();
    std::os::unix::fs::symlink("target", p.path("link-thindist")).unwrap();
    let inproc = p
        .cmd("clang-22")
        .args([
            "-flto=thin",
            "-fuse-ld=lld",
            "-o",
            "link-inproc",
            "main.o",
            "twice.o",
        ])
        .output()
        .unwrap();
    assert!(inproc.status.success());
    let out = p.ld_clang(&["-o", "link-thindist", "main.o", "twice.o"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        p.path("link-inproc").is_symlink(),
        p.path("link-thindist").is_symlink()
    );
}

#[test]
fn archive_members_keep_their_recorded_flags() {
    let p = SmallProject::new(FILES);
    for (src, obj) in [("main.c", "main.o"), ("twice.c", "twice.o")] {
        let out = p
            .cmd(thindist())
            .args([
                "cc",
                "--",
                "clang-22",
                "-O1",
                "-flto=thin",
                "-c",
                src,
                "-o",
                obj,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let ar = p
        .cmd("llvm-ar-22")
        .args(["rcs", "libtwice.a", "twice.o"])
        .status()
        .unwrap();
    assert!(ar.success());
    let out = p.ld_clang(&["-o", "prog", "main.o", "libtwice.a"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("no saved flags"),
        "the member's record was not found: {err}"
    );
    // The member is named as lld names it, not by its path in the work directory.
    assert!(err.contains("  LTO     libtwice.a(twice.o)"), "{err}");
    assert_eq!(run(&p.path("prog")), "42\n");
}

/// Three members of one archive, two named `util.o` and one `1-util.o` (objects of the same
/// name from different directories): each keeps its identity.
#[test]
fn archive_members_of_the_same_name_never_collide() {
    let p = SmallProject::new(&[
        ("main.c", "#include <stdio.h>\nint x_func(void); int y_func(void); int z_func(void);\nint main(void){ printf(\"%d %d %d\\n\", x_func(), y_func(), z_func()); return 0; }\n"),
    ]);
    for (dir, name, body) in [
        ("a", "util", "int x_func(void){ return 100; }"),
        ("b", "1-util", "int y_func(void){ return 1; }"),
        ("c", "util", "int z_func(void){ return 7; }"),
    ] {
        std::fs::create_dir_all(p.path(dir)).unwrap();
        std::fs::write(p.path(&format!("{dir}/{name}.c")), body).unwrap();
        let out = p
            .cmd("clang-22")
            .args([
                "-O2",
                "-flto=thin",
                "-c",
                &format!("{dir}/{name}.c"),
                "-o",
                &format!("{dir}/{name}.o"),
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let out = p
        .cmd("clang-22")
        .args(["-O2", "-flto=thin", "-c", "main.c", "-o", "main.o"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let ar = p
        .cmd("llvm-ar-22")
        .args(["rc", "libu.a", "a/util.o", "b/1-util.o", "c/util.o"])
        .status()
        .unwrap();
    assert!(ar.success());
    let inproc = p
        .cmd("clang-22")
        .args([
            "-flto=thin",
            "-fuse-ld=lld",
            "-o",
            "prog-inproc",
            "main.o",
            "libu.a",
        ])
        .output()
        .unwrap();
    assert!(inproc.status.success(), "{}", stderr(&inproc));
    let out = p.ld_clang(&["-o", "prog", "main.o", "libu.a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(run(&p.path("prog-inproc")), "100 1 7\n");
    assert_eq!(run(&p.path("prog")), "100 1 7\n");
}

#[test]
fn the_same_objects_linked_from_another_tree_hit_the_cache() {
    let a = SmallProject::new(FILES);
    a.compile_all(&["-O2"]);
    let b = SmallProject::new(FILES);
    for obj in ["main.o", "twice.o"] {
        std::fs::copy(a.path(obj), b.path(obj)).unwrap();
    }
    let cache = a.env.cache_dir();
    let link = |p: &SmallProject| {
        p.cmd(thindist())
            .arg("ld")
            .arg(format!("--cache-dir={}", cache.display()))
            .args(["--", "clang-22", "-fuse-ld=lld", "-flto=thin", "-o", "prog"])
            .arg(a.path("main.o"))
            .arg(p.path("twice.o"))
            .output()
            .unwrap()
    };
    assert_eq!(summary_hits_misses(&stderr(&link(&a))), (0, 2));
    assert_eq!(summary_hits_misses(&stderr(&link(&b))), (2, 0));
}

/// lld's `--save-temps`, in either spelling, keeps distributed mode's temporaries: the work
/// directory.
#[test]
fn save_temps_keeps_the_work_directory() {
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    for option in ["--save-temps", "-plugin-opt=save-temps"] {
        let out = p.ld(&[option, "-r", "-o", "part.o", "main.o", "twice.o"]);
        let err = stderr(&out);
        assert!(out.status.success(), "{option}: {err}");
        assert!(
            err.contains("keeping this link's work files in"),
            "{option}: {err}"
        );
    }
}

/// The work directory a `-v` link's thin-link command names (its response file's directory).
fn work_dir_of(stderr: &str) -> PathBuf {
    let rsp = stderr
        .split_whitespace()
        .find_map(|w| w.strip_prefix('@').filter(|p| p.ends_with("/thinlink.rsp")))
        .unwrap_or_else(|| panic!("no thin-link command in: {stderr}"));
    Path::new(rsp).parent().unwrap().to_path_buf()
}

#[test]
fn every_link_of_one_output_uses_one_work_directory_unless_it_is_held_or_not_private() {
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    let link = |output: &str| {
        let out = p.ld_with(
            &["-v", "--no-cache"],
            &["-r", "-o", output, "main.o", "twice.o"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        work_dir_of(&stderr(&out))
    };
    // The same directory each time (lld numbers a shard's values by the paths of the modules
    // extracted there), another one for another output; none left behind.
    let dir = link("both.o");
    assert!(dir.starts_with(p.env.tmp_dir()), "{}", dir.display());
    assert_eq!(link("both.o"), dir);
    assert_ne!(link("other.o"), dir);
    assert_eq!(p.env.tmp_contents(), Vec::<PathBuf>::new());

    // What a killed link left: removed, and the directory made again.
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.join("stale.native.o"), b"stale").unwrap();
    assert_eq!(link("both.o"), dir);
    assert!(!dir.exists());

    // Held by another link of the same output: a directory of its own, the held one untouched.
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.join("in-use"), b"").unwrap();
    let held = std::fs::File::open(&dir).unwrap();
    // SAFETY: flock on an open descriptor.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&held), libc::LOCK_EX) },
        0
    );
    assert_ne!(link("both.o"), dir);
    assert!(dir.join("in-use").exists());
    drop(held);

    // Not private (another user could have made it): left alone, and not used.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_ne!(link("both.o"), dir);
    assert!(dir.join("in-use").exists());
    std::fs::remove_dir_all(&dir).unwrap();
    // A symbolic link there is not followed.
    let elsewhere = p.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
    assert_ne!(link("both.o"), dir);
    assert!(dir.is_symlink() && elsewhere.is_dir());
    std::fs::remove_file(&dir).unwrap();
    assert_eq!(p.env.tmp_contents(), Vec::<PathBuf>::new());
}
