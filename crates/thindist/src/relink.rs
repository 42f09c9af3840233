//! An unchanged link does no work: when a link's command, linker, compilers, output-affecting
//! settings, every file it reads and every module's back-end flags equal those of an earlier
//! successful link, its outputs stay or come back (the output, which must be as that link
//! wrote it, gets a new modification time; natives published beside bitcode come from the
//! cache where they changed) and what its final link printed is printed again, without a thin
//! link, back ends or final link.
//!
//! Two levels, as ccache's direct mode: a lookup key over what is known before reading any
//! input (thindist itself, the build directory, the linker, the link's tokens, which file each
//! `-lNAME` names, the settings) names a record in the cache; the record lists every file the
//! link read, as the final link's own `--dependency-file` listed them (scripts, version
//! scripts, libraries and what linker scripts such as `libc.so` pull in), plus the bitcode
//! inputs and archive members, each with its digest (from the stat-validated memo, so unchanged
//! files are not read), and one digest over every module's compiler identity and back-end
//! flags, looked up again on each check (a kbuild `.cmd` file can change while the bitcode does
//! not). Anything different, an output missing or changed since, a blob gone from the cache, or
//! an option whose side outputs would not be restored (`-Map`, `--why-extract`,
//! `--save-temps`, ...) falls through to the full link.

use crate::cache::key::hash_line;
use crate::cache::{CacheConfig, Digests, DiskCache};
use crate::flags::FlagSources;
use crate::fsutil;
use crate::job::BackendJob;
use crate::linkargs::Item;
use crate::ltoopts::LinkCodegen;
use crate::thinlink::{Prepared, PreparedLink};
use anyhow::{Context, Result};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

const RECORD_FORMAT: &str = "thindist-link-record-v2";

/// Link options that write files besides the output (or keep work files): a link with one of
/// them always runs, so that those files are written as lld writes them.
const SIDE_OUTPUTS: &[&str] = &[
    "Map",
    "dependency-file",
    "why-extract",
    "reproduce",
    "save-temps",
    "thinlto-index-only",
    "thinlto-emit-imports-files",
    "lto-obj-path",
    "obj-path",
    "time-trace",
    "time-trace-file",
    "lto-stats-file",
    "stats-file",
    "opt-remarks-filename",
    "lto-opt-remarks-filename",
    "print-archive-stats",
    "thinlto-cache-dir",
    "dwo_dir",
    "emit-llvm",
    "emit-asm",
    "lto-emit-asm",
    "lto-emit-llvm",
    "out-implib",
];

/// What an earlier successful link read and wrote.
#[derive(serde::Serialize, serde::Deserialize)]
struct LinkRecord {
    /// Every file the link read (absolute path, SHA-256).
    inputs: Vec<(PathBuf, String)>,
    /// Over every bitcode module's compiler identity and back-end flags.
    flags: String,
    modules: usize,
    /// The output and the BLAKE3 hash of what the link wrote there; `None` when it is not a
    /// regular file (`/dev/null`). A restore needs the output as it was, so its content is not
    /// kept (a copy of every program linked would double the cache). BLAKE3, not SHA-256 as
    /// elsewhere: it is taken after the final link, at the end of the critical path (a kernel's
    /// `vmlinux.o`, 6 MB: 1.3 ms against SHA-256's 4.3, and no copy with a mapping), and only
    /// this record compares it.
    output_blake3: Option<(PathBuf, String)>,
    /// Natives published beside bitcode, whose contents are the entry's blobs.
    published: Vec<PathBuf>,
    /// What the final link printed.
    printed: String,
}

/// The part of a link's record computed while its final link runs.
pub struct RecordStart {
    inputs: Vec<(PathBuf, String)>,
    flags: String,
    modules: usize,
    published: Vec<PathBuf>,
    blobs: Vec<thindist_reapi::Digest>,
}

/// The restore check and the record of one link, which both need the same keys.
pub struct Relink<'a> {
    link: &'a PreparedLink,
    codegen: &'a LinkCodegen,
    cwd: &'a Path,
    cache: DiskCache,
    digests: &'a Digests,
    sources: FlagSources,
    key: String,
    output: PathBuf,
    quiet: bool,
}

