//! Small real C projects built with clang-22 for the error and behaviour tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn thindist() -> &'static str {
    env!("CARGO_BIN_EXE_thindist")
}

pub fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A private home for the commands of one test: its own cache directory, TMPDIR, HOME and
/// XDG_CACHE_HOME, so that no test reads or writes the user's cache or config, and no
/// `THINDIST_*` or make variable of the caller's reaches thindist.
pub struct TestEnv {
    home: tempfile::TempDir,
}

impl TestEnv {
    pub fn new() -> Self {
        let home = tempfile::tempdir().unwrap();
        for sub in ["cache", "tmp", "xdg"] {
            std::fs::create_dir(home.path().join(sub)).unwrap();
        }
        TestEnv { home }
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.home.path().join("cache")
    }

    /// The TMPDIR of every command: a test can check that thindist left nothing there.
    pub fn tmp_dir(&self) -> PathBuf {
        self.home.path().join("tmp")
    }

    /// A `thindist-ld` symlink to thindist, for `clang --ld-path=` (the real linker comes from
    /// `THINDIST_LINKER`, which [`Self::apply`] sets).
    pub fn thindist_ld(&self) -> PathBuf {
        let link = self.home.path().join("thindist-ld");
        if !link.exists() {
            std::os::unix::fs::symlink(thindist(), &link).unwrap();
        }
        link
    }

    /// Every file and directory under TMPDIR.
    pub fn tmp_contents(&self) -> Vec<PathBuf> {
        tree_paths(&self.tmp_dir())
    }

