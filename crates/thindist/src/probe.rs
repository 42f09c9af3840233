//! What a back end imports, as a key ([`crate::cache::key::import_key`]): from a probe that runs
//! the back end only as far as its imports, or from the back end itself run with clang's
//! `-save-temps`.
//!
//! A change in one module changes the action key of every module that imports from it, though
//! most of them import exactly what they did before: a kernel's `kernel/fork.c` given one more
//! function made eleven other modules miss, and seven of them imported the same definitions as
//! before, byte for byte (lld's own ThinLTO cache misses on all eleven too). The key of what a
//! back end imported tells them apart. clang's `-save-temps` writes the module as the back end
//! has it after importing (`OUTPUT.3.import.bc`), with four more stages, next to its output.
//!
//! - The probe runs the job's own command with `-emit-llvm`, `-save-temps` and every
//!   optimization pass skipped (`-opt-bisect-limit=0`): the back end reads the module,
//!   promotes, internalizes and imports as the real one does, writes its stages, and stops
//!   before code generation. That costs a fifth to a half of the back end, most of it reading
//!   the bitcode, so it runs only where the cache may answer by the key it gives.
//! - [`compile_noting_imports`] runs the job's command with `-save-temps` added, at the cost of
//!   writing the stages (a few milliseconds), where the cache cannot answer yet but may next
//!   time.
//!
//! The options added act only on passes, on what is written and where, so the module after
//! import is the one the job's own command compiles; after that stage the back end reads
//! nothing but the shard, its options and the compiler, which the key counts. The stage does
//! not record the order of each value's uses, which steers some heuristics; the back end takes
//! that order from bitcode that carries none (clang writes ThinLTO bitcode without it), so it
//! follows from the module and the definitions imported, which the key counts too. Both write
//! stages beside the job's native object (the probe into a directory of its own), removed when
//! they are done (or interrupted).

use crate::cache::ActionKey;
use crate::events::JobOutcome;
use crate::exec::{interrupts, LocalExecutor};
use crate::job::BackendJob;
use std::path::{Path, PathBuf};

/// Makes clang write the back end's stages, named after its output.
const SAVE_TEMPS: [&str; 2] = ["-Xclang", crate::cc1::SAVE_TEMPS_OBJ];

/// What the probe adds to [`SAVE_TEMPS`]: stop before code generation, skip every pass, quietly.
const PROBE_OPTIONS: [&str; 5] = [
    "-emit-llvm",
    "-mllvm",
    "-opt-bisect-limit=0",
    "-mllvm",
    "-opt-bisect-verbose=false",
];

/// The stages `-save-temps` writes for a ThinLTO back end of output `OUT`, as `OUT.STAGE`.
const STAGES: [&str; 7] = [
    "0.preopt.bc",
    "1.promote.bc",
    "2.internalize.bc",
    "3.import.bc",
    "4.opt.bc",
    "5.precodegen.bc",
    "resolution.txt",
];

/// The suffix `-save-temps` gives the module after import.
const IMPORTED_SUFFIX: &str = ".3.import.bc";

/// A directory of one probe beside a job's native object, removed on drop and on interrupt.
struct ProbeDir {
    dir: tempfile::TempDir,
}

impl ProbeDir {
    fn beside(job: &BackendJob) -> Option<ProbeDir> {
        let native = job.cwd.join(&job.native);
        // The first job of a link to run makes the directory of the link's natives.
        let parent = native.parent()?;
        std::fs::create_dir_all(parent).ok()?;
        let dir = (tempfile::Builder::new().prefix(".thindist-probe-"))
            .tempdir_in(parent)
            .ok()?;
        interrupts().add_temp(dir.path());
        Some(ProbeDir { dir })
    }
}

impl Drop for ProbeDir {
    fn drop(&mut self) {
        interrupts().remove_temp(self.dir.path());
    }
}

/// `job`'s command with `options` before its `-o NATIVE` and `NATIVE` replaced by `output`;
/// `None` when its command does not name its native object as `-o NATIVE`, or asks for stages
/// of its own (`-save-temps`), which the probe must not take from the user.
fn with_options(job: &BackendJob, options: &[&str], output: &Path) -> Option<Vec<String>> {
    let saves_stages = |arg: &String| arg.contains("save-temps");
    if job.command.iter().any(saves_stages) {
        return None;
    }
    let native = job.native.to_str()?;
    let at = (job.command.windows(2)).rposition(|pair| pair[0] == "-o" && pair[1] == native)?;
    let mut command = job.command[..at].to_vec();
    command.extend(options.iter().map(|option| option.to_string()));
    command.extend(["-o".to_string(), output.to_str()?.to_string()]);
    command.extend_from_slice(&job.command[at + 2..]);
    Some(command)
}

/// What a back end imported, as the cache keeps it.
pub struct Imported {
    /// Its key ([`crate::cache::key::import_key`]).
    pub key: String,
    /// The suffixes of the promoted local symbols it refers to (`NAME.llvm.SUFFIX`): another
    /// module's change renames those it promoted, so the key will be another.
    pub promoted: Vec<u64>,
}

