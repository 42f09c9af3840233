//! The worker's local CAS: every blob a lease needs is fetched from the server once per worker
//! (its digest checked), kept in a content-addressed directory, and hard-linked into the input
//! root of each lease that needs it. Beyond a size limit, the least recently used blobs go.
//!
//! Cached files are read-only, so a command cannot change a blob for the leases after it by
//! writing to its input (hard links share the file); executable and plain copies of the same
//! bytes are separate entries, because links share the mode too.

use crate::client::Client;
use crate::digest::Digest;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What the cache has done so far.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CacheStats {
    /// Blobs a lease needed that were here already.
    pub hits: u64,
    /// Blobs read from the server.
    pub fetched: u64,
    pub fetched_bytes: u64,
    /// Blobs removed to stay under the limit.
    pub evicted: u64,
}

pub(crate) struct BlobCache {
    dir: PathBuf,
    limit: u64,
    state: Mutex<State>,
    /// Removes the directory with the cache.
    _owned: tempfile::TempDir,
}

#[derive(Default)]
struct State {
    /// Entry name -> (size, last use on `clock`).
    entries: HashMap<String, (u64, u64)>,
    total: u64,
    clock: u64,
    stats: CacheStats,
}

/// One file of an input root: its blob, and whether it is executable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FileBlob {
    pub digest: Digest,
    pub executable: bool,
}

impl FileBlob {
    fn entry_name(&self) -> String {
        if self.executable {
            format!("{}.x", self.digest.hash)
        } else {
            self.digest.hash.clone()
        }
    }
}

impl BlobCache {
    /// A cache of at most `limit` bytes in a directory of its own in `parent` (on the file
    /// system of the lease directories, so that hard links reach them), removed with the cache:
    /// blobs left by an earlier worker are not trusted.
    pub(crate) fn new(parent: &Path, limit: u64) -> Result<BlobCache> {
        let owned = crate::private_tempdir_in(parent, "thindist-worker-cas-")
            .with_context(|| format!("cannot create a cache in {}", parent.display()))?;
        Ok(BlobCache {
            dir: owned.path().to_path_buf(),
            limit,
            state: Mutex::default(),
            _owned: owned,
        })
    }

    pub(crate) fn stats(&self) -> CacheStats {
        self.state.lock().unwrap().stats
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Marks `name` used now if it is cached.
    fn touch(&self, name: &str) -> bool {
        let mut state = self.state.lock().unwrap();
        state.clock += 1;
        let now = state.clock;
        match state.entries.get_mut(name) {
            Some((_, used)) => {
                *used = now;
                state.stats.hits += 1;
                true
            }
            None => false,
        }
    }

    /// Stores fetched bytes as entry `name` (read-only), then evicts beyond the limit, never
    /// `keep` (entries the caller is about to link).
    fn insert(&self, name: &str, bytes: &[u8], executable: bool, keep: &[String]) -> Result<()> {
        let path = self.path(name);
        let temp = self.path(&format!("{name}.tmp-{}", uuid::Uuid::new_v4()));
        std::fs::write(&temp, bytes).with_context(|| format!("cannot write {}", temp.display()))?;
        let mode = if executable { 0o555 } else { 0o444 };
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&temp, &path)
            .with_context(|| format!("cannot store {}", path.display()))?;
        let mut state = self.state.lock().unwrap();
        state.clock += 1;
        let now = state.clock;
        let size = bytes.len() as u64;
        if let Some((old, _)) = state.entries.insert(name.to_string(), (size, now)) {
            state.total -= old;
        }
        state.total += size;
        state.stats.fetched += 1;
        state.stats.fetched_bytes += size;
        while state.total > self.limit {
            let Some(oldest) = state
                .entries
                .iter()
                .filter(|(n, _)| !keep.contains(n))
                .min_by_key(|(_, (_, used))| *used)
                .map(|(n, _)| n.clone())
            else {
                break;
            };
            let (size, _) = state.entries.remove(&oldest).unwrap();
            state.total -= size;
            state.stats.evicted += 1;
            let _ = std::fs::remove_file(self.path(&oldest));
        }
        Ok(())
    }

    /// The bytes of a blob (a Directory, a Command): from the cache, or fetched and kept.
    pub(crate) async fn read(&self, client: &Client, digest: &Digest) -> Result<Vec<u8>> {
        let name = digest.hash.clone();
        if self.touch(&name) {
            // An entry that went since (evicted by another lease) is fetched again.
            if let Ok(bytes) = tokio::fs::read(self.path(&name)).await {
                return Ok(bytes);
            }
        }
        let bytes = client.read_blob(digest).await?;
        self.insert(&name, &bytes, false, &[])?;
        Ok(bytes)
    }

    /// Puts every file at its path (a new name in an existing directory): fetches the blobs not
    /// cached in as few calls as the server allows, then hard-links each one from the cache.
    pub(crate) async fn materialize(
        &self,
        client: &Client,
        files: &[(FileBlob, PathBuf)],
    ) -> Result<()> {
        let names: Vec<String> = files.iter().map(|(b, _)| b.entry_name()).collect();
        let mut missing: Vec<&FileBlob> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for ((blob, _), name) in files.iter().zip(&names) {
            if seen.insert(name.as_str()) && !self.touch(name) {
                missing.push(blob);
            }
        }
        let digests: Vec<Digest> = missing.iter().map(|b| b.digest.clone()).collect();
        let fetched = client.read_blobs(&digests).await?;
        for (blob, bytes) in missing.iter().zip(fetched) {
            self.insert(&blob.entry_name(), &bytes, blob.executable, &names)?;
        }
        for ((blob, dest), name) in files.iter().zip(&names) {
            self.link(client, blob, name, dest).await?;
        }
        Ok(())
    }

    /// Hard-links entry `name` to `dest`; copies when the cache is on another file system, and
    /// fetches the blob again if it was evicted meanwhile.
    async fn link(&self, client: &Client, blob: &FileBlob, name: &str, dest: &Path) -> Result<()> {
        let path = self.path(name);
        match std::fs::hard_link(&path, dest) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                std::fs::copy(&path, dest).with_context(|| {
                    format!("cannot copy {} to {}", path.display(), dest.display())
                })?;
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dest.exists() => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot link {}", dest.display()));
            }
        }
        let bytes = client.read_blob(&blob.digest).await?;
        std::fs::write(dest, &bytes).with_context(|| format!("cannot write {}", dest.display()))?;
        let mode = if blob.executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }
}
