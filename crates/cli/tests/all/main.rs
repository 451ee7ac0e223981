//! End-to-end tests of the `berth` binary: a real base process, real module
//! builds, real HTTP. One test binary with a module per topic, to link once.

mod base_flags;
mod controller;
#[path = "../../../controller/tests/support/etcd.rs"]
#[allow(dead_code)] // `restart` serves the controller's own tests
mod etcd_server;
mod papercuts;
mod polyglot;
mod reclaim;
mod support;
mod workflow;
