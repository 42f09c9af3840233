//! The digest of a summary shard as a back end sees it, independent of where its modules lie.
//!
//! A shard (`X.o.thinlto.bc`) names every module it refers to by the path the thin link was
//! given, so hashing its bytes would tie a cache entry to those paths: a temporary object of
//! the clang driver (`/tmp/conftest-1a2b3c.o`), a member extracted into a link's private work
//! directory, or a tree checked out elsewhere would never hit. LLVM's own ThinLTO cache keys a
//! module by its content hash, not its path; likewise this reads the shard with a bitstream
//! reader and hashes every record, with each module path of the module string table replaced
//! by the digest of that module's content.
//!
//! The thin link numbers modules in the order of their paths, and the values of the shard in an
//! order that also depends on the path strings, so a module renamed, or given another random
//! name, can change the shard of a module that imports from it, which then misses once. Moved
//! trees keep their relative paths and hit; members extracted from regular archives keep their
//! paths because a link's work directory is named after its output ([`crate::workdir`]); the
//! clang driver's temporaries (`NAME-RANDOM.o`) can miss.
//!
//! Parsing a shard is most of a cache hit's cost (22-30 us of about 90 for a kernel module), and
//! a relink's thin link writes the same bytes again for every module it did not change; so the
//! digest is remembered in the digest memo under the shard's bytes, the directory its paths
//! are resolved in, and the digests of the module and of each module it imports. That is all
//! the digest depends on when the shard names no other module, which it does not (its module
//! string table is exactly the module and its import list); a shard that names another is
//! digested, and not remembered, every time.

use super::digests::Digests;
use anyhow::{anyhow, Context, Result};
use llvm_bitcode::bitcode::{Payload, Record, Signature};
use llvm_bitcode::{BitStreamVisitor, Bitcode};
use sha2::{Digest as _, Sha256};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `MODULE_STRTAB_BLOCK_ID` in LLVM's `LLVMBitCodes.h`.
const MODULE_STRTAB_BLOCK: u32 = 19;
/// `MST_CODE_ENTRY`: `[module id, path characters...]`.
const MST_CODE_ENTRY: u64 = 1;
/// `MST_CODE_HASH`: `[5 x i32]`, the content hash of the module of the entry before it.
const MST_CODE_HASH: u64 = 2;

/// What the remembered digests are filed under in the memo: a new recipe must not answer from
/// an old one's entries.
const MEMO_KEY_FORMAT: &str = "thindist-shard-digest-v1";

/// What stands for each module the shard names.
#[derive(Clone, Copy, PartialEq)]
enum Modules {
    /// The digest of its content (its path and hash records go).
    ByContent,
    /// Nothing but its number in the shard: its path and content hash go too. For
    /// [`import_shard`], whose key counts the module as imported instead.
    Omitted,
}

struct ShardHasher<'a> {
    hasher: Sha256,
    modules: Modules,
    cwd: &'a Path,
    digests: &'a Digests,
    /// The modules the shard names, as resolved against `cwd`.
    named: Vec<PathBuf>,
    /// The suffix of each module's promoted symbols (see [`ImportShard::promoted_suffixes`]).
    suffixes: Vec<u64>,
    /// The first module path that could not be read, if any.
    error: Option<anyhow::Error>,
}

impl ShardHasher<'_> {
    fn words(&mut self, tag: u8, values: &[u64]) {
        self.hasher.update([tag]);
        self.hasher.update((values.len() as u64).to_le_bytes());
        for v in values {
            self.hasher.update(v.to_le_bytes());
        }
    }

    fn module_path_digest(&mut self, chars: Vec<u8>) -> String {
        let path = String::from_utf8_lossy(&chars).into_owned();
        let resolved = self.cwd.join(&path);
        let digest = self.digests.file(&resolved);
        self.named.push(resolved);
        match digest {
            Ok(digest) => digest,
            Err(err) => {
                self.error
                    .get_or_insert(err.context(format!("module {path} named by the shard")));
                String::new()
            }
        }
    }
}

