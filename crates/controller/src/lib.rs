//! The berth controller (Koupleless' ModuleController): it keeps the desired
//! state of a fleet — ModuleDeployments and the bases that registered — in a
//! [`store::Store`], and reconciles bases toward it.
//!
//! This crate so far holds the store — the [`store::Store`] trait and its
//! embedded [`store::RedbStore`] backend — and the typed
//! [`resources::Resources`] over it. The API server, reconcilers, scheduler
//! and rollout build on them.

pub mod api;
pub mod bases;
pub mod resources;
pub mod rollout;
pub mod scheduler;
pub mod store;
