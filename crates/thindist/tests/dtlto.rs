//! lld's DTLTO with thindist as the distributor: `clang -fthinlto-distributor=thindist`.

mod util;

use std::process::Command;
use util::{thindist, SmallProject};

const MAIN: &str = "#include <stdio.h>\nint twice(int); int hot(int);\nint main(void){ printf(\"%d %d\\n\", twice(21), hot(3)); return 0; }\n";
const TWICE: &str = "int twice(int x){ return 2*x; }\n";
const HOT: &str = "int helper_a(int x){ return x+1; }\nint helper_b(int x){ return x*3; }\nint hot(int x){ return helper_a(x)+helper_b(x); }\n";

fn project() -> SmallProject {
    let p = SmallProject::new(&[("main.c", MAIN), ("twice.c", TWICE), ("hot.c", HOT)]);
    p.compile_all(&["-O2"]);
    p
}

/// Links with lld's DTLTO, thindist as the distributor, extra `distributor_args` for it.
fn link_dtlto(p: &SmallProject, output: &str, distributor_args: &[String]) -> std::process::Output {
    let mut cmd = p.cmd("clang-22");
    cmd.args(["-flto=thin", "-fuse-ld=lld", "-O2"])
        .arg(format!("-fthinlto-distributor={}", thindist()))
        .arg("-Xthinlto-distributor=distribute");
    for arg in distributor_args {
        cmd.arg(format!("-Xthinlto-distributor={arg}"));
    }
    cmd.args(["-o", output, "main.o", "twice.o", "hot.o"])
        .current_dir(p.dir())
        .output()
        .unwrap()
}

fn run(p: &SmallProject, prog: &str) -> String {
    let out = Command::new(p.path(prog)).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn dtlto_link_equals_in_process_link() {
    let p = project();
    let out = link_dtlto(&p, "prog-dtlto", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("thindist: 3 modules"));
    let inproc = p
        .cmd("clang-22")
        .args([
            "-flto=thin",
            "-fuse-ld=lld",
            "-O2",
            "-o",
            "prog-inproc",
            "main.o",
            "twice.o",
            "hot.o",
        ])
        .current_dir(p.dir())
        .status()
        .unwrap();
    assert!(inproc.success());
    assert_eq!(run(&p, "prog-dtlto"), run(&p, "prog-inproc"));
    assert_eq!(run(&p, "prog-dtlto"), "42 13\n");
}

#[test]
fn failing_job_fails_the_link_with_thindists_error() {
    let p = project();
    p.write_record(
        "hot.o",
        &[
            "clang-22",
            "-mllvm",
            "-no-such-llvm-option",
            "-c",
            "hot.c",
            "-o",
            "hot.o",
        ],
    );
    let out = link_dtlto(&p, "prog", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("thindist: error: back-end compile of hot.o failed"),
        "{err}"
    );
    assert!(err.contains("to reproduce: cd"), "{err}");
    assert!(!p.path("prog").exists());
}

#[test]
fn compile_commands_flags_reach_the_native_object() {
    let p = project();
    // hot.o's own flags ask for a basic-block address map, a back-end option lld never passes:
    // the native object (and so the program) carries a .llvm_bb_addr_map section only if the
    // module's saved flags reached its back end.
    let db = serde_json::json!([
        {"directory": p.dir(), "file": "hot.c", "arguments": ["clang-22", "-O2", "-fbasic-block-address-map", "-flto=thin", "-c", "hot.c", "-o", "hot.o"]},
    ]);
    std::fs::write(p.path("compile_commands.json"), db.to_string()).unwrap();
    let trace = p.path("trace.json");
    let out = link_dtlto(
        &p,
        "prog",
        &[
            "--compile-commands=compile_commands.json".into(),
            "-v".into(),
            format!("--trace={}", trace.display()),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let hot_command = err
        .lines()
        .find(|l| l.contains("-fthinlto-index=") && l.contains(" hot.o"))
        .expect(&err);
    assert!(
        hot_command.contains("-fbasic-block-address-map"),
        "{hot_command}"
    );
    let twice_command = err
        .lines()
        .find(|l| l.contains("-fthinlto-index=") && l.contains(" twice.o"))
        .expect(&err);
    assert!(
        !twice_command.contains("-fbasic-block-address-map"),
        "{twice_command}"
    );
    let sections = |prog: &str| {
        let out = Command::new("llvm-readelf-22")
            .args(["-S", "--wide"])
            .arg(p.path(prog))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(sections("prog").contains(".llvm_bb_addr_map"));
    assert!(link_dtlto(&p, "prog-plain", &[]).status.success());
    assert!(
        !sections("prog-plain").contains(".llvm_bb_addr_map"),
        "without saved flags no module asks for the map"
    );
    assert!(trace.exists());
}

#[test]
fn second_link_takes_every_job_from_the_cache() {
    let p = project();
    let cache = format!("--cache-dir={}", p.path("cache").display());
    let first = link_dtlto(&p, "prog-1", std::slice::from_ref(&cache));
    let err = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{err}");
    assert!(err.contains("cache 0 hits, 3 misses"), "{err}");
    let second = link_dtlto(&p, "prog-2", &[cache]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{err}");
    assert!(err.contains("cache 3 hits, 0 misses"), "{err}");
    assert_eq!(run(&p, "prog-2"), "42 13\n");
}