impl BitStreamVisitor for ShardHasher<'_> {
    fn validate(&self, _signature: Signature) -> bool {
        true
    }

    fn should_enter_block(&mut self, block_id: u32) -> bool {
        self.words(b'{', &[block_id as u64]);
        true
    }

    fn did_exit_block(&mut self, block_id: u32) {
        self.words(b'}', &[block_id as u64]);
    }

    fn visit(&mut self, block_id: u32, mut record: Record) {
        let payload = record.take_payload();
        if let (MODULE_STRTAB_BLOCK, MST_CODE_HASH, [high, low, ..]) =
            (block_id, record.id, record.fields())
        {
            self.suffixes
                .push(((*high & 0xffff_ffff) << 32) | (*low & 0xffff_ffff));
        }
        if block_id == MODULE_STRTAB_BLOCK && self.modules == Modules::Omitted {
            if record.id == MST_CODE_ENTRY {
                let module_id = record.fields().first().copied().unwrap_or_default();
                self.words(b'm', &[module_id]);
            }
            if record.id == MST_CODE_ENTRY || record.id == MST_CODE_HASH {
                return;
            }
        }
        if block_id == MODULE_STRTAB_BLOCK && record.id == MST_CODE_ENTRY {
            let fields = record.fields();
            let mut chars: Vec<u8> = fields.iter().skip(1).map(|c| *c as u8).collect();
            match payload {
                Some(Payload::Array(a)) => chars.extend(a.iter().map(|c| *c as u8)),
                Some(Payload::Char6String(s)) => chars.extend(s.bytes()),
                Some(Payload::Blob(b)) => chars.extend(b),
                None => {}
            }
            let module_id = fields.first().copied().unwrap_or_default();
            let digest = self.module_path_digest(chars);
            self.words(b'm', &[module_id]);
            self.hasher.update(digest.as_bytes());
            return;
        }
        self.words(b'r', &[block_id as u64, record.id]);
        self.words(b'f', record.fields());
        match payload {
            Some(Payload::Array(a)) => self.words(b'a', &a),
            Some(Payload::Char6String(s)) => {
                self.hasher.update(b"c");
                self.hasher.update((s.len() as u64).to_le_bytes());
                self.hasher.update(s.as_bytes());
            }
            Some(Payload::Blob(b)) => {
                self.hasher.update(b"b");
                self.hasher.update((b.len() as u64).to_le_bytes());
                self.hasher.update(&b);
            }
            None => {}
        }
    }
}

/// A shard's digest, and the SHA-256 of its bytes where the digest depends on nothing else but
/// `modules` (the shard names no other module).
pub struct ShardDigest {
    pub digest: String,
    pub bytes: Option<String>,
}

/// The location-independent digest of the shard at `shard`; module paths in it are resolved
/// against `cwd`, the directory the thin link ran in. `modules` are the job's module and the
/// modules it imports, resolved the same way, with their digests: the digest is remembered
/// under them (see the module documentation).
pub fn shard_digest(
    shard: &Path,
    cwd: &Path,
    digests: &Digests,
    modules: &[(PathBuf, &str)],
) -> Result<ShardDigest> {
    let bytes = std::fs::read(cwd.join(shard))
        .with_context(|| format!("cannot read summary shard {}", shard.display()))?;
    let memo_key = || {
        let mut hasher = Sha256::new();
        let cwd = cwd.as_os_str().as_bytes();
        hasher.update(format!("{MEMO_KEY_FORMAT}\n{}\n", cwd.len()));
        hasher.update(cwd);
        hasher.update(format!("\n{}\n", bytes.len()));
        hasher.update(&bytes);
        let mut modules: Vec<_> = modules.iter().collect();
        modules.sort_unstable();
        for (path, digest) in modules {
            hasher.update(path.as_os_str().as_bytes());
            hasher.update(format!("\0{digest}\n"));
        }
        hex::encode(hasher.finalize())
    };
    let (digest, covered) = digests.remember_derived(memo_key, || {
        let ParsedShard { digest, named, .. } =
            parse_digest(&bytes, shard, cwd, digests, Modules::ByContent)?;
        let covered = (named.iter()).all(|path| modules.iter().any(|(module, _)| module == path));
        Ok((digest, covered))
    })?;
    Ok(ShardDigest {
        digest,
        bytes: covered.then(|| super::key::sha256_hex(&bytes)),
    })
}

/// What the back end of a key over what it imports ([`super::key::import_key`]) reads from its
/// shard.
pub struct ImportShard {
    /// The shard's digest without the names and content hashes of its modules: what the back
    /// end reads from it but the modules themselves, whose hashes reach its output only through
    /// the names of promoted local symbols, which are in what it imported.
    pub digest: String,
    /// The suffix the thin link gives the promoted local symbols of each module the shard
    /// names: `NAME.llvm.SUFFIX`, SUFFIX the first 64 bits of the module's content hash as
    /// LLVM's `ModuleSummaryIndex::getGlobalNameForLocal` writes them. A back end that imported
    /// a promoted symbol under a suffix no longer among them imports it under another name now.
    pub promoted_suffixes: Vec<u64>,
}

