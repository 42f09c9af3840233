//! Per-module back-end flags: where a module's front-end compile command was saved, and how it
//! becomes a back-end compile.
//!
//! Sources, in order of preference: the record `thindist cc` wrote beside the object, an entry
//! of a compile_commands.json, the compile command of the shell that runs this link (kbuild's
//! single-object modules), and kbuild's `.NAME.o.cmd` file.

use crate::fsutil::{normalize, relative_below};
use crate::job::FlagsSource;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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

/// What looking up one object's saved compile found.
type Lookup = std::result::Result<Option<(SavedCompile, FlagsSource)>, FlagsProblem>;

/// A module's back-end compiler and options ([`backend_options`] of its saved compile), and
/// where they came from.
#[derive(Debug, PartialEq)]
pub struct BackendFlags {
    pub compiler: String,
    pub options: Vec<String>,
    pub source: FlagsSource,
}

/// What looking up one object's back-end flags found.
pub type FoundFlags = std::result::Result<Option<Arc<BackendFlags>>, FlagsProblem>;

/// Lookups by records directory and object.
type Lookups = HashMap<(Option<PathBuf>, PathBuf), FoundFlags>;

/// Where to look for saved flags.
#[derive(Clone)]
pub struct FlagSources {
    compile_commands: Option<(PathBuf, HashMap<PathBuf, SavedCompile>)>,
    /// The cache's records filed by object content (see [`crate::cc`]).
    records: Option<PathBuf>,
    parent_shell: Vec<Vec<String>>,
    cwd: PathBuf,
    /// This run's lookups, by records directory and object, shared by every clone: the plan,
    /// the link record and the look-ahead during the thin link all ask for the same modules,
    /// and a kbuild `.cmd` file is worth reading, parsing and turning into back-end options
    /// once (about 20 us a module, on the kernel's critical path after the thin link).
    found: Arc<Mutex<Lookups>>,
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
            records: None,
            parent_shell,
            cwd: cwd.to_path_buf(),
            found: Arc::default(),
        })
    }

    /// Also looks records up by object content in `dir` (the cache's `records/`).
    pub fn with_records(mut self, dir: Option<PathBuf>) -> Self {
        self.records = dir;
        self
    }

    /// Empties this run's lookups (shared by every clone) and returns them, for the caller to
    /// free where it costs least, or not at all: a kernel's are a quarter of a million strings.
    pub fn take_lookups(&self) -> impl Send {
        std::mem::take(&mut *self.found.lock().unwrap())
    }

    /// The back-end compiler and options of `object` (a path relative to the build directory
    /// or absolute) from its saved compile, with paths rebased onto the build directory;
    /// asked again in the same run, answers as the first time. An error: the saved compile
    /// cannot be turned into a back end's options.
    pub fn backend_flags(&self, object: &Path) -> Result<FoundFlags> {
        let key = (self.records.clone(), object.to_path_buf());
        if let Some(found) = self.found.lock().unwrap().get(&key) {
            return Ok(found.clone());
        }
        let found = match self.lookup(object) {
            Ok(Some((saved, source))) => {
                let (compiler, options) = backend_options(&saved, &self.cwd)?;
                Ok(Some(Arc::new(BackendFlags {
                    compiler,
                    options,
                    source,
                })))
            }
            Ok(None) => Ok(None),
            Err(problem) => Err(problem),
        };
        self.found.lock().unwrap().insert(key, found.clone());
        Ok(found)
    }

    /// Finds the saved compile of `object` (a path relative to the build directory or
    /// absolute), unremembered: [`FlagSources::backend_flags`] is what the run asks.
    fn lookup(&self, object: &Path) -> Lookup {
        let found = self.find(object)?;
        if let Some((saved, source)) = &found {
            if saved.argv.is_empty() {
                return Err(FlagsProblem {
                    module: object.to_path_buf(),
                    message: format!("{source} holds an empty compile command"),
                });
            }
        }
        Ok(found)
    }

    fn find(&self, object: &Path) -> Lookup {
        let problem = |message: String| FlagsProblem {
            module: object.to_path_buf(),
            message,
        };
        let abs = self.cwd.join(object);
        // Read without asking first whether it exists: one system call less per module.
        let read_record = |record: &Path| {
            let bytes = match std::fs::read(record) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                read => read.map_err(|e| e.to_string()),
            };
            bytes
                .and_then(|bytes| {
                    serde_json::from_slice::<SavedCompile>(&bytes).map_err(|e| e.to_string())
                })
                .map(Some)
                .map_err(|e| {
                    problem(format!(
                        "unreadable thindist record {}: {e}",
                        record.display()
                    ))
                })
        };
        if let Some(saved) = read_record(&record_path(&abs))? {
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
        // Opened without asking first whether it exists: one system call less per module.
        let cmd_line = match read_kbuild_cmd_line(&cmd_file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            read => Some(read),
        };
        if let Some(read) = cmd_line {
            let text =
                read.map_err(|e| problem(format!("cannot read {}: {e}", cmd_file.display())))?;
            let argv = parse_kbuild_cmd(&text, object, &self.cwd)
                .map_err(|e| problem(format!("cannot use {}: {e:#}", cmd_file.display())))?;
            return Ok(Some((
                SavedCompile {
                    argv,
                    cwd: self.cwd.clone(),
                },
                FlagsSource::KbuildCmd(kbuild_cmd_path(object)),
            )));
        }
        // Last, as the weakest match and the only one that reads the whole object (none of a
        // kbuild tree's modules pays for it): an archive member, or an object copied or renamed
        // since it was compiled, by the record `thindist cc` filed under its content.
        if let Some(records) = &self.records {
            if let Ok(digest) = thindist_reapi::Digest::of_file(&abs) {
                let record = records.join(format!("{}.json", digest.hash));
                if let Some(saved) = read_record(&record)? {
                    return Ok(Some((saved, FlagsSource::ThindistRecord(record))));
                }
            }
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

/// The command line of a kbuild `.cmd` file (the first line that [`parse_kbuild_cmd`] looks
/// for, kbuild's first), or nothing when there is none. The rest of the file, a list of every
/// header the object was compiled from, is most of it (69 KB for `kernel/fork.o`): reading
/// all of it for 554 modules took more CPU than the thin link had to spare. Only the command
/// line need be UTF-8.
fn read_kbuild_cmd_line(path: &Path) -> std::io::Result<String> {
    use std::io::BufRead;
    let mut file = std::io::BufReader::with_capacity(16 * 1024, std::fs::File::open(path)?);
    let mut line = Vec::new();
    loop {
        line.clear();
        if file.read_until(b'\n', &mut line)? == 0 {
            return Ok(String::new());
        }
        if is_kbuild_cmd_line(&line) {
            return String::from_utf8(line)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        }
    }
}

/// Whether `line` of a kbuild `.cmd` file is its command: `savedcmd_OBJ :=`, or `cmd_OBJ :=`
/// in older kernels.
fn is_kbuild_cmd_line(line: &[u8]) -> bool {
    line.starts_with(b"savedcmd_") || line.starts_with(b"cmd_")
}

/// Reads the compile command out of a kbuild `.cmd` file: the `savedcmd_OBJ :=` (or older
/// `cmd_OBJ :=`) line, make's `$$` and `\#` escapes undone, and only the first shell command
/// (kbuild appends `; objtool ...` and the like). A file copied or left over from another
/// object would give this one the wrong flags, so both the variable's name and the compile's
/// `-o` must be `object` (paths relative to `cwd`, where kbuild runs).
pub fn parse_kbuild_cmd(text: &str, object: &Path, cwd: &Path) -> Result<Vec<String>> {
    let line = text
        .lines()
        .find(|l| is_kbuild_cmd_line(l.as_bytes()))
        .context("no savedcmd_ or cmd_ line")?;
    let (variable, command) = line
        .split_once(":=")
        .context("the savedcmd_ line has no ':='")?;
    let variable = variable.trim();
    let named = variable.strip_prefix("saved").unwrap_or(variable);
    let named = named.strip_prefix("cmd_").unwrap_or(named);
    let same = |path: &str| normalize(&cwd.join(path)) == normalize(&cwd.join(object));
    if !same(named) {
        bail!("its command is for {named}, not {}", object.display());
    }
    // Most commands have neither escape: not copied twice for nothing.
    let command = match command.contains(['$', '#']) {
        true => std::borrow::Cow::Owned(command.replace("$$", "$").replace("\\#", "#")),
        false => std::borrow::Cow::Borrowed(command),
    };
    let commands = crate::shell::split_commands(&command);
    let compile = commands
        .iter()
        .find(|cmd| cmd.iter().any(|a| a == "-c"))
        .with_context(|| format!("no compile command (with -c) for {}", object.display()))?;
    match output_of(compile) {
        Some(out) if !same(&out) => bail!("its compile writes {out}, not {}", object.display()),
        _ => Ok(compile.clone()),
    }
}

/// What a back end does with a saved option.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Use {
    /// Front-end only (preprocessing, inputs, outputs, dependency files, linking).
    Drop,
    /// Matters to code generation.
    Keep,
    /// Matters, and its value names a file or directory, meant from the compile's directory.
    KeepPath,
}

/// clang driver options whose value may be the next word (`Separate` or `JoinedOrSeparate`
/// in clang's Options.td; each checked with `clang-22 -###`), and what a back end does with
/// them. Dropping one drops its value and keeping one keeps it; an option missing here would
/// lose its value or swallow the next argument. `-Xarch_ARCH VALUE` is handled by prefix.
const SEPARATE_VALUE: &[(&str, Use)] = &[
    // Inputs, outputs and the language.
    ("-o", Use::Drop),
    ("--output", Use::Drop),
    ("-x", Use::Drop),
    ("--language", Use::Drop),
    ("-dumpdir", Use::Drop),
    ("-dsym-dir", Use::Drop),
    ("-working-directory", Use::Drop),
    // Preprocessor.
    ("-I", Use::Drop),
    ("--include-directory", Use::Drop),
    ("--include-directory-after", Use::Drop),
    ("-D", Use::Drop),
    ("--define-macro", Use::Drop),
    ("-U", Use::Drop),
    ("--undefine-macro", Use::Drop),
    ("-A", Use::Drop),
    ("--assert", Use::Drop),
    ("-include", Use::Drop),
    ("--include", Use::Drop),
    ("-imacros", Use::Drop),
    ("--imacros", Use::Drop),
    ("-include-pch", Use::Drop),
    ("-isystem", Use::Drop),
    ("-isystem-after", Use::Drop),
    ("-cxx-isystem", Use::Drop),
    ("-iquote", Use::Drop),
    ("-idirafter", Use::Drop),
    ("-iprefix", Use::Drop),
    ("--include-prefix", Use::Drop),
    ("-iwithprefix", Use::Drop),
    ("--include-with-prefix", Use::Drop),
    ("-iwithprefixbefore", Use::Drop),
    ("--include-with-prefix-before", Use::Drop),
    ("-iwithsysroot", Use::Drop),
    ("-isysroot", Use::Drop),
    ("-iframework", Use::Drop),
    ("-iframeworkwithsysroot", Use::Drop),
    ("-F", Use::Drop),
    ("-ivfsoverlay", Use::Drop),
    ("-vfsoverlay", Use::Drop),
    ("-iapinotes-modules", Use::Drop),
    ("-fmodules-user-build-path", Use::Drop),
    ("-fexperimental-openacc-macro-override", Use::Drop),
    ("-Xpreprocessor", Use::Drop),
    // Dependency files and diagnostics files.
    ("-MF", Use::Drop),
    ("-MT", Use::Drop),
    ("-MQ", Use::Drop),
    ("-MJ", Use::Drop),
    ("-dependency-file", Use::Drop),
    ("-dependency-dot", Use::Drop),
    ("-module-dependency-dir", Use::Drop),
    ("-serialize-diagnostics", Use::Drop),
    ("--serialize-diagnostics", Use::Drop),
    ("-gen-cdb-fragment-path", Use::Drop),
    ("-Xanalyzer", Use::Drop),
    ("--analyzer-output", Use::Drop),
    // Linking.
    ("-Xlinker", Use::Drop),
    ("-L", Use::Drop),
    ("--library-directory", Use::Drop),
    ("-l", Use::Drop),
    ("-T", Use::Drop),
    ("-z", Use::Drop),
    ("-u", Use::Drop),
    ("-e", Use::Drop),
    ("-b", Use::Drop),
    ("-rpath", Use::Drop),
    ("-Xoffload-linker", Use::Drop),
    // Code generation.
    ("-target", Use::Keep),
    ("-arch", Use::Keep),
    ("-Xclang", Use::Keep),
    ("-mllvm", Use::Keep),
    ("-mmlir", Use::Keep),
    ("-Xassembler", Use::Keep),
    ("-Xclangas", Use::Keep),
    ("--param", Use::Keep),
    ("-mthread-model", Use::Keep),
    ("-meabi", Use::Keep),
    ("-G", Use::Keep),
    ("-ccc-gcc-name", Use::Keep),
    ("-darwin-target-variant", Use::Keep),
    ("-darwin-target-variant-triple", Use::Keep),
    ("-Xopenmp-target", Use::Keep),
    ("-Xcuda-fatbinary", Use::Keep),
    ("-Xcuda-ptxas", Use::Keep),
    ("-Xarch_device", Use::Keep),
    ("-Xarch_host", Use::Keep),
    ("-hlsl-entry", Use::Keep),
    // Where the driver finds its tools, headers and runtime: paths.
    ("-B", Use::KeepPath),
    ("--prefix", Use::KeepPath),
    ("--sysroot", Use::KeepPath),
    ("-resource-dir", Use::KeepPath),
    ("--resource", Use::KeepPath),
    ("-ccc-install-dir", Use::KeepPath),
    ("--config", Use::KeepPath),
];

/// What a back end does with `option` and the word after it, if `option` takes that word as
/// its value.
fn separate_value(option: &str) -> Option<Use> {
    SEPARATE_VALUE
        .iter()
        .find(|(name, _)| *name == option)
        .map(|(_, use_)| *use_)
        .or_else(|| option.starts_with("-Xarch_").then_some(Use::Keep))
}

/// Joined options whose value is a file the back end reads: inputs of its cache key.
const INPUT_FILE_OPTIONS: &[&str] = &[
    "-fprofile-sample-use=",
    "-fprofile-use=",
    "-fprofile-instr-use=",
    "-fprofile-remapping-file=",
    // clang 22 takes a basic-block sections file only as `list=FILE`.
    "-fbasic-block-sections=list=",
    "-fpass-plugin=",
];

/// Other joined options whose value names a file or directory (the joined forms of the
/// `KeepPath` options above, and lists the back end's instrumentation reads).
const OTHER_PATH_OPTIONS: &[&str] = &[
    "-fsanitize-coverage-allowlist=",
    "-fsanitize-coverage-ignorelist=",
    "-fmemory-profile-use=",
    "--sysroot=",
    "--prefix=",
    "-resource-dir=",
    "--config=",
    "-B",
];

/// The option and path of a joined option whose value names a file, from `options`
/// (`INPUT_FILE_OPTIONS` or `OTHER_PATH_OPTIONS`).
fn joined_path<'a>(arg: &'a str, options: &[&'static str]) -> Option<(&'static str, &'a str)> {
    options.iter().find_map(|option| {
        let value = arg.strip_prefix(option)?;
        (!value.is_empty()).then_some((*option, value))
    })
}

/// `value`, a path as a compile run in `compile_dir` meant it, as a back end run in
/// `build_dir` must name it: relative to the build directory when it lies below it (so that
/// keys do not depend on where the tree is), else absolute. A bare `--config` name is left
/// alone: clang looks it up in its configuration directories.
fn rebase(option: &str, value: &str, compile_dir: &Path, build_dir: &Path) -> String {
    let bare_config = option.starts_with("--config") && !value.contains('/');
    if Path::new(value).is_absolute() || bare_config {
        return value.to_string();
    }
    let build_dir = normalize(build_dir);
    let path = normalize(&build_dir.join(compile_dir).join(value));
    relative_below(&path, &build_dir)
        .to_string_lossy()
        .into_owned()
}

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
/// compile's own codegen flags without its inputs, outputs, preprocessor and LTO options, with
/// the paths they name rebased from the compile's directory onto `build_dir`, where the back
/// end runs. Returns the compiler (argv[0]) and those options.
///
/// [`BACKEND_MODE`] follows them in every back-end command.
pub fn backend_options(saved: &SavedCompile, build_dir: &Path) -> Result<(String, Vec<String>)> {
    let Some((compiler, args)) = saved.argv.split_first() else {
        bail!("the saved compile command is empty");
    };
    let rebase = |option: &str, value: &str| rebase(option, value, &saved.cwd, build_dir);
    let mut kept = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if let Some(use_) = separate_value(arg) {
            let value = it.next();
            if use_ == Use::Drop {
                continue;
            }
            kept.push(arg.clone());
            kept.extend(value.map(|v| match use_ {
                Use::KeepPath => rebase(arg, v),
                _ => v.clone(),
            }));
        } else if !arg.starts_with('-')
            || DROP_EXACT.contains(&arg.as_str())
            || DROP_PREFIXES.iter().any(|p| arg.starts_with(p))
            || (arg.starts_with("-o") && arg.len() > 2)
        {
            // A source file, or a front-end-only option.
        } else if let Some((option, value)) =
            joined_path(arg, INPUT_FILE_OPTIONS).or_else(|| joined_path(arg, OTHER_PATH_OPTIONS))
        {
            kept.push(format!("{option}{}", rebase(option, value)));
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
        .filter_map(|o| joined_path(o, INPUT_FILE_OPTIONS))
        .map(|(_, path)| PathBuf::from(path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// The back-end options of `argv` compiled in the build directory `/b`.
    fn options(argv: &[String]) -> Vec<String> {
        options_from(argv, "/b")
    }

    fn options_from(argv: &[String], compile_dir: &str) -> Vec<String> {
        let saved = SavedCompile {
            argv: argv.to_vec(),
            cwd: compile_dir.into(),
        };
        backend_options(&saved, Path::new("/b")).unwrap().1
    }

    /// The run's memo of lookups is shared by clones, but a clone that also looks in the
    /// cache's records must not be answered from what a clone without them found.
    #[test]
    fn remembered_lookups_are_kept_apart_by_records_directory() {
        let dir = tempfile::tempdir().unwrap();
        let object = dir.path().join("copied.o");
        std::fs::write(&object, b"bitcode").unwrap();
        let records = dir.path().join("records");
        std::fs::create_dir(&records).unwrap();
        let saved = SavedCompile {
            argv: s(&["clang", "-O2", "-c", "a.c", "-o", "a.o"]),
            cwd: dir.path().into(),
        };
        let digest = thindist_reapi::Digest::of_file(&object).unwrap();
        let record = records.join(format!("{}.json", digest.hash));
        std::fs::write(&record, serde_json::to_vec(&saved).unwrap()).unwrap();

        let plain = FlagSources::new(None, Vec::new(), dir.path()).unwrap();
        let with_records = plain.clone().with_records(Some(records));
        let flags = |sources: &FlagSources| sources.backend_flags(&object).unwrap().unwrap();
        assert_eq!(flags(&plain), None);
        let found = flags(&with_records);
        let (compiler, options) = backend_options(&saved, dir.path()).unwrap();
        let expected = BackendFlags {
            compiler,
            options,
            source: FlagsSource::ThindistRecord(record),
        };
        assert_eq!(found.as_deref(), Some(&expected));
        // Asked again, each answers as it did, from the memo: the record is gone by now.
        std::fs::remove_dir_all(dir.path().join("records")).unwrap();
        assert_eq!(flags(&plain), None);
        assert_eq!(flags(&with_records), found);
    }

    /// Once taken, the lookups are gone from every clone, which would look again if asked.
    #[test]
    fn taken_lookups_are_forgotten_by_every_clone() {
        let dir = tempfile::tempdir().unwrap();
        let object = dir.path().join("a.o");
        let record = record_path(&object);
        let saved = |level: &str| SavedCompile {
            argv: s(&["clang", level, "-c", "a.c", "-o", "a.o"]),
            cwd: dir.path().into(),
        };
        std::fs::write(&record, serde_json::to_vec(&saved("-O1")).unwrap()).unwrap();
        let sources = FlagSources::new(None, Vec::new(), dir.path()).unwrap();
        let clone = sources.clone();
        let options = |sources: &FlagSources| {
            let found = sources.backend_flags(&object).unwrap().unwrap();
            found.unwrap().options.clone()
        };
        assert!(options(&sources).contains(&"-O1".to_string()));
        std::fs::write(&record, serde_json::to_vec(&saved("-O3")).unwrap()).unwrap();
        assert!(options(&clone).contains(&"-O1".to_string()), "remembered");
        drop(sources.take_lookups());
        assert!(
            options(&clone).contains(&"-O3".to_string()),
            "looked up again"
        );
    }

    #[test]
    fn kbuild_cmd_with_quoted_defines() {
        let text = "savedcmd_kernel/fork.o := clang-22 -Wp,-MMD,kernel/.fork.o.d -nostdinc -I./include \
            -include ./include/linux/kconfig.h -D__KERNEL__ -DKBUILD_MODFILE='\"kernel/fork\"' \
            -DKBUILD_BASENAME='\"fork\"' -flto=thin -fsplit-lto-unit -fvisibility=hidden -O2 -mno-red-zone \
            -mcmodel=kernel -std=gnu11 -fno-PIE -c -o kernel/fork.o kernel/fork.c   ; ./tools/objtool/objtool --orc kernel/fork.o\n\
            source_kernel/fork.o := kernel/fork.c\n";
        let argv = parse_kbuild_cmd(text, Path::new("kernel/fork.o"), Path::new("/b")).unwrap();
        assert!(argv.contains(&"-DKBUILD_MODFILE=\"kernel/fork\"".to_string()));
        assert_eq!(argv.last().unwrap(), "kernel/fork.c");
        let opts = options(&argv);
        assert_eq!(argv[0], "clang-22");
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
    fn a_kbuild_cmd_file_is_read_up_to_its_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let cmd = dir.path().join(".a.o.cmd");
        let mut text = b"# written by make\nsavedcmd_a.o := clang -O1 -c -o a.o a.c\n".to_vec();
        // A header path in the dependency list that is not UTF-8 does not matter.
        text.extend_from_slice(b"deps_a.o := \\\n  /usr/include/\xff.h \\\n");
        std::fs::write(&cmd, &text).unwrap();
        let line = read_kbuild_cmd_line(&cmd).unwrap();
        assert_eq!(line, "savedcmd_a.o := clang -O1 -c -o a.o a.c\n");
        let sources = FlagSources::new(None, Vec::new(), dir.path()).unwrap();
        let found = sources
            .backend_flags(Path::new("a.o"))
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(found.options, s(&["-O1"]));

        std::fs::write(&cmd, b"deps_a.o := a.c\n").unwrap();
        assert_eq!(read_kbuild_cmd_line(&cmd).unwrap(), "");
        std::fs::write(&cmd, b"savedcmd_a.o := clang -DX=\xff -c -o a.o a.c\n").unwrap();
        assert!(read_kbuild_cmd_line(&cmd).is_err());
    }

    #[test]
    fn kbuild_make_escapes_are_undone() {
        let text = "savedcmd_a.o := clang -DX='\"$$HOME\\#1\"' -O1 -c -o a.o a.c\n";
        let argv = parse_kbuild_cmd(text, Path::new("a.o"), Path::new("/b")).unwrap();
        assert_eq!(argv[1], "-DX=\"$HOME#1\"");
    }

    #[test]
    fn kbuild_cmd_without_compile_is_an_error() {
        let parse = |text: &str| parse_kbuild_cmd(text, Path::new("a.o"), Path::new("/b"));
        assert!(parse("savedcmd_a.o := ld.lld -r -o a.o b.o\n").is_err());
        assert!(parse("garbage\n").is_err());
    }

    #[test]
    fn kbuild_cmd_of_another_object_is_refused() {
        let parse = |text: &str| {
            parse_kbuild_cmd(text, Path::new("./dir/a.o"), Path::new("/b"))
                .map_err(|e| e.to_string())
        };
        assert!(parse("savedcmd_dir/a.o := clang -O2 -c -o dir/a.o dir/a.c\n").is_ok());
        assert!(parse("cmd_/b/dir/a.o := clang -O2 -c -o /b/dir/a.o dir/a.c\n").is_ok());
        let err = parse("savedcmd_dir/b.o := clang -O2 -c -o dir/b.o dir/b.c\n").unwrap_err();
        assert!(err.contains("for dir/b.o, not ./dir/a.o"), "{err}");
        let err = parse("savedcmd_dir/a.o := clang -O2 -c -o dir/b.o dir/b.c\n").unwrap_err();
        assert!(err.contains("writes dir/b.o"), "{err}");
    }

    #[test]
    fn empty_saved_commands_are_problems_naming_module_and_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".a.o.thindist.json"),
            serde_json::json!({"argv": [], "cwd": dir.path()}).to_string(),
        )
        .unwrap();
        let sources = FlagSources::new(None, vec![], dir.path()).unwrap();
        let problem = sources.lookup(Path::new("a.o")).unwrap_err();
        assert_eq!(problem.module, PathBuf::from("a.o"));
        assert!(
            problem.message.contains(".a.o.thindist.json") && problem.message.contains("empty"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn separate_values_go_with_their_options() {
        let argv = s(&[
            "clang-22",
            "-O2",
            "-B",
            "bin",
            "-isystem",
            "inc",
            "-Xclang",
            "-x",
            "-mllvm",
            "-foo",
            "-target",
            "x86_64-linux-gnu",
            "-include",
            "h.h",
            "-MF",
            "d",
            "-MT",
            "t",
            "-MQ",
            "q",
            "-I",
            "i",
            "-D",
            "X",
            "-U",
            "Y",
            "-o",
            "x.o",
            "-x",
            "c",
            "-arch",
            "x86_64",
            "--sysroot",
            "/sr",
            "-resource-dir",
            "/rd",
            "--output",
            "y.o",
            "-Xarch_x86_64",
            "-mavx",
            "-c",
            "a.c",
        ]);
        assert_eq!(
            options(&argv),
            s(&[
                "-O2",
                "-B",
                "bin",
                "-Xclang",
                "-x",
                "-mllvm",
                "-foo",
                "-target",
                "x86_64-linux-gnu",
                "-arch",
                "x86_64",
                "--sysroot",
                "/sr",
                "-resource-dir",
                "/rd",
                "-Xarch_x86_64",
                "-mavx",
            ])
        );
    }

    #[test]
    fn paths_are_rebased_onto_the_build_directory() {
        let argv = s(&[
            "clang",
            "-fprofile-sample-use=prof.txt",
            "-B",
            "bin",
            "-Btools",
            "--sysroot=../sr",
            "-fbasic-block-sections=all",
            "-fdebug-prefix-map=a=b",
            "-fprofile-use=/abs/p.profdata",
            "--config",
            "x.cfg",
            "--config=cfg/y.cfg",
            "-c",
            "a.c",
        ]);
        let want = s(&[
            "-fprofile-sample-use=sub/prof.txt",
            "-B",
            "sub/bin",
            "-Bsub/tools",
            "--sysroot=sr",
            "-fbasic-block-sections=all",
            "-fdebug-prefix-map=a=b",
            "-fprofile-use=/abs/p.profdata",
            "--config",
            "x.cfg",
            "--config=sub/cfg/y.cfg",
        ]);
        assert_eq!(options_from(&argv, "/b/sub"), want);
        assert_eq!(
            options_from(&argv, "sub"),
            want,
            "a relative directory is the build's"
        );
        assert_eq!(
            option_inputs(&want),
            vec![
                PathBuf::from("sub/prof.txt"),
                PathBuf::from("/abs/p.profdata")
            ]
        );
        // Outside the build directory, paths become absolute.
        assert_eq!(
            options_from(&s(&["clang", "-fprofile-sample-use=p.txt"]), "/elsewhere"),
            s(&["-fprofile-sample-use=/elsewhere/p.txt"])
        );
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
        let opts = options(&argv);
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
        /// Filtering never keeps the output, the source or an -I/-D option. (Options that take
        /// the next word as their value are left out of `extra`: `-G -D` keeps `-D` as -G's
        /// value, rightly.)
        #[test]
        fn filter_drops_front_end_only(extra in proptest::collection::vec("-[a-zA-Z][a-z0-9=,-]{0,8}", 0..10)) {
            let mut argv = s(&["clang", "-c", "in.c", "-o", "out.o", "-Iinc", "-DX"]);
            argv.extend(extra.into_iter().filter(|o| separate_value(o).is_none()));
            for o in &options(&argv) {
                prop_assert!(o != "in.c" && o != "-c" && !o.starts_with("-I") && !o.starts_with("-D"));
            }
        }

        /// An option that takes a separate value keeps it exactly when the option is kept,
        /// and never takes the word after its value.
        #[test]
        fn separate_values_stay_with_their_option(
            before in proptest::collection::vec("-W[a-z]{1,6}", 0..4),
            which in 0..SEPARATE_VALUE.len(),
        ) {
            let (option, use_) = SEPARATE_VALUE[which];
            let mut argv = vec!["clang".to_string()];
            argv.extend(before.iter().cloned());
            argv.extend(s(&[option, "/v", "-fafter"]));
            let opts = options(&argv);
            let mut want = before.clone();
            if use_ != Use::Drop {
                want.extend(s(&[option, "/v"]));
            }
            want.push("-fafter".to_string());
            prop_assert_eq!(opts, want);
        }

        /// Any argv and any .cmd text are handled without panicking.
        #[test]
        fn parsers_never_panic(argv in proptest::collection::vec(".{0,10}", 0..12), text in ".{0,200}", dir in "[a-z./]{0,8}") {
            let saved = SavedCompile { argv, cwd: dir.into() };
            let _ = backend_options(&saved, Path::new("/b"));
            let _ = option_inputs(&saved.argv);
            let _ = parse_kbuild_cmd(&text, Path::new("a.o"), Path::new("/b"));
            let _ = parse_kbuild_cmd(&format!("savedcmd_{text}"), Path::new("a.o"), Path::new("/b"));
        }
    }
}
