//! The controller's store: a small key-value model shaped after etcd's, so
//! the embedded backend and the etcd one ([`crate::etcd::EtcdStore`]) are
//! interchangeable.
//!
//! - Keys are strings (`/deployments/orders`), values bytes (JSON).
//! - Every change bumps one store-wide **revision**; each entry records the
//!   revision that created it and the one that last modified it (etcd's
//!   `create_revision` and `mod_revision`).
//! - [`Store::compare_and_swap`] writes only if the key's current
//!   `mod_revision` is the one the caller read (0: the key must not exist) —
//!   how reconcilers update state without losing a concurrent change.
//! - [`Store::watch`] streams every change under a prefix, in revision order,
//!   starting after a given revision: a watcher that reads a snapshot at
//!   revision R and then watches from R misses nothing.
//! - **Leases** are etcd's: [`Store::grant_lease`] gives a lease with a TTL,
//!   [`Store::put_with_lease`] attaches a key to it, [`Store::keep_alive`]
//!   restarts the TTL, and a lease not kept alive for its TTL expires:
//!   its keys are deleted, each delete a change at a new revision that
//!   watchers see. Bases keep their `/alive/<name>` key this way.
//!
//! [`RedbStore`] keeps it all in one redb file: entries in one table, the
//! revision counter and a bounded change log (for watches that start in the
//! past) in two others, leases and the keys attached to them in two more,
//! each write in one transaction. A lease's deadline is kept in memory
//! only, so a keep-alive costs no disk write; when the store is opened
//! again every lease gets its whole TTL anew. etcd does the same when a new
//! leader takes over, and for the same reason: a store that was down must
//! not expire keys for a silence that was its own. A thread of the store
//! expires leases within [`EXPIRY_TICK`] of their deadline.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::broadcast;

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The revision that created the key.
    pub create_revision: u64,
    /// The revision that last changed it.
    pub mod_revision: u64,
}

/// One change, as a watcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The key was created or changed.
    Put(Entry),
    /// The key was deleted at `revision`.
    Delete {
        /// The key.
        key: String,
        /// The revision of the delete.
        revision: u64,
    },
}

impl Event {
    /// The revision this event happened at.
    pub fn revision(&self) -> u64 {
        match self {
            Event::Put(entry) => entry.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }

    /// The key it concerns.
    pub fn key(&self) -> &str {
        match self {
            Event::Put(entry) => &entry.key,
            Event::Delete { key, .. } => key,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption).
    #[error("the controller store failed: {0}")]
    Backend(String),
    /// A compare-and-swap lost: the key changed since it was read.
    #[error(
        "`{key}` changed since it was read (expected revision {expected}, found {found}); read it again and retry"
    )]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: u64,
        /// The key's revision now (0: absent).
        found: u64,
    },
    /// A watch asked for history the store no longer keeps.
    #[error("revision {0} is compacted; list again and watch from the list's revision")]
    Compacted(u64),
    /// The lease expired or was revoked (or never existed).
    #[error("lease {0} has expired or was revoked; grant a new lease")]
    LeaseNotFound(LeaseId),
}

/// A lease's id (etcd's `LeaseID`).
pub type LeaseId = u64;

/// A watch: first the history after the start revision, then live changes.
pub struct Watch {
    source: WatchSource,
}

enum WatchSource {
    /// The embedded store's: its change log, then its broadcast.
    Local {
        backlog: std::collections::VecDeque<Event>,
        live: broadcast::Receiver<Event>,
        prefix: String,
        after: u64,
    },
    /// A remote store's: a task that follows the server's watch.
    Remote(tokio::sync::mpsc::Receiver<Result<Event, StoreError>>),
}

impl Watch {
    /// A watch fed by a task that sends each change (and ends the watch
    /// with an error, or by dropping its sender).
    pub fn from_channel(events: tokio::sync::mpsc::Receiver<Result<Event, StoreError>>) -> Self {
        Self {
            source: WatchSource::Remote(events),
        }
    }

