//! The key-value store behind `berth:base/kv`: the async [`KvBackend`]
//! trait every kv call goes through, and [`KvStore`], its redb
//! implementation (one database per base, one namespace per module).
//!
//! The guest's call is async on the host: [`KvStore`] runs each redb
//! transaction on tokio's blocking pool (`spawn_blocking`), so a durable
//! commit never holds a worker thread that other modules' requests need
//! (the pattern of Spin's `key-value-spin` and wasmCloud's `wasi_keyvalue`).
//! A base team swaps the backend (its own store, a cache) by giving
//! [`KvCapability::new`](crate::KvCapability::new) another [`KvBackend`].
//!
//! Keys are stored as `<module name> NUL <key>`, so a module can only ever
//! reach its own keys: the namespace comes from the instance's settings,
//! never from the guest. redb gives atomic, durable transactions, which
//! makes `increment` safe under concurrent requests.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// Why a kv call failed; its message is what the guest sees.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The store itself failed (I/O, corruption, a lost worker).
    #[error("the base's key-value store failed: {0}")]
    Store(String),
    /// The database file could not be opened.
    #[error("cannot open the key-value store at {path}: {reason}")]
    Open {
        /// The database file.
        path: String,
        /// redb's explanation.
        reason: String,
    },
    /// `increment` on a key that does not hold an 8-byte counter.
    #[error("key `{0}` does not hold a counter (it is not 8 bytes); delete it or use another key")]
    NotACounter(String),
    /// `increment` past the range of an i64.
    #[error("counter `{0}` would overflow")]
    Overflow(String),
    /// The base runs without a store.
    #[error("this base runs without a key-value store")]
    Unavailable,
}

/// Where `berth:base/kv` keeps its data: async, one namespace per module
/// (the runtime passes the module's name; the guest never chooses it).
#[async_trait::async_trait]
pub trait KvBackend: Send + Sync + 'static {
    /// The value of `key` in `namespace`.
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Sets `key` in `namespace` to `value`.
    async fn set(&self, namespace: &str, key: &str, value: Vec<u8>) -> Result<(), KvError>;
    /// Removes `key` from `namespace` (no error if absent).
    async fn delete(&self, namespace: &str, key: &str) -> Result<(), KvError>;
    /// Adds `delta` to the little-endian i64 at `key` (0 if absent),
    /// atomically, and returns the new value.
    async fn increment(&self, namespace: &str, key: &str, delta: i64) -> Result<i64, KvError>;
    /// Keys of `namespace` that start with `prefix`, sorted.
    async fn list_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, KvError>;
}

/// The base's redb key-value database. Cheap to clone.
#[derive(Clone)]
pub struct KvStore {
    db: Arc<Database>,
}

fn key(namespace: &str, key: &str) -> Vec<u8> {
    let mut full = Vec::with_capacity(namespace.len() + 1 + key.len());
    full.extend_from_slice(namespace.as_bytes());
    full.push(0);
    full.extend_from_slice(key.as_bytes());
    full
}

fn err(e: impl Into<redb::Error>) -> KvError {
    KvError::Store(e.into().to_string())
}

impl KvStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, KvError> {
        let db = Database::create(path).map_err(|e| KvError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(KV).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// The value of `k` in `namespace` (blocking).
    pub fn get_blocking(&self, namespace: &str, k: &str) -> Result<Option<Vec<u8>>, KvError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(KV).map_err(err)?;
        Ok(table
            .get(key(namespace, k).as_slice())
            .map_err(err)?
            .map(|v| v.value().to_vec()))
    }

