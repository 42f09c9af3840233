//! Per-module back-end flags: where a module's front-end compile command was saved, and how it
//! becomes a back-end compile.
//!
//! Sources, in order of preference: the record `thindist cc` wrote beside the object, an entry
//! of a compile_commands.json, the compile command of the shell that runs this link (kbuild's
//! single-object modules), and kbuild's `.NAME.o.cmd` file.

use crate::fsutil::normalize;
use crate::job::FlagsSource;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A module's saved front-end compile: the whole command line and where it ran.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedCompile {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
}

/// The record file `thindist cc` writes for `DIR/NAME.o`: `DIR/.NAME.o.thindist.json`.
pub fn record_path(object: &Path) -> PathBuf {
    dot_file(object, ".thindist.json")
}

/// kbuild's command file for `DIR/NAME.o`: `DIR/.NAME.o.cmd`.
pub fn kbuild_cmd_path(object: &Path) -> PathBuf {
    dot_file(object, ".cmd")
}

fn dot_file(object: &Path, suffix: &str) -> PathBuf {
    let name = object.file_name().unwrap_or_default().to_string_lossy();
    object.with_file_name(format!(".{name}{suffix}"))
}

/// Where to look for saved flags.
pub struct FlagSources {
    compile_commands: Option<(PathBuf, HashMap<PathBuf, SavedCompile>)>,
    parent_shell: Vec<Vec<String>>,
    cwd: PathBuf,
}

/// A problem with one module's saved flags that does not stop the build: the module falls back
/// to link-derived options and the run ends with a warning naming it.
#[derive(Clone, Debug)]
pub struct FlagsProblem {
    pub module: PathBuf,
    pub message: String,
}

impl FlagSources {
    pub fn new(
        compile_commands: Option<&Path>,
        parent_shell: Vec<Vec<String>>,
        cwd: &Path,
    ) -> Result<Self> {
        let compile_commands = match compile_commands {
            Some(path) => Some((path.to_path_buf(), load_compile_commands(path)?)),
            None => None,
        };
        Ok(FlagSources {
            compile_commands,
            parent_shell,
            cwd: cwd.to_path_buf(),
        })
    }

    /// Finds the saved compile of `object` (a path relative to the build directory or absolute).
    pub fn lookup(
        &self,
        object: &Path,
    ) -> std::result::Result<Option<(SavedCompile, FlagsSource)>, FlagsProblem> {
        let problem = |message: String| FlagsProblem {
            module: object.to_path_buf(),
            message,
        };
        let abs = self.cwd.join(object);
        let record = record_path(&abs);
        if record.exists() {
            let saved = std::fs::read(&record)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<SavedCompile>(&bytes).map_err(|e| e.to_string())
                })
                .map_err(|e| {
                    problem(format!(
                        "unreadable thindist record {}: {e}",
                        record.display()
                    ))
                })?;
            return Ok(Some((
                saved,
                FlagsSource::ThindistRecord(record_path(object)),
            )));
        }
        if let Some((db_path, db)) = &self.compile_commands {
            if let Some(saved) = db.get(&normalize(&abs)) {
                return Ok(Some((
                    saved.clone(),
                    FlagsSource::CompileCommands(db_path.clone()),
                )));
            }
        }
        if let Some(argv) = self
            .parent_shell
            .iter()
            .find(|cmd| compiles_to(cmd, object, &self.cwd))
        {
            return Ok(Some((
                SavedCompile {
                    argv: argv.clone(),
                    cwd: self.cwd.clone(),
                },
                FlagsSource::ParentShell,
            )));
        }
        let cmd_file = kbuild_cmd_path(&abs);
        if cmd_file.exists() {
            let text = std::fs::read_to_string(&cmd_file)
                .map_err(|e| problem(format!("cannot read {}: {e}", cmd_file.display())))?;
            let argv = parse_kbuild_cmd(&text, object)
                .map_err(|e| problem(format!("cannot use {}: {e:#}", cmd_file.display())))?;
            return Ok(Some((
                SavedCompile {
                    argv,
                    cwd: self.cwd.clone(),
                },
                FlagsSource::KbuildCmd(kbuild_cmd_path(object)),
            )));
        }
        Ok(None)
    }
}