    /// The next change under the prefix. `None` when the store is gone;
    /// [`StoreError::Compacted`] when this watcher fell too far behind.
    pub async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        let (backlog, live, prefix, after) = match &mut self.source {
            WatchSource::Remote(events) => return events.recv().await,
            WatchSource::Local {
                backlog,
                live,
                prefix,
                after,
            } => (backlog, live, prefix, after),
        };
        if let Some(event) = backlog.pop_front() {
            *after = event.revision();
            return Some(Ok(event));
        }
        loop {
            match live.recv().await {
                Ok(event) if event.revision() > *after && event.key().starts_with(&*prefix) => {
                    *after = event.revision();
                    return Some(Ok(event));
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Some(Err(StoreError::Compacted(*after)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The controller's state store.
pub trait Store: Send + Sync {
    /// The entry at `key`.
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError>;
    /// Every entry whose key starts with `prefix`, by key, and the store
    /// revision they were read at.
    fn list(&self, prefix: &str) -> Result<(Vec<Entry>, u64), StoreError>;
    /// Sets `key` unconditionally; returns the new revision.
    fn put(&self, key: &str, value: &[u8]) -> Result<u64, StoreError>;
    /// Sets `key` if its `mod_revision` is `expected` (0: absent); returns
    /// the new revision, or [`StoreError::Conflict`].
    fn compare_and_swap(&self, key: &str, expected: u64, value: &[u8]) -> Result<u64, StoreError>;
    /// Deletes `key`; returns the new revision, or `None` if it was absent.
    fn delete(&self, key: &str) -> Result<Option<u64>, StoreError>;
    /// Changes under `prefix` after revision `after`.
    fn watch(&self, prefix: &str, after: u64) -> Result<Watch, StoreError>;
    /// Grants a lease that expires once `ttl` passes without a keep-alive.
    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;
    /// Restarts the lease's TTL; [`StoreError::LeaseNotFound`] once it has
    /// expired or was revoked.
    fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// Ends the lease now, deleting the keys attached to it.
    fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// Sets `key` and attaches it to `lease` (a plain [`Store::put`]
    /// detaches it again); returns the new revision.
    fn put_with_lease(&self, key: &str, value: &[u8], lease: LeaseId) -> Result<u64, StoreError>;
    /// Creates `key` attached to `lease` if it does not exist, in one step
    /// (etcd's txn on `create_revision == 0`); returns the new revision, or
    /// [`StoreError::Conflict`] naming the revision of the key that is
    /// there. How one controller among several takes the leader key.
    fn create_with_lease(&self, key: &str, value: &[u8], lease: LeaseId)
    -> Result<u64, StoreError>;
}

/// The store as the controller shares it: any backend behind one pointer.
pub type SharedStore = Arc<dyn Store>;

impl<S: Store + ?Sized> Store for Arc<S> {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        (**self).get(key)
    }
    fn list(&self, prefix: &str) -> Result<(Vec<Entry>, u64), StoreError> {
        (**self).list(prefix)
    }
    fn put(&self, key: &str, value: &[u8]) -> Result<u64, StoreError> {
        (**self).put(key, value)
    }
    fn compare_and_swap(&self, key: &str, expected: u64, value: &[u8]) -> Result<u64, StoreError> {
        (**self).compare_and_swap(key, expected, value)
    }
    fn delete(&self, key: &str) -> Result<Option<u64>, StoreError> {
        (**self).delete(key)
    }
    fn watch(&self, prefix: &str, after: u64) -> Result<Watch, StoreError> {
        (**self).watch(prefix, after)
    }
    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        (**self).grant_lease(ttl)
    }
    fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        (**self).keep_alive(lease)
    }
    fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        (**self).revoke_lease(lease)
    }
    fn put_with_lease(&self, key: &str, value: &[u8], lease: LeaseId) -> Result<u64, StoreError> {
        (**self).put_with_lease(key, value, lease)
    }
    fn create_with_lease(
        &self,
        key: &str,
        value: &[u8],
        lease: LeaseId,
    ) -> Result<u64, StoreError> {
        (**self).create_with_lease(key, value, lease)
    }
}

const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
/// Lease id → TTL in milliseconds.
const LEASES: TableDefinition<u64, u64> = TableDefinition::new("leases");
/// Key → the lease it is attached to.
const ATTACHED: TableDefinition<&str, u64> = TableDefinition::new("attached");
/// How often the store looks for expired leases.
pub const EXPIRY_TICK: Duration = Duration::from_millis(50);
/// Changes kept for watches that start in the past.
const HISTORY: u64 = 10_000;

/// The embedded [`Store`]: one redb file in the controller's data directory.
pub struct RedbStore {
    inner: Arc<Inner>,
    /// Set to stop the expiry thread, which `drop` then joins, so the file
    /// is closed when the store is dropped.
    stop: Arc<(Mutex<bool>, Condvar)>,
    expirer: Option<std::thread::JoinHandle<()>>,
}

struct Inner {
    db: Database,
    events: broadcast::Sender<Event>,
    /// Serialises writers so revisions are handed out in commit order.
    write: Mutex<()>,
    /// Live leases: TTL and deadline.
    leases: Mutex<HashMap<LeaseId, (Duration, Instant)>>,
}

fn backend(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(e.into().to_string())
}

/// Entry encoding: create (8) + mod (8) revisions, then the value.
fn encode(create: u64, modified: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modified.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode(key: &str, bytes: &[u8]) -> Entry {
    let create = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let modified = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    Entry {
        key: key.into(),
        value: bytes[16..].to_vec(),
        create_revision: create,
        mod_revision: modified,
    }
}

/// Change-log encoding: kind (1: put, 0: delete), key length, key, entry.
fn encode_event(event: &Event) -> Vec<u8> {
    let mut out = Vec::new();
    match event {
        Event::Put(e) => {
            out.push(1);
            out.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
            out.extend_from_slice(e.key.as_bytes());
            out.extend_from_slice(&encode(e.create_revision, e.mod_revision, &e.value));
        }
        Event::Delete { key, .. } => {
            out.push(0);
            out.extend_from_slice(&(key.len() as u32).to_le_bytes());
            out.extend_from_slice(key.as_bytes());
        }
    }
    out
}

fn decode_event(revision: u64, bytes: &[u8]) -> Event {
    let len = u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes")) as usize;
    let key = String::from_utf8_lossy(&bytes[5..5 + len]).into_owned();
    match bytes[0] {
        1 => Event::Put(decode(&key, &bytes[5 + len..])),
        _ => Event::Delete { key, revision },
    }
}

impl RedbStore {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Backend(format!(
                "{} is open in another process: another controller uses this data directory",
                path.display()
            )),
            other => backend(other),
        })?;
        let tx = db.begin_write().map_err(backend)?;
        tx.open_table(ENTRIES).map_err(backend)?;
        tx.open_table(META).map_err(backend)?;
        tx.open_table(CHANGES).map_err(backend)?;
        tx.open_table(ATTACHED).map_err(backend)?;
        // Every lease starts its whole TTL again (see the module docs).
        let now = Instant::now();
        let mut leases = HashMap::new();
        for item in tx
            .open_table(LEASES)
            .map_err(backend)?
            .iter()
            .map_err(backend)?
        {
            let (id, ttl_ms) = item.map_err(backend)?;
            let ttl = Duration::from_millis(ttl_ms.value());
            leases.insert(id.value(), (ttl, now + ttl));
        }
        tx.commit().map_err(backend)?;
        let inner = Arc::new(Inner {
            db,
            events: broadcast::channel(4096).0,
            write: Mutex::new(()),
            leases: Mutex::new(leases),
        });
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let expirer = {
            let (inner, stop) = (inner.clone(), stop.clone());
            std::thread::Builder::new()
                .name("store-leases".into())
                .spawn(move || inner.expire_until_stopped(&stop))
                .map_err(|e| StoreError::Backend(format!("cannot start the lease thread: {e}")))?
        };
        Ok(Self {
            inner,
            stop,
            expirer: Some(expirer),
        })
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        *self.stop.0.lock().expect("stop flag") = true;
        self.stop.1.notify_all();
        if let Some(expirer) = self.expirer.take() {
            let _ = expirer.join();
        }
    }
}

