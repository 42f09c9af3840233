//! The `-cc1` command of a back-end job, for a fork server's cc1 worker
//! (`preload/forkserver.c`), which runs job after job in one process through clang's own
//! `cc1_main` and so needs the command the driver would run, not the driver's.
//!
//! The driver is asked once (`-###`, a dry run) for a job of a flag set, and its cc1 command
//! becomes a template: the same command with that job's own files (module, summary shard,
//! native object, the module's file name) as slots, which any job of the same flag set fills
//! with its own. Nothing else in the command may name those files, so that no argument the
//! driver derived from them (a split-DWARF file, say) could be copied from one job into
//! another; a second job's dry run is compared with its filled template before the flag set's
//! jobs are trusted to it.

use crate::job::BackendJob;
use std::path::Path;

/// Where a job's directory stood in an argument of a template or key.
const CWD: &str = "\0cwd\0";

/// The files of one back-end job, as its command names them, and the directory it runs in.
pub struct JobFiles<'a> {
    cwd: &'a str,
    module: &'a str,
    module_name: &'a str,
    index_arg: String,
    shard: &'a str,
    native: &'a str,
    native_stem: &'a str,
}

impl<'a> JobFiles<'a> {
    pub fn of(job: &'a BackendJob) -> Option<JobFiles<'a>> {
        let cwd = job.cwd.to_str()?;
        JobFiles::new(
            cwd,
            job.module.to_str()?,
            job.shard.to_str()?,
            job.native.to_str()?,
        )
    }

    /// The files a back-end command run in `cwd` names as thindist writes it
    /// (`-fthinlto-index=SHARD -c MODULE -o NATIVE`), as a remote worker gets it.
    pub fn from_command(command: &'a [String], cwd: &'a Path) -> Option<JobFiles<'a>> {
        let shard = (command.iter()).find_map(|arg| arg.strip_prefix("-fthinlto-index="))?;
        let after = |option: &str| {
            (command.windows(2))
                .find(|pair| pair[0] == option)
                .map(|pair| pair[1].as_str())
        };
        JobFiles::new(cwd.to_str()?, after("-c")?, shard, after("-o")?)
    }

    fn new(cwd: &'a str, module: &'a str, shard: &'a str, native: &'a str) -> Option<JobFiles<'a>> {
        Some(JobFiles {
            cwd,
            module,
            module_name: Path::new(module).file_name()?.to_str()?,
            index_arg: format!("-fthinlto-index={shard}"),
            shard,
            native,
            native_stem: native.rsplit_once('.').map_or(native, |(stem, _)| stem),
        })
    }

    /// The module, as the command names it.
    pub fn module(&self) -> &str {
        self.module
    }

    /// `arg` with the job's directory marked where it starts a path (after `=` or at the
    /// start, followed by `/` or the end), so that jobs in other directories (a remote
    /// worker's leases) share keys and templates. Not for `/`, which starts every path.
    fn mark_cwd(&self, arg: &str) -> String {
        if self.cwd.len() < 2 {
            return arg.to_string();
        }
        let mut marked = String::with_capacity(arg.len());
        let mut done = 0;
        while let Some(found) = arg[done..].find(self.cwd) {
            let (at, end) = (done + found, done + found + self.cwd.len());
            let starts = at == 0 || arg[..at].ends_with('=');
            let ends = end == arg.len() || arg[end..].starts_with('/');
            marked.push_str(&arg[done..at]);
            marked.push_str(if starts && ends { CWD } else { self.cwd });
            done = end;
        }
        marked.push_str(&arg[done..]);
        marked
    }

    /// A template's or key's argument `marked` with this job's directory where it was marked.
    fn fill_cwd(&self, marked: &str) -> String {
        marked.replace(CWD, self.cwd)
    }

    /// Whether `arg` names one of the job's files, or the native object's stem, anywhere in it.
    fn named_in(&self, arg: &str) -> bool {
        [self.module, self.module_name, self.shard, self.native_stem]
            .iter()
            .any(|file| arg.contains(file))
    }
}

/// The option that makes clang write a back end's stages, named after its output.
pub const SAVE_TEMPS_OBJ: &str = "-save-temps=obj";

