//! SHA-256 digests as the Remote Execution API names blobs: hash and size.

use crate::proto::build::bazel::remote::execution::v2 as re;
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
        Ok(Digest::of_bytes(&std::fs::read(path)?))
    }

    pub(crate) fn to_proto(&self) -> re::Digest {
        re::Digest {
            hash: self.hash.clone(),
            size_bytes: self.size,
        }
    }

    pub(crate) fn from_proto(d: &re::Digest) -> Digest {
        Digest {
            hash: d.hash.clone(),
            size: d.size_bytes,
        }
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}/{}", self.hash, self.size)
    }
}
