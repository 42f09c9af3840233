//! The local cache directory: content-addressed blobs (`blobs/SH/SHA256`, the bytes of a
//! native object or a linked output) and entries named by key (`entries/KE/KEY`), each a
//! header naming its blobs by SHA-256 and length, then an optional payload (a link record).
//!
//! Every write goes to a temporary file in the cache and is renamed into place, so a reader never
//! sees part of an entry or blob; every blob is checked against its name on every read (bytes
//! rot without a change of stat, so the digest memo is not asked), so a corrupt or truncated
//! one is deleted and rebuilt, never used. A hit is published into a link's private
//! work directory as a hard link to the blob (lld only reads it there, and the directory is
//! removed when the link ends); anything a user or a tool may change in place afterwards
//! (published natives, restored outputs) is a reflink or a copy, never a second name of the
//! blob. Entries are pruned least recently used first; a hit refreshes the entry's
//! modification time; blobs no entry names are removed with them. Concurrent processes only
//! ever rename whole files into place or delete them, so sharing a cache is safe: an entry
//! pruned away under a reader is a miss.
//!
//! Whoever can write the cache directory can make every later build link their object, so a
//! cache is only used when it is this user's alone (see `check_private`), unless it is
//! declared shared on purpose. The cache is an optimisation: when it cannot be used a build
//! warns once and goes on without it.

use super::Digests;
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

const MAGIC: &str = "thindist-cache-entry-v2";

/// How often a run prunes the cache, as lld's cache policy does by default: pruning lists every
/// entry, which a large cache should not pay on every link.
const PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20 * 60);

/// An entry used again within this long of its last refresh keeps its time: least recently used
/// is told at this grain, fine beside pruning every [`PRUNE_INTERVAL`], and a relink's every hit
/// no longer writes its entry's inode.
const REFRESH_GRAIN: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Temporary files older than this are left over from a run that died (or a full disk) and
/// are removed by pruning; writing one entry takes far less.
const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// Where the local cache lives and how it may be used.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
    /// Shared by several users on purpose: no ownership or permission checks.
    pub shared: bool,
}

impl CacheConfig {
    /// [`DiskCache::build_log_path`], without opening the cache.
    pub fn build_log_path(&self, output: &Path) -> PathBuf {
        build_log_path(&self.dir, output)
    }
}

pub struct DiskCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Set by the first failed read or write: the cache is off for the rest of the run, so a
    /// full or broken cache costs one warning, not one per job.
    failed: AtomicBool,
}

/// What the cache holds now.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CacheStats {
    /// Native objects.
    pub entries: u64,
    /// Records of links (see [`crate::relink`]).
    pub links: u64,
    pub bytes: u64,
}

/// One file of `entries/`.
struct EntryFile {
    path: PathBuf,
    blobs: Vec<thindist_reapi::Digest>,
    /// Last used, for pruning.
    used: SystemTime,
    /// A link record rather than a native object's entry.
    is_record: bool,
}

/// Hits and misses of the last run that used this cache.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LastRun {
    pub hits: u64,
    pub misses: u64,
}

/// The default cache directory: `$XDG_CACHE_HOME/thindist`, else `~/.cache/thindist`; none
/// without either, never a directory that others can write such as the temp directory.
pub fn default_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|h| h.is_absolute())
                .map(|h| h.join(".cache"))
        })
        .map(|d| d.join("thindist"))
}

/// Refuses a cache directory that someone else could have filled or could swap: `dir` must be
/// owned by this user and writable by nobody else, and every directory above it owned by this
/// user or root and not writable by others (unless sticky, as /tmp is; a group-writable parent
/// is fine when the group is the user's own, as with per-user groups).
fn check_private(dir: &Path) -> Result<()> {
    // SAFETY: geteuid and getegid cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let real = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve cache directory {}", dir.display()))?;
    let meta = std::fs::metadata(&real)
        .with_context(|| format!("cannot inspect cache directory {}", real.display()))?;
    let advice = "pass --cache-shared if it is shared on purpose";
    if meta.uid() != uid {
        bail!(
            "cache directory {} belongs to uid {}, not to you (uid {uid}); {advice}",
            real.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "cache directory {} is writable by others (mode {:o}); run chmod go-w on it or {advice}",
            real.display(),
            meta.mode() & 0o7777
        );
    }
    for parent in real.ancestors().skip(1) {
        let meta = std::fs::metadata(parent)
            .with_context(|| format!("cannot inspect {}", parent.display()))?;
        let sticky = meta.mode() & 0o1000 != 0;
        let writable_by_others =
            meta.mode() & 0o002 != 0 || (meta.mode() & 0o020 != 0 && meta.gid() != gid);
        if (meta.uid() != uid && meta.uid() != 0) || (writable_by_others && !sticky) {
            bail!(
                "cache directory {} lies in {}, which others can change (uid {}, mode {:o}); {advice}",
                real.display(),
                parent.display(),
                meta.uid(),
                meta.mode() & 0o7777
            );
        }
    }
    Ok(())
}

