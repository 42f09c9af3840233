//! A real Linux kernel (Debian's linux-source-6.12, tinyconfig + ThinLTO + modules) built with
//! thindist as the linker, with Linux 7.x's AutoFDO and Propeller link options on every link,
//! booted under qemu, and put through bad input and an interrupted build. Takes several
//! minutes; set THINDIST_SKIP_KERNEL=1 to skip it on purpose.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn build_and_boot(tree: &Path, extra_env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(repo().join("kernel/build-and-boot.sh"));
    cmd.args([
        "--mode",
        "thindist",
        "--thindist",
        env!("CARGO_BIN_EXE_thindist"),
        "--autofdo-propeller",
        "--tree",
    ])
    .arg(tree);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn assert_ok(out: &std::process::Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        &text[text.len().saturating_sub(6000)..]
    );
    text
}

/// The vmlinux.o link as kbuild ran it (its `.vmlinux.o.cmd`), without the objtool step.
fn vmlinux_link_command(tree: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(tree.join(".vmlinux.o.cmd")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("savedcmd_vmlinux.o"))
        .unwrap();
    let command = line.split_once(":=").unwrap().1;
    let link = command.split(" ; ").next().unwrap();
    shell_words::split(link).unwrap()
}

#[test]
fn kernel_builds_with_thindist_boots_and_survives_bad_input_and_interrupts() {
    if std::env::var_os("THINDIST_SKIP_KERNEL").is_some() {
        eprintln!("kernel test skipped: THINDIST_SKIP_KERNEL is set");
        return;
    }
    assert!(
        Path::new("/usr/src/linux-source-6.12.tar.xz").exists(),
        "/usr/src/linux-source-6.12.tar.xz is missing: apt-get install linux-source-6.12 (or set THINDIST_SKIP_KERNEL=1)"
    );
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("linux");
    let cache = work.path().join("cache");
    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let cache_env = [
        ("THINDIST_CACHE_DIR", cache.to_str().unwrap()),
        ("TMPDIR", tmp.to_str().unwrap()),
    ];

    // 1. A clean build with thindist and the AutoFDO and Propeller link options, booted.
    let text = assert_ok(
        &build_and_boot(&tree, &cache_env),
        "the thindist kernel build and boot",
    );
    assert!(text.contains("THINDIST-MODULE-OK: crc7 loaded"), "{text}");
    assert!(
        text.contains("vmlinux.o was linked with the AutoFDO and Propeller link options"),
        "{text}"
    );
    assert!(
        tree.join("init/main.thinlto-native.o").exists(),
        "native objects are kept beside the bitcode"
    );
    assert!(
        tree.join("lib/crc7.thinlto-native.o").exists(),
        "the crc7.ko link went through thindist"
    );
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "the build left files in TMPDIR: {left:?}");

    // 2. One object's .cmd file unusable: it falls back to link-derived options, with a warning
    //    naming it, and the link still succeeds. (Run the link by hand: make would rebuild the
    //    object when its .cmd changes.)
    let cmd_file = tree.join("lib/.string.o.cmd");
    let saved = std::fs::read(&cmd_file).unwrap();
    std::fs::write(&cmd_file, "garbage that is not a kbuild command file\n").unwrap();
    let link = vmlinux_link_command(&tree);
    let out = Command::new(env!("CARGO_BIN_EXE_thindist"))
        .args(["ld", "--no-cache", "--"])
        .arg("ld.lld-22")
        .args(&link[1..])
        .current_dir(&tree)
        .output()
        .unwrap();
    let text = assert_ok(&out, "the vmlinux.o link with one broken .cmd file");
    assert!(
        text.contains("warning: lib/string.o: cannot use") && text.contains("lib/.string.o.cmd"),
        "{text}"
    );
    assert!(text.contains("derived from the link"), "{text}");
    std::fs::write(&cmd_file, saved).unwrap();

    // 3. Interrupt a build in the middle of the vmlinux.o back ends, then rebuild: the rebuild
    //    is correct and boots, and nothing half-written was left or reused.
    std::fs::remove_file(tree.join("vmlinux.o")).unwrap();
    // The back ends are running once the thin link has written its module list.
    let thin_link_done = || {
        std::fs::read_dir(&tmp)
            .unwrap()
            .any(|d| d.unwrap().path().join("modules.list").exists())
    };
    let mut build = Command::new(repo().join("kernel/build-and-boot.sh"))
        .args([
            "--mode",
            "thindist",
            "--skip-boot",
            "--thindist",
            env!("CARGO_BIN_EXE_thindist"),
            "--autofdo-propeller",
            "--tree",
        ])
        .arg(&tree)
        .env("THINDIST_NO_CACHE", "1")
        .env("TMPDIR", &tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    while !thin_link_done() {
        assert!(
            Instant::now() < deadline,
            "the thin link of vmlinux.o never ran"
        );
        if let Some(status) = build.try_wait().unwrap() {
            panic!("the build ended ({status}) before the vmlinux.o link ran");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    // Ctrl-C reaches the whole process group, as from a terminal.
    unsafe { libc::kill(-(build.id() as i32), libc::SIGINT) };
    assert!(!build.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !tree.join("vmlinux.o").exists(),
        "an interrupted link leaves no vmlinux.o"
    );
    let leftovers = Command::new("find")
        .arg(&tree)
        .args(["-name", "*thindist-tmp*"])
        .output()
        .unwrap();
    assert!(
        leftovers.stdout.is_empty(),
        "temporary files left: {}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(
        left.is_empty(),
        "the interrupted link left its work directory: {left:?}"
    );
    let text = assert_ok(
        &build_and_boot(&tree, &cache_env),
        "the rebuild after an interrupt",
    );
    assert!(text.contains("THINDIST-MODULE-OK: crc7 loaded"), "{text}");

    // 4. kernel/fork.c given one more function, then another: the first relink compiles the
    //    modules importing from kernel/fork.o noting what they import; the second takes those
    //    that import what they did from the cache by that, and its vmlinux.o is the one a link
    //    without the cache writes.
    let fork_c = tree.join("kernel/fork.c");
    let pristine = std::fs::read_to_string(&fork_c).unwrap();
    let fork_cmd = std::fs::read_to_string(tree.join("kernel/.fork.o.cmd")).unwrap();
    let compile_fork_o = (fork_cmd.lines())
        .find_map(|l| l.strip_prefix("savedcmd_kernel/fork.o := "))
        .unwrap()
        .to_string();
    let misses_after_edit = |n: u32, options: &[&str], output: &str| {
        let edit = format!(
            "\nint thindist_test_edit(void);\nint thindist_test_edit(void) {{ return {n}; }}\n"
        );
        std::fs::write(&fork_c, format!("{pristine}{edit}")).unwrap();
        let compiled = Command::new("sh")
            .args(["-c", &compile_fork_o])
            .current_dir(&tree)
            .status()
            .unwrap();
        assert!(compiled.success(), "{compile_fork_o}");
        let out = Command::new(env!("CARGO_BIN_EXE_thindist"))
            .arg("ld")
            .args(options)
            .args(["--cache-dir", cache.to_str().unwrap(), "--"])
            .arg("ld.lld-22")
            .args(&link[1..])
            .args(["-o", output])
            .current_dir(&tree)
            .env("TMPDIR", &tmp)
            .output()
            .unwrap();
        let text = assert_ok(&out, "the vmlinux.o relink after kernel/fork.c changed");
        let line = (text.lines())
            .find(|l| l.contains(" misses"))
            .unwrap_or_default();
        let misses = (line.rsplit(", ").next())
            .and_then(|tail| tail.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok());
        misses.unwrap_or_else(|| panic!("no cache line in: {text}"))
    };
    let noted = misses_after_edit(1, &[], "vmlinux.o");
    let probed = misses_after_edit(2, &[], "vmlinux.o");
    assert!(
        noted >= 3 && probed < noted,
        "{noted} misses, then {probed}: the second relink took none by what it imports"
    );
    misses_after_edit(2, &["--no-cache"], "vmlinux.nocache.o");
    assert_eq!(
        std::fs::read(tree.join("vmlinux.o")).unwrap(),
        std::fs::read(tree.join("vmlinux.nocache.o")).unwrap(),
        "the relink by what modules import writes what a link without the cache writes"
    );
    std::fs::write(&fork_c, pristine).unwrap();
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(
        left.is_empty(),
        "the relinks left files in TMPDIR: {left:?}"
    );
}