/// Does this compile command write `object`?
fn compiles_to(argv: &[String], object: &Path, cwd: &Path) -> bool {
    argv.iter().any(|a| a == "-c")
        && output_of(argv)
            .is_some_and(|out| normalize(&cwd.join(out)) == normalize(&cwd.join(object)))
}

/// The `-o` operand of a compile command.
pub fn output_of(argv: &[String]) -> Option<String> {
    let mut it = argv.iter();
    let mut found = None;
    while let Some(arg) = it.next() {
        if arg == "-o" {
            found = it.next().cloned();
        } else if let Some(joined) = arg.strip_prefix("-o").filter(|s| !s.is_empty()) {
            found = Some(joined.to_string());
        }
    }
    found
}

#[derive(serde::Deserialize)]
struct CompileCommandEntry {
    directory: PathBuf,
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    arguments: Option<Vec<String>>,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    output: Option<PathBuf>,
}

/// Loads a compile_commands.json, indexed by the absolute path of the object each entry writes.
pub fn load_compile_commands(path: &Path) -> Result<HashMap<PathBuf, SavedCompile>> {
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read compile commands {}", path.display()))?;
    let entries: Vec<CompileCommandEntry> = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a valid compile_commands.json", path.display()))?;
    let mut map = HashMap::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let argv = match (entry.arguments, entry.command) {
            (Some(args), _) => args,
            (None, Some(command)) => shell_words::split(&command).with_context(|| {
                format!(
                    "{}: entry {index} has a command that does not parse",
                    path.display()
                )
            })?,
            (None, None) => bail!(
                "{}: entry {index} has neither \"arguments\" nor \"command\"",
                path.display()
            ),
        };
        let output = entry
            .output
            .or_else(|| output_of(&argv).map(PathBuf::from))
            .or_else(|| {
                // clang writes NAME.o in the directory when no -o is given.
                entry
                    .file
                    .as_ref()
                    .and_then(|f| f.file_stem())
                    .map(|s| PathBuf::from(format!("{}.o", s.to_string_lossy())))
            });
        if let Some(output) = output {
            map.insert(
                normalize(&entry.directory.join(output)),
                SavedCompile {
                    argv,
                    cwd: entry.directory,
                },
            );
        }
    }
    Ok(map)
}

/// Reads the compile command out of a kbuild `.cmd` file: the `savedcmd_OBJ :=` (or older
/// `cmd_OBJ :=`) line, make's `$$` and `\#` escapes undone, and only the first shell command
/// (kbuild appends `; objtool ...` and the like).
pub fn parse_kbuild_cmd(text: &str, object: &Path) -> Result<Vec<String>> {
    let line = text
        .lines()
        .find(|l| l.starts_with("savedcmd_") || l.starts_with("cmd_"))
        .context("no savedcmd_ or cmd_ line")?;
    let (_, command) = line
        .split_once(":=")
        .context("the savedcmd_ line has no ':='")?;
    let command = command.replace("$$", "$").replace("\\#", "#");
    let commands = crate::shell::split_commands(&command);
    let compile = commands
        .iter()
        .find(|cmd| cmd.iter().any(|a| a == "-c"))
        .with_context(|| format!("no compile command (with -c) for {}", object.display()))?;
    Ok(compile.clone())
}

/// Front-end options that take a separate value and only matter before code generation.
const DROP_WITH_VALUE: &[&str] = &[
    "-o",
    "-MF",
    "-MT",
    "-MQ",
    "-MJ",
    "-include",
    "-imacros",
    "-isystem",
    "-iquote",
    "-idirafter",
    "-I",
    "-D",
    "-U",
    "-x",
    "-Xpreprocessor",
    "-isysroot",
    "-iprefix",
    "-iwithprefix",
    "-iwithprefixbefore",
    "-include-pch",
    "-Xlinker",
    "-L",
    "-l",
    "-ivfsoverlay",
    "-iframework",
    "-fsanitize-ignorelist",
    "-fsanitize-blacklist",
];

/// Options that take a separate value and are kept with it.
const KEEP_WITH_VALUE: &[&str] = &[
    "-target",
    "-Xclang",
    "-mllvm",
    "-Xassembler",
    "-arch",
    "--param",
    "-gcc-toolchain",
];

