//! Per-module flags reach the back end: two modules of one program compiled with different
//! code-generation flags produce native objects that differ exactly as those flags say, whether
//! the flags were recorded by `thindist cc`, found in compile_commands.json, or read from a
//! kbuild `.NAME.o.cmd` file with quoted defines.

mod util;

use std::process::Command;
use util::{thindist, SmallProject};

/// The same vectorizable loop in two modules, and two functions in each of two more modules.
const FILES: &[(&str, &str)] = &[
    ("fast.c", "void scale_fast(int *restrict a, const int *restrict b, int n) { for (int i = 0; i < n; i++) a[i] = b[i] * 3 + 1; }\n"),
    ("slow.c", "void scale_slow(int *restrict a, const int *restrict b, int n) { for (int i = 0; i < n; i++) a[i] = b[i] * 3 + 1; }\n"),
    ("split.c", "int split_one(int x) { return x * 17; }\nint split_two(int x) { return x ^ 0x5a; }\n"),
    ("whole.c", "int whole_one(int x) { return x * 19; }\nint whole_two(int x) { return x ^ 0xa5; }\n"),
    ("main.c", "#include <stdio.h>\nvoid scale_fast(int*, const int*, int); void scale_slow(int*, const int*, int);\n\
      int split_one(int); int split_two(int); int whole_one(int); int whole_two(int);\n\
      int main(int c, char **v) { (void)v; int a[64], b[64]; for (int i = 0; i < 64; i++) b[i] = i * c;\n\
      scale_fast(a, b, 64); scale_slow(b, a, 64);\n\
      printf(\"%d %d\\n\", b[63], split_one(c) + split_two(c) + whole_one(c) + whole_two(c)); return 0; }\n"),
];

/// The flags each module is compiled with: the differences under test.
fn flags_of(source: &str) -> Vec<&'static str> {
    match source {
        "fast.c" => vec!["-O2"],
        "slow.c" => vec!["-O1"],
        "split.c" => vec!["-O2", "-ffunction-sections"],
        _ => vec!["-O2", "-fno-function-sections"],
    }
}