/// Parses sizes such as `10G`, `512M`, `100000`.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits
        .parse()
        .with_context(|| format!("invalid size {text:?} (use e.g. 10G, 512M)"))?;
    let mult: u64 = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => bail!("invalid size {text:?} (use e.g. 10G, 512M)"),
    };
    n.checked_mul(mult)
        .with_context(|| format!("size {text:?} is too large (the limit is 16 EiB)"))
}

impl DiskCache {
    /// Opens (creating it if need be) the cache `config` names, refusing one that is not the
    /// user's own unless it is shared on purpose.
    pub fn open(config: &CacheConfig) -> Result<DiskCache> {
        let dir = &config.dir;
        // Directories thindist creates are private, whatever the umask; a shared cache gets
        // what the umask allows, so that its group can write it.
        let mode = if config.shared { 0o777 } else { 0o700 };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(dir)
            .with_context(|| format!("cannot create cache directory {}", dir.display()))?;
        if !config.shared {
            check_private(dir)?;
        }
        for sub in ["entries", "blobs", "tmp", "logs", "records"] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir.join(sub))
                .with_context(|| {
                    format!("cannot create cache directory {}", dir.join(sub).display())
                })?;
        }
        Ok(DiskCache {
            dir: dir.to_path_buf(),
            max_bytes: config.max_bytes,
            failed: AtomicBool::new(false),
        })
    }

    /// The cache for a build, or none, with one warning, when it cannot be used: a build
    /// never fails because of its cache.
    pub fn open_for_build(config: &CacheConfig) -> Option<DiskCache> {
        DiskCache::open(config)
            .map_err(|err| crate::events::warn(format!("building without the cache: {err:#}")))
            .ok()
    }

    /// Runs a cache operation unless an earlier one failed; the first failure turns the cache
    /// off for the rest of the run and is the only one reported.
    fn guarded<T>(&self, off: T, op: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.failed.load(Ordering::Relaxed) {
            return Ok(off);
        }
        op().map_err(|err| {
            self.failed.store(true, Ordering::Relaxed);
            err.context("the cache is off for the rest of this run")
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The build logs of links, one per output path.
    pub fn logs_dir(&self) -> PathBuf {
        logs_dir(&self.dir)
    }

    /// The build log of the link that writes `output` (an absolute path): kept here rather
    /// than beside the output, which may be `/dev/null` or a throwaway probe.
    pub fn build_log_path(&self, output: &Path) -> PathBuf {
        build_log_path(&self.dir, output)
    }

    /// Where `thindist cc` files flags records under the object's content (`DIGEST.json`), so
    /// that they are found for archive members and copied or renamed objects as well.
    pub fn records_dir(&self) -> PathBuf {
        self.dir.join("records")
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        self.dir
            .join("entries")
            .join(&key[..2.min(key.len())])
            .join(key)
    }

    fn blob_path(&self, hash: &str) -> PathBuf {
        self.dir
            .join("blobs")
            .join(&hash[..2.min(hash.len())])
            .join(hash)
    }

    /// A temporary file in the cache's `tmp` directory made by `make` (given its name).
    fn temp<R>(
        &self,
        make: impl FnMut(&Path) -> std::io::Result<R>,
    ) -> Result<tempfile::NamedTempFile<R>> {
        crate::fsutil::temp_beside(&self.dir.join("tmp").join("entry"), make)
    }

    /// Puts the native object of the entry for `key` at `dest` (in a link's private work
    /// directory, where it may be a hard link to the blob) if there is a valid one, and
    /// returns its digest, checked against its content.
    pub fn get(
        &self,
        key: &str,
        dest: &Path,
        digests: &Digests,
    ) -> Result<Option<thindist_reapi::Digest>> {
        self.guarded(None, || {
            let Some((blobs, _)) = self.read_entry_unguarded(key)? else {
                return Ok(None);
            };
            let [blob] = blobs.as_slice() else {
                return Ok(None);
            };
            let Some(path) = self.blob_unguarded(blob, digests)? else {
                let _ = std::fs::remove_file(self.entry_path(key));
                return Ok(None);
            };
            // A link's natives are gone before its next link, so a hard link straight to
            // `dest` usually does (once its directory is made: the first native of each of a
            // kernel's 53 directories used to take the slower way); else a link or copy beside
            // it is renamed onto it.
            let linked = std::fs::hard_link(&path, dest).or_else(|err| match err.kind() {
                std::io::ErrorKind::NotFound => {
                    create_parent(dest).map_err(std::io::Error::other)?;
                    std::fs::hard_link(&path, dest)
                }
                _ => Err(err),
            });
            if linked.is_err() {
                let temp = crate::fsutil::temp_beside(dest, |temp| {
                    crate::fsutil::link_or_copy(&path, temp)
                })?;
                crate::fsutil::persist(temp, dest)?;
            }
            Ok(Some(blob.clone()))
        })
    }

    /// Stores `native` (a file in a link's private work directory, which nobody changes in
    /// place) under `key`.
    pub fn put(&self, key: &str, native: &Path) -> Result<()> {
        self.guarded((), || {
            let blob = self.store_blob(native, crate::fsutil::link_or_copy)?;
            self.write_entry(key, &[blob], b"")
        })
    }

    /// Stores a copy of `file` (one the user may change in place later, such as a linked
    /// output) as a blob, and returns its digest. `known` is the file's digest where the caller
    /// has it (from the digest memo): a blob stored already then costs no read.
    pub fn put_blob(
        &self,
        file: &Path,
        known: Option<&thindist_reapi::Digest>,
    ) -> Result<thindist_reapi::Digest> {
        self.guarded(None, || {
            if let Some(digest) = known.filter(|d| self.holds_blob(d)) {
                return Ok(Some(digest.clone()));
            }
            self.store_blob(file, crate::fsutil::clone_or_copy)
                .map(Some)
        })?
        .context("the cache is off")
    }

    fn holds_blob(&self, digest: &thindist_reapi::Digest) -> bool {
        std::fs::metadata(self.blob_path(&digest.hash)).is_ok_and(|m| m.len() == digest.size as u64)
    }

    /// Stores an entry under `key` that names `blobs` (stored already) and holds `payload`.
    pub fn put_entry(
        &self,
        key: &str,
        blobs: &[thindist_reapi::Digest],
        payload: &[u8],
    ) -> Result<()> {
        self.guarded((), || self.write_entry(key, blobs, payload))
    }

    /// The blobs and payload of the entry for `key`, if there is one.
    pub fn get_entry(&self, key: &str) -> Result<Option<(Vec<thindist_reapi::Digest>, Vec<u8>)>> {
        self.guarded(None, || self.read_entry_unguarded(key))
    }

    /// The path of the blob `digest` names, if it is there and intact (by its content, or by
    /// the stat the digest memo vouches for: a blob changed in place, through the name a hit
    /// gave it in a link's work directory say, has new times); a damaged one is removed.
    pub fn blob(
        &self,
        digest: &thindist_reapi::Digest,
        digests: &Digests,
    ) -> Result<Option<PathBuf>> {
        self.guarded(None, || self.blob_unguarded(digest, digests))
    }

    fn blob_unguarded(
        &self,
        digest: &thindist_reapi::Digest,
        digests: &Digests,
    ) -> Result<Option<PathBuf>> {
        let path = self.blob_path(&digest.hash);
        match digests.blob_digest(&path) {
            Ok(found) if found == *digest => Ok(Some(path)),
            Ok(_) => {
                warn_corrupt(&path);
                let _ = std::fs::remove_file(&path);
                Ok(None)
            }
            // Pruned, or never stored: a miss.
            Err(_) if !path.exists() => Ok(None),
            Err(err) => Err(err.context("cannot read a cache blob")),
        }
    }

    /// Stores `file` as a blob named by its content, made with `make` (a hard link or a copy).
    fn store_blob(
        &self,
        file: &Path,
        make: fn(&Path, &Path) -> std::io::Result<()>,
    ) -> Result<thindist_reapi::Digest> {
        let digest = thindist_reapi::Digest::of_file(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        if self.holds_blob(&digest) {
            return Ok(digest);
        }
        let path = self.blob_path(&digest.hash);
        let temp = self
            .temp(|temp| make(file, temp))
            .with_context(|| format!("cannot copy {} into the cache", file.display()))?;
        create_parent(&path)?;
        crate::fsutil::persist(temp, &path)
            .with_context(|| format!("cannot store cache blob {}", path.display()))?;
        Ok(digest)
    }

    fn write_entry(
        &self,
        key: &str,
        blobs: &[thindist_reapi::Digest],
        payload: &[u8],
    ) -> Result<()> {
        let mut bytes = MAGIC.to_string();
        for blob in blobs {
            bytes.push_str(&format!(" {} {}", blob.hash, blob.size));
        }
        bytes.push('\n');
        let mut bytes = bytes.into_bytes();
        bytes.extend_from_slice(payload);
        let mut temp = crate::fsutil::new_temp_in(&self.dir.join("tmp"))?;
        std::io::Write::write_all(&mut temp, &bytes)
            .with_context(|| format!("cannot write cache entry {}", temp.path().display()))?;
        let path = self.entry_path(key);
        create_parent(&path)?;
        crate::fsutil::persist(temp, &path)
            .with_context(|| format!("cannot store cache entry {}", path.display()))
    }

    fn read_entry_unguarded(
        &self,
        key: &str,
    ) -> Result<Option<(Vec<thindist_reapi::Digest>, Vec<u8>)>> {
        let path = self.entry_path(key);
        let mut bytes = Vec::new();
        // Opened for appending too, so that the same descriptor refreshes its time below; a
        // cache that is read-only to this user is read all the same.
        let file = std::fs::File::options()
            .read(true)
            .append(true)
            .open(&path)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Err(e),
                _ => std::fs::File::open(&path),
            });
        let (file, refreshed) = match file {
            Ok(f) => {
                let meta = f
                    .metadata()
                    .with_context(|| format!("cannot read cache entry {}", path.display()))?;
                // Sized from that stat: File's own read_to_end would ask the size again.
                bytes.reserve(meta.len() as usize);
                (&f).take(u64::MAX)
                    .read_to_end(&mut bytes)
                    .with_context(|| format!("cannot read cache entry {}", path.display()))?;
                (f, meta.modified().ok())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot open cache entry {}", path.display()))
            }
        };
        let Some((blobs, payload)) = parse_entry(&bytes) else {
            // An entry of an older format is simply gone; a damaged one is worth a word.
            if bytes.starts_with(MAGIC.as_bytes()) {
                warn_corrupt(&path);
            }
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        };
        // Refresh for least-recently-used pruning; a failure only makes pruning less exact.
        let now = SystemTime::now();
        let fresh = refreshed
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age < REFRESH_GRAIN);
        if !fresh {
            let _ = file.set_modified(now);
        }
        Ok(Some((blobs, payload.to_vec())))
    }

    /// Every entry: its path, the blobs it names, and when it was last used.
    fn entries(&self) -> Vec<EntryFile> {
        let mut out = Vec::new();
        for path in files_two_deep(&self.dir.join("entries")) {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let (blobs, is_record) = std::fs::read(&path)
                .ok()
                .and_then(|bytes| {
                    let (blobs, payload) = parse_entry(&bytes)?;
                    let is_record = !payload.is_empty() && !blobs.is_empty();
                    Some((blobs, is_record))
                })
                .unwrap_or_default();
            out.push(EntryFile {
                path,
                blobs,
                used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                is_record,
            });
        }
        out
    }

    pub fn stats(&self) -> CacheStats {
        let entries = self.entries();
        let links = entries.iter().filter(|e| e.is_record).count() as u64;
        // The rest name no blob: the markers of what back ends imported (`crate::probe`).
        let natives = (entries.iter())
            .filter(|e| !e.is_record && !e.blobs.is_empty())
            .count() as u64;
        CacheStats {
            entries: natives,
            links,
            bytes: self.blob_files().iter().map(|b| b.1).sum(),
        }
    }

    /// Every blob file: path, size, modification time.
    fn blob_files(&self) -> Vec<(PathBuf, u64, SystemTime)> {
        files_two_deep(&self.dir.join("blobs"))
            .into_iter()
            .filter_map(|path| {
                let meta = std::fs::metadata(&path).ok()?;
                let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                Some((path, meta.len(), modified))
            })
            .collect()
    }

    /// Deletes temporary files older than [`STALE_TEMP_AGE`], then least recently used entries
    /// until the blobs they name fit the size limit, then the blobs no entry names (unless
    /// younger than [`STALE_TEMP_AGE`]: another run may be about to name it). Returns how many
    /// entries were removed.
    pub fn prune(&self) -> usize {
        let is_stale =
            |modified: SystemTime| modified.elapsed().is_ok_and(|age| age > STALE_TEMP_AGE);
        for temp in std::fs::read_dir(self.dir.join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if temp
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(is_stale)
            {
                let _ = std::fs::remove_file(temp.path());
            }
        }
        let mut entries = self.entries();
        let mut total: u64 = self.blob_files().iter().map(|b| b.1).sum();
        entries.sort_by_key(|e| e.used);
        let mut removed = 0;
        let (mut named, mut dropped) = (HashSet::new(), HashSet::new());
        for EntryFile { path, blobs, .. } in entries {
            let hashes = blobs.iter().map(|b| b.hash.clone());
            if total <= self.max_bytes {
                named.extend(hashes);
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
            // A blob shared by several entries counts for each: pruning may stop a little early.
            total = total.saturating_sub(blobs.iter().map(|b| b.size as u64).sum());
            dropped.extend(hashes);
        }
        for (path, _, modified) in self.blob_files() {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !named.contains(&name) && (dropped.contains(&name) || is_stale(modified)) {
                let _ = std::fs::remove_file(&path);
            }
        }
        removed
    }

    /// Prunes if no run has done so in the last [`PRUNE_INTERVAL`]; returns entries removed.
    pub fn prune_if_due(&self) -> usize {
        let stamp = self.dir.join("last-prune");
        let due = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age >= PRUNE_INTERVAL);
        if !due {
            return 0;
        }
        // Stamp first, so that concurrent runs do not all prune at once.
        let _ = crate::fsutil::write_atomic(&stamp, b"");
        self.prune()
    }

    pub fn clear(&self) -> Result<()> {
        for entry in self.entries() {
            let _ = std::fs::remove_file(entry.path);
        }
        for (path, _, _) in self.blob_files() {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    pub fn record_last_run(&self, run: &LastRun) -> Result<()> {
        crate::fsutil::write_atomic(&self.dir.join("last-run.json"), &serde_json::to_vec(run)?)
    }

    pub fn last_run(&self) -> Option<LastRun> {
        serde_json::from_slice(&std::fs::read(self.dir.join("last-run.json")).ok()?).ok()
    }
}

/// The blobs an entry names and its payload, if its header is one of this format.
fn parse_entry(bytes: &[u8]) -> Option<(Vec<thindist_reapi::Digest>, &[u8])> {
    let newline = bytes.iter().position(|b| *b == b'\n')?;
    let header = std::str::from_utf8(&bytes[..newline]).ok()?;
    let mut parts = header.split(' ');
    if parts.next()? != MAGIC {
        return None;
    }
    let mut blobs = Vec::new();
    while let Some(hash) = parts.next() {
        let size = parts.next()?.parse::<i64>().ok()?;
        if !super::key::is_sha256_hex(hash) {
            return None;
        }
        blobs.push(thindist_reapi::Digest {
            hash: hash.to_string(),
            size,
        });
    }
    Some((blobs, &bytes[newline + 1..]))
}

fn logs_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("logs")
}

fn build_log_path(cache_dir: &Path, output: &Path) -> PathBuf {
    let name = super::key::sha256_hex(output.as_os_str().as_encoded_bytes());
    logs_dir(cache_dir).join(format!("{name}.json"))
}

fn warn_corrupt(path: &Path) {
    crate::events::warn(format!(
        "cache entry {} is corrupt; removing it and compiling again",
        path.display()
    ));
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display())),
        None => Ok(()),
    }
}