/// What `output`'s command imported, from the stage `-save-temps` wrote.
fn key_of_stages(output: &Path, job: &BackendJob, key: &ActionKey) -> Option<Imported> {
    let mut path = output.as_os_str().to_owned();
    path.push(IMPORTED_SUFFIX);
    let imported = std::fs::read(path).ok()?;
    let shard = crate::cache::shard::import_shard(&job.shard, &job.cwd).ok()?;
    Some(Imported {
        key: crate::cache::key::import_key(key, job, &imported, &shard.digest),
        promoted: promoted_among(&imported, shard.promoted_suffixes),
    })
}

/// Those of `suffixes` (each module's, from the shard) that some `NAME.llvm.SUFFIX` in
/// `module`'s bytes has. Bitcode keeps symbol names as they are, but end to end in one string
/// table, so where a suffix's digits end is not in the bytes: each suffix is looked for instead.
fn promoted_among(module: &[u8], mut suffixes: Vec<u64>) -> Vec<u64> {
    suffixes.sort_unstable();
    suffixes.dedup();
    suffixes.retain(|suffix| {
        let mark = format!(".llvm.{suffix}");
        module.windows(mark.len()).any(|w| w == mark.as_bytes())
    });
    suffixes
}

/// What `job` imports, by a probe; `None` when the probe cannot be made or fails.
/// Its output goes to a directory of its own, and with it whatever else the command derives
/// from its output's name (`-ftime-trace`, `-fsave-optimization-record`, split DWARF): the
/// probe must not write over the job's own.
pub fn probe(local: &LocalExecutor, job: &BackendJob, key: &ActionKey) -> Option<Imported> {
    let dir = ProbeDir::beside(job)?;
    let output = dir.dir.path().join("module.bc");
    let options: Vec<&str> = PROBE_OPTIONS.iter().chain(&SAVE_TEMPS).copied().collect();
    let probe = BackendJob {
        command: with_options(job, &options, &output)?,
        native: output.clone(),
        published: None,
        ..job.clone()
    };
    let (status, _) = local.run(&probe).ok()?;
    if !status.success() {
        return None;
    }
    key_of_stages(&output, job, key)
}

/// The stages `-save-temps` writes next to `native` (`NATIVE.3.import.bc`, ...,
/// `NATIVE.resolution.txt`), in `native`'s directory as it is now.
fn stages_of(native: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (native.parent(), native.file_name()) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let is_stage = |suffix: &str| {
        suffix == "resolution.txt"
            || (suffix.strip_suffix(".bc").and_then(|s| s.split_once('.'))).is_some_and(
                |(n, stage)| n.bytes().all(|b| b.is_ascii_digit()) && !stage.contains('.'),
            )
    };
    (entries.flatten())
        .filter(|entry| {
            let entry_name = entry.file_name();
            let entry_name = entry_name.to_string_lossy();
            (entry_name.strip_prefix(name.as_ref()))
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(is_stage)
        })
        .map(|entry| entry.path())
        .collect()
}

