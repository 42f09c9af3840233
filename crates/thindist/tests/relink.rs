//! An unchanged link does no work: its outputs come back from the cache without a thin link,
//! and any change to what the link reads, to a module's flags or to the command, or a missing
//! output, runs the full link and gives the right program.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use thindist_testkit::Project;
use util::{thindist, SmallProject, TestEnv};

/// Printed by a link restored from the cache.
const RESTORED: &str = "restored from the cache without a thin link";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Did this (successful, `-v`) link run the thin link, or was it restored?
fn ran_thin_link(out: &Output) -> bool {
    let err = stderr(out);
    assert!(out.status.success(), "{err}");
    let thin = err.contains("thinlink.rsp");
    assert_ne!(thin, err.contains(RESTORED), "{err}");
    thin
}

struct Generated {
    env: TestEnv,
    _dir: tempfile::TempDir,
    p: Project,
}

impl Generated {
    /// A generated project whose modules are compiled through `thindist cc`, so each has a
    /// flags record.
    fn new() -> Generated {
        let dir = tempfile::tempdir().unwrap();
        let p = Project::generate(dir.path(), 20);
        let env = TestEnv::new();
        // thindist cc files each record in the test's cache too (archive members need it).
        let cache = format!("THINDIST_CACHE_DIR={}", env.cache_dir().display());
        p.compile(&["env", &cache, thindist(), "cc", "--"], |_| vec![]);
        p.partial_link(&[]);
        Generated { env, _dir: dir, p }
    }

