//! Input that thindist does not control (build logs, saved commands, config files, cache
//! directories, the environment) never makes it build a wrong program, crash, hang or use
//! what another user planted. Tests that need a second user run only as root (which can give
//! a file to any uid) and say so when skipped.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use util::{thindist, SmallProject};

const TWO_FILES: &[(&str, &str)] = &[
    ("a.c", "int f(void);\nint main(void){return f();}\n"),
    ("b.c", "int f(void){return 0;}\n"),
];

/// Runs `cmd` in its own process group; kills the group and fails after `secs`, so that a
/// hang (or a process starting itself without end) fails the test instead of stalling it.
fn output_within(cmd: &mut Command, secs: u64) -> Output {
    use std::os::unix::process::CommandExt;
    let child = cmd
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on the process group this test started.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            panic!("{cmd:?} did not finish within {secs}s");
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Item 2: a malformed build log (a digest cut short) once panicked a job thread, and the run
/// waited for that job forever.
#[test]
fn malformed_build_log_neither_panics_nor_hangs() {
    let p = SmallProject::new(TWO_FILES);
    p.compile_all(&["-O2"]);
    let link = || {
        output_within(
            p.cmd(thindist()).args([
                "ld",
                "--",
                "ld.lld-22",
                "-e",
                "main",
                "-o",
                "prog",
                "a.o",
                "b.o",
            ]),
            120,
        )
    };
    let out = link();
    assert!(out.status.success(), "{}", stderr(&out));
    let logs: Vec<_> = std::fs::read_dir(p.env.cache_dir().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(logs.len(), 1, "one build log in the cache: {logs:?}");
    let log_path = &logs[0];
    let mut log: serde_json::Value =
        serde_json::from_slice(&std::fs::read(log_path).unwrap()).unwrap();
    for entry in log["entries"].as_object_mut().unwrap().values_mut() {
        entry["key"]["hex"] = "0".repeat(64).into();
        for input in entry["key"]["inputs"].as_array_mut().unwrap() {
            input[1] = "abc".into();
        }
    }
    std::fs::write(log_path, log.to_string()).unwrap();
    let out = link();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

/// Item 3: `THINDIST_LINKER` naming thindist itself ran thindist-ld inside itself without end.
#[test]
fn thindist_as_its_own_linker_is_refused() {
    let p = SmallProject::new(TWO_FILES);
    p.compile_all(&["-O2"]);
    let link = p.path("thindist-ld");
    std::os::unix::fs::symlink(thindist(), &link).unwrap();
    std::os::unix::fs::symlink(thindist(), p.path("lld")).unwrap();
    let path = format!("{}:{}", p.dir().display(), std::env::var("PATH").unwrap());
    for linker in [link.to_str().unwrap(), thindist(), "thindist-ld", "./lld"] {
        let out = output_within(
            p.cmd(&link)
                .env("THINDIST_LINKER", linker)
                .env("PATH", &path)
                .args(["-e", "main", "-o", "prog", "a.o", "b.o"]),
            60,
        );
        let err = stderr(&out);
        assert!(!out.status.success(), "{linker}: {err}");
        assert!(
            err.contains(&format!("THINDIST_LINKER={linker} is thindist itself")),
            "{err}"
        );
    }
}

/// Items 9 and 14: a cache that cannot be used costs a warning, never the build; a size that
/// does not fit is refused instead of wrapping to 0 (which emptied the cache).
#[test]
fn unusable_cache_does_not_fail_the_build_and_huge_sizes_are_refused() {
    let p = SmallProject::new(TWO_FILES);
    p.compile_all(&["-O2"]);
    std::fs::write(p.path("file"), b"").unwrap();
    let out = p.ld_with(
        &["--cache-dir", "file/cache"],
        &["-e", "main", "-o", "prog", "a.o", "b.o"],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.matches("warning: building without the cache").count(),
        1,
        "{err}"
    );
    let out = p.ld_with(
        &["--cache-size", "16777216T"],
        &["-e", "main", "-o", "prog", "a.o", "b.o"],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("too large"),
        "{}",
        stderr(&out)
    );
}

/// Unmounts a file system when dropped, even when the test fails.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Item 9 on a really full disk: the cache on a 16 KiB tmpfs cannot take a 40 KB object. The
/// build warns once, goes on, and leaves no partial temporary file in the cache.
#[test]
fn full_cache_file_system_warns_once_and_leaves_no_temp_files() {
    let p = SmallProject::new(&[
        (
            "a.c",
            "const char big[40000] = {1};\nint g(int i){return big[i];}\n",
        ),
        (
            "b.c",
            "int g(int);\nint main(int c, char **v){(void)v; return g(c) - 1;}\n",
        ),
    ]);
    let fs = p.path("fs");
    std::fs::create_dir(&fs).unwrap();
    let mounted = is_root()
        && Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
            .arg(&fs)
            .status()
            .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: mounting a small tmpfs needs root (and a system that allows it)");
        return;
    }
    let _mount = Mount(fs.clone());
    p.compile_all(&["-O2"]);
    let cache = fs.join("cache");
    let out = p.ld_with(
        &["--cache-dir", cache.to_str().unwrap()],
        &["-e", "main", "-o", "prog", "a.o", "b.o"],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.matches("the cache is off for the rest of this run")
            .count(),
        1,
        "{err}"
    );
    assert_eq!(std::fs::read_dir(cache.join("tmp")).unwrap().count(), 0);
}

/// Item 7: with neither XDG_CACHE_HOME nor HOME there is no cache, not one in the shared
/// temp directory.
#[test]
fn no_home_means_no_cache_rather_than_a_shared_one() {
    let p = SmallProject::new(TWO_FILES);
    p.compile_all(&["-O2"]);
    let out = p
        .cmd(thindist())
        .env_remove("THINDIST_CACHE_DIR")
        .env_remove("HOME")
        .env_remove("XDG_CACHE_HOME")
        .args([
            "ld",
            "--",
            "ld.lld-22",
            "-e",
            "main",
            "-o",
            "prog",
            "a.o",
            "b.o",
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("note: no cache"), "{err}");
    assert!(!p.env.tmp_dir().join("thindist").exists());
}

/// Item 7: a cache directory others can write, or that belongs to another user, is not used
/// (the build goes on without it) unless it is declared shared.
#[test]
fn cache_others_can_change_is_not_used_unless_shared() {
    let p = SmallProject::new(TWO_FILES);
    p.compile_all(&["-O2"]);
    let cache = p.path("cache");
    std::fs::create_dir(&cache).unwrap();
    chmod(&cache, 0o777);
    let cache_arg = cache.to_str().unwrap();
    let link = |options: &[&str]| {
        p.ld_with(
            &[&["--cache-dir", cache_arg], options].concat(),
            &["-e", "main", "-o", "prog", "a.o", "b.o"],
        )
    };
    let out = link(&[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("writable by others"), "{err}");
    assert!(!cache.join("entries").exists(), "nothing was written to it");
    let stats = p
        .cmd(thindist())
        .args(["cache", "--cache-dir", cache_arg, "stats"])
        .output()
        .unwrap();
    assert!(
        !stats.status.success() && stderr(&stats).contains("writable by others"),
        "{}",
        stderr(&stats)
    );
    let out = link(&["--cache-shared"]);
    assert!(
        out.status.success() && !stderr(&out).contains("without the cache"),
        "{}",
        stderr(&out)
    );
    assert!(cache.join("entries").exists());
    if !is_root() {
        eprintln!("skipped the second-user part: only root can give a directory to another uid");
        return;
    }
    chmod(&cache, 0o755);
    std::os::unix::fs::chown(&cache, Some(54321), Some(54321)).unwrap();
    let out = link(&[]);
    let err = stderr(&out);
    assert!(
        out.status.success() && err.contains("belongs to uid 54321"),
        "{err}"
    );
}

/// Item 8: a `thindist.toml` that another user could have planted above the build is not
/// read; a misspelt key is an error naming file and key; `-v` names the file read.
#[test]
fn config_files_others_control_are_ignored_and_unknown_keys_are_errors() {
    let p = SmallProject::new(TWO_FILES);
    p.compile_all(&["-O2"]);
    // If read, this would send the bitcode to a server and fail, as nothing listens there.
    let config = p.path("thindist.toml");
    std::fs::write(
        &config,
        "remote = \"grpc://127.0.0.1:9\"\nremote-only = true\n",
    )
    .unwrap();
    let link = || {
        p.cmd(thindist())
            .args([
                "ld",
                "-v",
                "--",
                "ld.lld-22",
                "-e",
                "main",
                "-o",
                "prog",
                "a.o",
                "b.o",
            ])
            .output()
            .unwrap()
    };
    chmod(&config, 0o666);
    let out = link();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("ignoring config file") && err.contains("others can write it"),
        "{err}"
    );
    assert!(err.contains("no config file"), "{err}");
    if is_root() {
        chmod(&config, 0o644);
        std::os::unix::fs::chown(&config, Some(54321), Some(54321)).unwrap();
        let out = link();
        let err = stderr(&out);
        assert!(
            out.status.success() && err.contains("belongs to uid 54321"),
            "{err}"
        );
        std::fs::remove_file(&config).unwrap();
    } else {
        eprintln!("skipped the second-user part: only root can give a file to another uid");
    }
    std::fs::write(&config, "jobs = 1\nremote-instanse = \"x\"\n").unwrap();
    chmod(&config, 0o644);
    let out = link();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&config.display().to_string()) && err.contains("remote-instanse"),
        "{err}"
    );
    std::fs::write(&config, "jobs = 1\n").unwrap();
    let out = link();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("config file {}", config.display())),
        "{err}"
    );
}