impl<'a> Relink<'a> {
    /// The relink of this link, or `None` when it cannot have one: no cache, work files kept,
    /// or an option with side outputs.
    pub fn new(
        (linker, driver): (&str, Option<&str>),
        link: &'a PreparedLink,
        codegen: &'a LinkCodegen,
        settings: &crate::driver::LdSettings,
        cwd: &'a Path,
        sources: FlagSources,
        digests: &'a Digests,
    ) -> Option<Relink<'a>> {
        if settings.keep_work || has_side_outputs(link) {
            tracing::debug!("no relink record: work files kept, or an option with side outputs");
            return None;
        }
        // Quietly: the full path opens the cache again and says why it cannot be used.
        let cache = settings
            .cache
            .as_ref()
            .and_then(|c: &CacheConfig| DiskCache::open(c).ok())?;
        let key = lookup_key((linker, driver), link, settings, cwd, digests)
            .map_err(|err| tracing::debug!("no relink record: {err:#}"))
            .ok()?;
        let output = cwd.join(link.args.output().unwrap_or("a.out"));
        Some(Relink {
            link,
            codegen,
            cwd,
            sources: sources.with_records(Some(cache.records_dir())),
            cache,
            digests,
            key,
            output,
            quiet: link.bitcode_is_all_temporary() && !settings.verbose,
        })
    }

    /// Restores the outputs of an earlier identical link and prints what it printed; false
    /// (having changed nothing) when anything differs.
    pub fn restore(&self) -> bool {
        match self.try_restore() {
            Ok(Some(modules)) => {
                if !self.quiet {
                    eprintln!(
                        "thindist: {} unchanged since an earlier link of the same inputs and flags: restored from the cache without a thin link, {modules} modules; cache {modules} hits, 0 misses",
                        self.link.args.output().unwrap_or("a.out")
                    );
                }
                let _ = self.cache.record_last_run(&crate::cache::store::LastRun {
                    hits: modules as u64,
                    misses: 0,
                });
                self.log_restore();
                true
            }
            Ok(None) => false,
            Err(err) => {
                tracing::debug!("no relink from the cache: {err:#}");
                false
            }
        }
    }

    /// Notes the restore in the link's build log, for `thindist explain`.
    fn log_restore(&self) {
        let path = self.cache.build_log_path(&self.output);
        let mut log = crate::buildlog::BuildLog::load(&path);
        log.restored = true;
        if let Err(err) = log.save(&path) {
            tracing::debug!("{err:#}");
        }
    }

    fn try_restore(&self) -> Result<Option<usize>> {
        let Some((blobs, payload)) = self.cache.get_entry(&self.key)? else {
            return Ok(None);
        };
        let record: LinkRecord = serde_json::from_slice(&payload)?;
        if record.published.len() != blobs.len() {
            return Ok(None);
        }
        for (path, digest) in &record.inputs {
            if self.digests.file(path).ok().as_ref() != Some(digest) {
                tracing::debug!("relink: {} changed", path.display());
                return Ok(None);
            }
        }
        let output = match &record.output_blake3 {
            Some((path, hash)) => match content_blake3(path) {
                Ok(found) if found == *hash => Some(path),
                _ => {
                    tracing::debug!("relink: the output is missing or changed");
                    return Ok(None);
                }
            },
            None => {
                if !std::fs::metadata(&self.output).is_ok_and(|m| !m.is_file()) {
                    return Ok(None);
                }
                None
            }
        };
        // Last of the checks: it looks up every module's flags again.
        if self.flags_digest()? != record.flags {
            tracing::debug!("relink: a module's flags changed");
            return Ok(None);
        }
        // Files that already hold what they would be given only get a new modification time.
        let mut stale = Vec::new();
        for (path, digest) in record.published.iter().zip(&blobs) {
            if !self
                .digests
                .touch_if_holds(path, digest, fsutil::NEW_FILE_MODE)
            {
                match self.cache.blob(digest, self.digests)? {
                    Some(blob) => stale.push((path, blob)),
                    None => return Ok(None),
                }
            }
        }
        for (path, blob) in stale {
            fsutil::publish(&blob, path)?;
        }
        if let Some(path) = output {
            let mode = self.output_mode();
            if !fsutil::touch_if_mode(path, mode) {
                // Its mode is not the one lld gives a new output: written again, as lld would.
                fsutil::publish_with_mode(path, path, mode)?;
            }
        }
        eprint!("{}", record.printed);
        Ok(Some(record.modules))
    }

    /// Starts the record of this link: what does not depend on the final link (inputs named
    /// on the link line and read by back ends, flags, natives stored as blobs), computed while
    /// the final link runs. `None` when that failed: the next relink only loses its shortcut.
    pub fn start_record(&self, jobs: &[BackendJob]) -> Option<RecordStart> {
        self.try_start_record(jobs)
            .map_err(|err| tracing::debug!("cannot record this link for relinks: {err:#}"))
            .ok()
    }

    fn try_start_record(&self, jobs: &[BackendJob]) -> Result<RecordStart> {
        let mut files: Vec<PathBuf> = self.link_inputs();
        // Profiles and other files the back ends read.
        files.extend(
            jobs.iter()
                .flat_map(|job| job.extra_inputs.iter().map(|p| job.cwd.join(p))),
        );
        let mut start = RecordStart {
            inputs: Vec::with_capacity(files.len()),
            flags: self.flags_digest()?,
            modules: jobs.len(),
            published: jobs
                .iter()
                .filter_map(|job| Some(job.cwd.join(job.published.as_ref()?)))
                .collect(),
            blobs: Vec::new(),
        };
        self.add_inputs(&mut start.inputs, files)?;
        for path in &start.published {
            // Published (or found holding its content) during this run: the memo knows it.
            let known = self.digests.file_digest(path).ok();
            start.blobs.push(self.cache.put_blob(path, known.as_ref())?);
        }
        Ok(start)
    }

    /// Records this link, whose final link succeeded having printed `printed`, for later
    /// relinks. Failing to record only costs the next relink its shortcut.
    pub fn record(&self, start: RecordStart, printed: &str) {
        if let Err(err) = self.try_record(start, printed) {
            tracing::debug!("cannot record this link for relinks: {err:#}");
        }
    }

    fn try_record(&self, start: RecordStart, printed: &str) -> Result<()> {
        let dependency_file = self
            .link
            .final_link_dependency_file()
            .context("the link names its own dependency file")?;
        let text = std::fs::read_to_string(self.cwd.join(dependency_file))?;
        let RecordStart {
            mut inputs,
            flags,
            modules,
            published,
            blobs,
        } = start;
        let read = parse_dependency_file(&text);
        self.add_inputs(&mut inputs, read.iter().map(|p| self.cwd.join(p)))?;
        let is_regular = std::fs::metadata(&self.output).is_ok_and(|m| m.is_file());
        let output_blake3 = match is_regular {
            true => Some((self.output.clone(), content_blake3(&self.output)?)),
            false => None,
        };
        let record = LinkRecord {
            inputs,
            flags,
            modules,
            output_blake3,
            published,
            printed: printed.to_string(),
        };
        self.cache
            .put_entry(&self.key, &blobs, &serde_json::to_vec(&record)?)
    }

    /// Adds `files` with their digests to `inputs`, but not files of the work directory (gone
    /// when the link ends) or files already there.
    fn add_inputs(
        &self,
        inputs: &mut Vec<(PathBuf, String)>,
        files: impl IntoIterator<Item = PathBuf>,
    ) -> Result<()> {
        let work_dir = fsutil::normalize(&self.cwd.join(&self.link.work_dir));
        let mut known: std::collections::HashSet<PathBuf> =
            inputs.iter().map(|(path, _)| path.clone()).collect();
        for file in files {
            let file = fsutil::normalize(&file);
            if file.starts_with(&work_dir) || !known.insert(file.clone()) {
                continue;
            }
            let digest = self.digests.file(&file)?;
            inputs.push((file, digest));
        }
        Ok(())
    }

    /// The files the link names as inputs, with the members of thin archives (regular
    /// archives count by their own content).
    fn link_inputs(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for (item, prepared) in self.link.args.items.iter().zip(&self.link.prepared) {
            let Item::Input(input) = item else { continue };
            files.push(self.cwd.join(&input.path));
            if let Some(Prepared::Archive { members }) = prepared {
                files.extend(members.iter().map(|m| self.cwd.join(&m.path)));
            }
        }
        files
    }

    /// One digest over every bitcode module's compiler identity and back-end flags, as the
    /// plan would look them up now.
    fn flags_digest(&self) -> Result<String> {
        let mut hasher = Sha256::new();
        let work_dir = self.link.work_dir.to_string_lossy().into_owned();
        let mut line = |parts: &[&str]| hash_line(&mut hasher, parts);
        let mut builder = crate::plan::job_builder(&self.sources, self.cwd, self.codegen);
        for (module, label) in self.link.bitcode_modules() {
            let (command, source) = builder.command_prefix(&module)?;
            let identity = self.digests.compiler(&command[0])?;
            // A member extracted into the work directory is known by ARCHIVE(MEMBER).
            let name = label.unwrap_or_else(|| module.to_string_lossy().replace(&work_dir, ""));
            line(&["module ", &name]);
            line(&[
                "compiler ",
                &identity.version,
                " sha256:",
                &identity.binary_digest,
            ]);
            line(&[&format!("source {source:?}").replace(&work_dir, "")]);
            for token in &command {
                line(&["option ", token]);
            }
        }
        Ok(hex::encode(hasher.finalize()))
    }

    /// The mode lld gives its output before the umask: executable unless relocatable.
    fn output_mode(&self) -> u32 {
        if self.link.args.is_relocatable() {
            0o666
        } else {
            0o777
        }
    }
}

