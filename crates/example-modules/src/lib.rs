//! Paths and bytes of the example guest modules in `modules/`, built for
//! `wasm32-wasip2` by this crate's build script.
//!
//! Tests and benchmarks use the paths; `berth up` embeds the bytes of the
//! modules it serves by default, so the binary needs no files beside it.

include!(concat!(env!("OUT_DIR"), "/modules.rs"));