/// The cc1 options a driver command passes on with `-Xclang` that only say where a back end
/// writes its stages ([`SAVE_TEMPS_OBJ`], which [`crate::probe`] adds): a cc1 worker of the
/// flag set without them can run such a job with them appended to the cc1 command, since cc1
/// takes them anywhere. Options that set LLVM's global state (`-mllvm`) could not be, as they
/// would stay set in the worker for the flag set's next jobs.
const STAGE_OPTIONS: [&str; 1] = [SAVE_TEMPS_OBJ];

/// `command` without its `-Xclang` [`STAGE_OPTIONS`], and those options as cc1 takes them;
/// `None` when it has none (most jobs: their command is not copied).
pub fn split_stage_options(command: &[String]) -> Option<(Vec<String>, Vec<String>)> {
    let is_stage_pair =
        |pair: &[String]| pair[0] == "-Xclang" && STAGE_OPTIONS.contains(&pair[1].as_str());
    if !command.windows(2).any(is_stage_pair) {
        return None;
    }
    let (mut rest, mut stage) = (Vec::with_capacity(command.len()), Vec::new());
    let mut args = command.iter().peekable();
    while let Some(arg) = args.next() {
        match args.peek() {
            Some(next) if arg == "-Xclang" && STAGE_OPTIONS.contains(&next.as_str()) => {
                stage.push(args.next().unwrap().clone());
            }
            _ => rest.push(arg.clone()),
        }
    }
    Some((rest, stage))
}

/// The driver command of a job with its own files, and its directory, replaced by markers: jobs
/// with the same key differ in nothing else. `None` when the command names them anywhere but in the places
/// thindist puts them (`-fthinlto-index=SHARD`, `-o NATIVE`, the module as an argument).
pub fn driver_key(command: &[String], files: &JobFiles) -> Option<String> {
    let mut key = String::new();
    let mut slots = [0; 3];
    for (i, arg) in command.iter().enumerate() {
        let after_o = i > 0 && command[i - 1] == "-o";
        let (piece, slot) = if i > 0 && *arg == files.module {
            ("\0module".to_string(), 0)
        } else if *arg == files.index_arg {
            ("\0index".to_string(), 1)
        } else if after_o && arg == files.native {
            ("\0native".to_string(), 2)
        } else if i > 0 && files.named_in(arg) {
            return None;
        } else {
            (files.mark_cwd(arg), usize::MAX)
        };
        if let Some(count) = slots.get_mut(slot) {
            *count += 1;
        }
        key.push_str(&piece);
        key.push('\0');
    }
    (slots == [1, 1, 1]).then_some(key)
}

/// cc1 options (and `-mllvm` values, which come as arguments of their own) whose effect lasts
/// beyond one compile in a process: statistics and timers that add up, output of pass
/// printers, plugins loaded into it. A flag set with one of them keeps forked drivers.
const PROCESS_WIDE: [&str; 15] = [
    "-print-stats",
    "-stats-file",
    "-ftime-report",
    "-ftime-trace",
    "-fproc-stat-report",
    "-load",
    "-fpass-plugin",
    "-plugin",
    "-add-plugin",
    "-stats",
    "-time-passes",
    "-info-output-file",
    "-print-after",
    "-print-before",
    "-debug-pass",
];

/// Whether `arg` is one of [`PROCESS_WIDE`], alone, with `=VALUE` or as a longer form of it
/// (`-ftime-report=per-pass`, `-stats-json`, `-print-after-all`).
fn process_wide(arg: &str) -> bool {
    PROCESS_WIDE.iter().any(|option| arg.starts_with(option))
}

#[derive(Debug, PartialEq)]
enum Piece {
    Literal(String),
    Module,
    ModuleName,
    Index,
    Native,
}

/// A cc1 command with slots for a job's own files.
#[derive(Debug)]
pub struct Cc1Template(Vec<Piece>);