/// The files of `dir/*/*` (the layout of `entries/` and `blobs/`).
fn files_two_deep(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|shard| {
            std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|entry| entry.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::digests::tests::set_mtime;

    fn config(dir: &Path, max_bytes: u64) -> CacheConfig {
        CacheConfig {
            dir: dir.to_path_buf(),
            max_bytes,
            shared: false,
        }
    }

    fn cache(max: u64) -> (tempfile::TempDir, DiskCache) {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(&config(&dir.path().join("cache"), max)).unwrap();
        (dir, c)
    }

    /// A cache holding one entry, `key`, for a native object of 1,000 `byte`s.
    fn cache_holding(key: &str, byte: u8) -> (tempfile::TempDir, DiskCache) {
        let (dir, c) = cache(1 << 20);
        let native = dir.path().join("n.o");
        std::fs::write(&native, vec![byte; 1000]).unwrap();
        c.put(key, &native).unwrap();
        (dir, c)
    }

    fn blob_of(c: &DiskCache, key: &str) -> PathBuf {
        let (blobs, _) = c.get_entry(key).unwrap().unwrap();
        c.blob_path(&blobs[0].hash)
    }

    #[test]
    fn round_trip() {
        let (dir, c) = cache(1 << 20);
        let native = dir.path().join("n.o");
        std::fs::write(&native, b"\x7fELF object").unwrap();
        assert!(c
            .get("abcd", &dir.path().join("out.o"), &Digests::default())
            .unwrap()
            .is_none());
        c.put("abcd", &native).unwrap();
        assert!(c
            .get("abcd", &dir.path().join("out.o"), &Digests::default())
            .unwrap()
            .is_some());
        assert_eq!(
            std::fs::read(dir.path().join("out.o")).unwrap(),
            b"\x7fELF object"
        );
        assert_eq!(c.stats().entries, 1);
        // A hit onto an output that is there already replaces it, and leaves nothing beside.
        std::fs::remove_file(dir.path().join("out.o")).unwrap();
        std::fs::write(dir.path().join("out.o"), b"older").unwrap();
        assert!(c
            .get("abcd", &dir.path().join("out.o"), &Digests::default())
            .unwrap()
            .is_some());
        assert_eq!(
            std::fs::read(dir.path().join("out.o")).unwrap(),
            b"\x7fELF object"
        );
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["cache", "n.o", "out.o"]);
        // A hit into a directory not made yet makes it, and is the blob itself, hard linked.
        let deep = dir.path().join("sub/dir/out.o");
        let blob = c.get("abcd", &deep, &Digests::default()).unwrap().unwrap();
        use std::os::unix::fs::MetadataExt;
        let inode = |path: &Path| std::fs::metadata(path).unwrap().ino();
        assert_eq!(inode(&deep), inode(&c.blob_path(&blob.hash)));
        let names: Vec<_> = std::fs::read_dir(deep.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    /// A digest the caller already knows spares reading a file whose blob is stored; it never
    /// names a new blob, so a stale one cannot file content under the wrong name.
    #[test]
    fn a_known_digest_is_trusted_only_for_a_blob_already_stored() {
        let (dir, c) = cache(1 << 20);
        let file = dir.path().join("native.o");
        std::fs::write(&file, b"native").unwrap();
        let stored = c.put_blob(&file, None).unwrap();
        let stale = thindist_reapi::Digest::of_bytes(b"earlier content");
        std::fs::write(&file, b"changed").unwrap();
        let blob = c.put_blob(&file, Some(&stale)).unwrap();
        assert_eq!(blob, thindist_reapi::Digest::of_bytes(b"changed"));
        assert_eq!(
            std::fs::read(c.blob(&blob, &Digests::default()).unwrap().unwrap()).unwrap(),
            b"changed"
        );
        std::fs::remove_file(&file).unwrap();
        assert_eq!(c.put_blob(&file, Some(&stored)).unwrap(), stored);
    }

    #[test]
    fn entries_with_payloads_round_trip() {
        let (dir, c) = cache(1 << 20);
        let file = dir.path().join("prog");
        std::fs::write(&file, b"linked").unwrap();
        let blob = c.put_blob(&file, None).unwrap();
        c.put_entry("ee01", std::slice::from_ref(&blob), b"record")
            .unwrap();
        let (blobs, payload) = c.get_entry("ee01").unwrap().unwrap();
        assert_eq!((blobs, payload), (vec![blob.clone()], b"record".to_vec()));
        let path = c.blob(&blob, &Digests::default()).unwrap().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"linked");
        // A copy, not a second name: changing the file leaves the blob alone.
        std::fs::write(&file, b"changed").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"linked");
    }

    #[test]
    fn corrupt_and_truncated_blobs_and_entries_are_deleted_and_missed() {
        let (dir, c) = cache(1 << 20);
        let native = dir.path().join("n.o");
        std::fs::write(&native, vec![7u8; 1000]).unwrap();
        for damage in [
            |b: &mut Vec<u8>| {
                let n = b.len();
                b[n - 10] ^= 1
            },
            |b: &mut Vec<u8>| b.truncate(b.len() - 100),
        ] {
            c.put("k1", &native).unwrap();
            let path = blob_of(&c, "k1");
            let mut bytes = std::fs::read(&path).unwrap();
            damage(&mut bytes);
            std::fs::write(&path, bytes).unwrap();
            let dest = dir.path().join("out.o");
            assert!(c.get("k1", &dest, &Digests::default()).unwrap().is_none());
            assert!(!path.exists(), "a corrupt blob is removed");
            assert!(!c.entry_path("k1").exists(), "and the entry naming it");
            assert!(!dest.exists(), "nothing is written from a corrupt entry");
            std::fs::write(&native, vec![7u8; 1000]).unwrap();
        }
        c.put("k2", &native).unwrap();
        let entry = c.entry_path("k2");
        let text = std::fs::read_to_string(&entry).unwrap().replace(' ', "  ");
        std::fs::write(&entry, text).unwrap();
        assert!(c
            .get("k2", &dir.path().join("o.o"), &Digests::default())
            .unwrap()
            .is_none());
        assert!(!entry.exists(), "a damaged entry is removed");
    }

    /// A blob the digest memo vouches for is not read at a hit, but one changed in place
    /// through a name a hit gave it (the native object in a link's work directory) no longer
    /// matches its stat, and is caught.
    #[test]
    fn a_blob_changed_in_place_after_a_hit_is_caught_in_a_later_run() {
        let (dir, c) = cache_holding("k1", 7);
        let hit = dir.path().join("hit.o");
        let first = Digests::with_memo(c.dir());
        assert!(c.get("k1", &hit, &first).unwrap().is_some());
        first.save().unwrap();
        let memo = c.dir().join("digests.memo");
        set_mtime(
            &memo,
            SystemTime::now() + std::time::Duration::from_secs(3600),
        );
        let second = Digests::with_memo(c.dir());
        assert!(c
            .get("k1", &dir.path().join("again.o"), &second)
            .unwrap()
            .is_some());

        let blob = blob_of(&c, "k1");
        std::fs::write(&hit, vec![8u8; 1000]).unwrap();
        assert_eq!(
            std::fs::read(&blob).unwrap(),
            vec![8u8; 1000],
            "one file, two names"
        );
        let third = Digests::with_memo(c.dir());
        assert!(c
            .get("k1", &dir.path().join("o.o"), &third)
            .unwrap()
            .is_none());
        assert!(!blob.exists(), "a corrupt blob is removed");
    }

    #[test]
    fn prune_removes_least_recently_used_first() {
        let (dir, c) = cache(1500);
        for (i, key) in ["aa01", "aa02", "aa03"].iter().enumerate() {
            let native = dir.path().join(format!("n{i}.o"));
            std::fs::write(&native, vec![i as u8; 1000]).unwrap();
            c.put(key, &native).unwrap();
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + i as u64);
            set_mtime(&c.entry_path(key), t);
        }
        // Using the oldest makes it the newest.
        assert!(c
            .get("aa01", &dir.path().join("x.o"), &Digests::default())
            .unwrap()
            .is_some());
        assert_eq!(c.prune(), 2);
        assert!(c.entry_path("aa01").exists());
        assert!(!c.entry_path("aa02").exists() && !c.entry_path("aa03").exists());
        assert_eq!(
            c.blob_files().len(),
            1,
            "the blobs of pruned entries go with them"
        );
    }

    /// Used again soon, an entry keeps its time; used after the refresh grain, it gets a new one.
    #[test]
    fn an_entry_is_refreshed_at_most_once_per_grain() {
        let (dir, c) = cache_holding("cc01", 1);
        let entry = c.entry_path("cc01");
        let mtime = || std::fs::metadata(&entry).unwrap().modified().unwrap();
        let get = || c.get("cc01", &dir.path().join("x.o"), &Digests::default());
        let recent = SystemTime::now() - std::time::Duration::from_secs(60);
        set_mtime(&entry, recent);
        assert!(get().unwrap().is_some());
        assert_eq!(mtime(), recent, "refreshed a minute ago: kept");
        std::fs::remove_file(dir.path().join("x.o")).unwrap();
        let stale = SystemTime::now() - REFRESH_GRAIN - std::time::Duration::from_secs(1);
        set_mtime(&entry, stale);
        assert!(get().unwrap().is_some());
        assert!(
            mtime() > recent,
            "refreshed longer ago than the grain: new time"
        );
    }

    #[test]
    fn runs_prune_at_most_once_per_interval() {
        let (dir, c) = cache(500);
        let native = dir.path().join("n.o");
        std::fs::write(&native, vec![1u8; 1000]).unwrap();
        c.put("bb01", &native).unwrap();
        assert_eq!(c.prune_if_due(), 1, "the first run prunes");
        std::fs::remove_file(&native).unwrap();
        std::fs::write(&native, vec![2u8; 1000]).unwrap();
        c.put("bb02", &native).unwrap();
        assert_eq!(c.prune_if_due(), 0, "a run soon after does not");
        let long_ago = SystemTime::now() - PRUNE_INTERVAL - std::time::Duration::from_secs(1);
        set_mtime(&dir.path().join("cache/last-prune"), long_ago);
        assert_eq!(
            c.prune_if_due(),
            1,
            "once the interval has passed, a run prunes again"
        );
    }

    #[test]
    fn concurrent_writers_and_readers_never_see_bad_entries() {
        let (dir, _) = cache(1 << 30);
        let cache_dir = dir.path().join("cache");
        std::thread::scope(|s| {
            for t in 0..8 {
                let cache_dir = cache_dir.clone();
                let root = dir.path().to_path_buf();
                s.spawn(move || {
                    let c = DiskCache::open(&config(&cache_dir, 1 << 30)).unwrap();
                    let native = root.join(format!("n{t}.o"));
                    std::fs::write(&native, vec![42u8; 200_000]).unwrap();
                    for round in 0..50 {
                        let key = format!("ff{:02}", round % 5);
                        c.put(&key, &native).unwrap();
                        let dest = root.join(format!("out{t}.o"));
                        if c.get(&key, &dest, &Digests::default()).unwrap().is_some() {
                            assert_eq!(std::fs::read(&dest).unwrap(), vec![42u8; 200_000]);
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5Q").is_err());
        let err = parse_size("16777216T").unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        assert!(parse_size("99999999999999999999").is_err());
    }

    #[test]
    fn failed_put_leaves_no_temp_file_and_turns_the_cache_off() {
        let (dir, c) = cache(1 << 20);
        let native = dir.path().join("n.o");
        std::fs::write(&native, b"obj").unwrap();
        // The entry's shard directory cannot be created: a file is in its way.
        std::fs::write(dir.path().join("cache/entries/cc"), b"").unwrap();
        let err = c.put("cc01", &native).unwrap_err();
        assert!(format!("{err:#}").contains("off for the rest"), "{err:#}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("cache/tmp"))
                .unwrap()
                .count(),
            0
        );
        // Later calls do nothing and report nothing.
        c.put("dd01", &native).unwrap();
        assert!(!c.entry_path("dd01").exists());
        assert!(c
            .get("dd01", &dir.path().join("o.o"), &Digests::default())
            .unwrap()
            .is_none());
    }

    #[test]
    fn prune_removes_stale_temp_files_only() {
        let (dir, c) = cache(1 << 20);
        let tmp = dir.path().join("cache/tmp");
        let (old, fresh) = (tmp.join("entry.old"), tmp.join("entry.fresh"));
        std::fs::write(&old, b"x").unwrap();
        std::fs::write(&fresh, b"x").unwrap();
        set_mtime(&old, SystemTime::now() - STALE_TEMP_AGE * 2);
        c.prune();
        assert!(!old.exists() && fresh.exists());
    }

    #[test]
    fn caches_others_could_write_are_refused_unless_shared() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = |path: &Path, shared| {
            DiskCache::open(&CacheConfig {
                dir: path.to_path_buf(),
                max_bytes: 1,
                shared,
            })
        };
        // Created by thindist: private, even below a directory it also created.
        let fresh = dir.path().join("a/b/cache");
        open(&fresh, false).unwrap();
        for d in [&fresh, &dir.path().join("a/b")] {
            assert_eq!(std::fs::metadata(d).unwrap().mode() & 0o777, 0o700);
        }
        let open_dir = dir.path().join("open");
        std::fs::create_dir(&open_dir).unwrap();
        std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = open(&open_dir, false)
            .err()
            .expect("a world-writable cache is refused");
        assert!(format!("{err:#}").contains("writable by others"), "{err:#}");
        let err = open(&open_dir.join("cache"), false)
            .err()
            .expect("so is one inside it");
        assert!(
            format!("{err:#}").contains("which others can change"),
            "{err:#}"
        );
        open(&open_dir, true).unwrap();
        // A sticky world-writable parent (like /tmp) is fine.
        std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        open(&open_dir.join("cache2"), false).unwrap();
    }

    /// Needs root, to give a directory to another user.
    #[test]
    fn caches_of_other_users_are_refused() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: only root can make a directory owned by another user");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(54321), Some(54321)).unwrap();
        let config = CacheConfig {
            dir: theirs.clone(),
            max_bytes: 1,
            shared: false,
        };
        let err = DiskCache::open(&config).err().expect("refused");
        assert!(
            format!("{err:#}").contains("belongs to uid 54321"),
            "{err:#}"
        );
        assert!(DiskCache::open_for_build(&config).is_none());
        let mine = theirs.join("mine");
        std::fs::create_dir(&mine).unwrap();
        let err = DiskCache::open(&CacheConfig {
            dir: mine,
            ..config
        })
        .err()
        .expect("a cache in another user's directory is refused");
        assert!(
            format!("{err:#}").contains("which others can change"),
            "{err:#}"
        );
    }
}
