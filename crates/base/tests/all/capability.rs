//! Capabilities as plug-ins: a base team's own capability, through the same
//! trait the built-ins use, replaces the built-in `berth:base/kv` — its
//! per-module state built at install (configure), its per-request data
//! prepared for each instance — and can refuse a module at install.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_example_modules::COUNTER;
use berth_runtime::wasmtime::component::{HasSelf, Linker};
use berth_runtime::{Capabilities, Capability, HostState, InstanceContext, ModuleSettings};
use serde_json::Value;

use crate::support::TestBase;

berth_runtime::wasmtime::component::bindgen!({
    path: "../../wit",
    world: "berth:base/host",
    wasmtime_crate: berth_runtime::wasmtime,
});

/// Keys by (module, key): what a team's shared cache might look like.
type Shared = Arc<Mutex<HashMap<(String, String), Vec<u8>>>>;

/// A kv kept in this process's memory, refusing modules named `forbidden-*`.
struct MemoryKv(Shared);

/// One instance's view: the map and its module's name.
struct MemoryKvData {
    map: Shared,
    module: String,
}

impl Capability for MemoryKv {
    type Module = String;
    type Instance = MemoryKvData;

    fn name(&self) -> &str {
        "berth:base/kv"
    }

    fn init(&self, linker: &mut Linker<HostState>) -> berth_runtime::wasmtime::Result<()> {
        berth::base::kv::add_to_linker::<HostState, HasSelf<MemoryKvData>>(linker, |s| {
            s.capability::<MemoryKvData>()
        })
    }

    fn configure(&self, module: &ModuleSettings) -> anyhow::Result<String> {
        if module.name.starts_with("forbidden-") {
            anyhow::bail!(
                "module `{}` may not use the team cache; rename it",
                module.name
            );
        }
        Ok(module.name.clone())
    }

    fn prepare(&self, module: &String, _: &InstanceContext<'_>) -> MemoryKvData {
        MemoryKvData {
            map: self.0.clone(),
            module: module.clone(),
        }
    }
}

impl berth::base::kv::Host for MemoryKvData {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        let map = self.map.lock().unwrap();
        Ok(map.get(&(self.module.clone(), key)).cloned())
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let mut map = self.map.lock().unwrap();
        map.insert((self.module.clone(), key), value);
        Ok(())
    }

    fn delete(&mut self, key: String) -> Result<(), String> {
        self.map.lock().unwrap().remove(&(self.module.clone(), key));
        Ok(())
    }

    fn increment(&mut self, key: String, delta: i64) -> Result<i64, String> {
        let mut map = self.map.lock().unwrap();
        let slot = map
            .entry((self.module.clone(), key))
            .or_insert_with(|| 0i64.to_le_bytes().to_vec());
        let value =
            i64::from_le_bytes(slot.as_slice().try_into().map_err(|_| "not a counter")?) + delta;
        *slot = value.to_le_bytes().to_vec();
        Ok(value)
    }

    fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, String> {
        let map = self.map.lock().unwrap();
        let mut keys: Vec<String> = map
            .keys()
            .filter(|(m, k)| *m == self.module && k.starts_with(&prefix))
            .map(|(_, k)| k.clone())
            .collect();
        keys.sort();
        Ok(keys)
    }
}

#[tokio::test]
async fn a_base_teams_capability_replaces_the_builtin_kv_and_can_refuse_a_module() {
    let shared: Shared = Arc::default();
    let plugged = shared.clone();
    let base = TestBase::start_with(move |config| {
        config.runtime.capabilities = Capabilities::new().with(MemoryKv(plugged));
    })
    .await;
    base.install_path("counter", "1", COUNTER).await;
    for expected in 1..=3 {
        let (status, _, text) = base.get("/counter").await;
        assert_eq!(status, 200, "{text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["hits"], expected);
    }
    // The counts are in the team's map, under the module's own name.
    let stored = shared.lock().unwrap()[&("counter".to_string(), "hits".to_string())].clone();
    assert_eq!(i64::from_le_bytes(stored.try_into().unwrap()), 3);

    // Refused at install (configure), with the capability's reason; nothing changes.
    let (status, body) = base
        .install(&crate::support::install_request(
            "forbidden-counter",
            "1",
            COUNTER,
        ))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "refused_by_capability");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("capability berth:base/kv")
            && message.contains("module `forbidden-counter` may not use the team cache"),
        "{message}"
    );
    let (status, _, _) = base.get("/forbidden-counter").await;
    assert_eq!(status, 404);
    let (status, _, _) = base.get("/counter").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_module_importing_an_interface_the_base_lacks_is_refused_naming_it() {
    let base = TestBase::start().await;
    base.install_path("hello", "1", berth_example_modules::HELLO)
        .await;
    let before = base.list().await;
    assert_eq!(
        before.capabilities,
        vec![
            "berth:base/config@0.1.0",
            "berth:base/kv@0.1.0",
            "berth:base/log@0.1.0"
        ]
    );
    let health: Value = base
        .client
        .get(base.ops("/v1/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["capabilities"][1], "berth:base/kv@0.1.0", "{health}");

    let (status, body) = base
        .install(&crate::support::install_request(
            "notes",
            "1",
            berth_example_modules::SQL_NOTES,
        ))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "unsupported_import");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`berth:sql/query@0.1.0`")
            && message.contains("install it on a base that offers that capability"),
        "{message}"
    );
    // Nothing changed: same installed set, hello serves, no route to notes.
    // (The recent-traffic window grows with time since install, and the
    // code moves up from Winch to Cranelift in the background.)
    let state = |mut list: berth_api::ModuleList| {
        for m in &mut list.modules {
            (m.recent, m.tier) = (Default::default(), None);
        }
        list
    };
    assert_eq!(state(base.list().await), state(before));
    base.assert_hello_serves().await;
    let (status, _, _) = base.get("/notes").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_base_built_with_the_builder_reports_and_uses_its_capability() {
    let dir = tempfile::tempdir().unwrap();
    let shared: Shared = Arc::default();
    let running = berth_base::Base::builder()
        .config(crate::support::config(dir.path()))
        .capability(MemoryKv(shared.clone()))
        .start()
        .await
        .expect("the built base starts");
    let base = running.base.clone();
    base.install(
        crate::support::install_request("counter", "1", COUNTER),
        None,
    )
    .await
    .expect("counter installs");
    let url = format!("http://{}/counter", running.ingress_addr);
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["hits"], 1, "{text}");
    assert!(
        shared
            .lock()
            .unwrap()
            .contains_key(&("counter".into(), "hits".into()))
    );
    assert_eq!(base.health().capabilities.len(), 3);
    running.shutdown().await;
}
