//! The local cache directory: one file per entry, named by its action key, holding a header
//! with the payload's SHA-256 and length, then the native object.
//!
//! Every write goes to a temporary file in the cache and is renamed into place, so a reader never
//! sees part of an entry; every read is checked against the header, so a corrupt or truncated
//! entry is deleted and rebuilt, never used. Entries are pruned least recently used first; a
//! hit refreshes the entry's modification time. Concurrent processes only ever rename whole
//! files into place or delete them, so sharing a cache is safe: an entry pruned away under a
//! reader is a miss.

use super::key::sha256_hex;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const MAGIC: &str = "thindist-cache-entry-v1";

/// How often a run prunes the cache, as lld's cache policy does by default: pruning lists every
/// entry, which a large cache should not pay on every link.
const PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20 * 60);

pub struct DiskCache {
    dir: PathBuf,
    max_bytes: u64,
}

/// What the cache holds now.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CacheStats {
    pub entries: u64,
    pub bytes: u64,
}

/// Hits and misses of the last run that used this cache.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LastRun {
    pub hits: u64,
    pub misses: u64,
}

/// The default cache directory: `$XDG_CACHE_HOME/thindist`, else `~/.cache/thindist`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("thindist")
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
    Ok(n * mult)
}

impl DiskCache {
    pub fn open(dir: &Path, max_bytes: u64) -> Result<DiskCache> {
        for sub in ["entries", "tmp", "logs", "records"] {
            std::fs::create_dir_all(dir.join(sub)).with_context(|| {
                format!("cannot create cache directory {}", dir.join(sub).display())
            })?;
        }
        Ok(DiskCache {
            dir: dir.to_path_buf(),
            max_bytes,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The build log of the link that writes `output` (an absolute path): kept here rather
    /// than beside the output, which may be `/dev/null` or a throwaway probe.
    pub fn build_log_path(&self, output: &Path) -> PathBuf {
        let name = super::key::sha256_hex(output.as_os_str().as_encoded_bytes());
        self.dir.join("logs").join(format!("{name}.json"))
    }

    /// The flags record of the object whose content has SHA-256 `digest` (see `thindist cc`):
    /// found for archive members and renamed or copied objects as well.
    pub fn record_path(&self, digest: &str) -> PathBuf {
        self.dir.join("records").join(format!("{digest}.json"))
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        self.dir
            .join("entries")
            .join(&key[..2.min(key.len())])
            .join(key)
    }

    fn temp_path(&self) -> PathBuf {
        crate::fsutil::temp_sibling(&self.dir.join("tmp").join("entry"))
    }

    /// Copies the entry for `key` to `dest` (atomically) if there is a valid one.
    pub fn get(&self, key: &str, dest: &Path) -> Result<bool> {
        let path = self.entry_path(key);
        let mut bytes = Vec::new();
        match std::fs::File::open(&path) {
            Ok(mut f) => f
                .read_to_end(&mut bytes)
                .with_context(|| format!("cannot read cache entry {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot open cache entry {}", path.display()))
            }
        };
        let Some(payload) = verified_payload(&bytes) else {
            tracing::warn!(
                "cache entry {} is corrupt; removing it and compiling again",
                path.display()
            );
            eprintln!(
                "thindist: warning: cache entry {} is corrupt; removing it and compiling again",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
            return Ok(false);
        };
        crate::fsutil::write_atomic(dest, payload)?;
        // Refresh for least-recently-used pruning; a failure only makes pruning less exact.
        if let Ok(file) = std::fs::File::options().append(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
        }
        Ok(true)
    }

    /// Stores `native` under `key`.
    pub fn put(&self, key: &str, native: &Path) -> Result<()> {
        let payload =
            std::fs::read(native).with_context(|| format!("cannot read {}", native.display()))?;
        let mut bytes =
            format!("{MAGIC} {} {}\n", sha256_hex(&payload), payload.len()).into_bytes();
        bytes.extend_from_slice(&payload);
        let temp = self.temp_path();
        std::fs::write(&temp, &bytes)
            .with_context(|| format!("cannot write cache entry {}", temp.display()))?;
        let path = self.entry_path(key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&temp, &path)
            .with_context(|| format!("cannot store cache entry {}", path.display()))
    }

    fn entries(&self) -> Vec<(PathBuf, u64, SystemTime)> {
        let mut out = Vec::new();
        let Ok(shards) = std::fs::read_dir(self.dir.join("entries")) else {
            return out;
        };
        for shard in shards.flatten() {
            for entry in std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Ok(meta) = entry.metadata() {
                    out.push((
                        entry.path(),
                        meta.len(),
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    ));
                }
            }
        }
        out
    }

    pub fn stats(&self) -> CacheStats {
        let entries = self.entries();
        CacheStats {
            entries: entries.len() as u64,
            bytes: entries.iter().map(|e| e.1).sum(),
        }
    }

    /// Deletes least recently used entries until the cache is within its size limit. Returns
    /// how many entries were removed.
    pub fn prune(&self) -> usize {
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        if total <= self.max_bytes {
            return 0;
        }
        entries.sort_by_key(|e| e.2);
        let mut removed = 0;
        for (path, size, _) in entries {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
            total = total.saturating_sub(size);
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
        for (path, _, _) in self.entries() {
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

/// The payload of an entry whose header matches it, else `None`.
fn verified_payload(bytes: &[u8]) -> Option<&[u8]> {
    let newline = bytes.iter().position(|b| *b == b'\n')?;
    let header = std::str::from_utf8(&bytes[..newline]).ok()?;
    let mut parts = header.split(' ');
    let (magic, digest, len) = (
        parts.next()?,
        parts.next()?,
        parts.next()?.parse::<usize>().ok()?,
    );
    let payload = &bytes[newline + 1..];
    (magic == MAGIC && payload.len() == len && sha256_hex(payload) == digest).then_some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(max: u64) -> (tempfile::TempDir, DiskCache) {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(&dir.path().join("cache"), max).unwrap();
        (dir, c)
    }

    #[test]
    fn round_trip() {
        let (dir, c) = cache(1 << 20);
        let native = dir.path().join("n.o");
        std::fs::write(&native, b"\x7fELF object").unwrap();
        assert!(!c.get("abcd", &dir.path().join("out.o")).unwrap());
        c.put("abcd", &native).unwrap();
        assert!(c.get("abcd", &dir.path().join("out.o")).unwrap());
        assert_eq!(
            std::fs::read(dir.path().join("out.o")).unwrap(),
            b"\x7fELF object"
        );
        assert_eq!(c.stats().entries, 1);
    }

    #[test]
    fn corrupt_and_truncated_entries_are_deleted_and_missed() {
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
            let path = c.entry_path("k1");
            let mut bytes = std::fs::read(&path).unwrap();
            damage(&mut bytes);
            std::fs::write(&path, bytes).unwrap();
            let dest = dir.path().join("out.o");
            assert!(!c.get("k1", &dest).unwrap());
            assert!(!path.exists(), "a corrupt entry is removed");
            assert!(!dest.exists(), "nothing is written from a corrupt entry");
        }
    }

    #[test]
    fn prune_removes_least_recently_used_first() {
        let (dir, c) = cache(1500);
        let native = dir.path().join("n.o");
        std::fs::write(&native, vec![1u8; 1000]).unwrap();
        for (i, key) in ["aa01", "aa02", "aa03"].iter().enumerate() {
            c.put(key, &native).unwrap();
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + i as u64);
            std::fs::File::options()
                .append(true)
                .open(c.entry_path(key))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        // Using the oldest makes it the newest.
        assert!(c.get("aa01", &dir.path().join("x.o")).unwrap());
        assert_eq!(c.prune(), 2);
        assert!(c.entry_path("aa01").exists());
        assert!(!c.entry_path("aa02").exists() && !c.entry_path("aa03").exists());
    }

    #[test]
    fn runs_prune_at_most_once_per_interval() {
        let (dir, c) = cache(500);
        let native = dir.path().join("n.o");
        std::fs::write(&native, vec![1u8; 1000]).unwrap();
        c.put("bb01", &native).unwrap();
        assert_eq!(c.prune_if_due(), 1, "the first run prunes");
        c.put("bb02", &native).unwrap();
        assert_eq!(c.prune_if_due(), 0, "a run soon after does not");
        let long_ago = SystemTime::now() - PRUNE_INTERVAL - std::time::Duration::from_secs(1);
        std::fs::File::options()
            .append(true)
            .open(dir.path().join("cache/last-prune"))
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
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
                    let c = DiskCache::open(&cache_dir, 1 << 30).unwrap();
                    let native = root.join(format!("n{t}.o"));
                    std::fs::write(&native, vec![42u8; 200_000]).unwrap();
                    for round in 0..50 {
                        let key = format!("ff{:02}", round % 5);
                        c.put(&key, &native).unwrap();
                        let dest = root.join(format!("out{t}.o"));
                        if c.get(&key, &dest).unwrap() {
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
    }
}
