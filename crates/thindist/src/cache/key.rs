//! Action keys. The recipe is explicit and versioned, as sccache's is: a format version, the
//! compiler's identity (its `--version` and the digest of its binary), the command with its
//! argv[0], its module, shard and output names and the build directory taken out, the contents
//! of the module and of the modules it imports, the shard with module paths replaced by
//! contents, and the path and content of every other input (profiles).
//!
//! Modules count by content only, as in LLVM's own ThinLTO cache: the same object linked from a
//! temporary name, from a link's private work directory, or from another checkout hits.

use super::digests::Digests;
use crate::job::BackendJob;
use anyhow::{Context, Result};
use sha2::{Digest as _, Sha256};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

const KEY_FORMAT: &str = "thindist-backend-key-v2";
/// The recipe of [`import_key`]: another recipe, so its keys never meet action keys.
const IMPORT_KEY_FORMAT: &str = "thindist-import-key-v1";

/// The name of the summary shard among a key's inputs: it counts by the digest
/// [`super::shard::shard_digest`] derives from it, and names no file in the build directory.
pub const SHARD_INPUT: &str = "<shard>";

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hashes one line of a recipe, given in its parts, then its newline: a kernel command's
/// hundred options made a string each when every line was formatted first.
pub fn hash_line(hasher: &mut Sha256, parts: &[&str]) {
    for part in parts {
        hasher.update(part.as_bytes());
    }
    hasher.update(b"\n");
}

/// Whether `text` could be a SHA-256 as [`sha256_hex`] writes it (64 hex digits).
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Which compiler a job runs, precisely enough that another version never shares its results.
#[derive(Clone, Debug)]
pub struct CompilerIdentity {
    pub version: String,
    pub binary_digest: String,
}

impl CompilerIdentity {
    /// The first line of `compiler --version` (`compiler` an absolute path).
    pub fn probe_version(compiler: &Path) -> Result<String> {
        let output = std::process::Command::new(compiler)
            .arg("--version")
            .output()
            .with_context(|| format!("cannot run {} --version", compiler.display()))?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string())
    }
}

/// A job's key and what went into it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ActionKey {
    pub hex: String,
    /// The compiler's identity, as one line.
    pub compiler: String,
    /// The SHA-256 (hex) of the command's lines as they enter the key: what tells a changed
    /// command from changed inputs, without the hundred arguments of a kernel command.
    pub command_digest: String,
    /// (path relative to the build directory, SHA-256 of the contents), module first.
    pub inputs: Vec<(String, String)>,
    /// The SHA-256 of the summary shard's bytes, where its digest depends on them and
    /// `inputs` alone: a later back end of the same module whose shard has the same bytes
    /// needs no digest of it (see [`ActionKey::holds_for`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_bytes: Option<String>,
}

impl ActionKey {
    /// Whether this key, made for an earlier back end of `job`'s module, is `job`'s key too,
    /// where the caller knows that the command's lines and the compiler are the same and that
    /// every file the key counts (module, imports, profiles) has the digest it lists: then it
    /// is when `job` counts the same files and its shard has the same bytes, for the shard's
    /// digest depends on nothing else. Reads the shard, where deriving its digest would parse
    /// it and look up the digest of each module it names.
    pub fn holds_for(&self, job: &BackendJob) -> bool {
        let Some(bytes) = &self.shard_bytes else {
            return false;
        };
        let names = (job.imports.iter().chain(&job.extra_inputs)).map(|p| relative(p, &job.cwd));
        let counted = self.inputs.get(2..).unwrap_or_default();
        counted.len() == job.imports.len() + job.extra_inputs.len()
            && counted
                .iter()
                .zip(names)
                .all(|((name, _), other)| *name == other)
            && std::fs::read(job.cwd.join(&job.shard)).is_ok_and(|read| sha256_hex(&read) == *bytes)
    }
}

