//! A runtime in a temp dir, modules loaded from the example artifacts, and
//! requests made with hyper types.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_runtime::{
    CallContext, Digest, LoadError, LoadedModule, ModuleSettings, Runtime, RuntimeConfig,
};
use http_body_util::{BodyExt, Full};

/// A runtime with its data directory (kept alive with it).
pub struct TestRuntime {
    pub runtime: Runtime,
    _dir: tempfile::TempDir,
}

impl TestRuntime {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    pub fn with(tweak: impl FnOnce(&mut RuntimeConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RuntimeConfig::new(dir.path());
        config.max_instances = 32;
        tweak(&mut config);
        Self {
            runtime: Runtime::new(config).expect("runtime starts"),
            _dir: dir,
        }
    }

    /// Loads the artifact at `path`.
    pub fn try_load(&self, path: &str) -> Result<LoadedModule, LoadError> {
        let bytes = std::fs::read(path).unwrap();
        self.runtime
            .load(Digest::of(&bytes), Some(bytes.into()))
            .map(|(module, _)| module)
    }

    /// Loads the artifact at `path` as module `name` with `tweak`ed settings.
    pub fn load(
        &self,
        path: &str,
        name: &str,
        tweak: impl FnOnce(&mut ModuleSettings),
    ) -> LoadedModule {
        let module = self.try_load(path).expect("module loads");
        let mut settings = ModuleSettings {
            name: name.into(),
            version: "1".into(),
            limits: module.settings().limits,
            allowed_hosts: Vec::new(),
            config: BTreeMap::new(),
            policy: berth_runtime::InstancePolicy::Fresh,
        };
        tweak(&mut settings);
        module
            .with_settings(settings)
            .expect("capabilities accept it")
    }
}

/// `GET path` (or `POST` with `body`) through `module`: status and body text,
/// or the runtime's error.
pub async fn call(
    module: &LoadedModule,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), berth_runtime::HandleError> {
    let request = http::Request::builder()
        .method(if body.is_some() { "POST" } else { "GET" })
        .uri(format!("http://localhost{path}"))
        .body(Full::new(bytes::Bytes::from(
            body.unwrap_or_default().to_owned(),
        )))
        .unwrap();
    let response = module.handle(request, CallContext::default()).await?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Polls `check` every 10 ms until it holds, failing after 10 s.
pub async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