/// Runs `job` with `-save-temps` added and gives what it imported. The stages are
/// written next to its native object, whose name the command keeps (so does everything the
/// compiler derives from it), and removed once read. Should that compile fail, the job runs
/// again as it is, so that its failure is its own.
pub fn compile_noting_imports(
    local: &LocalExecutor,
    job: &BackendJob,
    key: &ActionKey,
) -> (JobOutcome, Option<Imported>) {
    use crate::exec::Executor as _;
    let native = job.cwd.join(&job.native);
    let Some(command) = with_options(job, &SAVE_TEMPS, &job.native) else {
        return (local.execute(job), None);
    };
    let noting = BackendJob {
        command,
        ..job.clone()
    };
    // What an interrupt must remove; after the compile, the stages are found by their names'
    // shape, should a compiler write more.
    let named: Vec<PathBuf> = (STAGES.iter())
        .map(|stage| {
            let mut path = native.as_os_str().to_owned();
            path.push(format!(".{stage}"));
            PathBuf::from(path)
        })
        .collect();
    for stage in &named {
        interrupts().add_temp(stage);
    }
    let outcome = local.execute(&noting);
    let imported_stage = (outcome.succeeded())
        .then(|| key_of_stages(&native, job, key))
        .flatten();
    for stage in stages_of(&native) {
        let _ = std::fs::remove_file(stage);
    }
    for stage in &named {
        interrupts().remove_temp(stage);
    }
    if !outcome.succeeded() {
        return (local.execute(job), None);
    }
    (outcome, imported_stage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::FlagsSource;

    fn job(command: &[&str]) -> BackendJob {
        BackendJob {
            module: "a.o".into(),
            shard: "w/a.o.thinlto.bc".into(),
            imports: vec!["b.o".into()],
            extra_inputs: Vec::new(),
            native: "w/a.native.o".into(),
            published: Some("a.thinlto-native.o".into()),
            label: None,
            command: command.iter().map(|arg| arg.to_string()).collect(),
            cwd: "/build".into(),
            flags_source: FlagsSource::LinkDerived,
            size: 1,
        }
    }

    #[test]
    fn options_go_before_the_output_which_may_be_another() {
        let before = [
            "clang-22",
            "-O2",
            "-x",
            "ir",
            "-fthinlto-index=w/a.o.thinlto.bc",
        ];
        let before: Vec<&str> = before.into_iter().chain(["-c", "a.o"]).collect();
        let job = job(&[&before[..], &["-o", "w/a.native.o", "-Wno-unused"]].concat());
        let command = with_options(&job, &PROBE_OPTIONS, Path::new("/tmp/p/module.bc")).unwrap();
        let mut expected = before.clone();
        expected.extend(PROBE_OPTIONS);
        expected.extend(["-o", "/tmp/p/module.bc", "-Wno-unused"]);
        assert_eq!(command, expected);
        let command = with_options(&job, &SAVE_TEMPS, &job.native).unwrap();
        assert_eq!(command[7..10], ["-Xclang", "-save-temps=obj", "-o"]);
        assert_eq!(command[10], "w/a.native.o");
    }

    #[test]
    fn promoted_suffixes_are_those_some_name_has() {
        let strtab = b"abtwice.llvm.1671589228595473539422.1.8x86_64g.llvm.45.cold";
        let named = vec![45, 16715892285954735394, 7, 45];
        assert_eq!(promoted_among(strtab, named), [45, 16715892285954735394]);
    }

    #[test]
    fn stages_are_the_files_save_temps_names_after_the_native_object() {
        let d = tempfile::tempdir().unwrap();
        let native = d.path().join("a.o.native.o");
        let names = [
            "a.o.native.o",
            "a.o.native.o.0.preopt.bc",
            "a.o.native.o.3.import.bc",
            "a.o.native.o.resolution.txt",
            "a.o.native.o.x.import.bc",
            "a.o.native.o.3.import.o",
            "b.o.native.o.3.import.bc",
            "a.o.native.o2.3.import.bc",
        ];
        for name in names {
            std::fs::write(d.path().join(name), "").unwrap();
        }
        let mut stages: Vec<String> = (stages_of(&native).iter())
            .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        stages.sort();
        assert_eq!(stages, &names[1..4]);
    }

    #[test]
    fn the_key_of_what_a_back_end_imports_follows_what_it_takes_not_the_rest_of_that_module() {
        use crate::cache::key::tests::{compiling_job_in, run, thin_link};
        use crate::cache::{action_key, Digests};
        let d = tempfile::tempdir().unwrap();
        let job = compiling_job_in(d.path());
        let local = LocalExecutor::new(false, false, false);
        let keys = |b_c: &str| {
            std::fs::write(d.path().join("b.c"), b_c).unwrap();
            let compile_b = ["clang-22", "-O2", "-flto=thin", "-c", "b.c", "-o", "b.o"];
            run(d.path(), &compile_b);
            thin_link(d.path(), "a.o", &[]);
            let key = action_key(&job, &Digests::default()).unwrap();
            let imported = probe(&local, &job, &key).expect("the probe gives a key");
            (key, imported.key)
        };
        let (first, imported) = keys("int b(int x) { return x * 3; }\n");
        // b.o gains a function a.o does not import: its action key changes, what it imports
        // does not.
        let (key, same) = keys("int b(int x) { return x * 3; }\nint c(int x) { return x; }\n");
        assert_ne!(first.hex, key.hex);
        assert_eq!(imported, same);
        // The body of b, which a.o imports, changes.
        let (key, changed) = keys("int b(int x) { return x * 4; }\nint c(int x) { return x; }\n");
        assert_ne!(imported, changed);
        // The compile that notes its imports gives the key the probe gives, and the object.
        let (outcome, noted) = compile_noting_imports(&local, &job, &key);
        assert!(outcome.succeeded(), "{}", outcome.output);
        assert_eq!(noted.map(|imported| imported.key), Some(changed));
        let native = d.path().join("n.o");
        assert_eq!(
            crate::inputs::kind_of_file(&native),
            crate::inputs::FileKind::Elf
        );
        let stages = (std::fs::read_dir(d.path()).unwrap())
            .filter(|entry| {
                let name = entry.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with(".thindist-probe-")
            })
            .count();
        assert_eq!(stages, 0, "the probes' directories are gone");
        assert_eq!(
            stages_of(&native),
            Vec::<PathBuf>::new(),
            "the compile's stages are gone"
        );
    }

    #[test]
    fn a_command_without_dash_o_native_or_with_stages_of_its_own_gets_no_options() {
        let output = Path::new("/tmp/p/module.bc");
        let joined = job(&["clang-22", "-c", "a.o", "-ow/a.native.o"]);
        assert!(with_options(&joined, &SAVE_TEMPS, output).is_none());
        let saving = job(&[
            "clang-22",
            "-save-temps=obj",
            "-c",
            "a.o",
            "-o",
            "w/a.native.o",
        ]);
        assert!(with_options(&saving, &SAVE_TEMPS, output).is_none());
    }
}