fn disassembly(p: &SmallProject, object: &str) -> String {
    let out = Command::new("llvm-objdump-22")
        .args(["-d", "--no-show-raw-insn"])
        .arg(p.path(object))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sections(p: &SmallProject, object: &str) -> String {
    let out = Command::new("llvm-readelf-22")
        .args(["-S", "--wide"])
        .arg(p.path(object))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Links with thindist (no cache, so every back end runs) and checks the native objects.
fn link_and_check(p: &SmallProject, extra: &[&str]) {
    let out = Command::new(thindist())
        .args(["ld", "--no-cache", "--keep-natives"])
        .args(extra)
        .args([
            "--",
            "clang-22",
            "-fuse-ld=lld",
            "-flto=thin",
            "-o",
            "prog",
            "main.o",
            "fast.o",
            "slow.o",
            "split.o",
            "whole.o",
        ])
        .current_dir(p.dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("no saved flags"),
        "every module had saved flags: {err}"
    );
    assert!(Command::new(p.path("prog"))
        .output()
        .unwrap()
        .status
        .success());

    // -O2 vectorizes the loop (packed SSE multiplies on xmm registers); -O1 does not.
    let fast = disassembly(p, "fast.thinlto-native.o");
    let slow = disassembly(p, "slow.thinlto-native.o");
    assert!(
        fast.contains("xmm"),
        "the -O2 module is vectorized:\n{fast}"
    );
    assert!(!slow.contains("xmm"), "the -O1 module is not:\n{slow}");
    // -ffunction-sections gives each function its own section; its twin keeps one .text.
    let split = sections(p, "split.thinlto-native.o");
    let whole = sections(p, "whole.thinlto-native.o");
    assert!(
        split.contains(".text.split_one") && split.contains(".text.split_two"),
        "{split}"
    );
    assert!(
        !whole.contains(".text.whole_one") && !whole.contains(".text.whole_two"),
        "{whole}"
    );
}

fn compile(p: &SmallProject, wrapper: &[&str]) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    for (source, _) in FILES {
        let object = source.replace(".c", ".o");
        let mut argv: Vec<String> = vec!["clang-22".into()];
        argv.extend(flags_of(source).iter().map(|s| s.to_string()));
        argv.extend(["-flto=thin", "-c", source, "-o", &object].map(String::from));
        let status = Command::new(wrapper.first().copied().unwrap_or(&argv[0]))
            .args(wrapper.iter().skip(1))
            .args(if wrapper.is_empty() {
                &argv[1..]
            } else {
                &argv[..]
            })
            .current_dir(p.dir())
            .status()
            .unwrap();
        assert!(status.success());
        commands.push(argv);
    }
    commands
}

#[test]
fn fork_server_objects_are_those_of_processes() {
    let p = SmallProject::new(FILES);
    compile(&p, &[thindist(), "cc", "--"]);
    let objects: Vec<String> = FILES.iter().map(|(s, _)| s.replace(".c", ".o")).collect();
    let objects: Vec<&str> = objects.iter().map(String::as_str).collect();
    util::assert_fork_server_matches_processes(&p, &objects, false);
}

/// Two flag sets whose jobs alternate, one with a global LLVM option (`-mllvm`), which stays set
/// in a process once parsed unless reset: in cc1 workers each set's jobs still get exactly their
/// own options, as processes do.
#[test]
fn cc1_workers_keep_each_flag_sets_global_options_to_its_jobs() {
    let n = 12;
    let p = util::many_modules(n);
    let aligned = ["-mllvm", "-align-all-functions=7"];
    for i in 0..n {
        let (source, object) = (format!("m{i}.c"), format!("m{i}.o"));
        let status = Command::new(thindist())
            .args(["cc", "--", "clang-22", "-O2"])
            .args(if i % 2 == 1 { &aligned[..] } else { &[] })
            .args(["-flto=thin", "-c", &source, "-o", &object])
            .current_dir(p.dir())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let objects = util::many_objects(n);
    let objects: Vec<&str> = objects.iter().map(String::as_str).collect();
    util::assert_fork_server_matches_processes(&p, &objects, true);
    // The option reached its own jobs only: 128-byte function alignment in odd modules.
    let link = Command::new(thindist())
        .args(["ld", "--no-cache", "--keep-natives", "--"])
        .args(["clang-22", "-fuse-ld=lld", "-flto=thin", "-o", "prog"])
        .args(&objects)
        .current_dir(p.dir())
        .status()
        .unwrap();
    assert!(link.success());
    for i in 0..2 {
        let text = sections(&p, &format!("m{i}.thinlto-native.o"));
        let line = text.lines().find(|l| l.contains(" .text")).unwrap();
        let alignment = line.split_whitespace().last().unwrap();
        assert_eq!(alignment, if i == 1 { "128" } else { "16" }, "{text}");
    }
}

#[test]
fn flags_recorded_by_thindist_cc() {
    let p = SmallProject::new(FILES);
    compile(&p, &[thindist(), "cc", "--"]);
    assert!(p.path(".fast.o.thindist.json").exists());
    link_and_check(&p, &[]);
}

#[test]
fn flags_from_compile_commands_json() {
    let p = SmallProject::new(FILES);
    let commands = compile(&p, &[]);
    let entries: Vec<serde_json::Value> = FILES
        .iter()
        .zip(&commands)
        .map(|((source, _), argv)| serde_json::json!({"directory": p.dir(), "file": source, "arguments": argv}))
        .collect();
    std::fs::write(
        p.path("compile_commands.json"),
        serde_json::Value::Array(entries).to_string(),
    )
    .unwrap();
    link_and_check(&p, &["--compile-commands", "compile_commands.json"]);
}

#[test]
fn flags_from_kbuild_cmd_files_with_quoted_defines() {
    let p = SmallProject::new(FILES);
    compile(&p, &[]);
    for (source, _) in FILES {
        let object = source.replace(".c", ".o");
        let stem = source.trim_end_matches(".c");
        let text = format!(
            "savedcmd_{object} := clang-22 -Wp,-MMD,./.{object}.d -nostdinc -I./include -DKBUILD_MODFILE='\"{stem}\"' \
             -DKBUILD_BASENAME='\"{stem}\"' -DKBUILD_MODNAME='\"{stem}\"' -D__KBUILD_MODNAME=kmod_{stem} {flags} -flto=thin \
             -fsplit-lto-unit -c -o {object} {source}   ; ./tools/objtool/objtool --hacks=jump_label {object}\n\n\
             source_{object} := {source}\n\ndeps_{object} := \\\n  include/linux/kconfig.h \\\n\n{object}: $(deps_{object})\n",
            flags = flags_of(source).join(" ")
        );
        std::fs::write(p.path(&format!(".{object}.cmd")), text).unwrap();
    }
    link_and_check(&p, &[]);
}