/// [`ImportShard`] of the shard at `shard`, resolved against `cwd`.
pub fn import_shard(shard: &Path, cwd: &Path) -> Result<ImportShard> {
    let bytes = std::fs::read(cwd.join(shard))
        .with_context(|| format!("cannot read summary shard {}", shard.display()))?;
    let parsed = parse_digest(&bytes, shard, cwd, &Digests::default(), Modules::Omitted)?;
    Ok(ImportShard {
        digest: parsed.digest,
        promoted_suffixes: parsed.suffixes,
    })
}

/// What [`parse_digest`] read from a shard.
struct ParsedShard {
    digest: String,
    /// The modules it names, as resolved against the thin link's directory.
    named: Vec<PathBuf>,
    /// Each module's suffix of promoted symbols ([`ImportShard::promoted_suffixes`]).
    suffixes: Vec<u64>,
}

/// The digest of the shard `bytes` (read from `shard`), and the modules it names.
fn parse_digest(
    bytes: &[u8],
    shard: &Path,
    cwd: &Path,
    digests: &Digests,
    modules: Modules,
) -> Result<ParsedShard> {
    let mut visitor = ShardHasher {
        hasher: Sha256::new(),
        modules,
        cwd,
        digests,
        named: Vec::new(),
        suffixes: Vec::new(),
        error: None,
    };
    Bitcode::read(bytes, &mut visitor).map_err(|e| {
        anyhow!(
            "summary shard {} is not valid bitcode: {e:?}",
            shard.display()
        )
    })?;
    if let Some(err) = visitor.error {
        return Err(err);
    }
    Ok(ParsedShard {
        digest: hex::encode(visitor.hasher.finalize()),
        named: visitor.named,
        suffixes: visitor.suffixes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The bytes of a real shard (a.o's, which imports from b.o), made once.
    fn real_shard() -> &'static [u8] {
        static SHARD: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        SHARD.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let job = crate::cache::key::tests::job_in(dir.path(), "a.o", "n.o");
            std::fs::read(dir.path().join(job.shard)).unwrap()
        })
    }

    #[test]
    fn an_abbreviation_of_a_trillion_operands_is_an_error_not_an_abort() {
        // After the magic, at the top level (abbreviation ids 2 bits wide): DEFINE_ABBREV (2),
        // then its operand count as 5-bit VBR chunks, 2^52 - 1: it sized an allocation.
        let mut bits: Vec<bool> = vec![false, true];
        for chunk in std::iter::repeat_n(0b11111u8, 12).chain([0b01111]) {
            bits.extend((0..5).map(|i| chunk >> i & 1 == 1));
        }
        let mut bytes = b"BC\xc0\xde".to_vec();
        for byte in bits.chunks(8) {
            bytes.push(byte.iter().enumerate().map(|(i, b)| (*b as u8) << i).sum());
        }
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        let digest = parse_digest(
            &bytes,
            Path::new("x.thinlto.bc"),
            Path::new("/nonexistent"),
            &Digests::default(),
            Modules::ByContent,
        );
        assert!(digest.is_err());
    }

    proptest! {
        /// A real shard damaged in a few bytes: either way of digesting it gives a digest or an
        /// error, never a panic.
        #[test]
        fn a_damaged_shard_digests_or_fails_cleanly(damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
            let mut bytes = real_shard().to_vec();
            for (at, byte) in damage {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            let dir = Path::new("/nonexistent");
            for modules in [Modules::ByContent, Modules::Omitted] {
                let _ = parse_digest(&bytes, Path::new("x.thinlto.bc"), dir, &Digests::default(), modules);
            }
        }

        /// A shard is outside input: whatever its bytes, either way of digesting it gives a
        /// digest or an error, never a panic.
        #[test]
        fn any_bytes_digest_or_fail_cleanly(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = b"BC\xc0\xde".to_vec();
            bytes.extend(&tail);
            let dir = Path::new("/nonexistent");
            for modules in [Modules::ByContent, Modules::Omitted] {
                let _ = parse_digest(&bytes, Path::new("x.thinlto.bc"), dir, &Digests::default(), modules);
            }
        }
    }
}
