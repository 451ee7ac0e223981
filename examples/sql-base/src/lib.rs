//! An example custom base: berth's base plus a shared SQL database.
//!
//! [`SqlCapability`] offers modules the `berth:sql/query` interface
//! (`wit/sql.wit`): SQLite through `rusqlite` (bundled), one database file
//! per module under the capability's directory, each behind a small
//! connection pool. A module only ever reaches its own database: the file
//! comes from the module's name (from its settings, never from the guest),
//! and `ATTACH` is disabled on every connection, so a module cannot open
//! another module's file. Calls are async host calls; each runs on tokio's
//! blocking pool, so a slow query holds no worker thread.
//!
//! The capability is added with the same builder any base team uses:
//!
//! ```no_run
//! # async fn run() -> Result<(), berth_base::BaseError> {
//! let running = berth_base::Base::builder()
//!     .data_dir("sql-base-data")
//!     .capability(berth_sql_base::SqlCapability::new("sql-base-data/sql", 4))
//!     .start()
//!     .await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use berth_runtime::wasmtime::component::{HasSelf, Linker};
use berth_runtime::{Capability, HostState, InstanceContext, ModuleSettings};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags};

/// Host bindings of `wit/sql.wit` (async, trappable host calls).
mod bindings {
    berth_runtime::wasmtime::component::bindgen!({
        path: "wit",
        world: "berth:sql/host",
        imports: { default: async | trappable },
        wasmtime_crate: berth_runtime::wasmtime,
    });
}

use bindings::berth;
use bindings::berth::sql::query::{Rows, Value};

/// The interface this capability offers, with its version.
pub const SQL_INTERFACE: &str = "berth:sql/query@0.1.0";

/// A shared SQLite database per module; see the crate docs.
pub struct SqlCapability {
    dir: PathBuf,
    pool_size: usize,
    /// Module name → its pool, shared by the module's versions.
    pools: Mutex<HashMap<String, Weak<Pool>>>,
}

impl SqlCapability {
    /// Databases in `dir` (created at the first install), at most
    /// `pool_size` idle connections kept per module.
    pub fn new(dir: impl Into<PathBuf>, pool_size: usize) -> Self {
        Self {
            dir: dir.into(),
            pool_size: pool_size.max(1),
            pools: Mutex::default(),
        }
    }
}

/// Connections to one module's database file.
pub struct Pool {
    path: PathBuf,
    max_idle: usize,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // No ATTACH: a module must not open another module's database.
        conn.set_limit(rusqlite::limits::Limit::SQLITE_LIMIT_ATTACHED, 0)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        Ok(conn)
    }

    /// Runs `f` on a pooled connection, on tokio's blocking pool.
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let taken = pool.idle.lock().expect("pool").pop();
            let conn = match taken {
                Some(conn) => conn,
                None => pool.open().map_err(|e| e.to_string())?,
            };
            let result = f(&conn).map_err(|e| e.to_string());
            let mut idle = pool.idle.lock().expect("pool");
            if idle.len() < pool.max_idle {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| format!("the SQL worker failed: {e}"))?
    }
}

/// One instance's SQL: its module's pool.
pub struct SqlData(Arc<Pool>);

impl Capability for SqlCapability {
    type Module = Arc<Pool>;
    type Instance = SqlData;

    fn name(&self) -> &str {
        "berth:sql/query"
    }

    fn interfaces(&self) -> Vec<String> {
        vec![SQL_INTERFACE.to_owned()]
    }

    fn init(&self, linker: &mut Linker<HostState>) -> berth_runtime::wasmtime::Result<()> {
        berth::sql::query::add_to_linker::<HostState, HasSelf<SqlData>>(linker, |s| {
            s.capability::<SqlData>()
        })
    }

    fn configure(&self, module: &ModuleSettings) -> anyhow::Result<Arc<Pool>> {
        let mut pools = self.pools.lock().expect("pools");
        if let Some(pool) = pools.get(&module.name).and_then(Weak::upgrade) {
            return Ok(pool);
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the SQL directory {}: {e}",
                self.dir.display()
            )
        })?;
        let pool = Arc::new(Pool {
            // Module names are validated by the base: letters, digits, `-`.
            path: self.dir.join(format!("{}.sqlite", module.name)),
            max_idle: self.pool_size,
            idle: Mutex::default(),
        });
        // Open one connection now: a database that cannot open refuses the
        // install instead of failing every request.
        let first = pool.open().map_err(|e| {
            anyhow::anyhow!("cannot open the database {}: {e}", pool.path.display())
        })?;
        pool.idle.lock().expect("pool").push(first);
        pools.insert(module.name.clone(), Arc::downgrade(&pool));
        Ok(pool)
    }

    fn prepare(&self, module: &Arc<Pool>, _: &InstanceContext<'_>) -> SqlData {
        SqlData(module.clone())
    }
}

fn to_sql(value: Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::Integer(i) => SqlValue::Integer(i),
        Value::Real(r) => SqlValue::Real(r),
        Value::Text(t) => SqlValue::Text(t),
        Value::Blob(b) => SqlValue::Blob(b),
    }
}

fn from_sql(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

impl berth::sql::query::Host for SqlData {
    async fn execute(
        &mut self,
        sql: String,
        params: Vec<Value>,
    ) -> berth_runtime::wasmtime::Result<Result<u64, String>> {
        let params: Vec<SqlValue> = params.into_iter().map(to_sql).collect();
        Ok(self
            .0
            .run(move |conn| {
                conn.execute(&sql, rusqlite::params_from_iter(params))
                    .map(|n| n as u64)
            })
            .await)
    }

    async fn query(
        &mut self,
        sql: String,
        params: Vec<Value>,
    ) -> berth_runtime::wasmtime::Result<Result<Rows, String>> {
        let params: Vec<SqlValue> = params.into_iter().map(to_sql).collect();
        Ok(self
            .0
            .run(move |conn| {
                let mut statement = conn.prepare(&sql)?;
                let columns: Vec<String> = statement
                    .column_names()
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                let width = columns.len();
                let mut rows = Vec::new();
                let mut cursor = statement.query(rusqlite::params_from_iter(params))?;
                while let Some(row) = cursor.next()? {
                    let mut values = Vec::with_capacity(width);
                    for i in 0..width {
                        values.push(from_sql(row.get_ref(i)?));
                    }
                    rows.push(values);
                }
                Ok(Rows { columns, rows })
            })
            .await)
    }
}
