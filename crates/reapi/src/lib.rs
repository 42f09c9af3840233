//! A Remote Execution API v2 client and a Remote Workers API bot for thindist. The generated
//! protobuf code stays inside [`proto`]: the client and worker APIs ([`ActionSpec`], [`Client`],
//! [`PreparedAction`], [`RemoteOutcome`], [`Digest`], [`worker`]) neither take nor return its
//! types, so a caller never depends on the wire format.

pub mod action;
mod blobcache;
pub mod client;
pub mod digest;
mod paths;
/// The wire format, public only so that tests can stand up a server speaking it.
#[doc(hidden)]
pub mod proto;
pub mod worker;

pub use action::{ActionSpec, InputFile};
pub use client::{CallFailed, Client, PreparedAction, RemoteConfig, RemoteError, RemoteOutcome};
pub use digest::Digest;