/// Item 11: a record with an empty argv falls back with a warning naming module and record.
#[test]
fn empty_record_falls_back_with_a_warning() {
    let p = SmallProject::new(TWO_FILES);
    p.compile_all(&["-O2"]);
    p.write_record("a.o", &[]);
    let out = p.ld(&["-e", "main", "-o", "prog", "a.o", "b.o"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: a.o:")
            && err.contains(".a.o.thindist.json")
            && err.contains("empty"),
        "{err}"
    );
}

/// Item 12: a kbuild `.cmd` file whose command is for another object is not used.
#[test]
fn kbuild_cmd_file_of_another_object_falls_back_with_a_warning() {
    let p = SmallProject::new(TWO_FILES);
    p.compile_all(&["-O2"]);
    std::fs::write(
        p.path(".a.o.cmd"),
        "savedcmd_b.o := clang-22 -O1 -flto=thin -c -o b.o b.c\n",
    )
    .unwrap();
    let out = p.ld(&["-e", "main", "-o", "prog", "a.o", "b.o"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: a.o: cannot use") && err.contains("is for b.o, not a.o"),
        "{err}"
    );
}

/// Item 10: options with a separate value (`-B DIR`, `-isystem DIR`, `-MF FILE`) keep or
/// lose it together with the option; `-B` once lost its value and swallowed `-x`.
#[test]
fn options_with_separate_values_keep_them() {
    let p = SmallProject::new(TWO_FILES);
    p.compile_all(&["-O2"]);
    p.write_record(
        "a.o",
        &[
            "clang-22",
            "-O2",
            "-B",
            "/usr/bin",
            "-isystem",
            "/usr/include",
            "-MF",
            "a.d",
            "-Xclang",
            "-fno-pch-timestamp",
            "-c",
            "a.c",
            "-o",
            "a.o",
        ],
    );
    let out = p.ld(&["-e", "main", "-o", "prog", "a.o", "b.o"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let text = explain(&p, "a.o");
    assert!(
        text.contains("-O2 -B /usr/bin -Xclang -fno-pch-timestamp -x ir"),
        "{text}"
    );
}

/// What `thindist explain OBJECT` says about the last link in the project.
fn explain(p: &SmallProject, object: &str) -> String {
    let out = p
        .cmd(thindist())
        .args(["explain", object])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Item 13: a relative profile path of a compile run in `sub/` is found from the build
/// directory, and the profile is an input of the job's key.
#[test]
fn paths_of_a_compile_in_another_directory_are_rebased() {
    let p = SmallProject::new(&[]);
    std::fs::create_dir(p.path("sub")).unwrap();
    std::fs::write(
        p.path("sub/a.c"),
        "int f(int x){return x+1;}\nint main(void){return f(-1);}\n",
    )
    .unwrap();
    std::fs::write(p.path("sub/prof.txt"), "f:100:10\n 1: 10\n").unwrap();
    let compile = p
        .cmd(thindist())
        .current_dir(p.path("sub"))
        .args([
            "cc",
            "--",
            "clang-22",
            "-O2",
            "-fprofile-sample-use=prof.txt",
            "-flto=thin",
            "-c",
            "a.c",
            "-o",
            "a.o",
        ])
        .output()
        .unwrap();
    assert!(compile.status.success(), "{}", stderr(&compile));
    let out = p.ld(&["-e", "main", "-o", "prog", "sub/a.o"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let text = explain(&p, "sub/a.o");
    assert!(
        text.contains("-fprofile-sample-use=sub/prof.txt") && text.contains("  sub/prof.txt"),
        "{text}"
    );
}

// Parsers of outside input never panic, whatever they are given (bounded: proptest's default
// 256 cases each). The other parsers have theirs beside their code.
proptest::proptest! {
    #[test]
    fn link_arguments_never_panic(tokens in proptest::collection::vec(".{0,12}", 0..16)) {
        if let Ok(mut args) = thindist::linkargs::LinkArgs::parse(&tokens) {
            args.resolve_libraries(Path::new("/nonexistent"));
            let _ = args.inputs().count();
            let _ = args.lto_options().count();
        }
    }

    #[test]
    fn import_lists_never_panic(text in ".{0,200}") {
        let _ = thindist::thinlink::parse_imports(&text);
    }
}