/// Front-end-only options dropped by prefix.
const DROP_PREFIXES: &[&str] = &[
    "-I",
    "-D",
    "-U",
    "-M",
    "-Wp,",
    "-Wl,",
    "-flto",
    "-fthinlto-index=",
    "-std=",
    "-include",
    "-isystem",
    "-iquote",
    "-idirafter",
    "-imacros",
    "-x",
    "-fsanitize-ignorelist=",
    "-fsanitize-blacklist=",
    "--sysroot=",
    "-fmodule",
    "-fpch",
    "-L",
    "-l",
];

/// Front-end-only options dropped when they match exactly.
const DROP_EXACT: &[&str] = &[
    "-c",
    "-S",
    "-E",
    "-emit-llvm",
    "-fsplit-lto-unit",
    "-fno-split-lto-unit",
    "-fno-lto",
    "-nostdinc",
    "-nostdinc++",
    "-nostdlibinc",
    "-C",
    "-CC",
    "-P",
    "-H",
    "-pipe",
    "-save-temps",
    "-fsyntax-only",
    "-trigraphs",
];

/// What makes a compile a ThinLTO back end: read the module as IR, no further LTO. The
/// saved flags were meant for C sources, so unused ones must not warn.
pub const BACKEND_MODE: [&str; 4] = ["-x", "ir", "-fno-lto", "-Wno-unused-command-line-argument"];

/// The options of a saved front-end compile that still matter to code generation: the
/// compile's own codegen flags without its inputs, outputs, preprocessor and LTO options.
/// Returns the compiler (argv[0]) and those options.
///
/// [`BACKEND_MODE`] follows them in every back-end command.
pub fn backend_options(saved: &[String]) -> Result<(String, Vec<String>)> {
    let Some((compiler, args)) = saved.split_first() else {
        bail!("the saved compile command is empty");
    };
    let mut kept = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if DROP_WITH_VALUE.contains(&arg.as_str()) {
            it.next();
        } else if KEEP_WITH_VALUE.contains(&arg.as_str()) {
            kept.push(arg.clone());
            if let Some(value) = it.next() {
                kept.push(value.clone());
            }
        } else if !arg.starts_with('-')
            || DROP_EXACT.contains(&arg.as_str())
            || DROP_PREFIXES.iter().any(|p| arg.starts_with(p))
            || (arg.starts_with("-o") && arg.len() > 2)
        {
            // A source file, or a front-end-only option.
        } else {
            kept.push(arg.clone());
        }
    }
    Ok((compiler.clone(), kept))
}

