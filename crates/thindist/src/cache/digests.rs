//! Content digests of files, each file read at most once per run however many jobs need it, and
//! not at all when a stat-validated memo kept in the cache directory (`digests.memo`) already
//! knows it, as ccache's direct mode and Ninja know unchanged inputs by their stat.
//!
//! A memo entry is trusted only while the file's absolute path, size, modification time,
//! inode, change time and device are those recorded, and only if the file was last changed
//! before the memo was written ("racily clean", as git calls it): a file modified within the
//! timestamp granularity of the moment its digest was taken could have changed without its
//! stat changing, so it is read again. The change time cannot be set back by a user, so a file
//! edited and given its old modification time (`touch -d`, `cp -p`) is read again too.
//!
//! The memo also keeps digests derived from content alone (a summary shard's, see
//! [`super::shard`]), filed under the SHA-256 of everything they were derived from, which no
//! stat needs to vouch for.
//!
//! The memo is only an optimisation: a missing, corrupt or foreign memo file is ignored, writes
//! are atomic (a temporary renamed into place), and concurrent processes each merge what is on
//! disk with what they learnt, so the worst a race costs is a file read again.

use anyhow::{anyhow, Context, Result};
use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::key::{is_sha256_hex, CompilerIdentity};

const MEMO_FORMAT: &str = "thindist-digest-memo-v1";
const MEMO_FILE: &str = "digests.memo";
/// Beyond this many entries a run keeps only what it used itself, so that a memo shared by
/// many trees cannot grow without end (and every link loads it: 50,000 entries are about 7 MB).
const MEMO_MAX_ENTRIES: usize = 50_000;

/// What identifies one version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    size: u64,
    mtime_ns: i64,
    ino: u64,
    ctime_ns: i64,
    dev: u64,
}

impl Stat {
    fn of(meta: &Metadata) -> Stat {
        Stat {
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ino: meta.ino(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            dev: meta.dev(),
        }
    }
}

/// Which of a file's stat must be as the memo recorded it for the memo's digest to hold.
#[derive(Clone, Copy)]
enum Vouch {
    AllOfStat,
    /// All but the change time (see [`Digests::blob_digest`]).
    AllButChangeTime,
}

impl Stat {
    /// Whether a file recorded at `self` that is now at `now` still holds what it held.
    fn vouches_for(&self, now: &Stat, vouch: Vouch) -> bool {
        match vouch {
            Vouch::AllOfStat => self == now,
            Vouch::AllButChangeTime => {
                Stat {
                    ctime_ns: now.ctime_ns,
                    ..*self
                } == *now
            }
        }
    }
}

/// The stat of a [`Known::Derived`] entry, which no file's stat vouches for.
const CONTENT_STAT: Stat = Stat {
    size: 0,
    mtime_ns: 0,
    ino: 0,
    ctime_ns: 0,
    dev: 0,
};

/// One memo line: what a file's stat vouches for (its digest, or a compiler's version line).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Known {
    File(thindist_reapi::Digest),
    Version(String),
    /// The digest of a question a program answered yes to (see [`Digests::remember_yes`]).
    Yes(String),
    /// A digest derived from content alone (see [`Digests::remember_derived`]), filed under
    /// the digest of that content in place of a path, with [`CONTENT_STAT`].
    Derived(String),
}

impl Known {
    fn tag(&self) -> &'static str {
        match self {
            Known::File(_) => "F",
            Known::Version(_) => "V",
            Known::Yes(_) => "Y",
            Known::Derived(_) => "D",
        }
    }
}

