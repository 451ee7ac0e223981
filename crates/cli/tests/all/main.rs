//! End-to-end tests of the `berth` binary: a real base process, real module
//! builds, real HTTP. One test binary with a module per topic, to link once.

mod auth;
mod autoscale;
mod base_flags;
mod controller;
mod crash;
mod engine;
#[path = "../../../controller/tests/support/etcd.rs"]
mod etcd_server;
mod exhaustion;
mod fleet;
mod gateway;
mod ha;
mod papercuts;
mod polyglot;
mod reclaim;
mod sign;
mod support;
mod tls;
mod workflow;