    /// Sets `k` in `namespace` (blocking: a durable commit).
    pub fn set_blocking(&self, namespace: &str, k: &str, value: &[u8]) -> Result<(), KvError> {
        let tx = self.db.begin_write().map_err(err)?;
        tx.open_table(KV)
            .map_err(err)?
            .insert(key(namespace, k).as_slice(), value)
            .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Removes `k` from `namespace` (blocking: a durable commit).
    pub fn delete_blocking(&self, namespace: &str, k: &str) -> Result<(), KvError> {
        let tx = self.db.begin_write().map_err(err)?;
        tx.open_table(KV)
            .map_err(err)?
            .remove(key(namespace, k).as_slice())
            .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Adds `delta` to the little-endian i64 at `k` (0 if absent),
    /// atomically (blocking: a durable commit).
    pub fn increment_blocking(&self, namespace: &str, k: &str, delta: i64) -> Result<i64, KvError> {
        let full = key(namespace, k);
        let tx = self.db.begin_write().map_err(err)?;
        let next = {
            let mut table = tx.open_table(KV).map_err(err)?;
            let current = match table.get(full.as_slice()).map_err(err)? {
                None => 0,
                Some(v) => {
                    let bytes: [u8; 8] = v
                        .value()
                        .try_into()
                        .map_err(|_| KvError::NotACounter(k.to_owned()))?;
                    i64::from_le_bytes(bytes)
                }
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| KvError::Overflow(k.to_owned()))?;
            table
                .insert(full.as_slice(), next.to_le_bytes().as_slice())
                .map_err(err)?;
            next
        };
        tx.commit().map_err(err)?;
        Ok(next)
    }

    /// Keys of `namespace` starting with `prefix`, sorted (blocking).
    pub fn list_keys_blocking(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<String>, KvError> {
        let start = key(namespace, prefix);
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(KV).map_err(err)?;
        let mut keys = Vec::new();
        for item in table.range(start.as_slice()..).map_err(err)? {
            let (k, _) = item.map_err(err)?;
            let k = k.value();
            if !k.starts_with(&start) {
                break;
            }
            keys.push(String::from_utf8_lossy(&k[namespace.len() + 1..]).into_owned());
        }
        Ok(keys)
    }

    /// Runs `call` on tokio's blocking pool (off the worker threads).
    async fn off_worker<T: Send + 'static>(
        &self,
        call: impl FnOnce(&KvStore) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || call(&store))
            .await
            .map_err(|e| KvError::Store(format!("the store's worker failed: {e}")))?
    }
}

#[async_trait::async_trait]
impl KvBackend for KvStore {
    async fn get(&self, namespace: &str, k: &str) -> Result<Option<Vec<u8>>, KvError> {
        let (namespace, k) = (namespace.to_owned(), k.to_owned());
        self.off_worker(move |s| s.get_blocking(&namespace, &k))
            .await
    }

    async fn set(&self, namespace: &str, k: &str, value: Vec<u8>) -> Result<(), KvError> {
        let (namespace, k) = (namespace.to_owned(), k.to_owned());
        self.off_worker(move |s| s.set_blocking(&namespace, &k, &value))
            .await
    }

    async fn delete(&self, namespace: &str, k: &str) -> Result<(), KvError> {
        let (namespace, k) = (namespace.to_owned(), k.to_owned());
        self.off_worker(move |s| s.delete_blocking(&namespace, &k))
            .await
    }

    async fn increment(&self, namespace: &str, k: &str, delta: i64) -> Result<i64, KvError> {
        let (namespace, k) = (namespace.to_owned(), k.to_owned());
        self.off_worker(move |s| s.increment_blocking(&namespace, &k, delta))
            .await
    }

    async fn list_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, KvError> {
        let (namespace, prefix) = (namespace.to_owned(), prefix.to_owned());
        self.off_worker(move |s| s.list_keys_blocking(&namespace, &prefix))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn namespaces_do_not_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvStore::open(&dir.path().join("kv.redb")).unwrap();
        kv.set("a", "k", b"1".to_vec()).await.unwrap();
        kv.set("ab", "k", b"2".to_vec()).await.unwrap();
        assert_eq!(kv.get("a", "k").await.unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(kv.get("b", "k").await.unwrap(), None);
        assert_eq!(kv.list_keys("a", "").await.unwrap(), vec!["k".to_string()]);
        assert_eq!(kv.increment("a", "n", 5).await.unwrap(), 5);
        assert_eq!(kv.increment("a", "n", -2).await.unwrap(), 3);
        assert!(matches!(
            kv.increment("a", "k", 1).await,
            Err(KvError::NotACounter(k)) if k == "k"
        ));
        assert!(matches!(
            kv.increment("a", "n", i64::MAX).await,
            Err(KvError::Overflow(_))
        ));
        kv.delete("a", "k").await.unwrap();
        assert_eq!(kv.list_keys("a", "").await.unwrap(), vec!["n".to_string()]);
    }
}
