//! The back-end cache: a job's action key (a SHA-256 over the compiler, the normalized command
//! and the contents of every input) names its native object in a local content-addressed
//! store, so rebuilds compile only what really changed.

pub mod digests;
pub mod key;
pub mod shard;
pub mod store;

pub use digests::Digests;
pub use key::{action_key, action_key_from, ActionKey, CompilerIdentity, KeyPrefix};
pub use store::{CacheConfig, DiskCache};
