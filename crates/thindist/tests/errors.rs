//! Bad input and failures: every one gets a clear message naming what was wrong and where, a
//! non-zero exit, and no half-written output where a valid one is expected.

mod util;

use std::process::Command;
use util::{thindist, SmallProject};

#[test]
fn failing_back_end_names_module_output_and_command() {
    let p = SmallProject::new(&[
        ("a.c", "int f(void);\nint main(void){return f();}\n"),
        ("b.c", "int f(void){return 0;}\n"),
    ]);
    p.compile_all(&["-O2"]);
    // A saved flag the back end rejects: the front end never saw it.
    p.write_record(
        "b.o",
        &[
            "clang-22",
            "-O2",
            "-mllvm",
            "-no-such-llvm-option",
            "-c",
            "b.c",
            "-o",
            "b.o",
        ],
    );
    let out = p.ld(&["-o", "prog", "a.o", "b.o"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("back-end compile of b.o failed"), "{err}");
    assert!(
        err.contains("no-such-llvm-option"),
        "compiler output missing: {err}"
    );
    assert!(
        err.contains("to reproduce: cd ")
            && err.contains("-fthinlto-index=")
            && err.contains("/b.o.thinlto.bc"),
        "{err}"
    );
    assert!(
        err.contains("flags from: thindist record .b.o.thindist.json"),
        "{err}"
    );
    assert!(
        !p.path("prog").exists(),
        "no output may be left after a failed link"
    );
    p.assert_no_temp_files();
}

#[test]
fn a_native_that_cannot_be_published_fails_its_module_by_name() {
    let p = SmallProject::new(&[
        ("a.c", "int f(void);\nint main(void){return f();}\n"),
        ("b.c", "int f(void){return 0;}\n"),
    ]);
    p.compile_all(&["-O2"]);
    // A directory where b's native object is to be published.
    std::fs::create_dir(p.path("b.thinlto-native.o")).unwrap();
    let out = p.ld_with(&["--keep-natives"], &["-o", "prog", "a.o", "b.o"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("back-end compile of b.o failed"), "{err}");
    assert!(
        err.contains("cannot publish the native object as") && err.contains("b.thinlto-native.o"),
        "{err}"
    );
    assert!(!p.path("prog").exists());
    assert!(p.path("b.thinlto-native.o").is_dir(), "left as it was");
    p.assert_no_temp_files();
}

#[test]
fn a_hit_that_cannot_be_published_fails_its_module_by_name() {
    let p = SmallProject::new(&[
        ("a.c", "int f(void);\nint main(void){return f();}\n"),
        ("b.c", "int f(void){return 0;}\n"),
    ]);
    p.compile_all(&["-O2"]);
    let out = p.ld_with(&["--keep-natives"], &["-o", "prog", "a.o", "b.o"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every module a cache hit now; b's native object cannot be published.
    std::fs::remove_file(p.path("b.thinlto-native.o")).unwrap();
    std::fs::create_dir(p.path("b.thinlto-native.o")).unwrap();
    let out = p.ld_with(&["--keep-natives"], &["-o", "prog2", "a.o", "b.o"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("back-end compile of b.o failed")
            && err.contains("cannot publish the native object as")
            && err.contains("b.thinlto-native.o"),
        "{err}"
    );
    assert!(!err.contains("back-end compile of a.o failed"), "{err}");
    assert!(!p.path("prog2").exists());
    assert!(p.path("b.thinlto-native.o").is_dir(), "left as it was");
    p.assert_no_temp_files();
}

#[test]
fn keep_going_runs_every_job_and_still_fails() {
    let p = SmallProject::new(&[
        (
            "a.c",
            "int f(void); int g(void);\nint main(void){return f()+g();}\n",
        ),
        ("b.c", "int f(void){return 0;}\n"),
        ("c.c", "int g(void){return 0;}\n"),
    ]);
    p.compile_all(&["-O2"]);
    for m in ["a", "b", "c"] {
        let src = format!("{m}.c");
        let obj = format!("{m}.o");
        p.write_record(
            &obj,
            &[
                "clang-22",
                "-mllvm",
                "-no-such-llvm-option",
                "-c",
                &src,
                "-o",
                &obj,
            ],
        );
    }
    let out = p.ld_with(
        &["-j1", "--keep-going"],
        &["-o", "prog", "a.o", "b.o", "c.o"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("back-end compile of").count(), 3, "{err}");
    assert!(err.contains("3 back-end compile(s) failed"), "{err}");
    let out = p.ld_with(&["-j1"], &["-o", "prog", "a.o", "b.o", "c.o"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("back-end compile of").count(),
        1,
        "without --keep-going the run stops: {err}"
    );
}

#[test]
fn compiler_that_writes_nothing_is_a_failure() {
    let p = SmallProject::new(&[("a.c", "int main(void){return 0;}\n")]);
    p.compile_all(&["-O2"]);
    let silent = p.path("silent-cc");
    std::fs::write(&silent, "#!/bin/sh\nexit 0\n").unwrap();
    util::make_executable(&silent);
    p.write_record(
        "a.o",
        &[silent.to_str().unwrap(), "-O2", "-c", "a.c", "-o", "a.o"],
    );
    let out = p.ld(&["-o", "prog", "a.o"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("compiler exited 0 but wrote no ") && err.contains("/a.o.native.o"),
        "{err}"
    );
    assert!(!p.path("prog").exists());
}

#[test]
fn missing_compiler_is_named() {
    let p = SmallProject::new(&[("a.c", "int main(void){return 0;}\n")]);
    p.compile_all(&["-O2"]);
    p.write_record(
        "a.o",
        &["clang-does-not-exist", "-O2", "-c", "a.c", "-o", "a.o"],
    );
    let out = p.ld(&["-o", "prog", "a.o"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "compiler clang-does-not-exist not found (thindist record .a.o.thindist.json)"
        ),
        "{err}"
    );
}

#[test]
fn compiler_older_than_the_bitcode_is_explained() {
    if Command::new("clang-14").arg("--version").output().is_err() {
        panic!("clang-14 is needed for this test: apt-get install clang-14 (.ci/run installs it)");
    }
    let p = SmallProject::new(&[("a.c", "int main(void){return 0;}\n")]);
    p.compile_all(&["-O2"]);
    let out = p.ld_with(&["--compiler", "clang-14"], &["-o", "prog", "a.o"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("clang-14 cannot read this bitcode: it is probably older than the compiler that wrote it"), "{err}");
}

#[test]
fn unusable_kbuild_cmd_file_falls_back_with_a_warning() {
    let p = SmallProject::new(&[
        ("a.c", "int f(void);\nint main(void){return f();}\n"),
        ("b.c", "int f(void){return 0;}\n"),
    ]);
    p.compile_all(&["-O2"]);
    std::fs::write(p.path(".a.o.cmd"), "this is not a kbuild command file\n").unwrap();
    std::fs::write(
        p.path(".b.o.cmd"),
        "savedcmd_b.o := clang-22 -Wp,-MMD,./.b.o.d -DKBUILD_MODNAME='\"b\"' -O1 -flto=thin -c -o b.o b.c\n",
    )
    .unwrap();
    let out = p.ld_clang(&["-o", "prog", "a.o", "b.o"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: a.o: cannot use") && err.contains(".a.o.cmd"),
        "{err}"
    );
    assert!(
        err.contains("compiled with options derived from the link"),
        "{err}"
    );
    assert!(Command::new(p.path("prog")).status().unwrap().success());
}

#[test]
fn non_bitcode_module_in_dtlto_job_file_is_reported() {
    let p = SmallProject::new(&[]);
    std::fs::write(p.path("fake.o"), "not bitcode").unwrap();
    std::fs::write(p.path("fake.o.thinlto.bc"), "").unwrap();
    let job = serde_json::json!({"common": {"linker_output": "prog", "args": ["clang-22", "-c", "-O2"]},
        "jobs": [{"args": ["fake.o", "-fthinlto-index=fake.o.thinlto.bc", "-o", "fake.native.o"],
                  "inputs": ["fake.o", "fake.o.thinlto.bc"], "outputs": ["fake.native.o"]}]});
    std::fs::write(p.path("jobs.json"), job.to_string()).unwrap();
    let out = p
        .cmd(thindist())
        .args(["distribute", "jobs.json"])
        .current_dir(p.dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("back-end compile of fake.o failed"), "{err}");
    assert!(!p.path("fake.native.o").exists());

    std::fs::write(p.path("bad.json"), "{\"common\": {}}").unwrap();
    let out = p
        .cmd(thindist())
        .args(["distribute", "bad.json"])
        .current_dir(p.dir())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.json"), "{err}");
}

#[test]
fn truncated_archive_is_reported_with_its_name() {
    let p = SmallProject::new(&[("a.c", "int main(void){return 0;}\n")]);
    p.compile_all(&["-O2"]);
    std::fs::write(
        p.path("libbroken.a"),
        b"!<arch>\nfoo.o/          0           0     0     644     99999     `\nxx",
    )
    .unwrap();
    let out = p.ld(&["-o", "prog", "a.o", "libbroken.a"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("libbroken.a"), "{err}");
}

#[test]
fn thin_link_failure_shows_the_linker_error_and_command() {
    let p = SmallProject::new(&[("a.c", "int main(void){return 0;}\n")]);
    p.compile_all(&["-O2"]);
    let out = p.ld(&["-o", "prog", "a.o", "does-not-exist.o"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the thin link failed") && err.contains("does-not-exist.o"),
        "{err}"
    );
    assert!(err.contains("to reproduce: cd "), "{err}");
    assert!(!p.path("prog").exists());
}

#[test]
fn final_link_failure_shows_the_linker_error_and_command() {
    let p = SmallProject::with_undefined_symbol();
    let out = p.ld(&["-e", "main", "-o", "prog", "a.o"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("undefined symbol: missing") && err.contains("the final link failed"),
        "{err}"
    );
    assert!(
        err.contains("to reproduce: cd ") && err.contains("finallink.rsp"),
        "{err}"
    );
    assert!(!p.path("prog").exists());
    p.assert_no_temp_files();
}

#[test]
fn interrupt_stops_children_and_leaves_no_output() {
    // Enough modules that the run is still in its back ends when the signal arrives.
    let sources: Vec<(String, String)> = (0..40)
        .map(|i| {
            let body = (0..300)
                .map(|k| format!("x = x * {k} + (x >> 3) ^ {i};"))
                .collect::<String>();
            (
                format!("m{i}.c"),
                format!(
                    "int f{i}(int x) {{ for (int j = 0; j < x; j++) {{ {body} }} return x; }}\n"
                ),
            )
        })
        .chain(std::iter::once((
            "main.c".to_string(),
            format!(
                "{}\nint main(int c, char **v) {{ return {}; }}\n",
                (0..40)
                    .map(|i| format!("int f{i}(int);"))
                    .collect::<String>(),
                (0..40)
                    .map(|i| format!("f{i}(c)"))
                    .collect::<Vec<_>>()
                    .join("+")
            ),
        )))
        .collect();
    let refs: Vec<(&str, &str)> = sources
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let p = SmallProject::new(&refs);
    p.compile_all(&["-O2"]);
    let mut objects: Vec<String> = (0..40).map(|i| format!("m{i}.o")).collect();
    objects.push("main.o".into());
    let mut args = vec![
        "ld".to_string(),
        "-j2".into(),
        "--".into(),
        "ld.lld-22".into(),
        "-o".into(),
        "prog".into(),
    ];
    args.extend(objects);
    let mut child = p
        .cmd(thindist())
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the back ends to start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let backends = format!("thinlto-index={}", p.env.tmp_dir().display());
    let running = || {
        let out = Command::new("pgrep")
            .args(["-f", &backends])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    while running().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the thin link never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert_eq!(status.code(), Some(130));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!p.path("prog").exists());
    p.assert_no_temp_files();
    let left: Vec<_> = std::fs::read_dir(p.env.tmp_dir()).unwrap().collect();
    assert!(
        left.is_empty(),
        "the work directory was left in TMPDIR: {left:?}"
    );
    let clangs = running();
    assert!(
        clangs.is_empty(),
        "back-end compiles still running: {clangs}"
    );
}

#[test]
fn truncated_or_missing_shard_is_reported() {
    let p = SmallProject::new(&[
        ("a.c", "int f(void);\nint main(void){return f();}\n"),
        ("b.c", "int f(void){return 0;}\n"),
    ]);
    p.compile_all(&["-O2"]);
    std::fs::create_dir_all(p.path("idx")).unwrap();
    let thin = Command::new("ld.lld-22")
        .args([
            "-e",
            "main",
            "-o",
            "prog",
            "a.o",
            "b.o",
            "--thinlto-index-only=idx/list",
            "--thinlto-emit-imports-files",
        ])
        .args(["--thinlto-prefix-replace=;idx/"])
        .current_dir(p.dir())
        .status()
        .unwrap();
    assert!(thin.success());
    let shard = p.path("idx/a.o.thinlto.bc");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() / 2]).unwrap();
    let job = |module: &str, shard: &str| {
        serde_json::json!({"args": [module, format!("-fthinlto-index={shard}"), "-o", format!("{module}.native.o")],
                           "inputs": [module, shard], "outputs": [format!("{module}.native.o")]})
    };
    let file = serde_json::json!({"common": {"linker_output": "prog", "args": ["clang-22", "-c", "-O2"]},
        "jobs": [job("a.o", "idx/a.o.thinlto.bc"), job("b.o", "idx/missing.thinlto.bc")]});
    std::fs::write(p.path("jobs.json"), file.to_string()).unwrap();
    let out = p
        .cmd(thindist())
        .args(["distribute", "--keep-going", "jobs.json"])
        .current_dir(p.dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("back-end compile of a.o failed") && err.contains("idx/a.o.thinlto.bc"),
        "{err}"
    );
    assert!(
        err.contains("back-end compile of b.o failed") && err.contains("missing.thinlto.bc"),
        "{err}"
    );
    assert!(!p.path("a.o.native.o").exists() && !p.path("b.o.native.o").exists());
}

/// A back end that succeeds with a warning shows it, as the compiler run by hand (or by make in
/// the kernel's own distributed flow) does, and as lld shows its in-process back ends'.
#[test]
fn a_back_end_warning_is_shown() {
    let p = SmallProject::new(&[
        (
            "a.c",
            "int f(int);\nint main(int c, char **v){(void)v; return f(c);}\n",
        ),
        (
            "b.c",
            "int f(int x){ volatile int a[64]; a[x & 63] = x; return a[(x + 1) & 63]; }\n",
        ),
    ]);
    // The front end marks the function with the limit; the back end measures and warns.
    let b = [
        "clang-22",
        "-O2",
        "-Wframe-larger-than=64",
        "-c",
        "b.c",
        "-o",
        "b.o",
    ];
    p.compile_all(&b[1..3]);
    p.write_record("b.o", &b);
    let out = p.ld_clang(&["-o", "prog", "a.o", "b.o"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: <unknown>:0:0: stack frame size (")
            && err.contains("exceeds limit (64) in function 'f'"),
        "{err}"
    );
}
