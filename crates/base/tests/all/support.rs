//! Shared test scaffolding: start a base in a temp dir, talk to it.

use std::path::Path;

use berth_api::{ErrorBody, InstallRequest, ModuleList};
use berth_base::{Base, BaseConfig, RunningBase};
use serde_json::Value;

/// A running base on ephemeral ports with its own data directory.
pub struct TestBase {
    pub running: Option<RunningBase>,
    pub data_dir: tempfile::TempDir,
    pub client: reqwest::Client,
}

/// A base config for tests: small instance pool, ephemeral ports, and
/// artifact files readable from [`test_artifact_dirs`]. URLs: public hosts
/// only (the default); a test that fetches from a local server allows it
/// with `config.artifact_hosts.push("127.0.0.1".into())`.
pub fn config(data_dir: &Path) -> BaseConfig {
    let mut config = BaseConfig::new(data_dir).on_ephemeral_ports();
    config.runtime.max_instances = 64;
    config.artifact_dirs = test_artifact_dirs();
    config
}

/// The directories tests install artifact files from: the example modules'
/// build output, the Arklet fixtures, and the system temp dir (tests write
/// artifacts into `tempfile` directories).
pub fn test_artifact_dirs() -> Vec<std::path::PathBuf> {
    vec![
        // target/wasm-modules: every example module's build (hello-v2 has its own).
        Path::new(berth_example_modules::HELLO)
            .ancestors()
            .nth(3)
            .expect("modules dir")
            .to_path_buf(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        std::env::temp_dir(),
    ]
}

impl TestBase {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut BaseConfig)) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = config(data_dir.path());
        tweak(&mut config);
        let running = Base::start(config).await.expect("base starts");
        Self {
            running: Some(running),
            data_dir,
            client: reqwest::Client::new(),
        }
    }

    /// The running base (its addresses).
    pub fn running(&self) -> &RunningBase {
        self.running.as_ref().expect("base is running")
    }

    /// Stops the base and starts a new one on the same data directory.
    pub async fn restart(&mut self) {
        self.running.take().unwrap().shutdown().await;
        let running = Base::start(config(self.data_dir.path()))
            .await
            .expect("base restarts");
        self.running = Some(running);
    }

    pub fn ops(&self, path: &str) -> String {
        format!("http://{}{path}", self.running().ops_addr)
    }

    /// The text of the base's `/metrics`.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(self.ops("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running().ingress_addr)
    }

    /// POST /v1/modules with a JSON install request; returns (status, body).
    pub async fn install(&self, request: &InstallRequest) -> (u16, Value) {
        let response = self
            .client
            .post(self.ops("/v1/modules"))
            .json(request)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// Waits until compiled code of the artifact `digest` (`sha256:…`) is
    /// in the compile cache: a Winch-compiled module's code is written in
    /// the background, after its install answered.
    pub async fn wait_for_cached_code(&self, digest: &str) {
        let hex = digest.trim_start_matches("sha256:").to_string();
        let compiled = self.data_dir.path().join("cache/compiled");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !std::fs::read_dir(&compiled).is_ok_and(|mut files| {
            files.any(|f| f.is_ok_and(|f| f.file_name().to_string_lossy().starts_with(&hex)))
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "no compiled code of {digest} reached the cache"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Installs the file at `path` as `name@version` at `/<name>`, asserting success.
    pub async fn install_path(&self, name: &str, version: &str, path: &str) -> Value {
        let (status, body) = self.install(&install_request(name, version, path)).await;
        assert!(
            status == 201 || status == 200,
            "install {name} failed: {status} {body}"
        );
        body
    }

    /// Uploads `bytes` as the body with query parameters `query`.
    pub async fn upload(&self, query: &str, bytes: Vec<u8>) -> (u16, Value) {
        let response = self
            .client
            .post(self.ops(&format!("/v1/modules?{query}")))
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// GET `path` on the ops API, decoded.
    pub async fn ops_get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let response = self.client.get(self.ops(path)).send().await.unwrap();
        response.json().await.unwrap()
    }

    /// DELETE `path` on the ops API: (status, body).
    pub async fn ops_delete(&self, path: &str) -> (u16, Value) {
        let response = self.client.delete(self.ops(path)).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    pub async fn list(&self) -> ModuleList {
        self.client
            .get(self.ops("/v1/modules"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// GET on the ingress: (status, headers, body text).
    pub async fn get(&self, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    /// Asserts `hello` still answers at /hello: the "running state untouched" check.
    pub async fn assert_hello_serves(&self) {
        let (status, headers, body) = self.get("/hello").await;
        assert_eq!(status, 200, "hello stopped serving: {body}");
        assert_eq!(body, "Hello from berth!\n");
        assert!(
            headers
                .get("x-berth-module")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("hello@")
        );
    }
}

pub fn install_request(name: &str, version: &str, path: &str) -> InstallRequest {
    InstallRequest {
        artifact: Some(berth_api::ArtifactSource::Path(path.into())),
        ..InstallRequest::new(name, version)
    }
}

/// The `sha256:<hex>` of a file.
pub fn digest_of(path: &str) -> String {
    berth_runtime::Digest::of(&std::fs::read(path).unwrap()).to_string()
}

/// Asserts an ops error response has `status` and `code`, and returns the message.
pub fn expect_error(result: (u16, Value), status: u16, code: &str) -> String {
    let (got_status, body) = result;
    let parsed: ErrorBody = serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("not an error body ({e}): {body}"));
    assert_eq!(got_status, status, "unexpected status for {body}");
    assert_eq!(parsed.error.code, code, "unexpected code for {body}");
    assert!(!parsed.error.message.is_empty());
    parsed.error.message
}

/// A tiny HTTP file server on localhost serving `files` (path → bytes).
pub async fn serve_files(files: Vec<(&'static str, Vec<u8>)>) -> std::net::SocketAddr {
    let mut app = axum::Router::new();
    for (path, bytes) in files {
        app = app.route(path, axum::routing::get(move || async move { bytes }));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}
