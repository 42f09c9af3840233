//! SHA-256 digests as the Remote Execution API names blobs: hash and size.
//!
//! Digests that arrive from the network (action results, leases, Directory trees) go through
//! [`Digest::parse`]: their size is a claim to check the bytes against, never an amount of
//! memory to reserve, and their hash ends up in ByteStream resource names, so it must be plain
//! hex.

use crate::proto::build::bazel::remote::execution::v2 as re;
use anyhow::{bail, Result};
use sha2::{Digest as _, Sha256};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    pub hash: String,
    pub size: i64,
}

impl Digest {
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest {
            hash: hex::encode(Sha256::digest(bytes)),
            size: bytes.len() as i64,
        }
    }

    pub fn of_file(path: &Path) -> std::io::Result<Digest> {
        Digest::of_reader(&mut std::fs::File::open(path)?)
    }

    /// The digest of what `reader` holds to its end: read through one buffer on the stack, so
    /// that hashing many files (a rebuild's cache hits) allocates no memory for their bytes.
    pub fn of_reader(reader: &mut impl std::io::Read) -> std::io::Result<Digest> {
        let mut hasher = Sha256::new();
        let mut buffer = [0u8; 64 * 1024];
        let mut size = 0usize;
        loop {
            match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => {
                    hasher.update(&buffer[..read]);
                    size += read;
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        Ok(Digest {
            hash: hex::encode(hasher.finalize()),
            size: size as i64,
        })
    }

    pub(crate) fn to_proto(&self) -> re::Digest {
        re::Digest {
            hash: self.hash.clone(),
            size_bytes: self.size,
        }
    }

    /// A digest from the network: 64 lowercase hex digits and a size that is not negative.
    pub(crate) fn parse(d: &re::Digest) -> Result<Digest> {
        let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
        if d.hash.len() != 64 || !d.hash.bytes().all(hex) {
            bail!("invalid digest {:?}: not a SHA-256 hash", d.hash);
        }
        if d.size_bytes < 0 {
            bail!("invalid digest {}/{}: negative size", d.hash, d.size_bytes);
        }
        Ok(Digest {
            hash: d.hash.clone(),
            size: d.size_bytes,
        })
    }

    /// Checks that `data` is this blob: right size, right hash.
    pub fn verify(&self, data: &[u8]) -> Result<()> {
        if data.len() as u64 != self.size as u64 {
            bail!(
                "blob {self} arrived with {} bytes instead of {}",
                data.len(),
                self.size
            );
        }
        let actual = Digest::of_bytes(data);
        if actual.hash != self.hash {
            bail!(
                "blob {self} arrived damaged: its bytes hash to {}",
                actual.hash
            );
        }
        Ok(())
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", self.hash, self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_accepts_exactly_hex_hashes_and_sizes_not_negative(
            hash in "[0-9a-fA-Fg/.]{0,70}",
            size in any::<i64>(),
        ) {
            let parsed = Digest::parse(&re::Digest { hash: hash.clone(), size_bytes: size });
            let valid = hash.len() == 64
                && hash.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
                && size >= 0;
            prop_assert_eq!(parsed.is_ok(), valid);
        }

        #[test]
        fn verify_accepts_only_the_blob_itself(
            data in proptest::collection::vec(any::<u8>(), 0..64),
            other in proptest::collection::vec(any::<u8>(), 0..64),
            size_delta in -3i64..3,
        ) {
            let digest = Digest::of_bytes(&data);
            prop_assert!(digest.verify(&data).is_ok());
            prop_assert_eq!(digest.verify(&other).is_ok(), other == data);
            let resized = Digest { size: digest.size + size_delta, ..digest.clone() };
            prop_assert_eq!(resized.verify(&data).is_ok(), size_delta == 0);
        }
    }
}