/// The command with the compiler, this job's module, shard and output, and the build
/// directory replaced by placeholders, argument by argument.
pub fn normalized_args(job: &BackendJob) -> impl Iterator<Item = Cow<'_, str>> {
    let module = job.module.to_string_lossy().into_owned();
    let native = job.native.to_string_lossy().into_owned();
    let shard = job.shard.to_string_lossy().into_owned();
    let cwd = format!("{}/", job.cwd.display());
    let args = job.command.iter().skip(1).map(move |arg| {
        if *arg == module {
            return Cow::Borrowed("<module>");
        }
        let mut arg = Cow::Borrowed(arg.as_str());
        // Most options name none of these: checked before a copy is made, as a kernel
        // command's hundred options made this a quarter of a cache hit's cost.
        for (path, placeholder) in [(&native, "<native>"), (&shard, "<shard>"), (&cwd, "")] {
            if arg.contains(path.as_str()) {
                arg = Cow::Owned(arg.replace(path.as_str(), placeholder));
            }
        }
        arg
    });
    std::iter::once(Cow::Borrowed("<compiler>")).chain(args)
}

fn relative(path: &Path, cwd: &Path) -> String {
    crate::fsutil::relative_below(path, cwd)
        .to_string_lossy()
        .into_owned()
}

/// The part of a job's key that its summary shard and import list leave alone: the recipe's
/// lines up to its module's digest. It is made beside the thin link, which has not written the
/// shard and import list yet, so that the lookup after it hashes only the lines that remain (a
/// kernel command's hundred arguments are most of a key's cost).
#[derive(Clone)]
pub struct KeyPrefix {
    /// The job it was made for, as far as the lines depend on it: a prefix counts for no other.
    command: Vec<String>,
    cwd: PathBuf,
    module: PathBuf,
    shard: PathBuf,
    native: PathBuf,
    compiler: String,
    module_digest: String,
    /// The key's hasher after the module's line, and the digest of the command's lines.
    hasher: Sha256,
    command_digest: String,
}

impl KeyPrefix {
    pub fn new(job: &BackendJob, digests: &Digests) -> Result<KeyPrefix> {
        let identity = digests.compiler(&job.command[0])?;
        let compiler = format!("{} sha256:{}", identity.version, identity.binary_digest);
        let module_digest = digests
            .file(&job.cwd.join(&job.module))
            .with_context(|| format!("input of the back end of {}", job.name()))?;
        let mut hasher = sha2::Sha256::new();
        hash_line(&mut hasher, &[KEY_FORMAT]);
        hash_line(&mut hasher, &[&compiler]);
        let mut command_hasher = Sha256::new();
        for arg in normalized_args(job) {
            hash_line(&mut hasher, &["arg ", &arg]);
            hash_line(&mut command_hasher, &["arg ", &arg]);
        }
        hash_line(&mut hasher, &["module ", &module_digest]);
        Ok(KeyPrefix {
            command: job.command.clone(),
            cwd: job.cwd.clone(),
            module: job.module.clone(),
            shard: job.shard.clone(),
            native: job.native.clone(),
            compiler,
            module_digest,
            hasher,
            command_digest: hex::encode(command_hasher.finalize()),
        })
    }

    /// Whether this is `job`'s prefix: made from the same command, files and directory, each
    /// spelt the same (paths count in the key as text, where `Path`'s equality would take
    /// `dir/.` for `dir`).
    pub fn is_for(&self, job: &BackendJob) -> bool {
        let same = |a: &Path, b: &Path| a.as_os_str() == b.as_os_str();
        self.command == job.command
            && same(&self.cwd, &job.cwd)
            && same(&self.module, &job.module)
            && same(&self.shard, &job.shard)
            && same(&self.native, &job.native)
    }

    /// The native object of the job it was made for, in its directory.
    pub fn native_path(&self) -> PathBuf {
        self.cwd.join(&self.native)
    }

    /// The compiler's identity, as the key's line has it.
    pub fn compiler(&self) -> &str {
        &self.compiler
    }

    /// The digest of the command's lines ([`ActionKey::command_digest`]).
    pub fn command_digest(&self) -> &str {
        &self.command_digest
    }
}

/// The key of `job`. Nothing in it depends on where the module and the modules it imports lie
/// (they count by content, the shard by [`super::shard::shard_digest`]), so temporaries, moved
/// trees and other checkouts of the same sources share entries. Other inputs (profiles) count
/// by their path as the command names it and their content.
pub fn action_key(job: &BackendJob, digests: &Digests) -> Result<ActionKey> {
    action_key_from(None, job, digests)
}

