//! thindist: distributed ThinLTO for Clang builds.
//!
//! The flow runs one way, a module per stage: link arguments ([`linkargs`], their LTO options
//! in [`ltoopts`]) -> inputs ([`inputs`]) -> thin link ([`thinlink`]) -> job plan ([`plan`],
//! with [`flags`]) -> executor ([`exec`]) -> final link ([`driver`]) -> report ([`report`], fed by [`events`]).

pub mod buildlog;
pub mod cache;
pub mod cc;
pub mod cmdline;
pub mod config;
pub mod driver;
pub mod dtlto;
pub mod events;
pub mod exec;
pub mod flags;
pub mod forkserver;
pub mod fsutil;
pub mod inputs;
pub mod job;
pub mod linkargs;
pub mod ltoopts;
pub mod plan;
pub mod relink;
pub mod remote;
pub mod report;
pub mod runner;
pub mod shell;
pub mod thinlink;
pub mod trace;
pub mod workdir;