impl Inner {
    /// Revokes expired leases every [`EXPIRY_TICK`] until `stop` is set.
    fn expire_until_stopped(&self, stop: &(Mutex<bool>, Condvar)) {
        let mut stopped = stop.0.lock().expect("stop flag");
        while !*stopped {
            stopped = stop
                .1
                .wait_timeout(stopped, EXPIRY_TICK)
                .expect("stop flag")
                .0;
            let now = Instant::now();
            let expired: Vec<LeaseId> = self
                .leases
                .lock()
                .expect("leases")
                .iter()
                .filter(|(_, (_, deadline))| *deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            for lease in expired {
                if let Err(e) = self.revoke(lease) {
                    tracing::warn!(lease, error = %e, "cannot expire a lease; retrying");
                }
            }
        }
    }

    /// Forgets `lease`, then deletes its keys and its record.
    fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        // Under the write lock, so no put attaches a key to it meanwhile.
        let (keys, ttl) = {
            let _serial = self.write.lock().expect("store write lock");
            let Some((ttl, _)) = self.leases.lock().expect("leases").remove(&lease) else {
                return Err(StoreError::LeaseNotFound(lease));
            };
            let tx = self.db.begin_read().map_err(backend)?;
            let attached = tx.open_table(ATTACHED).map_err(backend)?;
            let mut keys = Vec::new();
            for item in attached.iter().map_err(backend)? {
                let (key, id) = item.map_err(backend)?;
                if id.value() == lease {
                    keys.push(key.value().to_string());
                }
            }
            (keys, ttl)
        };
        let removed = keys
            .iter()
            .try_for_each(|key| {
                self.write(key, None, |current| Ok(current.map(|_| None)))
                    .map(drop)
            })
            .and_then(|()| {
                let _serial = self.write.lock().expect("store write lock");
                let tx = self.db.begin_write().map_err(backend)?;
                tx.open_table(LEASES)
                    .map_err(backend)?
                    .remove(lease)
                    .map_err(backend)?;
                tx.commit().map_err(backend)
            });
        if removed.is_err() {
            // Due now: the expiry thread tries again on its next tick.
            let mut leases = self.leases.lock().expect("leases");
            leases.insert(lease, (ttl, Instant::now()));
        }
        removed
    }