type MemoMap = HashMap<(&'static str, PathBuf), (Stat, Known)>;

/// The memo file's entries and its stat when it was read ([`Memo::load`]).
type Loaded = (MemoMap, Option<Stat>);

/// The memo file, read on a thread of its own from the moment the memo is opened: a link first
/// asks it after reading its inputs, and a kernel tree's memo took 2 ms to read on the way to
/// the thin link.
struct Loading {
    reader: Mutex<Option<std::thread::JoinHandle<Loaded>>>,
    read: OnceLock<Loaded>,
}

impl Loading {
    fn start(path: PathBuf) -> Loading {
        Loading {
            reader: Mutex::new(Some(std::thread::spawn(move || Memo::load(&path)))),
            read: OnceLock::new(),
        }
    }

    /// What was read, once it has been (an empty memo if the reader failed).
    fn get(&self) -> &Loaded {
        self.read.get_or_init(|| {
            let reader = self.reader.lock().unwrap().take();
            reader.and_then(|r| r.join().ok()).unwrap_or_default()
        })
    }
}

/// The persisted memo: what was loaded, and what this run learnt or confirmed.
struct Memo {
    path: PathBuf,
    tmp_dir: PathBuf,
    loading: Loading,
    this_run: Mutex<MemoMap>,
    /// Whether this run learnt anything since the memo was last saved. An entry it only
    /// confirmed is no news to the file: a run that confirms (an unchanged relink's check, the
    /// files a record lists after its save beside the final link) writes nothing, and where the
    /// memo is pruned, a save keeps what the run confirmed before it.
    unsaved: AtomicBool,
}

impl Memo {
    /// Reads `path`, keeping only entries that are not racily clean. Anything unreadable or
    /// not in this format is an empty memo. Returns the entries and the file's stat.
    fn load(path: &Path) -> (MemoMap, Option<Stat>) {
        let Ok(file) = File::open(path) else {
            return (MemoMap::new(), None);
        };
        let Ok(meta) = file.metadata() else {
            return (MemoMap::new(), None);
        };
        let stat = Stat::of(&meta);
        let mut text = String::new();
        if std::io::Read::read_to_string(&mut &file, &mut text).is_err() {
            return (MemoMap::new(), None);
        }
        let mut entries = parse_memo(&text).unwrap_or_default();
        entries.retain(|_, (known, _)| {
            known.mtime_ns < stat.mtime_ns && known.ctime_ns < stat.mtime_ns
        });
        (entries, Some(stat))
    }

    /// The entries the memo file held when it was read.
    fn loaded(&self) -> &MemoMap {
        &self.loading.get().0
    }

    /// What the memo knows of `path` at `stat`: learnt this run, or loaded and still true.
    fn lookup(&self, tag: &'static str, path: &Path, stat: &Stat) -> Option<Known> {
        self.lookup_vouched(tag, path, stat, Vouch::AllOfStat)
    }

    /// [`Memo::lookup`], with `vouch` saying which of the stat must be as recorded.
    fn lookup_vouched(
        &self,
        tag: &'static str,
        path: &Path,
        stat: &Stat,
        vouch: Vouch,
    ) -> Option<Known> {
        let key = (tag, path.to_path_buf());
        if let Some((known_stat, known)) = self.this_run.lock().unwrap().get(&key) {
            if known_stat.vouches_for(stat, vouch) {
                return Some(known.clone());
            }
        }
        let (known_stat, known) = self.loaded().get(&key)?;
        if !known_stat.vouches_for(stat, vouch) {
            return None;
        }
        self.this_run
            .lock()
            .unwrap()
            .insert(key, (*stat, known.clone()));
        Some(known.clone())
    }

    fn learn(&self, path: &Path, stat: Stat, known: Known) {
        // Files that are gone when the link ends: a link's work directory, and the objects the
        // clang driver writes straight into TMPDIR for a compile-and-link command.
        if crate::workdir::is_work_path(path) || crate::workdir::is_driver_temporary(path) {
            return;
        }
        self.learn_unchecked(path, stat, known);
    }

    fn learn_unchecked(&self, path: &Path, stat: Stat, known: Known) {
        self.this_run
            .lock()
            .unwrap()
            .insert((known.tag(), path.to_path_buf()), (stat, known));
        self.unsaved.store(true, Ordering::Relaxed);
    }

    /// Merges this run's entries into what is on disk now (other processes may have written
    /// it since; if none has, that is what was loaded, not read again) and replaces the file
    /// atomically; nothing when nothing is new since the last save.
    fn save(&self) -> Result<()> {
        use std::fmt::Write as _;
        let this_run = self.this_run.lock().unwrap();
        // Learning takes the lock too: nothing is learnt between this check and the save.
        if !self.unsaved.load(Ordering::Relaxed) {
            return Ok(());
        }
        let unchanged =
            std::fs::metadata(&self.path).ok().map(|m| Stat::of(&m)) == self.loading.get().1;
        let reloaded;
        let on_disk = match unchanged {
            true => self.loaded(),
            false => {
                reloaded = Memo::load(&self.path).0;
                &reloaded
            }
        };
        let keep_on_disk = on_disk.len() + this_run.len() <= MEMO_MAX_ENTRIES;
        let entries = (on_disk.iter())
            .filter(|(key, _)| keep_on_disk && !this_run.contains_key(*key))
            .chain(this_run.iter());
        let mut text = format!("{MEMO_FORMAT}\n");
        for ((_, path), (stat, known)) in entries {
            let Some(path) = path.to_str().filter(|p| !p.contains(['\t', '\n'])) else {
                continue;
            };
            let Stat {
                size,
                mtime_ns,
                ino,
                ctime_ns,
                dev,
            } = stat;
            let _ = write!(
                text,
                "{}\t{size}\t{mtime_ns}\t{ino}\t{ctime_ns}\t{dev}\t",
                known.tag()
            );
            let _ = match known {
                Known::File(d) => write!(text, "{}\t{}", d.hash, d.size),
                Known::Version(v) | Known::Yes(v) | Known::Derived(v) => write!(text, "{v}\t0"),
            };
            let _ = writeln!(text, "\t{path}");
        }
        let mut temp = crate::fsutil::new_temp_in(&self.tmp_dir)?;
        std::io::Write::write_all(&mut temp, text.as_bytes())
            .with_context(|| format!("cannot write {}", temp.path().display()))?;
        crate::fsutil::persist(temp, &self.path)?;
        self.unsaved.store(false, Ordering::Relaxed);
        Ok(())
    }
}

/// The entries of a memo file, or `None` if it is not one (foreign, truncated, corrupt).
fn parse_memo(text: &str) -> Option<MemoMap> {
    let mut lines = text.split_inclusive('\n');
    if lines.next()? != format!("{MEMO_FORMAT}\n") {
        return None;
    }
    // Sized for every line at once: growing it line by line was a quarter of loading a kernel
    // tree's memo, on the way to the thin link.
    let mut map = MemoMap::with_capacity(text.matches('\n').count());
    for line in lines {
        let line = line.strip_suffix('\n')?;
        let f: Vec<&str> = line.splitn(9, '\t').collect();
        let [tag, size, mtime, ino, ctime, dev, value, value_size, path] = f[..] else {
            return None;
        };
        let stat = Stat {
            size: size.parse().ok()?,
            mtime_ns: mtime.parse().ok()?,
            ino: ino.parse().ok()?,
            ctime_ns: ctime.parse().ok()?,
            dev: dev.parse().ok()?,
        };
        let (tag, known) = match tag {
            "F" if is_sha256_hex(value) => (
                "F",
                Known::File(thindist_reapi::Digest {
                    hash: value.to_string(),
                    size: value_size.parse().ok()?,
                }),
            ),
            "V" => ("V", Known::Version(value.to_string())),
            "Y" => ("Y", Known::Yes(value.to_string())),
            "D" if is_sha256_hex(path) && stat == CONTENT_STAT => {
                ("D", Known::Derived(value.to_string()))
            }
            _ => return None,
        };
        if tag != "D" && !Path::new(path).is_absolute() {
            return None;
        }
        map.insert((tag, PathBuf::from(path)), (stat, known));
    }
    Some(map)
}

type Pending = Arc<OnceLock<std::result::Result<thindist_reapi::Digest, String>>>;

/// Content digests of files, each file read once per run however many jobs import it, and
/// with a memo ([`Digests::with_memo`]) not at all while it is unchanged since an earlier run.
#[derive(Default)]
pub struct Digests {
    /// One cell per path: the first thread to ask computes it, the others wait for that.
    by_path: Mutex<HashMap<PathBuf, Pending>>,
    compilers: Mutex<HashMap<String, CompilerIdentity>>,
    memo: Option<Memo>,
}

impl Digests {
    /// Digests that remember files across runs in `cache_dir` (a thindist cache directory).
    pub fn with_memo(cache_dir: &Path) -> Digests {
        let path = cache_dir.join(MEMO_FILE);
        Digests {
            memo: Some(Memo {
                loading: Loading::start(path.clone()),
                path,
                tmp_dir: cache_dir.join("tmp"),
                this_run: Mutex::default(),
                unsaved: AtomicBool::new(false),
            }),
            ..Digests::default()
        }
    }

    /// Writes what this run learnt to the memo, if there is one.
    pub fn save(&self) -> Result<()> {
        match &self.memo {
            Some(memo) => memo.save(),
            None => Ok(()),
        }
    }

    /// The SHA-256 of a file, in hex.
    pub fn file(&self, path: &Path) -> Result<String> {
        Ok(self.file_digest(path)?.hash)
    }

    /// The file's digest as the Remote Execution API names blobs (hash and size).
    pub fn file_digest(&self, path: &Path) -> Result<thindist_reapi::Digest> {
        let cell = self
            .by_path
            .lock()
            .unwrap()
            .entry(path.to_path_buf())
            .or_default()
            .clone();
        cell.get_or_init(|| {
            (self.read_digest(path, Vouch::AllOfStat)).map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
    }

    /// Tells this run that `path`, just made as a copy or hard link of a file whose content was
    /// checked against `digest` (a cache hit), holds that content: it is not read again.
    pub fn made_file(&self, path: &Path, digest: thindist_reapi::Digest) {
        let known: Pending = Arc::new(OnceLock::from(Ok(digest)));
        self.by_path
            .lock()
            .unwrap()
            .insert(path.to_path_buf(), known);
    }

    /// The digest of a cache blob as it is now, with no answer kept for the rest of the run
    /// (a blob found damaged is removed, and may be stored again meanwhile): from the memo
    /// while the blob's stat vouches for it, but for its change time, else from its content.
    /// Every hit gives a blob a name in a link's work directory, which moves its change time
    /// twice; and the change time would only catch a writer of the cache who put a blob's
    /// modification time back, who could as well rewrite the memo.
    pub fn blob_digest(&self, path: &Path) -> Result<thindist_reapi::Digest> {
        self.read_digest(path, Vouch::AllButChangeTime)
    }

    /// The digest from the memo when the file's stat vouches for it, else from its content.
    fn read_digest(&self, path: &Path, vouch: Vouch) -> Result<thindist_reapi::Digest> {
        let context = || format!("cannot read {}", path.display());
        let abs = std::path::absolute(path).with_context(context)?;
        // The stat of the path asks one system call, where open, stat and close ask three: a
        // cache hit checks the module and every module it imports from.
        if let Some(memo) = &self.memo {
            let stat = std::fs::metadata(path).map(|meta| Stat::of(&meta));
            let known = stat.map(|stat| memo.lookup_vouched("F", &abs, &stat, vouch));
            if let Ok(Some(Known::File(digest))) = known {
                return Ok(digest);
            }
        }
        let mut file = File::open(path).with_context(context)?;
        let before = Stat::of(&file.metadata().with_context(context)?);
        let digest = thindist_reapi::Digest::of_reader(&mut file).with_context(context)?;
        // A file that changed while it was read is not remembered.
        if let (Some(memo), Ok(after)) = (&self.memo, file.metadata()) {
            if Stat::of(&after) == before {
                memo.learn(&abs, before, Known::File(digest.clone()));
            }
        }
        Ok(digest)
    }

    /// Whether `path` already is what writing `expected` there with `mode` (less the umask)
    /// would make, in which case it is given a new modification time, as that write would have
    /// given it, and kept: an output restored or published again unchanged costs no copy, and
    /// the memo learns its new stat, so the next run need not read it either. False (and
    /// nothing changed) when it is missing, differs in content or mode, or cannot be touched.
    pub fn touch_if_holds(
        &self,
        path: &Path,
        expected: &thindist_reapi::Digest,
        mode: u32,
    ) -> bool {
        let touch = || -> Result<bool> {
            let mut file = File::open(path)?;
            let meta = file.metadata()?;
            let before = Stat::of(&meta);
            if before.size != expected.size as u64 || !crate::fsutil::is_file_of_mode(&meta, mode)?
            {
                return Ok(false);
            }
            let abs = std::path::absolute(path)?;
            let known = self
                .memo
                .as_ref()
                .and_then(|m| m.lookup("F", &abs, &before));
            let digest = match known {
                Some(Known::File(digest)) => digest,
                _ => thindist_reapi::Digest::of_reader(&mut file)?,
            };
            if digest != *expected {
                return Ok(false);
            }
            crate::fsutil::set_modified_now(&file)?;
            let after = Stat::of(&file.metadata()?);
            if let Some(memo) = &self.memo {
                // Only the times may have moved; anything else means another writer.
                if (after.size, after.ino, after.dev) == (before.size, before.ino, before.dev) {
                    memo.learn(&abs, after, Known::File(digest));
                }
            }
            Ok(true)
        };
        touch().unwrap_or(false)
    }

    /// The identity of `compiler` (a path or a name on PATH): its `--version` is asked only
    /// when the memo does not know the binary's stat.
    pub fn compiler(&self, compiler: &str) -> Result<CompilerIdentity> {
        // Probed under the lock: jobs starting together wait for one probe, not run one each.
        let mut compilers = self.compilers.lock().unwrap();
        if let Some(id) = compilers.get(compiler) {
            return Ok(id.clone());
        }
        let path = find_compiler(compiler)?;
        let binary_digest = self
            .file(&path)
            .with_context(|| format!("cannot read compiler {}", path.display()))?;
        let stat = std::fs::metadata(&path).ok().map(|m| Stat::of(&m));
        let memoised = match (&self.memo, &stat) {
            (Some(memo), Some(stat)) => match memo.lookup("V", &path, stat) {
                Some(Known::Version(v)) => Some(v),
                _ => None,
            },
            _ => None,
        };
        let version = match memoised {
            Some(v) => v,
            None => {
                let version = CompilerIdentity::probe_version(&path)?;
                if let (Some(memo), Some(stat)) = (&self.memo, stat) {
                    memo.learn(&path, stat, Known::Version(version.clone()));
                }
                version
            }
        };
        let id = CompilerIdentity {
            version,
            binary_digest,
        };
        compilers.insert(compiler.to_string(), id.clone());
        Ok(id)
    }

    /// Runs `probe`, a question to `compiler` such as "do you take these options?", unless
    /// the memo remembers a yes to the same `question` from the same binary (by its stat).
    /// Only a yes is remembered: a no is asked again, and its error is the probe's.
    pub fn remember_yes(
        &self,
        compiler: &str,
        question: &str,
        probe: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let Some(memo) = &self.memo else {
            return probe();
        };
        let path = find_compiler(compiler)?;
        let answer = Known::Yes(crate::cache::key::sha256_hex(question.as_bytes()));
        let stat = std::fs::metadata(&path).map(|m| Stat::of(&m));
        if let Ok(stat) = &stat {
            if memo.lookup("Y", &path, stat).as_ref() == Some(&answer) {
                return Ok(());
            }
        }
        probe()?;
        if let Ok(stat) = stat {
            memo.learn(&path, stat, answer);
        }
        Ok(())
    }

    /// A digest derived from content alone, such as a summary shard's location-independent
    /// one: `derive` gives it and whether it may be remembered; with a memo, it is remembered
    /// under `key`, the SHA-256 (hex) of everything it was derived from, and not derived
    /// again while the memo holds it. Returns it and whether it may be remembered (true when
    /// it was).
    pub fn remember_derived(
        &self,
        key: impl FnOnce() -> String,
        derive: impl FnOnce() -> Result<(String, bool)>,
    ) -> Result<(String, bool)> {
        let Some(memo) = &self.memo else {
            return derive();
        };
        let key = PathBuf::from(key());
        if let Some(Known::Derived(digest)) = memo.lookup("D", &key, &CONTENT_STAT) {
            return Ok((digest, true));
        }
        let (digest, rememberable) = derive()?;
        if rememberable {
            memo.learn_unchecked(&key, CONTENT_STAT, Known::Derived(digest.clone()));
        }
        Ok((digest, rememberable))
    }
}

/// The absolute path of `compiler` (a path or a name on PATH).
fn find_compiler(compiler: &str) -> Result<PathBuf> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    crate::exec::find_program(compiler, &cwd)
        .with_context(|| format!("compiler {compiler} not found on PATH"))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    /// Sets a file's modification time (its change time becomes now); the cache's tests too.
    pub(in crate::cache) fn set_mtime(path: &Path, t: SystemTime) {
        File::options()
            .append(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    /// Makes the memo file look written long after every file in it, so none is racily clean.
    fn age_files_before_memo(cache: &Path) {
        set_mtime(
            &cache.join(MEMO_FILE),
            SystemTime::now() + Duration::from_secs(3600),
        );
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(cache.join("tmp")).unwrap();
        let file = dir.path().join("a.o");
        std::fs::write(&file, b"one").unwrap();
        (dir, cache, file)
    }

    /// A cache hit's native object, whose blob was checked as it was restored, is not read
    /// again when it is published.
    #[test]
    fn a_file_made_from_a_checked_blob_is_not_read_again_in_the_run() {
        let (_dir, cache, file) = setup();
        let digests = Digests::with_memo(&cache);
        let restored = thindist_reapi::Digest::of_bytes(b"one");
        digests.made_file(&file, restored.clone());
        std::fs::write(&file, b"two").unwrap();
        assert_eq!(digests.file_digest(&file).unwrap(), restored);
    }

    #[test]
    fn an_unchanged_file_is_not_read_again_and_a_changed_one_is() {
        let (_dir, cache, file) = setup();
        let first = Digests::with_memo(&cache);
        let d1 = first.file(&file).unwrap();
        first.save().unwrap();
        age_files_before_memo(&cache);
        // The memo answers for the file's current stat, so it is not read.
        let second = Digests::with_memo(&cache);
        let abs = std::path::absolute(&file).unwrap();
        let stat = Stat::of(&std::fs::metadata(&file).unwrap());
        assert_eq!(
            second.memo.as_ref().unwrap().lookup("F", &abs, &stat),
            Some(Known::File(thindist_reapi::Digest {
                hash: d1.clone(),
                size: 3
            }))
        );
        std::fs::write(&file, b"two").unwrap();
        let third = Digests::with_memo(&cache);
        assert_ne!(
            third.file(&file).unwrap(),
            d1,
            "a changed file is read again"
        );
    }

    /// A cache blob gains a name at each hit and loses it when the link ends, which moves its
    /// change time each time: the memo knows it still; but one changed in place through
    /// another name is read again.
    #[test]
    fn a_blob_given_names_stays_known_and_one_changed_in_place_does_not() {
        let (dir, cache, blob) = setup();
        let first = Digests::with_memo(&cache);
        let one = first.blob_digest(&blob).unwrap();
        let hit = dir.path().join("hit.o");
        std::fs::hard_link(&blob, &hit).unwrap();
        std::fs::remove_file(&hit).unwrap();
        first.save().unwrap();
        age_files_before_memo(&cache);
        std::fs::hard_link(&blob, &hit).unwrap();
        let second = Digests::with_memo(&cache);
        let abs = std::path::absolute(&blob).unwrap();
        let stat = Stat::of(&std::fs::metadata(&blob).unwrap());
        let memo = second.memo.as_ref().unwrap();
        assert_eq!(
            memo.lookup("F", &abs, &stat),
            None,
            "an input's change time counts"
        );
        assert_eq!(
            memo.lookup_vouched("F", &abs, &stat, Vouch::AllButChangeTime),
            Some(Known::File(one))
        );

        std::fs::write(&hit, b"two").unwrap();
        let third = Digests::with_memo(&cache);
        assert_eq!(
            third.blob_digest(&blob).unwrap(),
            thindist_reapi::Digest::of_bytes(b"two")
        );
    }

    /// A link saves the memo beside its final link, and again before it exits: the second save
    /// writes only what was learnt in between, and a run that only confirms entries writes
    /// nothing.
    #[test]
    fn a_save_with_nothing_new_leaves_the_memo_as_it_is() {
        let (dir, cache, file) = setup();
        let digests = Digests::with_memo(&cache);
        digests.file(&file).unwrap();
        digests.save().unwrap();
        let memo = cache.join(MEMO_FILE);
        let inode = || std::fs::metadata(&memo).unwrap().ino();
        let saved = inode();
        digests.save().unwrap();
        assert_eq!(inode(), saved, "written again with nothing new");
        // A later run that only confirms what the memo holds writes nothing either.
        age_files_before_memo(&cache);
        let confirming = Digests::with_memo(&cache);
        confirming.file(&file).unwrap();
        confirming.save().unwrap();
        assert_eq!(inode(), saved, "written again for an entry only confirmed");
        let other = dir.path().join("b.o");
        std::fs::write(&other, b"two").unwrap();
        digests.file(&other).unwrap();
        digests.save().unwrap();
        assert_ne!(inode(), saved, "what was learnt since is saved");
        assert!(std::fs::read_to_string(&memo).unwrap().contains("b.o"));
    }

    #[test]
    fn only_a_file_with_the_expected_content_and_mode_is_touched_and_then_remembered() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, cache, file) = setup();
        let old = SystemTime::now() - Duration::from_secs(3600);
        set_mtime(&file, old);
        let digests = Digests::with_memo(&cache);
        let one = digests.file_digest(&file).unwrap();
        let mtime = || std::fs::metadata(&file).unwrap().modified().unwrap();
        let other = thindist_reapi::Digest {
            hash: "0".repeat(64),
            size: 3,
        };
        assert!(!digests.touch_if_holds(&file, &other, 0o666));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!digests.touch_if_holds(&file, &one, 0o666), "another mode");
        assert!(!digests.touch_if_holds(&cache.join("missing"), &one, 0o666));
        assert_eq!(mtime(), old, "nothing touched");
        let created = 0o666 & !crate::fsutil::umask().unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(created)).unwrap();
        assert!(digests.touch_if_holds(&file, &one, 0o666));
        assert!(mtime() > old);
        // The memo knows the file under its new stat.
        let abs = std::path::absolute(&file).unwrap();
        let stat = Stat::of(&std::fs::metadata(&file).unwrap());
        assert_eq!(
            digests.memo.as_ref().unwrap().lookup("F", &abs, &stat),
            Some(Known::File(one))
        );
    }

    #[test]
    fn racily_clean_entries_are_not_trusted() {
        let (_dir, cache, file) = setup();
        let first = Digests::with_memo(&cache);
        first.file(&file).unwrap();
        first.save().unwrap();
        // The memo was written no later than the file last changed: within the timestamp
        // granularity, a change after the digest was taken would not show in the stat.
        set_mtime(&cache.join(MEMO_FILE), SystemTime::UNIX_EPOCH);
        assert!(Memo::load(&cache.join(MEMO_FILE)).0.is_empty());
    }

    #[test]
    fn a_derived_digest_is_remembered_only_when_its_deriver_allows() {
        let (_dir, cache, _) = setup();
        let key = |name: &'static str| move || crate::cache::key::sha256_hex(name.as_bytes());
        let d = Digests::with_memo(&cache);
        let derived = d.remember_derived(key("kept"), || Ok(("one".into(), true)));
        assert_eq!(derived.unwrap(), ("one".into(), true));
        let derived = d.remember_derived(key("not kept"), || Ok(("two".into(), false)));
        assert_eq!(derived.unwrap(), ("two".into(), false));
        d.save().unwrap();

        let d = Digests::with_memo(&cache);
        let remembered = d.remember_derived(key("kept"), || panic!("derived again"));
        assert_eq!(remembered.unwrap(), ("one".into(), true));
        let derived = d.remember_derived(key("not kept"), || Ok(("three".into(), false)));
        assert_eq!(derived.unwrap(), ("three".into(), false));
        let failed = d.remember_derived(key("failing"), || Err(anyhow!("unreadable")));
        assert!(failed.is_err());
    }

    #[test]
    fn corrupt_or_foreign_memos_are_ignored() {
        let (_dir, cache, file) = setup();
        for text in [
            "not a memo\n".to_string(),
            format!("{MEMO_FORMAT}\nF\t1\t2\n"),
            format!(
                "{MEMO_FORMAT}\nF\tx\t1\t1\t1\t1\t{}\t3\t/a\n",
                "0".repeat(64)
            ),
            format!("{MEMO_FORMAT}\nF\t3\t1\t1\t1\t1\tnothex\t3\t/a\n"),
            // A derived digest is filed under a SHA-256 with a zero stat, or the memo is bad.
            format!("{MEMO_FORMAT}\nD\t0\t0\t0\t0\t0\tdigest\t0\t/a\n"),
            format!(
                "{MEMO_FORMAT}\nD\t1\t0\t0\t0\t0\tdigest\t0\t{}\n",
                "0".repeat(64)
            ),
        ] {
            std::fs::write(cache.join(MEMO_FILE), text).unwrap();
            let d = Digests::with_memo(&cache);
            assert!(d.memo.as_ref().unwrap().loaded().is_empty());
            assert_eq!(
                d.file(&file).unwrap(),
                crate::cache::key::sha256_hex(b"one")
            );
            d.save().unwrap();
            assert!(parse_memo(&std::fs::read_to_string(cache.join(MEMO_FILE)).unwrap()).is_some());
        }
    }

    #[test]
    fn concurrent_savers_leave_a_valid_memo() {
        let (dir, cache, _) = setup();
        std::thread::scope(|s| {
            for t in 0..8 {
                let (cache, root) = (cache.clone(), dir.path().to_path_buf());
                s.spawn(move || {
                    for round in 0..20 {
                        let f = root.join(format!("f{t}-{round}"));
                        std::fs::write(&f, format!("{t} {round}")).unwrap();
                        let d = Digests::with_memo(&cache);
                        d.file(&f).unwrap();
                        d.save().unwrap();
                    }
                });
            }
        });
        let text = std::fs::read_to_string(cache.join(MEMO_FILE)).unwrap();
        assert!(parse_memo(&text).is_some_and(|m| !m.is_empty()));
        assert_eq!(std::fs::read_dir(cache.join("tmp")).unwrap().count(), 0);
    }

    /// A save writes what was loaded (not read again when nobody wrote the memo since) and,
    /// when another run saved in between, what that run learnt too.
    #[test]
    fn a_save_keeps_what_was_loaded_and_what_others_saved_since() {
        let (dir, cache, _) = setup();
        let files: Vec<PathBuf> = (0..3)
            .map(|i| {
                let file = dir.path().join(format!("g{i}"));
                std::fs::write(&file, format!("{i}")).unwrap();
                file
            })
            .collect();
        let remembered = || {
            let memo = Memo::load(&cache.join(MEMO_FILE)).0;
            let mut found: Vec<bool> = (files.iter())
                .map(|f| memo.contains_key(&("F", f.clone())))
                .collect();
            found.dedup();
            found
        };
        let first = Digests::with_memo(&cache);
        first.file(&files[0]).unwrap();
        first.save().unwrap();
        age_files_before_memo(&cache);
        let (second, third) = (Digests::with_memo(&cache), Digests::with_memo(&cache));
        second.file(&files[1]).unwrap();
        second.save().unwrap();
        age_files_before_memo(&cache);
        third.file(&files[2]).unwrap();
        third.save().unwrap();
        age_files_before_memo(&cache);
        assert_eq!(remembered(), [true]);
        // Nothing learnt, nothing written since it was loaded: all of it is kept.
        Digests::with_memo(&cache).save().unwrap();
        age_files_before_memo(&cache);
        assert_eq!(remembered(), [true]);
    }

    #[test]
    fn driver_temporaries_and_work_files_are_not_remembered() {
        let (_dir, cache, kept) = setup();
        let temporary = tempfile::NamedTempFile::new().unwrap();
        let work = tempfile::Builder::new()
            .prefix("thindist-")
            .tempdir()
            .unwrap();
        let work_file = work.path().join("archives/0-a.o");
        std::fs::create_dir_all(work_file.parent().unwrap()).unwrap();
        std::fs::write(&work_file, b"member").unwrap();
        let d = Digests::with_memo(&cache);
        for path in [&kept, &temporary.path().to_path_buf(), &work_file] {
            d.file(path).unwrap();
        }
        let learnt = d.memo.as_ref().unwrap().this_run.lock().unwrap().len();
        assert_eq!(learnt, 1, "only the file that outlives the link");
    }

    #[test]
    fn one_file_asked_for_by_many_threads_is_read_once() {
        let (_dir, cache, file) = setup();
        let d = Digests::with_memo(&cache);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| d.file(&file).unwrap());
            }
        });
        assert_eq!(d.memo.as_ref().unwrap().this_run.lock().unwrap().len(), 1);
        assert_eq!(d.by_path.lock().unwrap().len(), 1);
    }
}
