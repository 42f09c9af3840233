//! Many small modules: thindist's own peak memory (the thindist process alone, not its
//! compilers or linkers) on a generated project of 5,000 modules, beside the link's wall time
//! against in-process ThinLTO. Each module calls into the next, so every back end imports.

use crate::{measure, ratio, row, thindist, JOBS};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const MODULES: usize = 5000;

/// Writes and compiles (two at a time) `modules` small C files into `dir`; returns the
/// objects' names.
fn generate(dir: &Path, modules: usize) -> Vec<String> {
    let objects: Vec<String> = (0..modules).map(|i| format!("m{i:04}.o")).collect();
    for i in 0..modules {
        let next = (i + 1) % modules;
        std::fs::write(
            dir.join(format!("m{i:04}.c")),
            format!(
                "int step_{next}(int);\nint step_{i}(int x) {{ return x > 0 ? step_{next}(x - 1) * 3 + {i} : {i}; }}\n"
            ),
        )
        .unwrap();
    }
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let rx = std::sync::Mutex::new(rx);
    (0..modules).for_each(|i| tx.send(i).unwrap());
    drop(tx);
    std::thread::scope(|s| {
        for _ in 0..JOBS {
            s.spawn(|| {
                while let Ok(i) = rx.lock().unwrap().recv() {
                    let ok = Command::new("clang-22")
                        .args(["-O2", "-flto=thin", "-fPIC", "-c"])
                        .arg(format!("m{i:04}.c"))
                        .current_dir(dir)
                        .status()
                        .unwrap();
                    assert!(ok.success());
                }
            });
        }
    });
    objects
}

/// The largest resident set thindist itself has had, in MiB: its VmHWM, read until it exits.
fn peak_of_thindist(cmd: &mut Command) -> (crate::Measurement, f64) {
    let pid_file = tempfile::NamedTempFile::new().unwrap();
    // A shell that records its pid and then becomes thindist, so the pid is thindist's.
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg(r#"echo $$ > "$0"; exec "$@""#)
        .arg(pid_file.path())
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .current_dir(cmd.get_current_dir().unwrap());
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut peak_kib = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let pid = std::fs::read_to_string(pid_file.path()).unwrap_or_default();
                let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()));
                if let Some(kib) = status.ok().and_then(|s| {
                    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
                    line.split_whitespace().nth(1)?.parse::<u64>().ok()
                }) {
                    peak_kib = peak_kib.max(kib);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            peak_kib as f64 / 1024.0
        });
        let m = measure(&mut shell);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (m, watcher.join().unwrap())
    })
}

pub fn scale() {
    println!(
        "== {MODULES} small modules: thindist ld -j{JOBS} --no-cache against in-process ThinLTO --thinlto-jobs={JOBS}"
    );
    let dir = tempfile::tempdir().unwrap();
    let objects = generate(dir.path(), MODULES);
    let link = |program: &str, output: &str| {
        let mut c = Command::new(program);
        c.args(["-fuse-ld=lld", "-flto=thin", "-O2", "-shared", "-o", output])
            .args(&objects)
            .current_dir(dir.path())
            .stdout(Stdio::null());
        c
    };
    let mut in_process = link("clang-22", "libinproc.so");
    in_process.arg(format!("-Wl,--thinlto-jobs={JOBS}"));
    let a = measure(&mut in_process);
    let mut td = Command::new(thindist());
    td.args(["ld", &format!("-j{JOBS}"), "--no-cache", "--"])
        .arg("clang-22")
        .args(link("clang-22", "libthindist.so").get_args())
        .current_dir(dir.path());
    let (b, peak) = peak_of_thindist(&mut td);
    row("in-process ThinLTO", &a);
    row("thindist (whole tree: thindist + compilers)", &b);
    ratio("thindist / in-process", &b, &a);
    println!("  thindist's own peak resident set: {peak:.1} MiB");
}
