//! A Remote Execution API v2 client and a Remote Workers API bot for thindist. The generated
//! protobuf code stays inside [`proto`]; callers use [`ActionSpec`], [`Client`] and [`worker`].

pub mod action;
mod blobcache;
pub mod client;
pub mod digest;
mod paths;
pub mod proto;
pub mod worker;

pub use action::{ActionSpec, InputFile};
pub use blobcache::CacheStats;
pub use client::{CallFailed, Client, PreparedAction, RemoteConfig, RemoteError, RemoteOutcome};
pub use digest::Digest;