/// The key of `job` ([`action_key`]), its first lines taken from `prefix` when that was made
/// for this job.
pub fn action_key_from(
    prefix: Option<KeyPrefix>,
    job: &BackendJob,
    digests: &Digests,
) -> Result<ActionKey> {
    let prefix = match prefix.filter(|prefix| prefix.is_for(job)) {
        Some(prefix) => prefix,
        None => KeyPrefix::new(job, digests)?,
    };
    let context = || format!("input of the back end of {}", job.name());
    let digest = |path: &Path| digests.file(&job.cwd.join(path)).with_context(context);
    let mut imports = Vec::with_capacity(job.imports.len());
    for path in &job.imports {
        imports.push((relative(path, &job.cwd), digest(path)?));
    }
    let modules: Vec<(PathBuf, &str)> = std::iter::once((&job.module, &prefix.module_digest))
        .chain(job.imports.iter().zip(imports.iter().map(|(_, d)| d)))
        .map(|(path, digest)| (job.cwd.join(path), digest.as_str()))
        .collect();
    let shard = super::shard::shard_digest(&job.shard, &job.cwd, digests, &modules)
        .with_context(context)?;
    let mut extra = Vec::with_capacity(job.extra_inputs.len());
    for path in &job.extra_inputs {
        extra.push((relative(path, &job.cwd), digest(path)?));
    }
    let KeyPrefix {
        compiler,
        module_digest,
        mut hasher,
        command_digest,
        ..
    } = prefix;
    hash_line(&mut hasher, &["shard ", &shard.digest]);
    let mut import_digests: Vec<&str> = imports.iter().map(|(_, d)| d.as_str()).collect();
    import_digests.sort_unstable();
    for d in import_digests {
        hash_line(&mut hasher, &["import ", d]);
    }
    for (name, d) in &extra {
        hash_line(&mut hasher, &["input ", name, " ", d]);
    }
    let mut inputs = vec![
        (relative(&job.module, &job.cwd), module_digest),
        (SHARD_INPUT.to_string(), shard.digest),
    ];
    inputs.extend(imports);
    inputs.extend(extra);
    Ok(ActionKey {
        hex: hex::encode(hasher.finalize()),
        compiler,
        command_digest,
        inputs,
        shard_bytes: shard.bytes,
    })
}

/// The name of the cache entry that says that a back end with `key`'s compiler, command and
/// module stored its result under the key of what it imported too ([`import_key`]): only then
/// may a later back end of the module find its result by that key, and is that key worth its
/// probe. The entry names no blob; its payload lists the suffixes of the promoted symbols that
/// back end imported ([`crate::probe::Imported::promoted`]), one per line.
pub fn import_keyed_marker(key: &ActionKey) -> String {
    hex::encode(module_hasher(&format!("{IMPORT_KEY_FORMAT} stored"), key).finalize())
}

/// A hasher over the `recipe` line and `key`'s compiler, command and module.
fn module_hasher(recipe: &str, key: &ActionKey) -> Sha256 {
    let mut hasher = Sha256::new();
    hash_line(&mut hasher, &[recipe]);
    hash_line(&mut hasher, &[&key.compiler]);
    hash_line(&mut hasher, &["command ", &key.command_digest]);
    let module = key.inputs.first().map_or("", |(_, digest)| digest);
    hash_line(&mut hasher, &["module ", module]);
    hasher
}

