//! The epoch ticker: advances the epoch of a runtime's engines (Cranelift's,
//! and Winch's when tiers are on) every [`EPOCH_TICK`], which drives CPU
//! deadlines and lets busy guests yield their worker thread. One thread
//! ticks them all: each tick wakes a thread that preempts whatever runs on
//! its core.
//!
//! The [`Runtime`](crate::Runtime) and every module it loaded hold it, so it
//! stops only when the last of them is gone (deadlines keep working for a
//! module that outlives its runtime handle).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::Engine;

use crate::config::EPOCH_TICK;

/// Stops the ticker thread when dropped.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Starts the thread ticking `engines`.
    pub(crate) fn start(engines: Vec<Engine>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("berth-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    for engine in &engines {
                        engine.increment_epoch();
                    }
                }
            })
            .expect("spawn the epoch ticker thread");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
