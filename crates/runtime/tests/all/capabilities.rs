//! The built-in config and kv capabilities, a kv backend of a base team's
//! own, and a capability refusing a module at configure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_example_modules::COUNTER;
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
