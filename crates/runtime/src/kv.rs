//! The key-value store behind `berth:base/kv`: one redb database per base,
//! one namespace per module.
//!
//! Keys are stored as `<module name> NUL <key>`, so a module can only ever
//! reach its own keys: the namespace comes from the instance's settings,
//! never from the guest. redb gives atomic, durable transactions, which
//! makes `increment` safe under concurrent requests.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");

/// The base's key-value database. Cheap to clone.
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

fn err(e: impl Into<redb::Error>) -> String {
    format!("the base's key-value store failed: {}", e.into())
}

impl KvStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, String> {
        let db =
            Database::create(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(KV).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// The value of `k` in `namespace`.
    pub fn get(&self, namespace: &str, k: &str) -> Result<Option<Vec<u8>>, String> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(KV).map_err(err)?;
        Ok(table
            .get(key(namespace, k).as_slice())
            .map_err(err)?
            .map(|v| v.value().to_vec()))
    }

    /// Sets `k` in `namespace`.
    pub fn set(&self, namespace: &str, k: &str, value: &[u8]) -> Result<(), String> {
        let tx = self.db.begin_write().map_err(err)?;
        tx.open_table(KV)
            .map_err(err)?
            .insert(key(namespace, k).as_slice(), value)
            .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Removes `k` from `namespace`.
    pub fn delete(&self, namespace: &str, k: &str) -> Result<(), String> {
        let tx = self.db.begin_write().map_err(err)?;
        tx.open_table(KV)
            .map_err(err)?
            .remove(key(namespace, k).as_slice())
            .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Adds `delta` to the little-endian i64 at `k` (0 if absent), atomically.
    pub fn increment(&self, namespace: &str, k: &str, delta: i64) -> Result<i64, String> {
        let full = key(namespace, k);
        let tx = self.db.begin_write().map_err(err)?;
        let next = {
            let mut table = tx.open_table(KV).map_err(err)?;
            let current = match table.get(full.as_slice()).map_err(err)? {
                None => 0,
                Some(v) => {
                    let bytes: [u8; 8] = v.value().try_into().map_err(|_| {
                        format!("key `{k}` does not hold a counter (it is not 8 bytes); delete it or use another key")
                    })?;
                    i64::from_le_bytes(bytes)
                }
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| format!("counter `{k}` would overflow"))?;
            table
                .insert(full.as_slice(), next.to_le_bytes().as_slice())
                .map_err(err)?;
            next
        };
        tx.commit().map_err(err)?;
        Ok(next)
    }

    /// Keys of `namespace` starting with `prefix`, sorted.
    pub fn list_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, String> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_do_not_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvStore::open(&dir.path().join("kv.redb")).unwrap();
        kv.set("a", "k", b"1").unwrap();
        kv.set("ab", "k", b"2").unwrap();
        assert_eq!(kv.get("a", "k").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(kv.get("b", "k").unwrap(), None);
        assert_eq!(kv.list_keys("a", "").unwrap(), vec!["k".to_string()]);
        assert_eq!(kv.increment("a", "n", 5).unwrap(), 5);
        assert_eq!(kv.increment("a", "n", -2).unwrap(), 3);
        assert!(kv.increment("a", "k", 1).is_err());
        kv.delete("a", "k").unwrap();
        assert_eq!(kv.list_keys("a", "").unwrap(), vec!["n".to_string()]);
    }
}
