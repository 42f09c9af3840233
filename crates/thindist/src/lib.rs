//! thindist: distributed ThinLTO for Clang builds.
//!
//! The flow runs one way: link arguments -> inputs -> thin link -> job plan -> executor -> cache
//! -> final link -> report.

pub mod job;