impl Cc1Template {
    /// The template of the driver's dry run `output` (its `-###` output) of the job whose files
    /// are `files`; `None` unless the driver would run exactly one cc1 command, said nothing
    /// (no warning, no error), and the command names the job's files only in its slots and has
    /// no option of [`PROCESS_WIDE`].
    pub fn from_dry_run(output: &str, files: &JobFiles) -> Option<Cc1Template> {
        let mut commands = dry_run_commands(output)?;
        if commands.len() != 1 || commands[0].get(1).map(String::as_str) != Some("-cc1") {
            return None;
        }
        let command = commands.pop()?;
        let mut pieces = Vec::with_capacity(command.len());
        let mut previous: Option<&str> = None;
        for arg in &command {
            let piece = if arg == "-disable-free" {
                // A worker must free each job's memory for the next; output is the same.
                None
            } else if *arg == files.index_arg {
                Some(Piece::Index)
            } else if previous == Some("-o") && arg == files.native {
                Some(Piece::Native)
            } else if previous == Some("-main-file-name") && arg == files.module_name {
                Some(Piece::ModuleName)
            } else if arg == files.module {
                Some(Piece::Module)
            } else if files.named_in(arg) || process_wide(arg) {
                return None;
            } else {
                Some(Piece::Literal(files.mark_cwd(arg)))
            };
            pieces.extend(piece);
            previous = Some(arg);
        }
        let count = |slot: Piece| pieces.iter().filter(|p| **p == slot).count();
        let slots = [
            count(Piece::Module),
            count(Piece::Index),
            count(Piece::Native),
            count(Piece::ModuleName),
        ];
        (slots[..3] == [1, 1, 1] && slots[3] <= 1).then_some(Cc1Template(pieces))
    }

    /// The cc1 command of the job whose files are `files`.
    pub fn command(&self, files: &JobFiles) -> Vec<String> {
        (self.0.iter())
            .map(|piece| match piece {
                Piece::Literal(arg) => files.fill_cwd(arg),
                Piece::Module => files.module.to_string(),
                Piece::ModuleName => files.module_name.to_string(),
                Piece::Index => files.index_arg.clone(),
                Piece::Native => files.native.to_string(),
            })
            .collect()
    }

    /// Whether the driver's dry run `output` for the job whose files are `files` gives the
    /// command this template gives it.
    pub fn matches_dry_run(&self, output: &str, files: &JobFiles) -> bool {
        let Some(commands) = dry_run_commands(output) else {
            return false;
        };
        let expected = self.command(files);
        let mut commands = commands.into_iter();
        let (Some(mut command), None) = (commands.next(), commands.next()) else {
            return false;
        };
        command.retain(|arg| arg != "-disable-free");
        command == expected
    }
}

/// The commands a clang driver's `-###` output lists, each argument in double quotes with `"`,
/// `\` and `$` escaped by a backslash, one command a line after a space. `None` if a line that
/// is no command is a diagnostic, or a command line is malformed.
pub fn dry_run_commands(output: &str) -> Option<Vec<Vec<String>>> {
    let mut commands = Vec::new();
    let mut rest = output;
    while !rest.is_empty() {
        if rest.starts_with(" \"") {
            let (command, after) = parse_command(rest)?;
            commands.push(command);
            rest = after;
        } else {
            let (line, after) = rest.split_once('\n').unwrap_or((rest, ""));
            let diagnostic = ["error:", "warning:", "note:", "remark:"]
                .iter()
                .any(|kind| line.contains(kind));
            if diagnostic {
                return None;
            }
            rest = after;
        }
    }
    Some(commands)
}

