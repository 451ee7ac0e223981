//! End-to-end tests of the `berth` binary: a real base process, real module
//! builds, real HTTP. One test binary with a module per topic, to link once.

mod base_flags;
mod controller;
mod papercuts;
mod reclaim;
mod support;
mod workflow;