/// The key that names a link's record: what is known before any input is read.
fn lookup_key(
    (linker, driver): (&str, Option<&str>),
    link: &PreparedLink,
    settings: &crate::driver::LdSettings,
    cwd: &Path,
    digests: &Digests,
) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut line = |text: &str| {
        hasher.update(text.as_bytes());
        hasher.update(b"\n");
    };
    line(RECORD_FORMAT);
    let exe = std::env::current_exe()?;
    line(&format!("thindist {}", digests.file(&exe)?));
    line(&format!("cwd {}", cwd.display()));
    let identity = digests.compiler(linker)?;
    line(&format!(
        "linker {linker} {} sha256:{}",
        identity.version, identity.binary_digest
    ));
    line(&format!("driver {driver:?}"));
    line(&format!("keep-natives {:?}", settings.keep_natives));
    line(&format!("compile-commands {:?}", settings.compile_commands));
    for item in &link.args.items {
        line(&format!("item {:?}", item.tokens()));
    }
    for library in link.args.library_files(cwd) {
        line(&format!("library {} {:?}", library.index, library.path));
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The BLAKE3 hash (hex) of the file at `path`, read through a mapping.
fn content_blake3(path: &Path) -> Result<String> {
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_mmap(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hasher.finalize().to_hex().to_string())
}

fn has_side_outputs(link: &PreparedLink) -> bool {
    link.args.items.iter().any(|item| {
        let (Item::Opt(_, tokens) | Item::Lto(_, tokens)) = item else {
            return false;
        };
        let body = tokens[0].trim_start_matches('-');
        let (name, value) = body.split_once('=').unwrap_or((body, ""));
        let name = match name {
            // `-plugin-opt=NAME=VALUE`, `-plugin-opt NAME=VALUE`
            "plugin-opt" => {
                let value = tokens.get(1).map(String::as_str).unwrap_or(value);
                value.split('=').next().unwrap_or_default()
            }
            _ => name,
        };
        SIDE_OUTPUTS.contains(&name)
    })
}

/// The files the first rule of a Makefile dependency file (as lld writes it) depends on.
fn parse_dependency_file(text: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for line in text.lines().skip(1) {
        let Some(name) = line.strip_prefix(' ') else {
            break;
        };
        let name = name.strip_suffix(" \\").unwrap_or(name);
        files.push(PathBuf::from(
            name.replace("\\ ", " ")
                .replace("\\#", "#")
                .replace("$$", "$"),
        ));
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_files_parse_as_lld_writes_them() {
        let text =
            "prog: \\\n v.map \\\n dir\\ with\\ space/a.o \\\n cost$$.o \\\n last.o\n\nv.map:\n";
        assert_eq!(
            parse_dependency_file(text),
            ["v.map", "dir with space/a.o", "cost$.o", "last.o"]
                .map(PathBuf::from)
                .to_vec()
        );
    }

    #[test]
    fn options_with_side_outputs_are_seen_in_every_spelling() {
        let link = |args: &[&str]| {
            let tokens: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            PreparedLink {
                args: crate::linkargs::LinkArgs::parse(&tokens).unwrap(),
                prepared: vec![],
                work_dir: PathBuf::from("/w"),
            }
        };
        for args in [
            &["-Map", "x.map"][..],
            &["--Map=x.map"],
            &["--why-extract=w"],
            &["-plugin-opt=obj-path=o"],
            &["-plugin-opt", "dwo_dir=d"],
            &["--save-temps"],
        ] {
            assert!(has_side_outputs(&link(args)), "{args:?}");
        }
        assert!(!has_side_outputs(&link(&["-o", "prog", "--gc-sections"])));
    }
}