    /// Applies `change` (the key's current entry → the new value, or `None`
    /// to delete) in one transaction at the next revision; a value put is
    /// attached to `lease`, if any, and detached otherwise.
    fn write(
        &self,
        key: &str,
        lease: Option<LeaseId>,
        change: impl FnOnce(Option<&Entry>) -> Result<Option<Option<Vec<u8>>>, StoreError>,
    ) -> Result<Option<u64>, StoreError> {
        let _serial = self.write.lock().expect("store write lock");
        if let Some(lease) = lease
            && !self.leases.lock().expect("leases").contains_key(&lease)
        {
            return Err(StoreError::LeaseNotFound(lease));
        }
        let tx = self.db.begin_write().map_err(backend)?;
        let event = {
            let mut entries = tx.open_table(ENTRIES).map_err(backend)?;
            let current = entries
                .get(key)
                .map_err(backend)?
                .map(|v| decode(key, v.value()));
            // Some(Some(v)): put v; Some(None): delete; None: nothing to do.
            let Some(new) = change(current.as_ref())? else {
                return Ok(None);
            };
            let mut meta = tx.open_table(META).map_err(backend)?;
            let revision = meta
                .get("revision")
                .map_err(backend)?
                .map_or(0, |v| v.value())
                + 1;
            meta.insert("revision", revision).map_err(backend)?;
            let mut attached = tx.open_table(ATTACHED).map_err(backend)?;
            match (&new, lease) {
                (Some(_), Some(lease)) => attached.insert(key, lease).map(drop),
                _ => attached.remove(key).map(drop),
            }
            .map_err(backend)?;
            let event = match new {
                Some(value) => {
                    let create = current.as_ref().map_or(revision, |c| c.create_revision);
                    entries
                        .insert(key, encode(create, revision, &value).as_slice())
                        .map_err(backend)?;
                    Event::Put(Entry {
                        key: key.into(),
                        value,
                        create_revision: create,
                        mod_revision: revision,
                    })
                }
                None => {
                    entries.remove(key).map_err(backend)?;
                    Event::Delete {
                        key: key.into(),
                        revision,
                    }
                }
            };
            let mut changes = tx.open_table(CHANGES).map_err(backend)?;
            changes
                .insert(revision, encode_event(&event).as_slice())
                .map_err(backend)?;
            if revision > HISTORY {
                changes.remove(revision - HISTORY).map_err(backend)?;
            }
            event
        };
        tx.commit().map_err(backend)?;
        let revision = event.revision();
        let _ = self.events.send(event);
        Ok(Some(revision))
    }
}