/// Files a back-end compile reads because of its options (profiles, section lists, pass
/// plugins).
pub fn option_inputs(options: &[String]) -> Vec<PathBuf> {
    options
        .iter()
        .filter_map(|o| {
            o.strip_prefix("-fprofile-sample-use=")
                .or_else(|| o.strip_prefix("-fprofile-use="))
                .or_else(|| o.strip_prefix("-fprofile-instr-use="))
                .or_else(|| o.strip_prefix("-fpass-plugin="))
                .or_else(|| {
                    o.strip_prefix("-fbasic-block-sections=")
                        .and_then(|v| v.strip_prefix("list="))
                })
        })
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn kbuild_cmd_with_quoted_defines() {
        let text = "savedcmd_kernel/fork.o := clang-22 -Wp,-MMD,kernel/.fork.o.d -nostdinc -I./include \
            -include ./include/linux/kconfig.h -D__KERNEL__ -DKBUILD_MODFILE='\"kernel/fork\"' \
            -DKBUILD_BASENAME='\"fork\"' -flto=thin -fsplit-lto-unit -fvisibility=hidden -O2 -mno-red-zone \
            -mcmodel=kernel -std=gnu11 -fno-PIE -c -o kernel/fork.o kernel/fork.c   ; ./tools/objtool/objtool --orc kernel/fork.o\n\
            source_kernel/fork.o := kernel/fork.c\n";
        let argv = parse_kbuild_cmd(text, Path::new("kernel/fork.o")).unwrap();
        assert!(argv.contains(&"-DKBUILD_MODFILE=\"kernel/fork\"".to_string()));
        assert_eq!(argv.last().unwrap(), "kernel/fork.c");
        let (compiler, opts) = backend_options(&argv).unwrap();
        assert_eq!(compiler, "clang-22");
        assert_eq!(
            opts,
            s(&[
                "-fvisibility=hidden",
                "-O2",
                "-mno-red-zone",
                "-mcmodel=kernel",
                "-fno-PIE"
            ])
        );
    }

    #[test]
    fn kbuild_make_escapes_are_undone() {
        let text = "savedcmd_a.o := clang -DX='\"$$HOME\\#1\"' -O1 -c -o a.o a.c\n";
        let argv = parse_kbuild_cmd(text, Path::new("a.o")).unwrap();
        assert_eq!(argv[1], "-DX=\"$HOME#1\"");
    }

    #[test]
    fn kbuild_cmd_without_compile_is_an_error() {
        assert!(
            parse_kbuild_cmd("savedcmd_a.o := ld.lld -r -o a.o b.o\n", Path::new("a.o")).is_err()
        );
        assert!(parse_kbuild_cmd("garbage\n", Path::new("a.o")).is_err());
    }

    #[test]
    fn filters_front_end_options() {
        let argv = s(&[
            "clang-22",
            "-O1",
            "-ffunction-sections",
            "-flto=thin",
            "-MD",
            "-MF",
            "x.d",
            "-I",
            "inc",
            "-Iinc2",
            "-DFOO=1",
            "-c",
            "src/x.c",
            "-o",
            "x.o",
            "-target",
            "x86_64-linux-gnu",
            "-mllvm",
            "-foo",
            "-fprofile-sample-use=p.prof",
            "-Xclang",
            "-fno-pch-timestamp",
            "-std=c11",
        ]);
        let (_, opts) = backend_options(&argv).unwrap();
        assert_eq!(
            opts,
            s(&[
                "-O1",
                "-ffunction-sections",
                "-target",
                "x86_64-linux-gnu",
                "-mllvm",
                "-foo",
                "-fprofile-sample-use=p.prof",
                "-Xclang",
                "-fno-pch-timestamp"
            ])
        );
        assert_eq!(option_inputs(&opts), vec![PathBuf::from("p.prof")]);
    }

    #[test]
    fn compile_commands_lookup_by_output() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("compile_commands.json");
        std::fs::write(
            &db,
            serde_json::json!([
                {"directory": dir.path(), "file": "a.c", "arguments": ["clang", "-O1", "-c", "a.c", "-o", "obj/a.o"]},
                {"directory": dir.path(), "file": "b.c", "command": "clang -O2 -c b.c"}
            ])
            .to_string(),
        )
        .unwrap();
        let sources = FlagSources::new(Some(&db), vec![], dir.path()).unwrap();
        let (saved, source) = sources.lookup(Path::new("obj/a.o")).unwrap().unwrap();
        assert_eq!(saved.argv[1], "-O1");
        assert_eq!(source, FlagsSource::CompileCommands(db.clone()));
        let (saved, _) = sources.lookup(Path::new("./b.o")).unwrap().unwrap();
        assert_eq!(saved.argv[1], "-O2");
        assert!(sources.lookup(Path::new("c.o")).unwrap().is_none());
    }

    #[test]
    fn parent_shell_compile_is_found() {
        let cmds = crate::shell::split_commands(
            "clang -O3 -c -o drivers/x.o drivers/x.c; ld.lld -r -o drivers/.tmp_x.o drivers/x.o",
        );
        let dir = tempfile::tempdir().unwrap();
        let sources = FlagSources::new(None, cmds, dir.path()).unwrap();
        let (saved, source) = sources.lookup(Path::new("drivers/x.o")).unwrap().unwrap();
        assert_eq!(source, FlagsSource::ParentShell);
        assert_eq!(saved.argv[1], "-O3");
    }

    proptest! {
        /// Filtering never keeps the output, the source or an -I/-D option.
        #[test]
        fn filter_drops_front_end_only(extra in proptest::collection::vec("-[a-zA-Z][a-z0-9=,-]{0,8}", 0..10)) {
            let mut argv = s(&["clang", "-c", "in.c", "-o", "out.o", "-Iinc", "-DX"]);
            argv.extend(extra);
            if let Ok((_, opts)) = backend_options(&argv) {
                for o in &opts {
                    prop_assert!(o != "in.c" && o != "-c" && !o.starts_with("-I") && !o.starts_with("-D"));
                }
            }
        }
    }
}
