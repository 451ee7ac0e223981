//! The runtime's own tests: real modules (built by `berth-example-modules`)
//! served through [`berth_runtime::LoadedModule::handle`] with hyper
//! requests, no base and no sockets. One module per topic.

mod capabilities;
mod cpu;
mod fresh;
mod imports;
mod limits;
mod memory;
mod pooled;
mod support;
mod tiers;