impl Store for RedbStore {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.inner.get(key)
    }
    fn list(&self, prefix: &str) -> Result<(Vec<Entry>, u64), StoreError> {
        self.inner.list(prefix)
    }
    fn put(&self, key: &str, value: &[u8]) -> Result<u64, StoreError> {
        self.inner.put(key, value)
    }
    fn compare_and_swap(&self, key: &str, expected: u64, value: &[u8]) -> Result<u64, StoreError> {
        self.inner.compare_and_swap(key, expected, value)
    }
    fn delete(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.inner.delete(key)
    }
    fn watch(&self, prefix: &str, after: u64) -> Result<Watch, StoreError> {
        self.inner.watch(prefix, after)
    }
    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.inner.grant_lease(ttl)
    }
    fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.keep_alive(lease)
    }
    fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.revoke(lease)
    }
    fn put_with_lease(&self, key: &str, value: &[u8], lease: LeaseId) -> Result<u64, StoreError> {
        self.inner.put_with_lease(key, value, lease)
    }
    fn create_with_lease(
        &self,
        key: &str,
        value: &[u8],
        lease: LeaseId,
    ) -> Result<u64, StoreError> {
        self.inner.create_with_lease(key, value, lease)
    }
}

impl Store for Inner {
    fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let entries = tx.open_table(ENTRIES).map_err(backend)?;
        Ok(entries
            .get(key)
            .map_err(backend)?
            .map(|v| decode(key, v.value())))
    }

    fn list(&self, prefix: &str) -> Result<(Vec<Entry>, u64), StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let entries = tx.open_table(ENTRIES).map_err(backend)?;
        let revision = tx
            .open_table(META)
            .map_err(backend)?
            .get("revision")
            .map_err(backend)?
            .map_or(0, |v| v.value());
        let mut out = Vec::new();
        for item in entries.range(prefix..).map_err(backend)? {
            let (key, value) = item.map_err(backend)?;
            if !key.value().starts_with(prefix) {
                break;
            }
            out.push(decode(key.value(), value.value()));
        }
        Ok((out, revision))
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<u64, StoreError> {
        Ok(self
            .write(key, None, |_| Ok(Some(Some(value.to_vec()))))?
            .expect("a put always writes"))
    }

    fn compare_and_swap(&self, key: &str, expected: u64, value: &[u8]) -> Result<u64, StoreError> {
        let written = self.write(key, None, |current| {
            let found = current.map_or(0, |c| c.mod_revision);
            if found != expected {
                return Err(StoreError::Conflict {
                    key: key.into(),
                    expected,
                    found,
                });
            }
            Ok(Some(Some(value.to_vec())))
        })?;
        Ok(written.expect("a successful swap writes"))
    }

    fn delete(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.write(key, None, |current| Ok(current.map(|_| None)))
    }

    fn watch(&self, prefix: &str, after: u64) -> Result<Watch, StoreError> {
        // Subscribe first, then read the history: nothing falls in between
        // (an event in both is skipped by its revision).
        let live = self.events.subscribe();
        let tx = self.db.begin_read().map_err(backend)?;
        let changes = tx.open_table(CHANGES).map_err(backend)?;
        let oldest = changes.first().map_err(backend)?.map(|(k, _)| k.value());
        if let Some(oldest) = oldest
            && after + 1 < oldest
        {
            return Err(StoreError::Compacted(after));
        }
        let mut backlog = std::collections::VecDeque::new();
        for item in changes.range(after + 1..).map_err(backend)? {
            let (revision, bytes) = item.map_err(backend)?;
            let event = decode_event(revision.value(), bytes.value());
            if event.key().starts_with(prefix) {
                backlog.push_back(event);
            }
        }
        Ok(Watch {
            source: WatchSource::Local {
                backlog,
                live,
                prefix: prefix.into(),
                after,
            },
        })
    }

    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let _serial = self.write.lock().expect("store write lock");
        let tx = self.db.begin_write().map_err(backend)?;
        let id = {
            let mut meta = tx.open_table(META).map_err(backend)?;
            let id = meta.get("lease").map_err(backend)?.map_or(0, |v| v.value()) + 1;
            meta.insert("lease", id).map_err(backend)?;
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            tx.open_table(LEASES)
                .map_err(backend)?
                .insert(id, ttl_ms)
                .map_err(backend)?;
            id
        };
        tx.commit().map_err(backend)?;
        self.leases
            .lock()
            .expect("leases")
            .insert(id, (ttl, Instant::now() + ttl));
        Ok(id)
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        match self.leases.lock().expect("leases").get_mut(&lease) {
            Some((ttl, deadline)) => {
                *deadline = Instant::now() + *ttl;
                Ok(())
            }
            None => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.revoke(lease)
    }

    fn put_with_lease(&self, key: &str, value: &[u8], lease: LeaseId) -> Result<u64, StoreError> {
        Ok(self
            .write(key, Some(lease), |_| Ok(Some(Some(value.to_vec()))))?
            .expect("a put always writes"))
    }

    fn create_with_lease(
        &self,
        key: &str,
        value: &[u8],
        lease: LeaseId,
    ) -> Result<u64, StoreError> {
        let written = self.write(key, Some(lease), |current| match current {
            Some(c) => Err(StoreError::Conflict {
                key: key.into(),
                expected: 0,
                found: c.mod_revision,
            }),
            None => Ok(Some(Some(value.to_vec()))),
        })?;
        Ok(written.expect("a create writes"))
    }
}

