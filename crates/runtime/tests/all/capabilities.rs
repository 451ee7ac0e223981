//! The built-in config and kv capabilities, a kv backend of a base team's
//! own, and a capability refusing a module at configure.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_example_modules::{COUNTER, HELLO};
use berth_runtime::wasmtime::component::Linker;
use berth_runtime::{
    Capabilities, Capability, HostState, InstanceContext, KvBackend, KvCapability, KvError,
    LoadError, ModuleSettings,
};
use serde_json::Value;

use crate::support::{TestRuntime, call};

async fn hits(module: &berth_runtime::LoadedModule, path: &str) -> Value {
    let (status, body) = call(module, path, None).await.expect("counter answers");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn config_values_reach_only_their_module() {
    let rt = TestRuntime::new();
    let a = rt.load(COUNTER, "a", |s| {
        s.config.insert("greeting".into(), "hej".into());
    });
    let b = rt.load(COUNTER, "b", |_| {});
    assert_eq!(hits(&a, "/").await["greeting"], "hej");
    assert_eq!(hits(&b, "/").await["greeting"], Value::Null);
}

#[tokio::test]
async fn kv_counts_per_module_and_increments_atomically_under_concurrency() {
    let rt = TestRuntime::new();
    let a = rt.load(COUNTER, "a", |_| {});
    let b = rt.load(COUNTER, "b", |_| {});
    let calls: Vec<_> = (0..24)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move { hits(&a, "/").await })
        })
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    assert_eq!(hits(&a, "/peek").await["hits"], 24);
    assert_eq!(hits(&b, "/").await["hits"], 1, "b has its own namespace");
    // The counts are durable, in the runtime's redb store.
    assert_eq!(
        rt.runtime.kv().get("a", "hits").await.unwrap(),
        Some(24i64.to_le_bytes().to_vec())
    );
}

/// A base team's kv backend: a map in memory.
#[derive(Default)]
struct MapBackend(Mutex<HashMap<(String, String), Vec<u8>>>);

#[berth_runtime::async_trait]
impl KvBackend for MapBackend {
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(&(ns.into(), key.into()))
            .cloned())
    }
    async fn set(&self, ns: &str, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        self.0
            .lock()
            .unwrap()
            .insert((ns.into(), key.into()), value);
        Ok(())
    }
    async fn delete(&self, ns: &str, key: &str) -> Result<(), KvError> {
        self.0.lock().unwrap().remove(&(ns.into(), key.into()));
        Ok(())
    }
    async fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        let mut map = self.0.lock().unwrap();
        let slot = map
            .entry((ns.into(), key.into()))
            .or_insert_with(|| 0i64.to_le_bytes().to_vec());
        let bytes: [u8; 8] = slot
            .as_slice()
            .try_into()
            .map_err(|_| KvError::NotACounter(key.into()))?;
        let next = i64::from_le_bytes(bytes) + delta;
        *slot = next.to_le_bytes().to_vec();
        Ok(next)
    }
    async fn list_keys(&self, ns: &str, prefix: &str) -> Result<Vec<String>, KvError> {
        let mut keys: Vec<String> = (self.0.lock().unwrap().keys())
            .filter(|(n, k)| n == ns && k.starts_with(prefix))
            .map(|(_, k)| k.clone())
            .collect();
        keys.sort();
        Ok(keys)
    }
}

#[tokio::test]
async fn a_kv_backend_of_the_base_teams_own_replaces_redb() {
    let backend = Arc::new(MapBackend::default());
    let plugged = backend.clone();
    let rt = TestRuntime::with(move |config| {
        config.capabilities = Capabilities::new().with(KvCapability::new(plugged));
    });
    let counter = rt.load(COUNTER, "counter", |_| {});
    hits(&counter, "/").await;
    assert_eq!(hits(&counter, "/").await["hits"], 2);
    assert_eq!(
        backend.0.lock().unwrap()[&("counter".to_string(), "hits".to_string())],
        2i64.to_le_bytes().to_vec()
    );
    assert_eq!(rt.runtime.kv().get("counter", "hits").await.unwrap(), None);
}

/// A map whose `increment` waits until the test releases it, counting the
/// calls that wait: a kv store that is slow for as long as a test wants.
struct ParkedBackend {
    inner: MapBackend,
    waiting: AtomicUsize,
    release: tokio::sync::Semaphore,
}

