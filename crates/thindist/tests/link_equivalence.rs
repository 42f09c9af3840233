//! The program thindist builds behaves exactly like the one lld builds with in-process ThinLTO,
//! through every way in: `thindist ld` with an ld.lld or a clang command, `thindist-ld` as the
//! linker, and `clang --ld-path=thindist-ld`; on a generated project of 200 modules with
//! cross-module inlining, a regular and a thin archive, native objects and a `-r` partial link.
//!
//! The project takes long to compile, so one test builds it in a temporary tree, runs every
//! check on it, and removes it.

use std::path::{Path, PathBuf};
use std::process::Command;
use thindist_testkit::Project;

fn thindist() -> &'static str {
    env!("CARGO_BIN_EXE_thindist")
}

struct Built {
    _dir: tempfile::TempDir,
    project: Project,
    expected: (String, i32),
    link_dir: PathBuf,
}

/// The compiled project: the in-process reference program, and `part.o` rebuilt through
/// thindist's `-r` link (which the reference did not use).
fn build() -> Built {
    let dir = tempfile::tempdir().unwrap();
    let project = Project::generate(dir.path(), 200);
    project.compile(&[], |_| vec![]);
    project.partial_link(&[]);
    project.link_in_process("prog-inproc", 2);
    let expected = project.run_program("prog-inproc");
    assert!(expected.0.contains("checksum"), "{:?}", expected);
    project.partial_link(&[thindist(), "ld", "--no-cache", "--"]);
    let link_dir = dir.path().join("bin");
    std::fs::create_dir_all(&link_dir).unwrap();
    std::os::unix::fs::symlink(thindist(), link_dir.join("thindist-ld")).unwrap();
    Built {
        _dir: dir,
        project,
        expected,
        link_dir,
    }
}

#[test]
fn every_way_in_links_the_program_lld_links() {
    let s = build();
    thindist_ld_with_an_lld_command(&s);
    thindist_ld_with_a_clang_command(&s);
    thindist_ld_as_the_linker(&s);
    clang_with_ld_path(&s);
    partial_link_output_is_native(&s);
    non_links_and_links_without_bitcode_pass_through(&s);
}

fn check(s: &Built, output: &str, cmd: &mut Command) {
    let out = cmd
        .current_dir(&s.project.dir)
        .env("THINDIST_NO_CACHE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("thindist: ") && err.contains(" modules in "),
        "no summary line: {err}"
    );
    assert_eq!(
        s.project.run_program(output),
        s.expected,
        "{output} differs from the in-process build"
    );
}

fn thindist_ld_with_an_lld_command(s: &Built) {
    let tmp = tempfile::tempdir().unwrap();
    check(
        s,
        "prog-ld",
        Command::new(thindist())
            .args([
                "ld",
                "-j2",
                "--keep-work",
                "--keep-natives",
                "--",
                "ld.lld-22",
            ])
            .args(s.project.lld_link_args("prog-ld"))
            .env("TMPDIR", tmp.path()),
    );
    let dir = &s.project.dir;
    assert!(
        !dir.join("prog-ld.thindist").exists(),
        "nothing beside the output"
    );
    let work: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(work.len(), 1, "one kept work directory in TMPDIR: {work:?}");
    let work = &work[0];
    // Cross-module inlining happened: main imports from the modules it calls.
    let imports = std::fs::read_to_string(work.join("src/main.o.imports")).unwrap();
    assert!(
        imports.lines().count() > 50,
        "main imports from few modules: {imports}"
    );
    // --keep-natives: native objects beside their bitcode, for plain objects and thin-archive
    // members; regular archive members are extracted into the work directory, each named by
    // its position in the archive (two members are named util.o), and compiled there.
    assert!(dir.join("src/m0000.thinlto-native.o").exists());
    assert!(
        dir.join("src/m0002.thinlto-native.o").exists(),
        "thin archive member"
    );
    assert!(!dir.join("lib/libreg.a.thindist").exists());
    let extracted: Vec<String> = std::fs::read_dir(work.join("archives"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let named = |suffix: &str| extracted.iter().filter(|n| n.ends_with(suffix)).count();
    assert_eq!(named("-util.o"), 2, "{extracted:?}");
    assert_eq!(named("-util.o.native.o"), 2, "{extracted:?}");
    assert_eq!(named("-m0001.o.native.o"), 1, "{extracted:?}");
    // The member nothing needs stays lazy: extracted, but never compiled.
    assert_eq!(named("-unused.o"), 1, "{extracted:?}");
    assert_eq!(named("-unused.o.native.o"), 0, "{extracted:?}");
    // Native modules were never given to a back end.
    assert!(!dir.join("src/m0009.thinlto-native.o").exists());
}

fn thindist_ld_with_a_clang_command(s: &Built) {
    check(
        s,
        "prog-clang",
        Command::new(thindist())
            .args(["ld", "--", "clang-22"])
            .args(s.project.clang_link_args("prog-clang")),
    );
}

fn thindist_ld_as_the_linker(s: &Built) {
    check(
        s,
        "prog-as-ld",
        Command::new(s.link_dir.join("thindist-ld"))
            .args(s.project.lld_link_args("prog-as-ld"))
            .env("THINDIST_LINKER", "ld.lld-22"),
    );
}

fn clang_with_ld_path(s: &Built) {
    let ld_path = format!("--ld-path={}", s.link_dir.join("thindist-ld").display());
    check(
        s,
        "prog-ld-path",
        Command::new("clang-22")
            .arg(ld_path)
            .args(s.project.clang_link_args("prog-ld-path"))
            .env("THINDIST_LINKER", "ld.lld-22"),
    );
}

fn partial_link_output_is_native(s: &Built) {
    let part = s.project.dir.join("part.o");
    assert_eq!(&std::fs::read(&part).unwrap()[..4], b"\x7fELF");
    let nm = Command::new("llvm-nm-22").arg(&part).output().unwrap();
    assert!(String::from_utf8_lossy(&nm.stdout).contains("T work_5"));
}

fn non_links_and_links_without_bitcode_pass_through(s: &Built) {
    let link = s.link_dir.join("thindist-ld");
    let out = Command::new(&link)
        .arg("--version")
        .env("THINDIST_LINKER", "ld.lld-22")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("Debian LLD 22")
            || String::from_utf8_lossy(&out.stdout).contains("LLD")
    );
    let out = Command::new(thindist())
        .args([
            "ld",
            "--",
            "ld.lld-22",
            "-r",
            "-o",
            "native-only.o",
            "lib/chain.o",
            "src/m0009.o",
        ])
        .current_dir(&s.project.dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).is_empty(),
        "a pass-through prints nothing of its own"
    );
    assert!(!Path::new(&s.project.dir)
        .join("native-only.o.thindist")
        .exists());
}