/// One command line of `-###` output, and the text after it.
fn parse_command(text: &str) -> Option<(Vec<String>, &str)> {
    let bytes = text.as_bytes();
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        match (bytes.get(i), bytes.get(i + 1)) {
            (Some(b' '), Some(b'"')) => {
                i += 2;
                let mut arg = Vec::new();
                loop {
                    match *bytes.get(i)? {
                        b'\\' => {
                            arg.push(*bytes.get(i + 1)?);
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            break;
                        }
                        byte => {
                            arg.push(byte);
                            i += 1;
                        }
                    }
                }
                args.push(String::from_utf8(arg).ok()?);
            }
            (None, _) => return Some((args, "")),
            (Some(b'\n'), _) => return Some((args, &text[i + 1..])),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::FlagsSource;
    use proptest::prelude::*;
    use std::path::PathBuf;

    #[test]
    fn stage_options_come_out_of_the_driver_command_as_cc1_takes_them() {
        let command: Vec<String> = ["clang", "-O2", "-Xclang", "-save-temps=obj", "-c", "a.o"]
            .into_iter()
            .chain(["-Xclang", "-disable-llvm-passes", "-o", "n.o", "-Xclang"])
            .map(String::from)
            .collect();
        let (flag_set, stage) = split_stage_options(&command).unwrap();
        assert_eq!(
            flag_set,
            [
                "clang",
                "-O2",
                "-c",
                "a.o",
                "-Xclang",
                "-disable-llvm-passes",
                "-o",
                "n.o",
                "-Xclang"
            ]
        );
        assert_eq!(stage, ["-save-temps=obj"]);
        assert_eq!(split_stage_options(&flag_set), None);
    }

    /// An argument as clang's driver prints it for `-###`.
    fn printed(arg: &str) -> String {
        let mut out = String::from(" \"");
        for c in arg.chars() {
            if matches!(c, '"' | '\\' | '$') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    }

    fn printed_command(args: &[&str]) -> String {
        args.iter().map(|a| printed(a)).collect::<String>() + "\n"
    }

    fn job(module: &str, shard: &str, native: &str) -> BackendJob {
        BackendJob {
            module: module.into(),
            shard: shard.into(),
            imports: Vec::new(),
            extra_inputs: Vec::new(),
            native: native.into(),
            published: None,
            label: None,
            command: [
                "clang-22",
                "-O2",
                "-x",
                "ir",
                "-fno-lto",
                &format!("-fthinlto-index={shard}"),
                "-c",
                module,
                "-o",
                native,
            ]
            .map(String::from)
            .to_vec(),
            cwd: PathBuf::from("/build"),
            flags_source: FlagsSource::LinkDerived,
            size: 0,
        }
    }

    /// The driver's dry run of `j` as clang prints it, with `extra` cc1 arguments.
    fn dry_run(j: &BackendJob, extra: &[&str]) -> String {
        let [module, shard, native] = [&j.module, &j.shard, &j.native].map(|p| p.to_str().unwrap());
        let name = Path::new(module).file_name().unwrap().to_str().unwrap();
        let index = format!("-fthinlto-index={shard}");
        let mut args = vec![
            "/usr/lib/llvm-22/bin/clang",
            "-cc1",
            "-triple",
            "x86_64-unknown-linux-gnu",
            "-emit-obj",
            &index,
            "-disable-free",
            "-main-file-name",
            name,
            "-O2",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-o", native, "-x", "ir", module]);
        format!(
            "Debian clang version 22.1.8\nTarget: x86_64-pc-linux-gnu\nThread model: posix\n\
             InstalledDir: /usr/lib/llvm-22/bin\n (in-process)\n{}",
            printed_command(&args)
        )
    }

    #[test]
    fn a_template_gives_each_job_its_own_files() {
        let first = job("a/one.o", "/w/a/one.o.thinlto.bc", "/w/a/one.o.native.o");
        let first_files = JobFiles::of(&first).unwrap();
        let output = dry_run(&first, &[]);
        let template = Cc1Template::from_dry_run(&output, &first_files).unwrap();
        let second = job("b/two.o", "/w/b/two.o.thinlto.bc", "/w/b/two.o.native.o");
        let second_files = JobFiles::of(&second).unwrap();
        assert_eq!(
            driver_key(&first.command, &first_files),
            driver_key(&second.command, &second_files)
        );
        let expected = dry_run(&second, &[]);
        assert!(template.matches_dry_run(&expected, &second_files));
        let command = template.command(&second_files);
        assert!(!command.iter().any(|a| a == "-disable-free"));
        assert_eq!(command[command.len() - 1], "b/two.o");
        assert!(command
            .windows(2)
            .any(|w| w == ["-main-file-name", "two.o"]));
        assert!(command
            .windows(2)
            .any(|w| w == ["-o", "/w/b/two.o.native.o"]));
    }

    #[test]
    fn no_template_when_the_driver_derives_more_from_a_job_or_says_something() {
        let j = job("one.o", "/w/one.o.thinlto.bc", "/w/one.o.native.o");
        let files = JobFiles::of(&j).unwrap();
        let split = dry_run(&j, &["-split-dwarf-file", "/w/one.o.native.dwo"]);
        assert!(Cc1Template::from_dry_run(&split, &files).is_none());
        let plain = dry_run(&j, &[]);
        let warned = format!("clang: warning: argument unused during compilation: '-q'\n{plain}");
        assert!(Cc1Template::from_dry_run(&warned, &files).is_none());
        let two = format!("{plain}{}", printed_command(&["/usr/bin/as", "-o", "x.o"]));
        assert!(Cc1Template::from_dry_run(&two, &files).is_none());
        assert!(Cc1Template::from_dry_run(&plain, &files).is_some());
        for extra in [
            &["-ftime-report"][..],
            &["-stats-file=x.stats"],
            &["-mllvm", "-stats"],
            &["-mllvm", "-print-after-all"],
            &["-load", "plugin.so"],
            &["-fpass-plugin=plugin.so"],
        ] {
            let output = dry_run(&j, extra);
            assert!(
                Cc1Template::from_dry_run(&output, &files).is_none(),
                "{extra:?}"
            );
        }
    }

    /// A template made in one directory gives a job in another its own (a remote worker runs
    /// each lease in a directory of its own); only whole paths count as the directory.
    #[test]
    fn a_template_gives_a_job_its_own_directory() {
        let first = job("one.o", "/w/one.o.thinlto.bc", "/w/one.o.native.o");
        let mut second = job("two.o", "/v/two.o.thinlto.bc", "/v/two.o.native.o");
        second.cwd = PathBuf::from("/lease/2");
        let (a, b) = (
            JobFiles::of(&first).unwrap(),
            JobFiles::of(&second).unwrap(),
        );
        assert_eq!(
            driver_key(&first.command, &a),
            driver_key(&second.command, &b)
        );
        let extra = |cwd: &str| {
            [
                format!("-fdebug-compilation-dir={cwd}"),
                format!("-fcoverage-compilation-dir={cwd}"),
                format!("-I{cwd}/include"),
                format!("{cwd}x"),
            ]
        };
        let dry = |j: &BackendJob, cwd: &str| {
            let extra = extra(cwd);
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            dry_run(j, &extra)
        };
        let template = Cc1Template::from_dry_run(&dry(&first, "/build"), &a).unwrap();
        let command = template.command(&b);
        assert!(command.contains(&"-fdebug-compilation-dir=/lease/2".to_string()));
        assert!(command.contains(&"-fcoverage-compilation-dir=/lease/2".to_string()));
        // Not at a path's start, or not a whole directory name: left as it was.
        assert!(command.contains(&"-I/build/include".to_string()));
        assert!(command.contains(&"/buildx".to_string()));
        assert!(!template.matches_dry_run(&dry(&second, "/lease/2"), &b));
    }

    #[test]
    fn a_command_names_the_files_of_its_job() {
        let j = job("a/one.o", "/w/a/one.o.thinlto.bc", "/w/a/one.o.native.o");
        let of_job = JobFiles::of(&j).unwrap();
        let of_command = JobFiles::from_command(&j.command, &j.cwd).unwrap();
        assert_eq!(
            (of_job.module, of_job.shard, of_job.native),
            (of_command.module, of_command.shard, of_command.native)
        );
        assert!(JobFiles::from_command(&j.command[..j.command.len() - 2], &j.cwd).is_none());
    }

    #[test]
    fn no_key_when_a_command_names_a_jobs_files_elsewhere() {
        let mut j = job("one.o", "/w/one.o.thinlto.bc", "/w/one.o.native.o");
        j.command
            .insert(1, "-fprofile-sample-use=one.o.prof".into());
        assert_eq!(driver_key(&j.command, &JobFiles::of(&j).unwrap()), None);
    }

    proptest! {
        /// Whatever the arguments, `-###` output reads back as the commands printed.
        #[test]
        fn dry_run_commands_read_back_what_the_driver_prints(
            commands in prop::collection::vec(
                prop::collection::vec("[ -~\n\t]{0,12}", 1..6), 0..4),
            header in "[A-Za-z0-9 ./()]{0,30}",
        ) {
            let mut output = format!("{header}\n");
            for command in &commands {
                let args: Vec<&str> = command.iter().map(String::as_str).collect();
                output.push_str(&printed_command(&args));
            }
            prop_assert_eq!(dry_run_commands(&output), Some(commands));
        }

        /// Malformed output is refused or read without a panic.
        #[test]
        fn dry_run_commands_take_any_text(text in "[ -~\n\"\\\\]{0,80}") {
            let _ = dry_run_commands(&text);
        }
    }
}