#[berth_runtime::async_trait]
impl KvBackend for ParkedBackend {
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.inner.get(ns, key).await
    }
    async fn set(&self, ns: &str, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        self.inner.set(ns, key, value).await
    }
    async fn delete(&self, ns: &str, key: &str) -> Result<(), KvError> {
        self.inner.delete(ns, key).await
    }
    async fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        // Closing the semaphore releases every call, now and later.
        let _ = self.release.acquire().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.inner.increment(ns, key, delta).await
    }
    async fn list_keys(&self, ns: &str, prefix: &str) -> Result<Vec<String>, KvError> {
        self.inner.list_keys(ns, prefix).await
    }
}

/// Two worker threads, as on the 2-core machines: a kv host call that held
/// its worker thread while the store was busy would leave none for `hello`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_parked_kv_calls_do_not_stall_a_neighbour() {
    let backend = Arc::new(ParkedBackend {
        inner: MapBackend::default(),
        waiting: AtomicUsize::new(0),
        release: tokio::sync::Semaphore::new(0),
    });
    let plugged = backend.clone();
    let rt = TestRuntime::with(move |config| {
        config.max_instances = 100;
        config.capabilities = Capabilities::new().with(KvCapability::new(plugged));
    });
    let counter = rt.load(COUNTER, "counter", |_| {});
    let hello = rt.load(HELLO, "hello", |_| {});
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let counter = counter.clone();
            tokio::spawn(async move { hits(&counter, "/").await })
        })
        .collect();
    // Waits poll with the thread's own clock: if the workers were blocked,
    // tokio's timers would stop too. A failure exits the process, because a
    // panic would hang dropping a runtime whose workers never return.
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            if Instant::now() > deadline {
                // Straight to stderr: the test harness's capture dies with the process.
                let _ = writeln!(
                    std::io::stderr(),
                    "sixty_four_parked_kv_calls_do_not_stall_a_neighbour FAILED: {what}"
                );
                std::process::exit(101);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait("the 64 kv calls never all reached the store", &|| {
        backend.waiting.load(Ordering::SeqCst) == 64
    });
    let neighbour = tokio::spawn(async move { call(&hello, "/", None).await });
    wait(
        "hello did not answer while 64 kv calls waited on the store",
        &|| neighbour.is_finished(),
    );
    let (status, body) = neighbour.await.unwrap().expect("hello answers");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        backend.waiting.load(Ordering::SeqCst),
        64,
        "every kv call was still waiting while hello answered"
    );
    // Release them all, and every later increment too.
    backend.release.close();
    for call in calls {
        call.await.expect("counter request");
    }
    assert_eq!(hits(&counter, "/").await["hits"], 65);
}

/// Offers nothing, refuses modules named `blocked-*` at configure.
struct Gatekeeper;

impl Capability for Gatekeeper {
    type Module = ();
    type Instance = ();

    fn name(&self) -> &str {
        "test:gatekeeper"
    }

    fn init(&self, _: &mut Linker<HostState>) -> berth_runtime::wasmtime::Result<()> {
        Ok(())
    }

    fn configure(&self, module: &ModuleSettings) -> anyhow::Result<()> {
        anyhow::ensure!(
            !module.name.starts_with("blocked-"),
            "module `{}` is blocked; rename it",
            module.name
        );
        Ok(())
    }

    fn prepare(&self, _: &(), _: &InstanceContext<'_>) {}
}

#[tokio::test]
async fn a_capability_refuses_a_module_at_configure_with_a_typed_error() {
    let rt = TestRuntime::with(|config| {
        config.capabilities = Capabilities::new().with(Gatekeeper);
    });
    let module = rt.try_load(COUNTER).unwrap();
    let mut settings = module.settings().clone();
    settings.name = "blocked-counter".into();
    match module.with_settings(settings) {
        Err(LoadError::Refused { capability, reason }) => {
            assert_eq!(capability, "test:gatekeeper");
            assert_eq!(reason, "module `blocked-counter` is blocked; rename it");
        }
        Err(other) => panic!("expected a refusal, got {other:?}"),
        Ok(_) => panic!("expected a refusal"),
    }
    let allowed = rt.load(COUNTER, "counter", |_| {});
    assert_eq!(hits(&allowed, "/").await["hits"], 1);
}
