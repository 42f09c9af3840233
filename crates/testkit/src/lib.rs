//! A generated C project for thindist's tests and benchmarks: N modules with cross-module
//! inlining, a regular archive (with duplicate member names, a lazy member never loaded, a
//! member only another member needs, and a native member), a thin archive, some native
//! objects, and a `-r` partial link. `main` prints a checksum over everything, so two builds
//! compare by running them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The generated project and how its objects are grouped into the link.
pub struct Project {
    pub dir: PathBuf,
    pub modules: usize,
}

/// Which module goes where in the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A plain object on the link line.
    Object,
    /// A member of `lib/libreg.a`.
    RegularArchive,
    /// A member of `lib/libthin.a`.
    ThinArchive,
    /// Combined into `part.o` by a `-r` link before the final link.
    Partial,
}

impl Project {
    pub fn placement(&self, i: usize) -> Placement {
        match i % 10 {
            1 | 4 => Placement::RegularArchive,
            2 | 7 => Placement::ThinArchive,
            5 if i < 30 => Placement::Partial,
            _ => Placement::Object,
        }
    }

    /// Modules compiled to native code without LTO, mixed with the bitcode ones.
    pub fn is_native(&self, i: usize) -> bool {
        i % 10 == 9 || i == 14
    }

    pub fn source(&self, i: usize) -> PathBuf {
        PathBuf::from(format!("src/m{i:04}.c"))
    }

    pub fn object(&self, i: usize) -> PathBuf {
        PathBuf::from(format!("src/m{i:04}.o"))
    }

