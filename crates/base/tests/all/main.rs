//! Integration tests of the base: a real base on localhost ports, driven over
//! real HTTP (reqwest) with the real example modules from `modules/`.
//!
//! One test binary with a module per topic (as wasmtime does), to link once.

mod arklet;
mod bad_input;
mod capability;
mod engine;
mod exhaustion;
mod fuzz;
mod ingress;
mod isolation;
mod observability;
mod ops;
mod otlp;
mod pin;
mod restart;
mod sharing;
mod support;
mod tiers;
mod traffic;
mod trust;