#[cfg(test)]
mod tests {
    //! What only the embedded backend does (reopening its file); the
    //! contract every backend keeps is in `tests/store.rs`.

    use super::*;

    #[test]
    fn state_and_revision_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            s.put("/k", b"v").unwrap();
            s.put("/k", b"w").unwrap();
        }
        let s = RedbStore::open(&path).unwrap();
        let e = s.get("/k").unwrap().unwrap();
        assert_eq!(
            (e.value.as_slice(), e.create_revision, e.mod_revision),
            (&b"w"[..], 1, 2)
        );
        assert_eq!(s.put("/j", b"x").unwrap(), 3);
    }

    /// Waits up to `within` for `key` to be gone.
    fn gone_within(s: &RedbStore, key: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if s.get(key).unwrap().is_none() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn a_reopened_store_gives_every_lease_its_whole_ttl_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.redb");
        let ttl = Duration::from_millis(400);
        let lease = {
            let s = RedbStore::open(&path).unwrap();
            let lease = s.grant_lease(ttl).unwrap();
            s.put_with_lease("/alive/a", b"", lease).unwrap();
            lease
        };
        // Down for longer than the TTL: that silence was the store's own.
        std::thread::sleep(ttl * 2);
        let s = RedbStore::open(&path).unwrap();
        assert!(s.get("/alive/a").unwrap().is_some());
        s.keep_alive(lease).unwrap();
        // Then it expires as usual.
        assert!(gone_within(&s, "/alive/a", ttl + EXPIRY_TICK * 10));
    }
}
