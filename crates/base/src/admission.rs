//! Admission of installs: how many a base takes on at once. An install
//! fetches, hashes and compiles an artifact, CPU- and memory-heavy work that
//! must not starve the modules serving beside it. At most
//! `--max-pending-installs` installs are in progress or waiting; the excess
//! is refused at once with `503 too_many_installs` and `Retry-After`, and
//! changes nothing. Of the admitted ones, as many prepare (fetch, compile)
//! at once as the machine has cores; the others wait their turn in order.

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::OpsError;

/// The install admission of one base.
pub(crate) struct Admission {
    pending: Semaphore,
    max_pending: usize,
    preparing: Semaphore,
}

/// Held while one admitted install runs.
pub(crate) struct Admitted<'a> {
    _pending: SemaphorePermit<'a>,
    _preparing: SemaphorePermit<'a>,
}

impl Admission {
    /// At most `max_pending` installs at once (at least one).
    pub(crate) fn new(max_pending: usize) -> Self {
        let max_pending = max_pending.max(1);
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            pending: Semaphore::new(max_pending),
            max_pending,
            preparing: Semaphore::new(cores.clamp(1, max_pending)),
        }
    }

    /// Admits one install, waiting for a turn to prepare; refused when
    /// `max_pending` are in progress or waiting already.
    pub(crate) async fn admit(&self) -> Result<Admitted<'_>, OpsError> {
        let pending = self
            .pending
            .try_acquire()
            .map_err(|_| OpsError::TooManyInstalls {
                pending: self.max_pending,
            })?;
        let preparing = self
            .preparing
            .acquire()
            .await
            .expect("the semaphore is never closed");
        Ok(Admitted {
            _pending: pending,
            _preparing: preparing,
        })
    }
}
