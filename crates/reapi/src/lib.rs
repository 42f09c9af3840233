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

/// A new directory named `PREFIX` and random characters in `parent`, which only its owner can
/// read, write or enter (tempfile leaves the mode to the umask: 0755 under the usual 022), and
/// which is removed when the returned value is dropped. Work files of a build hold code that
/// other users of the machine have no business reading.
pub fn private_tempdir_in(
    parent: &std::path::Path,
    prefix: &str,
) -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
}