    /// Points `cmd` at this environment.
    pub fn apply<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        for (name, _) in std::env::vars_os() {
            let n = name.to_string_lossy();
            if n.starts_with("THINDIST_") || n == "MAKEFLAGS" || n == "MFLAGS" {
                cmd.env_remove(&name);
            }
        }
        cmd.env("THINDIST_CACHE_DIR", self.cache_dir())
            .env("TMPDIR", self.tmp_dir())
            .env("HOME", self.home.path())
            .env("XDG_CACHE_HOME", self.home.path().join("xdg"))
            .env("THINDIST_LINKER", "ld.lld-22")
    }

    /// `program` under this environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        self.apply(&mut cmd);
        cmd
    }
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// Every path below `root`, relative to it, sorted.
pub fn tree_paths(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path.clone());
            }
            out.push(path.strip_prefix(root).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

/// A handful of C files in a temporary directory.
pub struct SmallProject {
    dir: tempfile::TempDir,
    sources: Vec<String>,
    pub env: TestEnv,
}

impl SmallProject {
    pub fn new(files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        SmallProject {
            dir,
            sources: files.iter().map(|(n, _)| n.to_string()).collect(),
            env: TestEnv::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `program` run in the project directory under the project's [`TestEnv`].
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = self.env.command(program);
        cmd.current_dir(self.dir());
        cmd
    }

    /// `a.o`, compiled at -O2, whose `main` calls a function nothing defines: its final link
    /// fails.
    pub fn with_undefined_symbol() -> Self {
        let p = SmallProject::new(&[(
            "a.c",
            "int missing(void);\nint main(void){return missing();}\n",
        )]);
        p.compile_all(&["-O2"]);
        p
    }

    /// Compiles every source to ThinLTO bitcode with `clang-22 -flto=thin -c`.
    pub fn compile_all(&self, flags: &[&str]) {
        for src in &self.sources {
            let obj = src.replace(".c", ".o");
            let out = self
                .cmd("clang-22")
                .args(flags)
                .args(["-flto=thin", "-c", src, "-o", &obj])
                .output()
                .expect("clang-22 must be installed");
            assert!(
                out.status.success(),
                "compiling {src}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Writes the record `thindist cc` would write for `object`.
    pub fn write_record(&self, object: &str, argv: &[&str]) {
        let record = serde_json::json!({"argv": argv, "cwd": self.dir()});
        std::fs::write(
            self.path(&format!(".{object}.thindist.json")),
            record.to_string(),
        )
        .unwrap();
    }

    /// `thindist ld -- ld.lld-22 ARGS` in the project directory.
    pub fn ld(&self, link_args: &[&str]) -> Output {
        self.ld_with(&[], link_args)
    }

    /// `thindist ld -- clang-22 -fuse-ld=lld -flto=thin ARGS`: a program that runs.
    pub fn ld_clang(&self, link_args: &[&str]) -> Output {
        self.cmd(thindist())
            .args(["ld", "--", "clang-22", "-fuse-ld=lld", "-flto=thin"])
            .args(link_args)
            .output()
            .unwrap()
    }

    pub fn ld_with(&self, options: &[&str], link_args: &[&str]) -> Output {
        self.cmd(thindist())
            .arg("ld")
            .args(options)
            .args(["--", "ld.lld-22"])
            .args(link_args)
            .output()
            .unwrap()
    }

    /// No temporary file of thindist's is left anywhere in the project.
    pub fn assert_no_temp_files(&self) {
        let mut stack = vec![self.dir().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let name = path.file_name().unwrap().to_string_lossy();
                    assert!(
                        !name.contains("thindist-tmp"),
                        "temporary file left behind: {}",
                        path.display()
                    );
                }
            }
        }
    }
}

/// A project of `n` modules plus `main.c`, each module with a loop worth compiling.
pub fn many_modules(n: usize) -> SmallProject {
    let mut files: Vec<(String, String)> = (0..n)
        .map(|i| (format!("m{i}.c"), format!("int f{i}(int x){{ int s=0; for(int j=0;j<x;j++) s+=j*{i}^(s>>2); return s; }}\n")))
        .collect();
    files.push((
        "main.c".into(),
        format!(
            "{}\nint main(int c, char **v){{ (void)v; return ({}) & 1; }}\n",
            (0..n)
                .map(|i| format!("int f{i}(int);"))
                .collect::<String>(),
            (0..n)
                .map(|i| format!("f{i}(c)"))
                .collect::<Vec<_>>()
                .join("+")
        ),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let p = SmallProject::new(&refs);
    p.compile_all(&["-O2"]);
    p
}

/// The objects of [`many_modules`].
pub fn many_objects(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("m{i}.o"))
        .chain(std::iter::once("main.o".to_string()))
        .collect()
}

/// The most back-end jobs a trace file shows running at once.
pub fn max_parallel_jobs(trace: &Path) -> usize {
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(trace).unwrap()).unwrap();
    let mut running = 0usize;
    let mut most = 0;
    let mut events: Vec<(f64, i32)> = Vec::new();
    for e in trace["traceEvents"].as_array().unwrap() {
        if e["tid"].as_u64() == Some(0) {
            continue;
        }
        match e["ph"].as_str() {
            Some("B") => events.push((e["ts"].as_f64().unwrap(), 1)),
            Some("E") => events.push((e["ts"].as_f64().unwrap(), -1)),
            _ => {}
        }
    }
    // Ends before begins at equal times: a slot handed straight on is not two jobs at once.
    events.sort_by(|a, b| a.partial_cmp(b).unwrap());
    for (_, delta) in events {
        running = (running as i32 + delta) as usize;
        most = most.max(running);
    }
    most
}

/// Links `objects` (`thindist ld -- clang-22 ... -o prog`, no cache, natives kept) through the
/// compiler fork server with cc1 workers, through it with forked drivers only, and as
/// processes, and asserts that all three wrote the same native objects and program, byte for
/// byte; and that cc1 workers ran back ends when `cc1_workers` says they must (a flag set's
/// jobs go to them from its third job on).
pub fn assert_fork_server_matches_processes(p: &SmallProject, objects: &[&str], cc1_workers: bool) {
    let link = |env: &[(&str, &str)]| {
        let out = p
            .cmd(thindist())
            .envs(env.iter().copied())
            .args(["ld", "-v", "-j2", "--no-cache", "--keep-natives", "--"])
            .args(["clang-22", "-fuse-ld=lld", "-flto=thin", "-o", "prog"])
            .args(objects)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        let outputs: Vec<(PathBuf, Vec<u8>)> = tree_paths(p.dir())
            .into_iter()
            .filter(|f| {
                f.to_string_lossy().ends_with(".thinlto-native.o") || f == Path::new("prog")
            })
            .map(|f| {
                let bytes = std::fs::read(p.dir().join(&f)).unwrap();
                (f, bytes)
            })
            .collect();
        for (f, _) in &outputs {
            std::fs::remove_file(p.dir().join(f)).unwrap();
        }
        (outputs, err)
    };
    let (in_workers, err) = link(&[]);
    assert!(err.contains("thindist: fork server for "), "{err}");
    assert_eq!(
        err.contains("thindist: cc1 workers for "),
        cc1_workers,
        "{err}"
    );
    let (forked, err) = link(&[("THINDIST_CC1_WORKERS", "0")]);
    assert!(!err.contains("cc1 workers for"), "{err}");
    let (processes, err) = link(&[("THINDIST_FORK_SERVER", "0")]);
    assert!(err.contains("fork server off"), "{err}");
    assert_eq!(forked.len(), objects.len() + 1, "{forked:?}");
    let names =
        |outputs: &[(PathBuf, Vec<u8>)]| outputs.iter().map(|o| o.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&forked), names(&processes));
    assert_eq!(names(&in_workers), names(&processes));
    for (((name, a), (_, b)), (_, c)) in forked.iter().zip(&processes).zip(&in_workers) {
        assert!(
            a == b,
            "{} differs between forked drivers and processes",
            name.display()
        );
        assert!(
            c == b,
            "{} differs between cc1 workers and processes",
            name.display()
        );
    }
}
