//! `berth store copy`: the whole state of one store moved into another
//! (redb → etcd when a fleet outgrows one controller, etcd → redb for a
//! backup or a laptop).
//!
//! Every key is copied with its value; revisions are the destination's own
//! (they only order changes within one store). Leases cannot move — an
//! etcd lease id means nothing to redb — so each base's liveness key gets
//! a fresh lease of that base's TTL in the destination and its stored
//! record names the new lease: a base stays Ready there for one whole TTL,
//! as after a controller restart, and its next heartbeat keeps it alive.
//! The leader key is not copied: it belongs to a running controller, and
//! the destination's controllers elect their own.
//!
//! A destination that holds anything is refused unless forced, and then its
//! keys are deleted first, so the result is the source's state exactly.

use crate::bases::{ALIVE, BASES};
use crate::leader::LEADER_KEY;
use crate::store::{Store, StoreError};

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Keys written.
    pub keys: usize,
    /// Leases granted anew (one per live base).
    pub leases: usize,
    /// Keys of the destination deleted first (with `force`).
    pub replaced: usize,
}

/// Why a copy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The destination is not empty and `force` was not given.
    #[error(
        "the destination already holds {keys} key(s) (e.g. `{example}`); copying would mix two states. \
         Copy into an empty store, or add --force to replace everything there"
    )]
    NotEmpty {
        /// How many keys it holds.
        keys: usize,
        /// One of them.
        example: String,
    },
    /// A store operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Copies every key of `from` into `to` (see the module docs), calling
/// `progress(done, total)` after each key.
pub fn copy(
    from: &dyn Store,
    to: &dyn Store,
    force: bool,
    mut progress: impl FnMut(usize, usize),
) -> Result<Copied, CopyError> {
    let (entries, _) = from.list("")?;
    let entries: Vec<_> = entries
        .into_iter()
        .filter(|e| e.key != LEADER_KEY)
        .collect();
    let (existing, _) = to.list("")?;
    let existing: Vec<_> = existing
        .into_iter()
        .filter(|e| e.key != LEADER_KEY)
        .collect();
    if let Some(first) = existing.first()
        && !force
    {
        return Err(CopyError::NotEmpty {
            keys: existing.len(),
            example: first.key.clone(),
        });
    }
    for e in &existing {
        to.delete(&e.key)?;
    }
    let alive: std::collections::BTreeSet<&str> = entries
        .iter()
        .filter_map(|e| e.key.strip_prefix(ALIVE))
        .collect();
    let total = entries.len();
    let mut copied = Copied {
        keys: 0,
        leases: 0,
        replaced: existing.len(),
    };
    for entry in &entries {
        let base = entry.key.strip_prefix(BASES).filter(|b| alive.contains(b));
        if entry.key.starts_with(ALIVE) {
            // Written with its base's record, under the new lease.
        } else if let Some(base) = base {
            match crate::bases::with_new_lease(&entry.value, |ttl| to.grant_lease(ttl)) {
                Some(granted) => {
                    let (lease, value) = granted?;
                    to.put_with_lease(&format!("{ALIVE}{base}"), b"", lease)?;
                    to.put(&entry.key, &value)?;
                    copied.leases += 1;
                    copied.keys += 2;
                }
                None => {
                    // Not a record this version reads: copied as it is.
                    to.put(&entry.key, &entry.value)?;
                    copied.keys += 1;
                }
            }
        } else {
            to.put(&entry.key, &entry.value)?;
            copied.keys += 1;
        }
        progress(copied.keys.min(total), total);
    }
    Ok(copied)
}