    fn link(&self, output: &str, extra: &[&str]) -> Output {
        self.env
            .command(thindist())
            .args(["ld", "-v", "-j2", "--", "clang-22"])
            .args(self.p.clang_link_args(output))
            .args(extra)
            .current_dir(&self.p.dir)
            .output()
            .unwrap()
    }

    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.p.dir.join(rel)
    }

    /// The program's output as in-process ThinLTO builds it from the same objects.
    fn reference_output(&self) -> String {
        self.p.link_in_process("prog-ref", 2);
        self.p.run_program("prog-ref").0
    }

    /// Recompiles module `i` through thindist cc with `flags`.
    fn recompile(&self, i: usize, flags: &[&str]) {
        let out = self
            .env
            .command(thindist())
            .args(["cc", "--", "clang-22", "-O2", "-flto=thin"])
            .args(flags)
            .arg("-c")
            .arg(self.p.source(i))
            .arg("-o")
            .arg(self.p.object(i))
            .current_dir(&self.p.dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

#[test]
fn an_unchanged_relink_restores_the_same_program_and_any_change_relinks() {
    let g = Generated::new();
    assert!(ran_thin_link(&g.link("prog", &[])));
    let first = std::fs::read(g.path("prog")).unwrap();
    let expected = g.reference_output();
    assert_eq!(g.p.run_program("prog").0, expected);

    // Nothing changed: byte-identical output, no thin link, written as lld writes it.
    let out = g.link("prog", &[]);
    assert!(!ran_thin_link(&out), "{}", stderr(&out));
    assert!(stderr(&out).contains(" hits, 0 misses"), "{}", stderr(&out));
    assert_eq!(std::fs::read(g.path("prog")).unwrap(), first);
    let mode = std::fs::metadata(g.path("prog"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "an executable: {mode:o}");
    assert_eq!(g.p.run_program("prog").0, expected);
    assert_eq!(g.env.tmp_contents(), Vec::<std::path::PathBuf>::new());
    let explain = g
        .env
        .command(thindist())
        .args(["explain", "src/m0003.o"])
        .current_dir(&g.p.dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(text.contains("restored unchanged from the cache"), "{text}");

    // One source changed.
    let text = std::fs::read_to_string(g.path("src/m0003.c"))
        .unwrap()
        .replace("acc = (acc << 1)", "acc = (acc << 1) + 1");
    std::fs::write(g.path("src/m0003.c"), text).unwrap();
    g.recompile(3, &[]);
    assert!(ran_thin_link(&g.link("prog", &[])));
    let changed = g.reference_output();
    assert_ne!(changed, expected);
    assert_eq!(g.p.run_program("prog").0, changed);
    assert!(
        !ran_thin_link(&g.link("prog", &[])),
        "and then it is unchanged again"
    );

    // One saved flag only: module 0's bitcode stays the same, its record does not.
    let before = std::fs::read(g.path("src/m0000.o")).unwrap();
    g.recompile(0, &["-ffunction-sections"]);
    assert_eq!(
        std::fs::read(g.path("src/m0000.o")).unwrap(),
        before,
        "same bitcode"
    );
    assert!(ran_thin_link(&g.link("prog", &[])));
    assert_eq!(g.p.run_program("prog").0, changed);

    // The link command.
    assert!(ran_thin_link(&g.link("prog", &["-Wl,-z,now"])));
    assert_eq!(g.p.run_program("prog").0, changed);

    // A member of the regular archive moved: same members, another order.
    let members: Vec<String> = String::from_utf8(
        Command::new("llvm-ar-22")
            .args(["t", "lib/libreg.a"])
            .current_dir(&g.p.dir)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .lines()
    .map(String::from)
    .collect();
    assert!(!ran_thin_link(&g.link("prog", &["-Wl,-z,now"])));
    let status = Command::new("llvm-ar-22")
        .args(["m", "lib/libreg.a", &members[0]])
        .current_dir(&g.p.dir)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(ran_thin_link(&g.link("prog", &["-Wl,-z,now"])));
    assert_eq!(g.p.run_program("prog").0, changed);

    // The output removed.
    std::fs::remove_file(g.path("prog")).unwrap();
    assert!(ran_thin_link(&g.link("prog", &["-Wl,-z,now"])));
    assert_eq!(g.p.run_program("prog").0, changed);

    // The output changed.
    std::fs::write(g.path("prog"), b"not the program").unwrap();
    assert!(ran_thin_link(&g.link("prog", &["-Wl,-z,now"])));
    assert_eq!(g.p.run_program("prog").0, changed);
}

const FILES: &[(&str, &str)] = &[
    (
        "main.c",
        "#include <stdio.h>\nint twice(int);\nint main(void){ printf(\"%d\\n\", twice(21)); return 0; }\n",
    ),
    ("twice.c", "int twice(int x){ return x * 2; }\n"),
];

/// `thindist ld -v` of the small project through the clang driver, with `extra`.
fn small_link(p: &SmallProject, extra: &[&str]) -> Output {
    p.cmd(thindist())
        .args([
            "ld",
            "-v",
            "--keep-natives",
            "--",
            "clang-22",
            "-fuse-ld=lld",
            "-flto=thin",
        ])
        .args(["-o", "prog", "main.o", "twice.o"])
        .args(extra)
        .output()
        .unwrap()
}

fn run(path: &Path) -> String {
    String::from_utf8(Command::new(path).output().unwrap().stdout).unwrap()
}

#[test]
fn a_changed_linker_script_relinks() {
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    let script = |byte: u8| {
        std::fs::write(
            p.path("extra.ld"),
            format!("SECTIONS {{ .thindist_test : {{ BYTE({byte}) }} }} INSERT AFTER .data;\n"),
        )
        .unwrap()
    };
    script(1);
    let link = || small_link(&p, &["-Wl,-T,extra.ld"]);
    assert!(ran_thin_link(&link()));
    let first = std::fs::read(p.path("prog")).unwrap();
    assert!(!ran_thin_link(&link()));
    script(2);
    assert!(ran_thin_link(&link()));
    assert_ne!(std::fs::read(p.path("prog")).unwrap(), first);
    assert_eq!(run(&p.path("prog")), "42\n");
}

#[test]
fn options_with_side_outputs_and_dev_null_outputs() {
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    let map = ["-Wl,-Map,prog.map"];
    assert!(ran_thin_link(&small_link(&p, &map)));
    std::fs::remove_file(p.path("prog.map")).unwrap();
    assert!(
        ran_thin_link(&small_link(&p, &map)),
        "a -Map link always runs"
    );
    assert!(p.path("prog.map").exists());

    // /dev/null is left alone by a restore (and stays a device).
    let null = |p: &SmallProject| {
        p.cmd(thindist())
            .args(["ld", "-v", "--", "clang-22", "-fuse-ld=lld", "-flto=thin"])
            .args(["-o", "/dev/null", "main.o", "twice.o"])
            .output()
            .unwrap()
    };
    assert!(ran_thin_link(&null(&p)));
    assert!(!ran_thin_link(&null(&p)));
    assert!(!std::fs::metadata("/dev/null").unwrap().is_file());
}

#[test]
fn cache_entries_survive_changes_to_published_natives_in_place() {
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    assert!(ran_thin_link(&small_link(&p, &[])));
    let native = p.path("twice.thinlto-native.o");
    let original = std::fs::read(&native).unwrap();
    // What objtool or a livepatch tool does: write into the file, keeping its inode.
    let tamper = || {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::options().write(true).open(&native).unwrap();
        f.seek(SeekFrom::Start(original.len() as u64 / 2)).unwrap();
        f.write_all(b"TAMPERED").unwrap();
    };
    tamper();
    // The restore writes the published native again from the cache, intact.
    assert!(!ran_thin_link(&small_link(&p, &[])));
    assert_eq!(std::fs::read(&native).unwrap(), original);
    tamper();
    // A full link (another command) takes both objects from the cache: no entry was damaged.
    let out = small_link(&p, &["-Wl,-z,now"]);
    assert!(ran_thin_link(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cache 2 hits, 0 misses") && !err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(std::fs::read(&native).unwrap(), original);
    assert_eq!(run(&p.path("prog")), "42\n");
}

#[test]
fn a_restored_relocatable_output_has_the_mode_lld_gives_it() {
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    let link = || p.ld_with(&["-v"], &["-r", "main.o", "twice.o", "-o", "both.o"]);
    assert!(ran_thin_link(&link()));
    let first = std::fs::read(p.path("both.o")).unwrap();
    let mode = std::fs::metadata(p.path("both.o"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert!(!ran_thin_link(&link()));
    assert_eq!(std::fs::read(p.path("both.o")).unwrap(), first);
    let restored = std::fs::metadata(p.path("both.o"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(restored, mode, "not executable, as lld writes -r outputs");
    assert_eq!(restored & 0o111, 0);
}

#[test]
fn outputs_that_already_hold_what_a_relink_writes_are_kept_with_fresh_times() {
    use std::os::unix::fs::MetadataExt;
    let p = SmallProject::new(FILES);
    p.compile_all(&["-O2"]);
    assert!(ran_thin_link(&small_link(&p, &[])));
    let blob_dir = p.env.cache_dir().join("blobs");
    let blobs: Vec<_> = util::tree_paths(&blob_dir)
        .into_iter()
        .filter(|path| blob_dir.join(path).is_file())
        .collect();
    assert_eq!(
        blobs.len(),
        2,
        "the natives, and no copy of the program: {blobs:?}"
    );
    let prog = p.path("prog");
    let native = p.path("twice.thinlto-native.o");
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let age = |path: &Path| {
        std::fs::File::options()
            .append(true)
            .open(path)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        std::fs::metadata(path).unwrap().ino()
    };
    let fresh = |path: &Path| std::fs::metadata(path).unwrap().modified().unwrap() > hour_ago;
    let (prog_ino, native_ino) = (age(&prog), age(&native));
    let (prog_bytes, native_bytes) = (
        std::fs::read(&prog).unwrap(),
        std::fs::read(&native).unwrap(),
    );

    // Restored: nothing copied, both given the time a rewrite would give them.
    assert!(!ran_thin_link(&small_link(&p, &[])));
    for (path, ino, bytes) in [
        (&prog, prog_ino, &prog_bytes),
        (&native, native_ino, &native_bytes),
    ] {
        assert_eq!(
            std::fs::metadata(path).unwrap().ino(),
            ino,
            "{}",
            path.display()
        );
        assert!(fresh(path), "{} keeps its old time", path.display());
        assert_eq!(&std::fs::read(path).unwrap(), bytes);
    }

    // A full link (another command) publishes the unchanged native the same way.
    age(&native);
    assert!(ran_thin_link(&small_link(&p, &["-Wl,-z,now"])));
    assert_eq!(std::fs::metadata(&native).unwrap().ino(), native_ino);
    assert!(fresh(&native));
    assert_eq!(std::fs::read(&native).unwrap(), native_bytes);

    // An output whose mode was changed gets lld's mode back, as lld's rewrite gives it.
    assert!(ran_thin_link(&small_link(&p, &[])));
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!ran_thin_link(&small_link(&p, &[])));
    let mode = std::fs::metadata(&prog).unwrap().permissions().mode();
    assert_eq!(mode & 0o111, 0o111, "executable again: {mode:o}");
    assert_eq!(run(&prog), "42\n");
}
