//! A client of a base's ops API, with errors a person can act on.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use berth_api::{
    ErrorBody, Health, InstallRequest, InstallResponse, ModuleInfo, ModuleList, SwitchRequest,
    SwitchResponse, TrafficRules, UninstallResponse,
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Talks to one base's ops API.
pub struct OpsClient {
    base: reqwest::Url,
    http: reqwest::Client,
}

impl OpsClient {
    /// A client of the base at `url` (e.g. `http://127.0.0.1:1238`).
    pub fn new(url: &str) -> Result<Self> {
        let with_scheme = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        let base = reqwest::Url::parse(&with_scheme)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                anyhow!("`{url}` is not a base URL\nhint: pass the ops API address, e.g. --base http://127.0.0.1:1238")
            })?;
        let http = crate::auth::client_builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .build()?;
        Ok(Self { base, http })
    }

    /// The URL of `path` on the base's ops API.
    pub fn url(&self, path: &str) -> reqwest::Url {
        self.base.join(path).expect("static API paths join")
    }

    /// Sends `request` and decodes a success body, or turns the failure into a clear error.
    async fn call<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T> {
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .context("reading the base's answer")?;
        if status.is_success() {
            return serde_json::from_slice(&body).with_context(|| {
                format!(
                    "the base at {} answered something that is not berth's API",
                    self.base
                )
            });
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(err) => Err(ApiError::from(err.error).into()),
            Err(_) => bail!(
                "{} answered {status}, which is not a berth base\nhint: --base takes the ops API address (default http://127.0.0.1:1238), not the ingress",
                self.base
            ),
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> anyhow::Error {
        if let Some(hint) = berth_api::tls::untrusted_hint(&e) {
            anyhow!("cannot talk to the base at {}: {hint}", self.base)
        } else if e.is_connect() || e.is_timeout() {
            anyhow!(
                "no base answers at {}\nhint: start one with `berth up`, or pass --base with the address of a running base's ops API",
                self.base
            )
        } else {
            anyhow!("cannot talk to the base at {}: {e}", self.base)
        }
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Health> {
        self.call(self.http.get(self.url("/v1/health"))).await
    }

    /// `GET /v1/modules`.
    pub async fn list(&self) -> Result<Vec<ModuleInfo>> {
        let list: ModuleList = self.call(self.http.get(self.url("/v1/modules"))).await?;
        Ok(list.modules)
    }

    /// `GET /v1/modules/{name}`.
    pub async fn module(&self, name: &str) -> Result<Vec<ModuleInfo>> {
        let list: ModuleList = self
            .call(self.http.get(self.url(&format!("/v1/modules/{name}"))))
            .await?;
        Ok(list.modules)
    }

    /// Uploads `bytes`, installed as `request` says (name, version, route,
    /// digest, limits, grants, config travel in the `x-berth-install` header).
    pub async fn upload(
        &self,
        request: &InstallRequest,
        bytes: Vec<u8>,
    ) -> Result<InstallResponse> {
        let options = serde_json::to_string(request).expect("install requests serialize");
        let request = self
            .http
            .post(self.url("/v1/modules"))
            .header("content-type", "application/wasm")
            .header("x-berth-install", options)
            .body(bytes);
        self.call(request).await
    }

    /// `DELETE /v1/modules/{name}[/versions/{version}]`.
    pub async fn uninstall(&self, name: &str, version: Option<&str>) -> Result<UninstallResponse> {
        let path = match version {
            Some(v) => format!("/v1/modules/{name}/versions/{v}"),
            None => format!("/v1/modules/{name}"),
        };
        self.call(self.http.delete(self.url(&path))).await
    }

    /// `POST /v1/modules/{name}/switch`.
    pub async fn switch(&self, name: &str, version: &str) -> Result<SwitchResponse> {
        let body = SwitchRequest {
            version: version.into(),
        };
        self.call(
            self.http
                .post(self.url(&format!("/v1/modules/{name}/switch")))
                .json(&body),
        )
        .await
    }

    /// `POST /v1/modules/{name}/rollback`.
    pub async fn rollback(&self, name: &str) -> Result<SwitchResponse> {
        self.call(
            self.http
                .post(self.url(&format!("/v1/modules/{name}/rollback"))),
        )
        .await
    }

    /// `GET /v1/modules/{name}/rules`.
    pub async fn rules(&self, name: &str) -> Result<TrafficRules> {
        self.call(
            self.http
                .get(self.url(&format!("/v1/modules/{name}/rules"))),
        )
        .await
    }

    /// `PUT /v1/modules/{name}/rules`.
    pub async fn set_rules(&self, name: &str, rules: &TrafficRules) -> Result<TrafficRules> {
        self.call(
            self.http
                .put(self.url(&format!("/v1/modules/{name}/rules")))
                .json(rules),
        )
        .await
    }

    /// `GET /v1/modules/{name}/logs?version=…`: the lines one version wrote.
    pub async fn logs(&self, name: &str, version: &str) -> Result<Vec<berth_api::LogEntry>> {
        let mut url = self.url(&format!("/v1/modules/{name}/logs"));
        url.query_pairs_mut().append_pair("version", version);
        let list: berth_api::LogList = self.call(self.http.get(url)).await?;
        Ok(list.lines)
    }

    /// The ingress URL of the base (from its health report).
    pub async fn ingress(&self) -> Result<reqwest::Url> {
        let health = self.health().await?;
        let host = self.base.host_str().unwrap_or("127.0.0.1");
        // A base listening on 0.0.0.0 is reached at the host we used for ops.
        let addr: std::net::SocketAddr = health
            .ingress
            .parse()
            .with_context(|| format!("the base reported ingress `{}`", health.ingress))?;
        let host = if addr.ip().is_unspecified() {
            host.to_string()
        } else {
            addr.ip().to_string()
        };
        Ok(reqwest::Url::parse(&format!(
            "{}://{host}:{}",
            self.base.scheme(),
            addr.port()
        ))?)
    }
}
