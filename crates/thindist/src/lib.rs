//! thindist: distributed ThinLTO for Clang builds.
//!
//! The flow runs one way, a module per stage: what the user ran ([`invocation`]) -> link
//! arguments ([`linkargs`], their LTO options in [`ltoopts`]) -> inputs ([`inputs`]) -> the
//! link ([`link`]: its work directory, the thin link of [`thinlink`], the final link) -> job
//! plan ([`plan`], or lld's DTLTO job file in [`dtlto`]; one job constructor in [`job`], with
//! [`flags`]) -> the back-end phase ([`backend`]: cache and build log through [`runner`], the
//! key of what a back end imports from [`probe`], executors in [`exec`], with compiler fork
//! servers and their cc1 workers in [`forkserver`] fed cc1 commands by [`cc1`], and
//! [`remote`]) -> report ([`report`], fed by [`events`]).
//! [`driver`] chains them.
//!
//! Public are the modules the binary and the tests use; the rest is the
//! crate's own.

pub(crate) mod backend;
pub mod buildlog;
pub mod cache;
pub mod cc;
pub(crate) mod cc1;
pub(crate) mod cmdline;
pub mod config;
pub mod driver;
pub(crate) mod dtlto;
pub mod events;
pub mod exec;
pub(crate) mod flags;
pub(crate) mod forkserver;
pub(crate) mod fsutil;
pub(crate) mod inputs;
pub mod invocation;
pub(crate) mod job;
pub(crate) mod link;
pub mod linkargs;
pub(crate) mod ltoopts;
pub mod plan;
pub(crate) mod probe;
pub(crate) mod relink;
pub mod remote;
pub mod report;
pub(crate) mod runner;
pub(crate) mod shell;
pub mod thinlink;
pub mod trace;
pub(crate) mod workdir;