    /// Writes the project into `dir`.
    pub fn generate(dir: &Path, modules: usize) -> Project {
        assert!(modules >= 20, "the project needs at least 20 modules");
        let p = Project {
            dir: dir.to_path_buf(),
            modules,
        };
        for sub in ["src", "lib/a", "lib/b"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for i in 0..modules {
            let next = (i + 1) % modules;
            let far = (i * 7 + 3) % modules;
            // small_N is tiny (imported and inlined across modules); work_N loops.
            let text = format!(
                "int small_{next}(int);\nint small_{far}(int);\n\
                 int small_{i}(int x) {{ return x * {m} + {i}; }}\n\
                 int work_{i}(int n) {{\n  int acc = {i};\n  for (int k = 0; k < n; k++) {{\n    \
                 acc += small_{next}(k) ^ small_{far}(acc & 255);\n    acc = (acc << 1) ^ (acc >> 3);\n  }}\n  return acc;\n}}\n",
                m = i % 13 + 2
            );
            std::fs::write(dir.join(p.source(i)), text).unwrap();
        }
        // Regular archive extras: two members both named util.o, a member only another member
        // needs, and a member nothing needs (it stays lazy).
        std::fs::write(
            dir.join("lib/a/util.c"),
            "int chain_tail(int);\nint util_a(int x) { return chain_tail(x) + 1; }\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("lib/b/util.c"),
            "int util_b(int x) { return x * 5 - 2; }\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("lib/chain.c"),
            "int chain_tail(int x) { return x ^ 0x55; }\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("lib/unused.c"),
            "int never_called(int x) { return x; }\n",
        )
        .unwrap();
        let decls: String = (0..modules)
            .map(|i| format!("int work_{i}(int);\n"))
            .collect();
        let calls: String = (0..modules)
            .map(|i| format!("  sum = sum * 31u + (unsigned)work_{i}(n + {});\n", i % 7))
            .collect();
        let main = format!(
            "#include <stdio.h>\n{decls}int util_a(int); int util_b(int);\n\
             int main(int argc, char **argv) {{\n  (void)argv;\n  int n = 20 + argc;\n  unsigned sum = 0;\n{calls}  \
             printf(\"modules %d\\n\", {modules});\n  printf(\"utils %d %d\\n\", util_a(n), util_b(n));\n  \
             printf(\"checksum %08x\\n\", sum);\n  return 0;\n}}\n"
        );
        std::fs::write(dir.join("src/main.c"), main).unwrap();
        p
    }

    fn run(&self, cmd: &mut Command) {
        let out = cmd
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Compiles every module (`wrapper` is put in front of the compiler, e.g. `thindist cc --`),
    /// two at a time, with `flags(i)` added for module i; writes compile_commands.json; builds the
    /// archives and the partial link's inputs.
    pub fn compile(&self, wrapper: &[&str], flags: impl Fn(usize) -> Vec<String> + Sync) {
        let mut units: Vec<(PathBuf, PathBuf, Vec<String>)> = (0..self.modules)
            .map(|i| {
                let mut f = vec!["-O2".to_string()];
                if !self.is_native(i) {
                    f.push("-flto=thin".into());
                }
                f.extend(flags(i));
                (self.source(i), self.object(i), f)
            })
            .collect();
        let lto = vec!["-O2".to_string(), "-flto=thin".to_string()];
        for (src, native) in [
            ("lib/a/util.c", false),
            ("lib/b/util.c", false),
            ("lib/chain.c", true),
            ("lib/unused.c", false),
        ] {
            let f = if native {
                vec!["-O2".to_string()]
            } else {
                lto.clone()
            };
            units.push((
                PathBuf::from(src),
                PathBuf::from(src.replace(".c", ".o")),
                f,
            ));
        }
        units.push(("src/main.c".into(), "src/main.o".into(), lto));
        let commands: Vec<Vec<String>> = units
            .iter()
            .map(|(src, obj, f)| {
                let mut c: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
                c.push("clang-22".into());
                c.extend(f.iter().cloned());
                c.extend([
                    "-c".into(),
                    src.display().to_string(),
                    "-o".into(),
                    obj.display().to_string(),
                ]);
                c
            })
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(c) = commands.get(i) else { return };
                    self.run(Command::new(&c[0]).args(&c[1..]));
                });
            }
        });
        let entries: Vec<String> = commands
            .iter()
            .zip(&units)
            .map(|(c, (src, _, _))| {
                let args: Vec<String> = c[wrapper.len()..]
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect();
                format!(
                    "{{\"directory\": {:?}, \"file\": {:?}, \"arguments\": [{}]}}",
                    self.dir.display().to_string(),
                    src.display().to_string(),
                    args.join(", ")
                )
            })
            .collect();
        std::fs::write(
            self.dir.join("compile_commands.json"),
            format!("[\n{}\n]\n", entries.join(",\n")),
        )
        .unwrap();
        self.archive();
    }

    fn archive(&self) {
        let members = |placement: Placement| -> Vec<String> {
            (0..self.modules)
                .filter(|&i| self.placement(i) == placement)
                .map(|i| self.object(i).display().to_string())
                .collect()
        };
        let _ = std::fs::remove_file(self.dir.join("lib/libreg.a"));
        let _ = std::fs::remove_file(self.dir.join("lib/libthin.a"));
        let mut reg = members(Placement::RegularArchive);
        reg.extend(
            [
                "lib/a/util.o",
                "lib/b/util.o",
                "lib/chain.o",
                "lib/unused.o",
            ]
            .map(String::from),
        );
        self.run(
            Command::new("llvm-ar-22")
                .args(["rcs", "lib/libreg.a"])
                .args(&reg),
        );
        self.run(
            Command::new("llvm-ar-22")
                .args(["rcs", "--thin", "lib/libthin.a"])
                .args(members(Placement::ThinArchive)),
        );
    }

    /// The inputs of the `-r` partial link that makes `part.o`.
    pub fn partial_inputs(&self) -> Vec<String> {
        (0..self.modules)
            .filter(|&i| self.placement(i) == Placement::Partial)
            .map(|i| self.object(i).display().to_string())
            .collect()
    }

    /// The final link's inputs, in order.
    pub fn link_inputs(&self) -> Vec<String> {
        let mut inputs = vec!["src/main.o".to_string()];
        inputs.extend(
            (0..self.modules)
                .filter(|&i| self.placement(i) == Placement::Object)
                .map(|i| self.object(i).display().to_string()),
        );
        inputs.extend(["part.o", "lib/libthin.a", "lib/libreg.a"].map(String::from));
        inputs
    }

    /// Builds `part.o` with `ld.lld-22 -r`, through `prefix` (e.g. `thindist ld --`) if given.
    pub fn partial_link(&self, prefix: &[&str]) {
        let mut c: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        c.extend(["ld.lld-22", "-r", "-o", "part.o"].map(String::from));
        c.extend(self.partial_inputs());
        self.run(Command::new(&c[0]).args(&c[1..]));
    }

    /// The clang-driver link of the program: `clang-22 -fuse-ld=lld -flto=thin -O2 -o OUT ...`.
    pub fn clang_link_args(&self, output: &str) -> Vec<String> {
        let mut a: Vec<String> = ["-fuse-ld=lld", "-flto=thin", "-O2", "-o", output]
            .map(String::from)
            .to_vec();
        a.extend(self.link_inputs());
        a
    }

    /// The same link as an ld.lld command line (what the clang driver would run).
    pub fn lld_link_args(&self, output: &str) -> Vec<String> {
        let out = Command::new("clang-22")
            .args(self.clang_link_args(output))
            .arg("-###")
            .current_dir(&self.dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        let line = text
            .lines()
            .rfind(|l| l.starts_with(" \""))
            .expect("clang -### printed no linker command");
        let mut args: Vec<String> = line
            .trim()
            .split("\" \"")
            .map(|a| {
                a.trim_matches('"')
                    .replace("\\\"", "\"")
                    .replace("\\\\", "\\")
            })
            .collect();
        args.remove(0);
        args
    }

    /// Links with lld's in-process ThinLTO, `jobs` threads.
    pub fn link_in_process(&self, output: &str, jobs: usize) {
        let mut a = self.clang_link_args(output);
        a.push(format!("-Wl,--thinlto-jobs={jobs}"));
        self.run(Command::new("clang-22").args(a));
    }

    /// Runs a built program: (stdout, exit code).
    pub fn run_program(&self, program: &str) -> (String, i32) {
        let out = Command::new(self.dir.join(program)).output().unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            out.status.code().unwrap_or(-1),
        )
    }
}