/// The key of `job`'s back end by what it imports rather than by the modules it imports from:
/// `imported` is the module as the back end has it after importing (the bytes of clang's
/// `-save-temps` file `.3.import.bc`, written by [`crate::probe`]). Every input of the back end
/// but the shard and the modules it imports from counts as in `key`, its action key; the shard
/// counts by `shard_digest`, without its modules ([`super::shard::ImportShard::digest`]), and
/// those modules count only
/// by the definitions and declarations the back end took from them, which `imported` holds.
/// So a module whose imports come out the same after a change elsewhere in a module it imports
/// from gets the same key, where its action key changes with that module's content (a change
/// in what it imports, or in the names the thin link gives promoted symbols, changes this key
/// too).
pub fn import_key(
    key: &ActionKey,
    job: &BackendJob,
    imported: &[u8],
    shard_digest: &str,
) -> String {
    let imported_digest = sha256_hex(imported);
    let mut hasher = module_hasher(IMPORT_KEY_FORMAT, key);
    hash_line(&mut hasher, &["shard ", shard_digest]);
    hash_line(&mut hasher, &["imported ", &imported_digest]);
    // Inputs other than the module, the shard and the modules imported from (profiles).
    for (name, digest) in key.inputs.iter().skip(2 + job.imports.len()) {
        hash_line(&mut hasher, &["input ", name, " ", digest]);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::job::FlagsSource;
    use proptest::prelude::*;
    use std::path::PathBuf;

    pub(crate) fn run(dir: &Path, command: &[&str]) {
        let out = std::process::Command::new(command[0])
            .args(&command[1..])
            .current_dir(dir)
            .output()
            .expect("clang-22 and ld.lld-22 must be installed");
        assert!(
            out.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The thin link of `module` (a.c's bitcode) and b.o in `dir`, with `options`, writing
    /// `module`'s shard and import list beside it.
    pub(crate) fn thin_link(dir: &Path, module: &str, options: &[&str]) {
        let mut command = vec![
            "ld.lld-22",
            "-shared",
            "--thinlto-index-only",
            "--thinlto-emit-imports-files",
        ];
        command.extend(options);
        command.extend([module, "b.o", "-o", "x.so"]);
        run(dir, &command);
    }

    /// The thin link of [`job_in`]'s `a.o` again, importing nothing this time: a.o gets another
    /// shard (and an empty import list) though neither module changed.
    pub(crate) fn thin_link_importing_nothing(dir: &Path) {
        thin_link(dir, "a.o", &["-mllvm", "-import-instr-limit=0"]);
    }

    /// [`job_in`]'s job for a.o with the back-end command clang runs, as a probe needs.
    pub(crate) fn compiling_job_in(dir: &Path) -> BackendJob {
        let mut job = job_in(dir, "a.o", "n.o");
        let command = [
            "clang-22",
            "-O2",
            "-x",
            "ir",
            "-fthinlto-index=a.o.thinlto.bc",
        ];
        job.command = (command.into_iter().chain(["-c", "a.o", "-o", "n.o"]))
            .map(String::from)
            .collect();
        job
    }

    /// A real ThinLTO job in `dir`: `module` (a.c's bitcode under that name) imports from b.o,
    /// with the shard the thin link wrote for it.
    pub(crate) fn job_in(dir: &Path, module: &str, native: &str) -> BackendJob {
        std::fs::write(
            dir.join("a.c"),
            "int b(int);\nint a(int x) { return b(x) + 1; }\n",
        )
        .unwrap();
        std::fs::write(dir.join("b.c"), "int b(int x) { return x * 3; }\n").unwrap();
        run(
            dir,
            &["clang-22", "-O2", "-flto=thin", "-c", "a.c", "-o", module],
        );
        run(
            dir,
            &["clang-22", "-O2", "-flto=thin", "-c", "b.c", "-o", "b.o"],
        );
        thin_link(dir, module, &[]);
        let shard = format!("{module}.thinlto.bc");
        BackendJob {
            module: module.into(),
            shard: shard.clone().into(),
            imports: vec!["b.o".into()],
            extra_inputs: vec![],
            native: native.into(),
            published: None,
            label: None,
            command: vec![
                "sh".into(),
                "-O2".into(),
                format!("-fthinlto-index={shard}"),
                "-c".into(),
                module.into(),
                "-o".into(),
                native.into(),
            ],
            cwd: dir.to_path_buf(),
            flags_source: FlagsSource::LinkDerived,
            size: 6,
        }
    }

    #[test]
    fn keys_do_not_depend_on_location_or_temporary_names() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let k1 = action_key(
            &job_in(d1.path(), "a.o", "a.1.111.native.o"),
            &Digests::default(),
        )
        .unwrap();
        let k2 = action_key(
            // The clang driver's temporary for a.c: its name sorts where a.o did among the
            // link's modules, as the module ids in the shard follow that order.
            &job_in(d2.path(), "a-1a2b3c.o", "a.1.222.native.o"),
            &Digests::default(),
        )
        .unwrap();
        assert_eq!(k1.hex, k2.hex);
    }

    #[test]
    fn the_key_is_the_digest_of_its_recipe_lines() {
        // The lines every cache so far was filled under: a change to how they are hashed must
        // not turn existing entries into misses.
        let d = tempfile::tempdir().unwrap();
        let mut job = job_in(d.path(), "a.o", "n.o");
        std::fs::write(d.path().join("prof.afdo"), "profile").unwrap();
        job.extra_inputs.push("prof.afdo".into());
        let key = action_key(&job, &Digests::default()).unwrap();
        let mut text = format!("{KEY_FORMAT}\n{}\n", key.compiler);
        let mut command = String::new();
        for arg in normalized_args(&job) {
            command.push_str(&format!("arg {arg}\n"));
        }
        assert_eq!(key.command_digest, sha256_hex(command.as_bytes()));
        text.push_str(&command);
        text.push_str(&format!(
            "module {}\nshard {}\n",
            key.inputs[0].1, key.inputs[1].1
        ));
        text.push_str(&format!("import {}\n", key.inputs[2].1));
        text.push_str(&format!("input prof.afdo {}\n", key.inputs[3].1));
        assert_eq!(key.hex, sha256_hex(text.as_bytes()));
    }

    /// A cache directory a digest memo can be saved in.
    fn memo_dir() -> tempfile::TempDir {
        let cache = tempfile::tempdir().unwrap();
        std::fs::create_dir(cache.path().join("tmp")).unwrap();
        cache
    }

    #[test]
    fn a_remembered_shard_digest_follows_its_modules() {
        let d = tempfile::tempdir().unwrap();
        let cache = memo_dir();
        let job = job_in(d.path(), "a.o", "n.o");
        let derived_lines = || {
            let memo = std::fs::read_to_string(cache.path().join("digests.memo")).unwrap();
            memo.lines().filter(|l| l.starts_with("D\t")).count()
        };
        let fresh = || action_key(&job, &Digests::default()).unwrap();
        let remembering = || {
            let digests = Digests::with_memo(cache.path());
            let key = action_key(&job, &digests).unwrap();
            digests.save().unwrap();
            key
        };
        let first = remembering();
        assert_eq!(first, fresh());
        assert_eq!(derived_lines(), 1);
        assert_eq!(remembering(), first);
        // b.o changes and the shard, not linked again, stays byte for byte what it was: the
        // remembered digest, filed under b.o's old content, must not answer.
        std::fs::write(d.path().join("b.c"), "int b(int x) { return x * 7; }\n").unwrap();
        run(
            d.path(),
            &["clang-22", "-O2", "-flto=thin", "-c", "b.c", "-o", "b.o"],
        );
        let after = remembering();
        assert_eq!(after, fresh());
        assert_ne!(after.inputs[1], first.inputs[1]);
        assert_eq!(derived_lines(), 2);
    }

    #[test]
    fn a_shard_naming_modules_it_was_not_given_is_not_remembered() {
        let d = tempfile::tempdir().unwrap();
        let cache = memo_dir();
        let job = job_in(d.path(), "a.o", "n.o");
        let digests = Digests::with_memo(cache.path());
        let module = d.path().join("a.o");
        let module_digest = digests.file(&module).unwrap();
        // The shard names b.o too, which this caller does not vouch for.
        let given = [(module, module_digest.as_str())];
        let digest = super::super::shard::shard_digest(&job.shard, d.path(), &digests, &given);
        let fresh = action_key(&job, &Digests::default()).unwrap();
        let digest = digest.unwrap();
        assert_eq!(digest.digest, fresh.inputs[1].1);
        assert_eq!(digest.bytes, None, "its bytes do not stand for its digest");
        digests.save().unwrap();
        let memo = std::fs::read_to_string(cache.path().join("digests.memo")).unwrap();
        assert!(!memo.lines().any(|l| l.starts_with("D\t")), "{memo}");
    }

    #[test]
    fn a_key_holds_for_a_later_job_only_with_the_same_shard_bytes_and_imports() {
        let d = tempfile::tempdir().unwrap();
        let job = job_in(d.path(), "a.o", "n.o");
        let key = action_key(&job, &Digests::default()).unwrap();
        assert!(key.shard_bytes.is_some());
        assert!(key.holds_for(&job));
        let without_imports = BackendJob {
            imports: vec![],
            ..job.clone()
        };
        assert!(!key.holds_for(&without_imports));
        let with_a_profile = BackendJob {
            extra_inputs: vec!["b.o".into()],
            ..job.clone()
        };
        assert!(!key.holds_for(&with_a_profile));
        let unknown_bytes = ActionKey {
            shard_bytes: None,
            ..key.clone()
        };
        assert!(!unknown_bytes.holds_for(&job));
        thin_link_importing_nothing(d.path());
        assert!(!key.holds_for(&job));
    }

    #[test]
    fn a_prefix_gives_its_own_job_the_same_key_and_any_other_job_none_of_its_lines() {
        let d = tempfile::tempdir().unwrap();
        let digests = Digests::default();
        let mut job = job_in(d.path(), "a.o", "n.o");
        // An argument naming the build directory, which the key leaves out.
        job.command
            .insert(1, format!("-fprofile-list={}/list", d.path().display()));
        let prefix = KeyPrefix::new(&job, &digests).unwrap();
        let key = action_key(&job, &digests).unwrap();
        assert_eq!(
            action_key_from(Some(prefix.clone()), &job, &digests).unwrap(),
            key
        );
        let mut others = vec![job.clone(), job.clone(), job.clone(), job.clone()];
        others[0].command[2] = "-O1".into();
        others[1].native = "m.o".into();
        // The same directory, spelt otherwise: paths count as the command's text does.
        others[2].cwd = PathBuf::from(format!("{}/.", d.path().display()));
        others[3].shard = "./a.o.thinlto.bc".into();
        others[3].command[3] = "-fthinlto-index=./a.o.thinlto.bc".into();
        for other in &others {
            assert_eq!(
                action_key_from(Some(prefix.clone()), other, &digests).unwrap(),
                action_key(other, &digests).unwrap(),
                "{other:?}"
            );
        }
    }

    #[test]
    fn keys_change_with_any_input_or_argument() {
        let d = tempfile::tempdir().unwrap();
        let job = job_in(d.path(), "a.o", "n.o");
        let base = action_key(&job, &Digests::default()).unwrap().hex;
        let mut other = job.clone();
        other.command[1] = "-O3".into();
        assert_ne!(action_key(&other, &Digests::default()).unwrap().hex, base);
        std::fs::write(d.path().join("b.c"), "int b(int x) { return x * 5; }\n").unwrap();
        run(
            d.path(),
            &["clang-22", "-O2", "-flto=thin", "-c", "b.c", "-o", "b.o"],
        );
        assert_ne!(action_key(&job, &Digests::default()).unwrap().hex, base);
    }

    #[test]
    fn missing_input_or_damaged_shard_names_the_module() {
        let d = tempfile::tempdir().unwrap();
        let mut job = job_in(d.path(), "a.o", "n.o");
        job.imports.push("gone.o".into());
        let err = format!("{:#}", action_key(&job, &Digests::default()).unwrap_err());
        assert!(err.contains("gone.o") && err.contains("a.o"), "{err}");
        job.imports.pop();
        std::fs::write(d.path().join(&job.shard), b"not bitcode").unwrap();
        let err = format!("{:#}", action_key(&job, &Digests::default()).unwrap_err());
        assert!(
            err.contains("a.o.thinlto.bc") && err.contains("not valid bitcode"),
            "{err}"
        );
    }

    proptest! {
        /// Normalization removes the build directory wherever it appears and nothing else.
        #[test]
        fn normalization_strips_only_the_build_directory(args in proptest::collection::vec("[a-z=./-]{0,12}", 0..6)) {
            let job = BackendJob {
                module: "a.o".into(),
                shard: "s.bc".into(),
                imports: vec![],
                extra_inputs: vec![],
                native: "n.o".into(),
                published: None,
                label: None,
                command: std::iter::once("cc".to_string()).chain(args.iter().map(|a| format!("/build/tree/{a}"))).collect(),
                cwd: PathBuf::from("/build/tree"),
                flags_source: FlagsSource::LinkDerived,
                size: 0,
            };
            let normalized: Vec<Cow<str>> = normalized_args(&job).collect();
            for (n, a) in normalized.iter().skip(1).zip(&args) {
                let expected = a.replace("n.o", "<native>").replace("s.bc", "<shard>");
                prop_assert_eq!(n, &expected);
            }
        }
    }
}
